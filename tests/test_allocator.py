"""The C allocator setting (utils/allocator.py): a training step's large tensors, freed and made
again every step, stop costing fresh pages. Each case runs in its own process (the setting is per process)."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource, sys
import torch
from genworld.utils import allocator
configured = allocator.keep_freed_memory()
from genworld.bench.algos import genworld_update, synthetic_dataset
torch.set_num_threads(1)
step = genworld_update("cql", synthetic_dataset(episodes=2, steps=300))  # batch 256, 256x256
for _ in range(20):  # the heap grows to its working size over the first steps
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"configured": configured, "again": allocator.keep_freed_memory(),
                  "is_configured": allocator.is_configured(), "faults": faults}))
"""


def _run(setting: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GENWORLD_MALLOC"}
    if setting is not None:
        env["GENWORLD_MALLOC"] = setting
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.integration  # seconds of allocation: out of the fast suite, CI runs it
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_removes_the_page_faults_of_reallocated_tensors():
    import json

    kept = json.loads(_run(None).stdout)
    default = json.loads(_run("default").stdout)
    assert kept["configured"] and kept["again"] and kept["is_configured"]
    assert not default["configured"] and not default["is_configured"]
    # a CQL step makes and frees (2, 7680, 256) activations (8-16 MB each): by default glibc
    # gives their pages back and every step faults them in again; kept, they stay mapped. A
    # ratio of the two, not a count: counts depend on the glibc, torch and machine
    assert kept["faults"] * 4 <= default["faults"], (kept, default)


def test_an_unknown_setting_names_the_variable_and_the_choices():
    done = _run("fast")
    assert done.returncode != 0
    assert "GENWORLD_MALLOC='fast'" in done.stderr and "keep" in done.stderr
