"""Property-based fuzz (hypothesis): corrupt datasets, corrupt checkpoints and bad configs must
give a GenworldError with a message, never another exception, and never modify the input."""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from genworld.errors import GenworldError
from genworld.train.checkpoint import load_checkpoint, save_checkpoint

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
COUNTS = {"tried": 0, "clean_error": 0, "loaded_intact": 0}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _mutate(path: Path, kind: str, position: float, flips: list[int]) -> None:
    data = bytearray(path.read_bytes())
    cut = int(position * len(data))
    if kind == "truncate":
        data = data[:cut]
    elif kind == "flip":
        for i, f in enumerate(flips):
            data[(cut + 977 * i) % len(data)] ^= f
    elif kind == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


MUTATION = st.tuples(
    st.sampled_from(["truncate", "flip", "empty", "delete"]),
    st.floats(0.0, 0.999),
    st.lists(st.integers(1, 255), min_size=1, max_size=4),
)

# ------------------------------------------------------------------ checkpoints
_STATE = {"w": torch.arange(12.0).reshape(3, 4), "n": 7, "opt": [{"m": torch.ones(5)}]}


@FUZZ
@given(target=st.sampled_from(["tensors.safetensors", "meta.json"]), mutation=MUTATION)
def test_corrupt_checkpoint_is_a_clean_error(target, mutation):
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp), 5, _STATE)
        kind, position, flips = mutation
        if kind == "delete":
            (path / target).unlink()
        else:
            _mutate(path / target, kind, position, flips)
        before = _digest(path)
        COUNTS["tried"] += 1
        try:
            step, state = load_checkpoint(path)
        except GenworldError as err:
            assert str(err)
            COUNTS["clean_error"] += 1
        else:  # only a no-op mutation (e.g. truncating nothing) may load, and then intact
            assert step == 5
            torch.testing.assert_close(state["w"], _STATE["w"])
            COUNTS["loaded_intact"] += 1
        assert _digest(path) == before, "loading modified the checkpoint"


# ------------------------------------------------------------------ datasets
_DATASET: dict[str, Path] = {}


def _built_dataset() -> Path:
    """One small real dataset, built once, copied for every example."""
    if "root" not in _DATASET:
        root = Path(tempfile.mkdtemp(prefix="gw-fuzz-"))
        old = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = str(root)
        try:
            from genworld.data.build import build_dataset

            build_dataset("hopper-random", steps=400, seed=0, show_progress=False)
        finally:
            if old is not None:
                os.environ["MINARI_DATASETS_PATH"] = old
        _DATASET["root"] = root
    return _DATASET["root"]


def _check_copy(mutate, must_fail: bool = False) -> None:
    from genworld.data.info import check_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "datasets"
        shutil.copytree(_built_dataset(), root)
        folder = root / "genworld" / "hopper" / "random-v0"
        mutate(folder)
        before = _digest(root)
        old = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = str(root)
        COUNTS["tried"] += 1
        try:
            check_dataset("genworld/hopper/random-v0")
        except GenworldError as err:
            assert str(err) and "\n" not in str(err).strip()
            COUNTS["clean_error"] += 1
        else:
            assert not must_fail, "a corrupt dataset passed the check"
            COUNTS["loaded_intact"] += 1
        finally:
            os.environ["MINARI_DATASETS_PATH"] = old or ""
        assert _digest(root) == before, "checking modified the dataset"


@FUZZ
@given(target=st.sampled_from(["data/main_data.hdf5", "data/metadata.json"]), mutation=MUTATION)
@example(target="data/main_data.hdf5", mutation=("flip", 0.82421875, [1, 1]))  # h5py RuntimeError
@example(target="data/main_data.hdf5", mutation=("flip", 0.28596531456006735, [1, 1, 1]))  # shape
def test_byte_corrupt_dataset_is_a_clean_error(target, mutation):
    kind, position, flips = mutation

    def mutate(folder):
        if kind == "delete":
            (folder / target).unlink()
        else:
            _mutate(folder / target, kind, position, flips)

    _check_copy(mutate)


SEMANTIC = st.sampled_from(
    ["nan_obs", "inf_reward", "wrong_obs_dim", "drop_actions", "mid_terminal", "short_actions"]
)


@FUZZ
@given(kind=SEMANTIC, episode=st.integers(0, 50), row=st.integers(0, 10))
def test_semantically_corrupt_dataset_is_named(kind, episode, row):
    def mutate(folder):
        with h5py.File(folder / "data" / "main_data.hdf5", "r+") as f:
            names = sorted(f.keys(), key=lambda n: int(n.split("_")[-1]))
            ep = f[names[episode % len(names)]]
            n = len(ep["rewards"])
            r = row % n
            if kind == "nan_obs":
                obs = ep["observations"][...]
                obs[r, 0] = np.nan
                ep["observations"][...] = obs
            elif kind == "inf_reward":
                rew = ep["rewards"][...]
                rew[r] = np.inf
                ep["rewards"][...] = rew
            elif kind == "wrong_obs_dim":
                obs = ep["observations"][...]
                del ep["observations"]
                ep["observations"] = obs[:, :-1]
            elif kind == "drop_actions":
                del ep["actions"]
            elif kind == "short_actions":
                act = ep["actions"][...]
                del ep["actions"]
                ep["actions"] = act[:-1]
            elif kind == "mid_terminal":
                term = ep["terminations"][...]
                if n < 2:
                    term[...] = True
                    trunc = ep["truncations"][...]
                    trunc[...] = True  # both flags at once is invalid too
                    ep["truncations"][...] = trunc
                else:
                    term[min(r, n - 2)] = True
                ep["terminations"][...] = term

    _check_copy(mutate, must_fail=True)


def test_fuzz_counts_are_reported_and_every_case_was_clean():
    """Runs last in this file: every corrupt case above gave a clean error or loaded intact.
    Run alone (``-k counts``), it tries one case of each kind itself, so it never passes on
    zero cases."""
    if COUNTS["tried"] == 0:
        _one_case_of_each_kind()
    print(f"\nfuzz: {COUNTS}")
    assert COUNTS["tried"] > 0 and COUNTS["clean_error"] > 0, COUNTS


def _one_case_of_each_kind() -> None:
    """A truncated checkpoint, a flipped byte in a dataset's HDF5 file, a NaN observation."""
    test_corrupt_checkpoint_is_a_clean_error.hypothesis.inner_test(
        "tensors.safetensors", ("truncate", 0.5, [1])
    )
    test_byte_corrupt_dataset_is_a_clean_error.hypothesis.inner_test(
        "data/main_data.hdf5", ("flip", 0.82421875, [1, 1])
    )
    test_semantically_corrupt_dataset_is_named.hypothesis.inner_test("nan_obs", 0, 0)
