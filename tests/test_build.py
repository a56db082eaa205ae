import numpy as np
import pytest

from genworld.data.build import build_dataset
from genworld.data.minari_io import read_episodes, read_metadata
from genworld.errors import GenworldError


def _arrays(dataset_id):
    episodes = read_episodes(dataset_id)
    return {
        f: np.concatenate([getattr(e, f) for e in episodes])
        for f in ("observations", "actions", "rewards", "terminations", "truncations")
    }


@pytest.mark.parametrize(
    "quality",
    [  # medium-expert builds a medium and an expert part: the fast suite keeps the composites
        pytest.param("random", marks=pytest.mark.integration),
        pytest.param("medium", marks=pytest.mark.integration),
        "medium-replay",
        pytest.param("expert", marks=pytest.mark.integration),
        "medium-expert",
    ],
)
def test_build_all_qualities_deterministic(quality, tiny_policies, tmp_path, monkeypatch):
    monkeypatch.setattr("genworld.data.collect.LANE_STEPS", 250)  # 2 lanes from 500 steps
    card = build_dataset(f"hopper-{quality}", steps=600, seed=3, show_progress=False)
    assert card["steps"] == 600
    first = _arrays(f"genworld/hopper/{quality}-v0")
    assert len(first["actions"]) == 600
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "other"))
    # the same bytes with the lanes in 2 processes (medium-replay: its segments on one pool,
    # a 100-step segment in one lane)
    build_dataset(f"hopper-{quality}", steps=600, seed=3, show_progress=False, workers=2)
    second = _arrays(f"genworld/hopper/{quality}-v0")
    for field in first:
        assert first[field].tobytes() == second[field].tobytes(), field
    meta = read_metadata(f"genworld/hopper/{quality}-v0")
    assert meta["ref_min_score"] == -20.272305 and meta["ref_max_score"] == 3234.3


def test_collection_ignores_the_matmul_precision_flag():
    """``--matmul-precision medium`` (bfloat16 matmul inputs on CPUs that have them) must not
    change a dataset's bytes, in this process or in the lanes' worker processes."""
    import torch

    from genworld.data.collect import collect
    from genworld.policies import TanhGaussianActor

    torch.manual_seed(0)
    actor = TanhGaussianActor(11, 3)
    exact = collect("hopper", actor, 600, seed=1)
    torch.set_float32_matmul_precision("medium")
    try:
        fast = collect("hopper", actor, 600, seed=1)
        assert torch.get_float32_matmul_precision() == "medium"  # the caller's setting is kept
    finally:
        torch.set_float32_matmul_precision("highest")
    assert len(exact) == len(fast)
    for a, b in zip(exact, fast, strict=True):
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.rewards, b.rewards)


def test_different_seed_gives_different_data():
    build_dataset("hopper-random", steps=300, seed=0, show_progress=False)
    a = _arrays("genworld/hopper/random-v0")["actions"]
    build_dataset("hopper-random", steps=300, seed=1, show_progress=False, force=True)
    b = _arrays("genworld/hopper/random-v0")["actions"]
    assert not np.array_equal(a, b)


def test_medium_expert_is_half_medium_half_expert(tiny_policies):
    card = build_dataset("hopper-medium-expert", steps=500, seed=0, show_progress=False)
    assert card["segments"] == [
        {"policy": "hopper-medium", "steps": 250},
        {"policy": "hopper-expert", "steps": 250},
    ]


def test_medium_replay_follows_buffer_proportions(tiny_policies):
    # the test card: 50 uniform-random warm-up steps, then replay-0 100 and replay-1 200
    card = build_dataset("hopper-medium-replay", steps=700, seed=0, show_progress=False)
    assert card["segments"] == [
        {"policy": "uniform-random", "steps": 100},
        {"policy": "hopper-replay-0", "steps": 200},
        {"policy": "hopper-replay-1", "steps": 400},
    ]
    # without --steps, the size of the original buffer
    card = build_dataset("hopper-medium-replay", seed=0, show_progress=False, force=True)
    assert card["steps"] == 350


def test_episode_structure_of_built_data():
    build_dataset("hopper-random", steps=2000, seed=0, show_progress=False)
    episodes = read_episodes("genworld/hopper/random-v0", obs_dim=11, act_dim=3)
    assert sum(len(e) for e in episodes) == 2000
    # random hopper falls within ~20-60 steps: most episodes end in a true terminal
    assert sum(e.terminations[-1] for e in episodes) > 0.8 * len(episodes)
    for e in episodes:
        assert e.terminations[-1] or e.truncations[-1]


def test_bad_requests_are_clear(tiny_policies):
    with pytest.raises(GenworldError, match="unknown dataset quality 'meduim'"):
        build_dataset("hopper-meduim", steps=10)
    with pytest.raises(GenworldError, match="unknown environment 'hoppr'"):
        build_dataset("hoppr-medium", steps=10)
    with pytest.raises(
        GenworldError, match="no medium policy card for walker2d|walker2d-medium not found"
    ):
        build_dataset("walker2d-medium", steps=10)
    with pytest.raises(GenworldError, match="positive"):
        build_dataset("hopper-random", steps=0)


@pytest.mark.integration
@pytest.mark.parametrize(
    "signum",
    [
        "SIGINT",
        "SIGTERM",
    ],
)
def test_interrupted_parallel_build_stops_at_once_and_writes_nothing(tmp_path, signum):
    """Ctrl-C or SIGTERM sent to the main process only (as `kill` does) must not wait for the
    lanes' processes to finish their 10 million steps each (many minutes of work): the build
    stops as soon as they are stopped. The signal goes once both lanes run, seen in /proc, not
    after a guessed delay; the limit on the stop is minutes, far below the lanes' work, so a
    busy machine does not fail it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path)}
    argv = ["data", "build", "halfcheetah-random", "--steps", "20000000", "--workers", "2"]

    def foreground_sigint() -> None:
        """Ctrl-C's default action, as a terminal's foreground job has it: a test session
        started as a background job (`cmd &`) has SIGINT ignored, its children inherit that,
        and a process that ignores SIGINT rightly goes on."""
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, "-m", "genworld", *argv, "--quiet"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=foreground_sigint,
    )

    def lane_workers() -> list[int]:
        kids = []
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            kids += (task / "children").read_text().split()
        return [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]

    deadline = time.monotonic() + 300
    while len(lane_workers()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # the lanes are collecting
    os.kill(proc.pid, getattr(signal, signum))
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the interrupted build waited for its lanes") from None
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "genworld" / "halfcheetah" / "random-v0").exists()


def test_a_study_stating_its_size_names_a_dataset_of_another_size():
    """``exact``: a run asking for a size gets that size or one line naming the dataset and the
    fix; without it an existing dataset is used as it is (reports list its size)."""
    from genworld.data.build import ensure_built

    assert ensure_built(["hopper-random"], steps=300, exact=True)[0]["steps"] == 300
    assert ensure_built(["hopper-random"], steps=300, exact=True)[0]["cached"]
    assert ensure_built(["hopper-random"], steps=400)[0]["steps"] == 300  # used as it is
    with pytest.raises(GenworldError, match=r"hopper-random has 300; rebuild .* --steps 400"):
        ensure_built(["hopper-random"], steps=400, exact=True)
