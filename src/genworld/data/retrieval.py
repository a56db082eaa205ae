"""Retrieval of pre-training trajectories near a target task (WPT, seed 004, §3.3 eq. 5).

Every trajectory of the pre-training data (or every segment of one) is keyed by the features
``e(o_0)`` of its first observation, ``e`` being a world model's encoder (the RSSM's
:meth:`~genworld.world_models.rssm.RSSMWorldModel.features`, passed in as a function so that this
module needs no world model). Given the features of a target task's first observations, a key's
distance is its L2 distance to the nearest of them (eq. 5: ``D = ‖e(o_on) − e(o_off)‖₂``), and the
``k`` nearest keys among the trajectories with the target's action dimension are retrieved (WPT:
the top 500; its code, zhaoyi11/ncrl ``src/finetune.py``, drops other action sizes after the
search, we search only among the right ones so that ``k`` of them come back).

Two exact backends give the same neighbours: ``faiss`` (``IndexFlatL2``, the ``retrieval`` extra:
``pip install -e ".[retrieval]"``, as WPT) finds each query's ``k`` nearest keys, and torch
(``torch.cdist``) compares every key with every query; either way the candidates are ranked by the
same torch distance, ties by key order. A key in the overall top ``k`` is always in its nearest
query's top ``k``, so faiss's candidates hold every true neighbour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from genworld.data.multi_env import MultiEnvDataset
from genworld.errors import GenworldError

BACKENDS = ("auto", "faiss", "torch")
FEATURE_CHUNK = 4096
"""Keys whose features are computed together (bounds the encoder's activations)."""


@dataclass(frozen=True)
class RetrievalConfig:
    """What eq. 5's retrieval returns and how it searches."""

    k: int = 500
    """Trajectories (or segments) retrieved (WPT §3.3: the top 500)."""
    segment_len: int = 0
    """0: whole episodes, keyed by their first observation (WPT); n > 0: each episode cut into
    consecutive segments of n steps (the last one shorter), each keyed by its own first."""
    backend: str = "auto"
    """auto (faiss when installed, else torch), faiss or torch: both exact, the same neighbours."""

    def validate(self) -> None:
        if self.k < 1 or self.segment_len < 0 or self.backend not in BACKENDS:
            raise GenworldError(
                f"RetrievalConfig(k={self.k}, segment_len={self.segment_len}, "
                f"backend={self.backend!r}) is invalid: k ≥ 1, segment_len ≥ 0, backend one of "
                f"{', '.join(BACKENDS)}"
            )


@dataclass(frozen=True)
class Segments:
    """Trajectories (or segments) of a dataset: env, first transition and length of each."""

    env_idx: torch.Tensor  # (N,) int64 env of the dataset
    start: torch.Tensor  # (N,) int64 first transition, an index into that env's storage
    length: torch.Tensor  # (N,) int64 transitions
    distance: torch.Tensor | None = None  # (N,) L2 distance to the nearest query, once retrieved

    def __len__(self) -> int:
        return len(self.env_idx)

    def take(self, rows: torch.Tensor) -> Segments:
        pick = lambda x: None if x is None else x[rows]  # noqa: E731
        return Segments(*(pick(x) for x in (self.env_idx, self.start, self.length, self.distance)))


def segments(dataset: MultiEnvDataset, segment_len: int = 0) -> Segments:
    """Every episode of every env in storage order, or (``segment_len`` > 0) its consecutive
    segments of ``segment_len`` steps."""
    env_idx, start, length = [], [], []
    for k, env in enumerate(dataset.envs):
        firsts = torch.nonzero(env.timesteps == 0).flatten()  # (E,) episode starts
        lengths = env.steps_left[firsts]  # (E,)
        if segment_len > 0:
            pieces = (lengths + segment_len - 1) // segment_len  # (E,) segments per episode
            episode = torch.repeat_interleave(torch.arange(len(firsts)), pieces)
            first_piece = torch.cumsum(pieces, 0) - pieces  # index of each episode's first
            offset = (torch.arange(len(episode)) - first_piece[episode]) * segment_len
            firsts = firsts[episode] + offset
            lengths = torch.clamp(lengths[episode] - offset, max=segment_len)
        env_idx.append(torch.full((len(firsts),), k, dtype=torch.int64))
        start.append(firsts)
        length.append(lengths)
    return Segments(torch.cat(env_idx), torch.cat(start), torch.cat(length))


def first_observations(dataset: MultiEnvDataset, found: Segments) -> torch.Tensor:
    """The first observation of each segment, zero-padded ``(N, obs_max)``."""
    out = torch.zeros(len(found), dataset.obs_max)
    for k, env in enumerate(dataset.envs):
        sel = found.env_idx == k
        out[sel, : env.spec.obs_dim] = env.observations[found.start[sel]]
    return out


def nearest(
    keys: torch.Tensor, queries: torch.Tensor, k: int, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``keys (N, D)`` nearest to any row of ``queries (Q, D)``: their indices
    and L2 distances to their nearest query, nearest first, ties by index. Exact with either
    backend (the two can differ only between keys tied at exactly the k-th distance)."""
    if backend not in BACKENDS:
        raise GenworldError(f"retrieval backend {backend!r} is unknown: use {', '.join(BACKENDS)}")
    keys, queries = keys.float().cpu(), queries.float().cpu()
    k = min(k, len(keys))
    use_faiss = backend == "faiss" or (backend == "auto" and faiss_available())
    candidates = _faiss_candidates(keys, queries, k) if use_faiss else torch.arange(len(keys))
    found = torch.cdist(queries, keys[candidates], compute_mode="donot_use_mm_for_euclid_dist")
    distance = found.min(0).values  # (C,) to the nearest query
    order = torch.argsort(distance, stable=True)[:k]  # candidates are in index order
    return candidates[order], distance[order]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss_candidates(keys: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices of every key among some query's ``k`` nearest (faiss, exact L2)."""
    try:
        import faiss
    except ImportError:
        raise GenworldError(
            "retrieval backend faiss needs the retrieval extra: pip install -e '.[retrieval]' "
            "(faiss-cpu), or use backend torch (exact, the same neighbours)"
        ) from None
    index = faiss.IndexFlatL2(keys.shape[1])
    index.add(np.ascontiguousarray(keys.numpy()))
    _, found = index.search(np.ascontiguousarray(queries.numpy()), k)  # (Q, k)
    return torch.unique(torch.from_numpy(found[found >= 0]).long())  # sorted


def retrieve(
    dataset: MultiEnvDataset,
    features: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    queries: torch.Tensor,
    act_dim: int,
    cfg: RetrievalConfig = RetrievalConfig(),
) -> Segments:
    """Eq. 5: the ``cfg.k`` trajectories (or segments) of ``dataset`` with ``act_dim``-dim actions
    whose first observation's features are nearest to ``queries (Q, D)`` (the target task's first
    observations through the same ``features``), nearest first, with their distances.
    ``features(observations (N, obs_max), env_idx (N,)) -> (N, D)``: the encoder."""
    cfg.validate()
    every = segments(dataset, cfg.segment_len)
    act_dims = torch.tensor([s.act_dim for s in dataset.specs])
    same = every.take(torch.nonzero(act_dims[every.env_idx] == act_dim).flatten())
    if len(same) == 0:
        raise GenworldError(
            f"no pre-training trajectory has {act_dim}-dim actions (the envs have "
            f"{sorted(set(act_dims.tolist()))}); add data of the target's embodiment"
        )
    first = first_observations(dataset, same)
    keys = torch.cat(
        [
            features(first[i : i + FEATURE_CHUNK], same.env_idx[i : i + FEATURE_CHUNK]).cpu()
            for i in range(0, len(same), FEATURE_CHUNK)
        ]
    )
    rows, distance = nearest(keys, queries, cfg.k, cfg.backend)
    found = same.take(rows)
    return Segments(found.env_idx, found.start, found.length, distance)


def retrieved_dataset(dataset: MultiEnvDataset, found: Segments) -> MultiEnvDataset:
    """The retrieved trajectories (or segments) as a dataset of their own, one env per env of
    ``dataset`` that has any (in ``dataset``'s order), each segment an episode. Reward-free:
    the stored rewards are set to zero (WPT's offline data has none); terminations are kept and
    a segment cut before its episode's end is truncated there."""
    from genworld.data.episodes import Episode

    data = []
    for k, env in enumerate(dataset.envs):
        rows = torch.nonzero(found.env_idx == k).flatten()
        episodes = []
        for start, length in zip(
            found.start[rows].tolist(), found.length[rows].tolist(), strict=True
        ):
            steps = slice(start, start + length)
            observations = torch.cat([env.observations[steps], env.next_observations[steps][-1:]])
            terminal = bool(env.terminations[start + length - 1])
            terminations = np.zeros(length, dtype=bool)
            terminations[-1] = terminal
            episodes.append(
                Episode.from_arrays(
                    observations.numpy(),
                    env.actions[steps].numpy(),
                    np.zeros(length, dtype=np.float32),
                    terminations,
                    ~terminations & (np.arange(length) == length - 1),
                    obs_dim=env.spec.obs_dim,
                    act_dim=env.spec.act_dim,
                    where=f"retrieved {env.spec.name} segment at {start}",
                )
            )
        if episodes:
            data.append((env.spec, episodes))
    if not data:
        raise GenworldError(
            "nothing was retrieved: give k ≥ 1 and data of the target's action size"
        )
    return MultiEnvDataset(data)


__all__ = [
    "BACKENDS",
    "RetrievalConfig",
    "Segments",
    "faiss_available",
    "first_observations",
    "nearest",
    "retrieve",
    "retrieved_dataset",
    "segments",
]
