"""Minari as the interchange format: atomic writes, validated local reads, ref scores kept.

Writing uses ``minari.create_dataset_from_buffers`` (no jax needed when episodes are given as
arrays) into a staging folder next to the target, then one ``os.replace`` moves it into place, so
a crash never leaves a half-written dataset under its real id. Reading opens the HDF5 files
directly (fast, and every h5py/numpy failure becomes a one-line GenworldError); datasets in other
Minari storage formats are read through ``minari.load_dataset``.

``ref_min_score``/``ref_max_score`` are written through ``storage.update_metadata`` as well, since
some Minari paths drop them silently (PROTOCOL.md), and are verified on read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from genworld.data.episodes import Episode
from genworld.errors import GenworldError
from genworld.types import EnvSpec
from genworld.utils.io import claim

CARD_KEY = "genworld_card"


def datasets_root() -> Path:
    """``MINARI_DATASETS_PATH`` or Minari's default ``~/.minari/datasets``."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    # absolute: Minari joins a relative root onto itself when it writes
    return Path(root).resolve() if root else Path.home() / ".minari" / "datasets"


def dataset_dir(dataset_id: str, root: Path | None = None) -> Path:
    return (Path(root).resolve() if root else datasets_root()) / str(dataset_id)


@contextlib.contextmanager
def minari_root(path: Path) -> Iterator[None]:
    """Point Minari (and genworld's :func:`datasets_root`) at ``path`` while the block runs;
    processes spawned inside it inherit the store (Minari reads the env var)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def gym_env_spec(spec: EnvSpec) -> gym.envs.registration.EnvSpec:
    """The Gymnasium EnvSpec with genworld's observation variant, so Minari can recover the env."""
    base = gym.spec(spec.gym_id)
    return dataclasses.replace(base, kwargs={**base.kwargs, **spec.make_kwargs})


def check_writable(target: Path, *, force: bool) -> None:
    """Fail before any work if the dataset exists (without --force) or the root is not writable;
    remove what killed builds left there (:func:`remove_stale_staging`)."""
    if target.exists() and not force:
        raise GenworldError(
            f"dataset already exists at {target}; pass --force to replace it "
            "(the old one is kept until the new one is complete)"
        )
    root = target.parents[2]
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".genworld-write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
        remove_stale_staging(root)
    except OSError as err:
        raise GenworldError(
            f"cannot write datasets under {root} ({err.strerror}); set MINARI_DATASETS_PATH "
            "to a writable folder"
        ) from None


def write_dataset(
    dataset_id: str,
    spec: EnvSpec,
    episodes: list[Episode],
    *,
    card: dict[str, Any],
    description: str,
    algorithm_name: str,
    force: bool = False,
    root: Path | None = None,
) -> Path:
    """Write ``episodes`` as Minari dataset ``dataset_id`` atomically; returns its folder."""
    root = Path(root).resolve() if root else datasets_root()
    target = dataset_dir(dataset_id, root)
    check_writable(target, force=force)  # (which removes stale staging folders)
    staging = root / f"{STAGING}{uuid.uuid4().hex}"
    try:
        with claim(_lock_of(staging), wait=True):  # held while writing: not stale
            try:
                _write_staged(
                    staging, root, dataset_id, spec, episodes, card, description, algorithm_name
                )
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        _lock_of(staging).unlink(missing_ok=True)
    return target


STAGING = ".genworld-staging-"
"""Prefix of the folder a dataset is written into before it is moved into place."""


def _lock_of(staging: Path) -> Path:
    return staging.with_name(staging.name + ".lock")


def remove_stale_staging(root: Path) -> list[Path]:
    """Remove the staging folders (and replaced datasets) that killed or crashed builds left
    under ``root``: each takes disk space and Minari's listing walks into it. A folder whose
    writer still runs (it holds the folder's lock, also from another machine sharing ``root``)
    is kept. Returns the folders removed."""
    removed = []
    for folder in sorted(root.glob(f"{STAGING}*")) + sorted(root.glob(f"{OLD}*")):
        if folder.name.endswith(".lock"):
            continue
        writer = folder.name.replace(OLD, STAGING, 1)
        with claim(_lock_of(folder.with_name(writer)), wait=False) as free:
            if free:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    for lock in root.glob(f"{STAGING}*.lock"):
        if not lock.with_suffix("").exists():
            with claim(lock, wait=False) as free:
                if free:
                    lock.unlink(missing_ok=True)
    return removed


