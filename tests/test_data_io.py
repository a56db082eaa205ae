import h5py
import numpy as np
import pytest

from genworld.data.episodes import Episode
from genworld.data.minari_io import dataset_dir, read_episodes, read_metadata, write_dataset
from genworld.envs import get_env_spec
from genworld.errors import GenworldError

from .conftest import random_episode

HOPPER = get_env_spec("hopper")


def _write(episodes, dataset_id="genworld/hopper/medium-v0", **kw):
    return write_dataset(
        dataset_id, HOPPER, episodes, card={"k": 1}, description="test", algorithm_name="t", **kw
    )


def test_minari_round_trip_identical_arrays_and_ref_scores():
    rng = np.random.default_rng(0)
    episodes = [random_episode(rng, n, 11, 3, terminal=n % 2 == 0) for n in (5, 8, 13)]
    _write(episodes)
    loaded = read_episodes("genworld/hopper/medium-v0", obs_dim=11, act_dim=3)
    assert len(loaded) == 3
    for a, b in zip(episodes, loaded, strict=True):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    meta = read_metadata("genworld/hopper/medium-v0")
    assert meta["ref_min_score"] == HOPPER.ref_min_score
    assert meta["ref_max_score"] == HOPPER.ref_max_score
    assert meta["genworld_card"] == {"k": 1}
    # Minari itself can load what we wrote
    import minari

    ds = minari.load_dataset("genworld/hopper/medium-v0")
    assert ds.total_steps == 26 and ds.storage.metadata["ref_max_score"] == 3234.3


def test_existing_dataset_is_never_overwritten_without_force():
    rng = np.random.default_rng(0)
    _write([random_episode(rng, 5, 11, 3, True)])
    with pytest.raises(GenworldError, match="already exists.*--force"):
        _write([random_episode(rng, 7, 11, 3, True)])
    assert len(read_episodes("genworld/hopper/medium-v0")[0]) == 5
    _write([random_episode(rng, 7, 11, 3, True)], force=True)
    assert len(read_episodes("genworld/hopper/medium-v0")[0]) == 7
    leftovers = [p.name for p in dataset_dir("genworld/hopper/medium-v0").parents[2].iterdir()]
    assert not [n for n in leftovers if n.startswith(".genworld")]


def test_truncated_hdf5_is_a_one_line_error():
    rng = np.random.default_rng(0)
    folder = _write([random_episode(rng, 50, 11, 3, True) for _ in range(4)])
    path = folder / "data" / "main_data.hdf5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GenworldError, match="corrupt or truncated") as info:
        read_episodes("genworld/hopper/medium-v0")
    assert "\n" not in str(info.value)


def test_nan_and_wrong_dims_and_missing_keys_are_named():
    rng = np.random.default_rng(0)
    folder = _write([random_episode(rng, 6, 11, 3, True)])
    with pytest.raises(GenworldError, match="observation dim 11 disagrees"):
        read_episodes("genworld/hopper/medium-v0", obs_dim=17)
    path = folder / "data" / "main_data.hdf5"
    with h5py.File(path, "r+") as f:
        f["episode_0/rewards"][2] = np.nan
    with pytest.raises(GenworldError, match="non-finite value.*rewards at step 2"):
        read_episodes("genworld/hopper/medium-v0")
    with h5py.File(path, "r+") as f:
        del f["episode_0/actions"]
    with pytest.raises(GenworldError, match="missing field.*actions"):
        read_episodes("genworld/hopper/medium-v0")


def test_missing_dataset_says_how_to_build():
    with pytest.raises(GenworldError, match="genworld data build"):
        read_metadata("genworld/hopper/expert-v0")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(observations=d["observations"][:-1]), "one row more"),
        (lambda d: d["terminations"].__setitem__(1, True), "before its last step"),
        (lambda d: d["truncations"].__setitem__(-1, True), "both terminal and truncated"),
        (lambda d: d["actions"].__setitem__((0, 0), np.inf), "non-finite.*actions at step 0"),
        (lambda d: d.update(rewards=d["rewards"][:-1]), "rewards has 3 entries"),
    ],
)
def test_episode_invariants(mutate, message):
    arrays = {
        "observations": np.zeros((5, 2)),
        "actions": np.zeros((4, 1)),
        "rewards": np.zeros(4),
        "terminations": np.array([0, 0, 0, 1], bool),
        "truncations": np.zeros(4, bool),
    }
    Episode.from_arrays(**{k: v.copy() for k, v in arrays.items()})
    mutate(arrays)
    with pytest.raises(GenworldError, match=message):
        Episode.from_arrays(**arrays)
