import numpy as np
import pytest
import torch

from genworld.policies import PolicyCard, TanhGaussianActor, save_policy


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path, monkeypatch):
    """Every test writes datasets into its own MINARI_DATASETS_PATH."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch.set_num_threads(1)


@pytest.fixture
def tiny_policies(tmp_path, monkeypatch):
    """Random-weight behaviour policies for hopper (medium, expert, replay snapshots)."""
    folder = tmp_path / "policies"
    torch.manual_seed(0)
    replay = []
    for name, scale in (("medium", 0.5), ("expert", 1.0), ("replay-0", 0.1), ("replay-1", 0.3)):
        actor = TanhGaussianActor(11, 3, (32, 32))
        with torch.no_grad():
            for p in actor.parameters():
                p.mul_(scale)
        extra = {}
        if name.startswith("replay"):
            replay.append({"name": f"hopper-{name}", "buffer_steps": 100 * (len(replay) + 1)})
        card = PolicyCard("hopper", name, 11, 3, "test", 0, 0, (32, 32), 0.0, 0.0, 0.0, 0, "none", extra)
        save_policy(actor, card, folder / f"hopper-{name}")
    # the medium card lists the checkpoint sequence that medium-replay replays
    medium = TanhGaussianActor(11, 3, (32, 32))
    card = PolicyCard(
        "hopper", "medium", 11, 3, "test", 0, 0, (32, 32), 0.0, 0.0, 0.0, 0, "none",
        {"replay_snapshots": replay},
    )
    save_policy(medium, card, folder / "hopper-medium")
    monkeypatch.setenv("GENWORLD_POLICY_DIR", str(folder))
    return folder


def random_episode(rng: np.random.Generator, steps: int, obs_dim: int, act_dim: int, terminal: bool):
    from genworld.data.episodes import Episode

    terminations = np.zeros(steps, bool)
    truncations = np.zeros(steps, bool)
    if terminal:
        terminations[-1] = True
    else:
        truncations[-1] = True
    return Episode.from_arrays(
        rng.normal(size=(steps + 1, obs_dim)),
        rng.uniform(-1, 1, size=(steps, act_dim)),
        rng.normal(size=steps),
        terminations,
        truncations,
    )