OLD = ".genworld-old-"
"""Prefix of a replaced dataset (``--force``) until the new one is in place."""


def _write_staged(
    staging: Path,
    root: Path,
    dataset_id: str,
    spec: EnvSpec,
    episodes: list[Episode],
    card: dict[str, Any],
    description: str,
    algorithm_name: str,
) -> None:
    from minari import create_dataset_from_buffers
    from minari.data_collector import EpisodeBuffer

    buffers = [
        EpisodeBuffer(
            id=i,
            observations=ep.observations,
            actions=ep.actions,
            rewards=ep.rewards,
            terminations=ep.terminations,
            truncations=ep.truncations,
        )
        for i, ep in enumerate(episodes)
    ]
    env_spec = gym_env_spec(spec)
    with minari_root(staging), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = create_dataset_from_buffers(
            str(dataset_id),
            buffers,
            env=env_spec,
            eval_env=env_spec,
            algorithm_name=algorithm_name,
            author="genworld",
            author_email="genworld@users.noreply.invalid",
            code_permalink="https://github.com/genworld/genworld",
            observation_space=gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, (spec.act_dim,), np.float32),
            ref_min_score=spec.ref_min_score,
            ref_max_score=spec.ref_max_score,
            description=description,
        )
        dataset.storage.update_metadata(
            {
                "ref_min_score": spec.ref_min_score,
                "ref_max_score": spec.ref_max_score,
                CARD_KEY: json.dumps(card, sort_keys=True),
            }
        )
    _install(staging, root, str(dataset_id))


