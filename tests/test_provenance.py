"""Every result names the code and machine that made it (utils/provenance.py)."""

import json

from genworld.utils.provenance import cells_code, cells_code_line, provenance, provenance_line


def test_provenance_names_the_commit_machine_and_command():
    record = provenance()
    json.dumps(record)  # JSON-ready
    assert record["genworld"] and record["machine"]["torch"]
    assert record["machine"]["logical_cores"] >= 1 and record["finished_at"].endswith("Z")
    if record["commit"] is not None:  # a git checkout (CI's clean clone is one)
        assert len(record["commit"]) == 40 and isinstance(record["dirty"], bool)
    assert "genworld" in provenance_line(record)


def test_cells_from_several_code_versions_are_named_not_hidden():
    results = [
        {"provenance": {"commit": "a" * 40, "dirty": False}},
        {"provenance": {"commit": "a" * 40, "dirty": False}},
        {"provenance": {"commit": "b" * 40, "dirty": True}},
        {},
    ]
    assert cells_code(results) == {"a" * 10: 2, "b" * 10 + "+dirty": 1, "unrecorded": 1}
    line = cells_code_line(results)
    assert "more than one code version" in line and "unrecorded (1 cell)" in line
    assert "compare" not in cells_code_line(results[:2])
    assert cells_code_line([]) == "**Code**: no cell has finished yet."


def test_a_dataset_fingerprint_changes_with_its_data():
    from .test_algos import toy_dataset

    first, second = toy_dataset(), toy_dataset()
    assert first.fingerprint() == second.fingerprint()
    second.envs[0].rewards[0] += 1.0
    changed = second.fingerprint()
    assert changed[0]["sha256"] != first.fingerprint()[0]["sha256"]
    assert changed[1] == first.fingerprint()[1]
    assert {"env", "transitions", "episodes", "sha256"} == set(changed[0])


def test_worker_processes_name_the_code_their_parent_launched_with(monkeypatch):
    import subprocess
    import sys

    from genworld.utils.provenance import CODE_ENV

    launched = {"genworld": "0.0.0", "commit": "c" * 40, "dirty": False}
    monkeypatch.setenv(CODE_ENV, json.dumps(launched))  # as pin_code_version() leaves it
    script = (
        "import json; from genworld.utils.provenance import provenance as p; print(json.dumps(p()))"
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    record = json.loads(child.stdout)
    assert {k: record[k] for k in launched} == launched  # not the checkout's state at its end
