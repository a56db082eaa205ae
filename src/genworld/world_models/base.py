"""The contract every world model meets, so algorithms and evaluation treat them alike.

Padded multi-env tensors everywhere: ``observations (B, obs_max)``, ``actions (B, act_max)``,
``env_idx (B,)``. The verbs (as TD-MPC2's ``encode`` / ``next``): ``encode`` builds a model's
per-rollout state from dataset start states (TGW: its FIFO prompt memory; the MLP ensemble: none)
and ``next`` takes one imagined step from it: next observations, the predicted reward, the
model's uncertainty and terminations in one ``WMStep`` (TGW predicts observation and reward in
one pass, so reward has no verb of its own); ``loss`` is the training objective.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, Protocol

import torch

from genworld.data.multi_env import MultiEnvDataset
from genworld.errors import GenworldError
from genworld.types import EnvSpec


@dataclass(frozen=True)
class WMStep:
    next_observations: torch.Tensor  # (B, obs_max) raw, zero on padding
    extrinsic: torch.Tensor  # (B,) predicted environment reward
    uncertainty: torch.Tensor  # (B,) the model's own uncertainty (TGW: ri, eq. 4)
    terminations: torch.Tensor  # (B,) bool
    state: Any  # per-rollout model state after the step (None if the model has none)


class WorldModel(Protocol):
    specs: list[EnvSpec]

    def sample_batch(
        self, dataset: MultiEnvDataset, batch_size: int, generator: torch.Generator
    ): ...

    def loss(
        self, batch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict]: ...

    def encode(
        self, dataset: MultiEnvDataset, env_idx: torch.Tensor, index: torch.Tensor
    ) -> Any: ...

    def next(
        self,
        state: Any,
        observations: torch.Tensor,
        actions: torch.Tensor,
        env_idx: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> WMStep: ...

    def with_observations(self, state: Any, observations: torch.Tensor) -> Any:
        """``state`` continuing from ``observations`` instead of the model's own last prediction
        (a rollout that clips its observations continues from the clipped ones)."""
        ...


def check_compatible(model_specs: list[EnvSpec], dataset: MultiEnvDataset) -> None:
    """The dataset's envs must be the model's, in the same order, with the same dims."""
    names = [s.name for s in model_specs]
    for k, spec in enumerate(dataset.specs):
        if k >= len(model_specs) or spec.name != model_specs[k].name:
            raise GenworldError(
                f"dataset env #{k} is {spec.name!r} but the world model was built for {names}; "
                "load the datasets in the model's order or train a model for these envs"
            )
        ref = model_specs[k]
        if (spec.obs_dim, spec.act_dim) != (ref.obs_dim, ref.act_dim):
            raise GenworldError(
                f"env {spec.name!r}: dataset dims obs {spec.obs_dim}/act {spec.act_dim} differ from "
                f"the model's obs {ref.obs_dim}/act {ref.act_dim}; rebuild the model for this data"
            )
    if len(dataset.specs) != len(model_specs):
        raise GenworldError(
            f"the world model covers {names}, the dataset {[s.name for s in dataset.specs]}; "
            "give the same envs"
        )


def check_finite(**tensors: torch.Tensor) -> None:
    for name, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise GenworldError(
                f"non-finite values (NaN/inf) in {name}; check the dataset with `genworld data check`"
            )


def registry_terminations(
    specs: list[EnvSpec], next_obs: torch.Tensor, env_idx: torch.Tensor
) -> torch.Tensor:
    """The registry's exact termination functions, applied per env group."""
    done = torch.zeros(len(env_idx), dtype=torch.bool, device=next_obs.device)
    for k, spec in enumerate(specs):
        sel = env_idx == k
        if spec.termination is not None and bool(sel.any()):
            flags = spec.termination(next_obs[sel, : spec.obs_dim].cpu().numpy())
            done[sel] = torch.as_tensor(flags, device=next_obs.device)
    return done


def rows_from(rows: torch.Tensor, new: Any, old: Any) -> Any:
    """A rollout state whose rows ``rows (B,)`` come from ``new`` and the others from ``old``
    (both states of one model: dataclasses of batch-first tensors, or None for a stateless
    model)."""
    if old is None or not is_dataclass(old):
        return new
    pick = lambda a, b: torch.where(rows.view(-1, *[1] * (a.dim() - 1)), a, b)  # noqa: E731
    return replace(
        old, **{f.name: pick(getattr(new, f.name), getattr(old, f.name)) for f in fields(old)}
    )