def _install(staging: Path, root: Path, dataset_id: str) -> None:
    """Copy namespace metadata that is missing, then atomically move the dataset into place."""
    parts = dataset_id.split("/")
    for depth in range(1, len(parts)):
        namespace = Path(*parts[:depth])
        (root / namespace).mkdir(parents=True, exist_ok=True)
        src = staging / namespace / "namespace_metadata.json"
        dst = root / namespace / "namespace_metadata.json"
        if src.exists() and not dst.exists():
            shutil.copyfile(src, dst)
    target = root / dataset_id
    old = None
    if target.exists():
        old = root / staging.name.replace(STAGING, OLD, 1)  # under the staging folder's lock
        os.replace(target, old)
    os.replace(staging / dataset_id, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_metadata(dataset_id: str, root: Path | None = None) -> dict[str, Any]:
    """Minari's ``metadata.json`` of a local dataset, with the genworld card decoded."""
    folder = dataset_dir(dataset_id, root)
    path = folder / "data" / "metadata.json"
    if not folder.exists():
        raise GenworldError(
            f"dataset {dataset_id} not found under {folder.parent.parent.parent}; build it with "
            f"`genworld data build {dataset_id}` or set MINARI_DATASETS_PATH"
        )
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise GenworldError(
            f"dataset {dataset_id}: {path} is missing; the dataset is incomplete, rebuild it "
            "with --force"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GenworldError(
            f"dataset {dataset_id}: metadata.json is corrupt ({err}); rebuild with --force"
        ) from None
    if CARD_KEY in metadata and isinstance(metadata[CARD_KEY], str):
        with contextlib.suppress(json.JSONDecodeError):
            metadata[CARD_KEY] = json.loads(metadata[CARD_KEY])
    return metadata


def ref_scores(metadata: dict[str, Any], dataset_id: str) -> tuple[float, float]:
    """The stored reference returns; a dataset without them cannot be scored."""
    try:
        ref_min, ref_max = float(metadata["ref_min_score"]), float(metadata["ref_max_score"])
    except (KeyError, TypeError, ValueError):
        raise GenworldError(
            f"dataset {dataset_id}: ref_min_score/ref_max_score missing from its Minari metadata; "
            "rebuild it with genworld, or add them with dataset.storage.update_metadata"
        ) from None
    if not ref_max > ref_min:
        raise GenworldError(
            f"dataset {dataset_id}: ref_max_score ({ref_max}) must exceed ref_min_score ({ref_min})"
        )
    return ref_min, ref_max


def read_episodes(
    dataset_id: str,
    *,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    root: Path | None = None,
) -> list[Episode]:
    """All episodes of a local Minari dataset, each validated (dims checked when given)."""
    metadata = read_metadata(dataset_id, root)
    folder = dataset_dir(dataset_id, root) / "data"
    if metadata.get("data_format", "hdf5") != "hdf5":
        return _read_with_minari(dataset_id, root, obs_dim, act_dim)
    path = folder / "main_data.hdf5"
    check_memory(dataset_id, path)
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = sorted((k for k in f if k.startswith("episode_")), key=lambda k: int(k[8:]))
            if len(keys) != int(metadata.get("total_episodes", len(keys))):
                raise GenworldError(
                    f"dataset {dataset_id}: {len(keys)} episodes in {path.name}, metadata says "
                    f"{metadata.get('total_episodes')}; the file is truncated, rebuild with --force"
                )
            # no field may have more rows than the whole dataset (observations: one more per
            # episode): a corrupt shape is refused before numpy tries to allocate it
            steps = metadata.get("total_steps")
            rows = int(steps) + len(keys) if steps is not None else None
            return [
                _episode_from_group(f[k], f"{dataset_id} {k}", obs_dim, act_dim, rows) for k in keys
            ]
    except GenworldError:
        raise
    except FileNotFoundError:
        raise GenworldError(
            f"dataset {dataset_id}: {path} is missing; rebuild it with --force"
        ) from None
    # h5py: a corrupt heap; MemoryError: a corrupt shape too large to allocate
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, MemoryError) as err:
        raise GenworldError(
            f"dataset {dataset_id}: cannot read {path.name} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'corrupt'}); the file is corrupt or "
            "truncated, rebuild it with --force"
        ) from None


_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


def _episode_from_group(group, where: str, obs_dim, act_dim, max_rows: int | None = None):
    missing = [name for name in _FIELDS if name not in group]
    if missing:
        raise GenworldError(f"{where}: missing field(s) {', '.join(missing)}; rebuild the dataset")
    for name in _FIELDS:
        shape = group[name].shape
        if max_rows is not None and (not shape or shape[0] > max_rows):
            raise GenworldError(
                f"{where}: {name} has shape {shape}, more rows than the dataset's "
                f"{max_rows}; the file is corrupt, rebuild it with --force"
            )
    arrays = {name: group[name][()] for name in _FIELDS}
    return Episode.from_arrays(**arrays, obs_dim=obs_dim, act_dim=act_dim, where=where)


def _read_with_minari(dataset_id, root, obs_dim, act_dim) -> list[Episode]:
    import minari

    with minari_root(root or datasets_root()):
        dataset = minari.load_dataset(str(dataset_id))
        return [
            Episode.from_arrays(
                ep.observations,
                ep.actions,
                ep.rewards,
                ep.terminations,
                ep.truncations,
                obs_dim=obs_dim,
                act_dim=act_dim,
                where=f"{dataset_id} episode {ep.id}",
            )
            for ep in dataset.iterate_episodes()
        ]


def local_dataset_ids(root: Path | None = None) -> list[str]:
    """Every Minari dataset id found under the root (any namespace)."""
    root = root or datasets_root()
    if not root.exists():
        return []
    ids = []
    for metadata in root.rglob("data/metadata.json"):
        rel = metadata.parent.parent.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts):
            ids.append(rel.as_posix())
    return sorted(ids)


def available_memory() -> int | None:
    """Bytes of physical memory available now (Linux), or None where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(dataset_id: str, path: Path, factor: float = 3.0) -> None:
    """Refuse to load a dataset that cannot fit: arrays in memory take about the file's size
    (uncompressed float32/64), and loading holds ~``factor`` copies at the peak."""
    available = available_memory()
    if available is None or not path.exists():
        return
    need = path.stat().st_size * factor
    if need > available:
        raise GenworldError(
            f"dataset {dataset_id}: loading needs about {need / 2**30:.1f} GiB of memory, "
            f"{available / 2**30:.1f} GiB are available; free memory or use a smaller dataset "
            "(genworld data build ID --steps N)"
        )
