import pytest
import torch

from genworld.data.synthetic import random_episode  # noqa: F401  (the tests import it from here)
from genworld.policies import PolicyCard, TanhGaussianActor, save_policy


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path, monkeypatch):
    """Every test writes datasets into its own MINARI_DATASETS_PATH."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("GENWORLD_TRACEBACK", "1")  # a bug in a CLI test shows its traceback
    torch.set_num_threads(1)


def write_tiny_policies(folder, envs=("hopper",)):
    """Random-weight behaviour policies (medium, expert, two replay snapshots) for ``envs``."""
    from genworld.envs import get_env_spec

    torch.manual_seed(0)
    for env in envs:
        spec = get_env_spec(env)
        dims = (spec.obs_dim, spec.act_dim)
        replay = [{"name": "uniform-random", "buffer_steps": 50}]
        for k, (name, scale) in enumerate((("expert", 1.0), ("replay-0", 0.1), ("replay-1", 0.3))):
            actor = TanhGaussianActor(*dims, (32, 32))
            with torch.no_grad():
                for p in actor.parameters():
                    p.mul_(scale)
            if name.startswith("replay"):
                replay.append({"name": f"{env}-{name}", "buffer_steps": 100 * k, "step": k})
            card = PolicyCard(
                env, name, *dims, "test", 0, 0, (32, 32), 0.0, 0.0, 0.0, 0, "none", {}
            )
            save_policy(actor, card, folder / f"{env}-{name}")
        # the medium card lists the checkpoint sequence that medium-replay replays
        card = PolicyCard(
            env,
            "medium",
            *dims,
            "test",
            0,
            0,
            (32, 32),
            0.0,
            0.0,
            0.0,
            0,
            "none",
            {"replay_snapshots": replay},
        )
        save_policy(TanhGaussianActor(*dims, (32, 32)), card, folder / f"{env}-medium")


@pytest.fixture
def tiny_policies(tmp_path, monkeypatch):
    folder = tmp_path / "policies"
    write_tiny_policies(folder)
    monkeypatch.setenv("GENWORLD_POLICY_DIR", str(folder))
    return folder


@pytest.fixture
def all_tiny_policies(tmp_path, monkeypatch):
    import shutil

    from genworld.envs import ENV_SPECS
    from genworld.policies import ASSETS

    folder = tmp_path / "policies"
    write_tiny_policies(folder, tuple(ENV_SPECS))
    for shipped in ASSETS.glob("dmc-*"):  # the DeepMind Control policies as shipped
        shutil.copy(shipped, folder / shipped.name)
    monkeypatch.setenv("GENWORLD_POLICY_DIR", str(folder))
    return folder


TIMING_KEYS = ("wall_seconds", "wall_s")


def untimed(obj):
    """A report or log without its timings (``time/…`` rates, wall seconds): what a resumed run
    must reproduce exactly."""
    if isinstance(obj, dict):
        return {
            k: untimed(v)
            for k, v in obj.items()
            if not k.startswith("time/") and k not in TIMING_KEYS
        }
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj


def side_by_side(call, count: int = 2, stagger: float = 0.0, timeout: float = 300) -> list:
    """``call()`` in ``count`` threads started ``stagger`` seconds apart, as processes sharing a
    folder would run it; their results (None for one still running at ``timeout``), in start
    order."""
    import threading
    import time

    results: list = [None] * count

    def run(i):
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
        time.sleep(stagger)
    for thread in threads:
        thread.join(timeout=timeout)
    return results
