"""A world model trained on several envs, used on a dataset that holds some of them.

MrCoM's scenario adaptation (seed 002, Alg. 2) rolls a model trained on every training
scenario of hopper, walker and cheetah out from one target scenario's data: the agent's dataset
has one env, the model several. :func:`on_envs` gives the model as that dataset sees it: the
dataset's env ``k`` is the model's env of the same name, observations and actions are padded to
the model's widths on the way in and cut to the dataset's on the way out. Every model meeting
the :class:`~genworld.world_models.base.WorldModel` contract works through it (TGW, MrCoM, RSSM,
the MLP ensemble), because their ``encode`` reads a dataset only through ``specs``, ``envs``,
``obs_max`` and ``act_max`` and only the envs its start states come from.
"""

from __future__ import annotations

from typing import Any

import torch

from genworld.data.multi_env import MultiEnvDataset
from genworld.errors import GenworldError
from genworld.types import EnvSpec
from genworld.world_models.base import WMStep


def on_envs(model: Any, dataset: MultiEnvDataset) -> Any:
    """``model`` itself when its envs are ``dataset``'s (same names, same order), else an
    :class:`EnvSubset` of it for ``dataset``'s envs; a dataset env the model lacks, or one with
    other sizes, is an error naming the model's envs."""
    names = [s.name for s in model.specs]
    if names == [s.name for s in dataset.specs]:
        return model
    return EnvSubset(model, dataset.specs)


class _ModelSpaceData:
    """``dataset`` seen with the model's env list: the dataset's envs at their model indices,
    nothing at the others (no start state comes from them)."""

    def __init__(self, dataset: MultiEnvDataset, specs: list[EnvSpec], env_map: list[int]):
        self.specs = list(specs)
        self.envs: list[Any] = [None] * len(specs)
        for k, m in enumerate(env_map):
            self.envs[m] = dataset.envs[k]
        self.obs_max = max(s.obs_dim for s in specs)
        self.act_max = max(s.act_dim for s in specs)


class EnvSubset:
    """``model`` (frozen) on some of its envs: the world-model verbs in the dataset's env
    indices and padded widths (module docstring)."""

    def __init__(self, model: Any, specs: list[EnvSpec]):
        names = [s.name for s in model.specs]
        env_map = []
        for spec in specs:
            if spec.name not in names:
                raise GenworldError(
                    f"the world model covers {names}, not {spec.name!r}: train it with that env's "
                    "data, or give the target data under one of its envs"
                )
            own = model.specs[names.index(spec.name)]
            if (own.obs_dim, own.act_dim) != (spec.obs_dim, spec.act_dim):
                raise GenworldError(
                    f"env {spec.name!r}: obs {spec.obs_dim}/act {spec.act_dim} here, obs "
                    f"{own.obs_dim}/act {own.act_dim} in the world model; give data of its sizes"
                )
            env_map.append(names.index(spec.name))
        if isinstance(model, torch.nn.Module):
            model.requires_grad_(False).eval()
        self.model, self.specs = model, list(specs)
        self.env_map = torch.tensor(env_map, dtype=torch.int64)
        self.obs_max = max(s.obs_dim for s in specs)
        self.act_max = max(s.act_dim for s in specs)

    @property
    def normalizer(self):
        return self.model.normalizer

    def _model_env(self, env_idx: torch.Tensor) -> torch.Tensor:
        return self.env_map.to(env_idx.device)[env_idx]

    def _pad(self, x: torch.Tensor, width: int) -> torch.Tensor:
        out = torch.zeros(*x.shape[:-1], width, device=x.device, dtype=x.dtype)
        out[..., : x.shape[-1]] = x
        return out

    def encode(self, dataset: MultiEnvDataset, env_idx: torch.Tensor, index: torch.Tensor) -> Any:
        view = _ModelSpaceData(dataset, self.model.specs, self.env_map.tolist())
        return self.model.encode(view, self._model_env(env_idx), index)

    @torch.no_grad()
    def next(
        self,
        state: Any,
        observations: torch.Tensor | None,
        actions: torch.Tensor,
        env_idx: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> WMStep:
        obs = None if observations is None else self._pad(observations, self.model.obs_max)
        step = self.model.next(
            state,
            obs,
            self._pad(actions, self.model.act_max),
            None if env_idx is None else self._model_env(env_idx),
            generator,
            deterministic,
        )
        return WMStep(
            step.next_observations[:, : self.obs_max],
            step.extrinsic,
            step.uncertainty,
            step.terminations,
            step.state,
        )

    def with_observations(self, state: Any, observations: torch.Tensor) -> Any:
        return self.model.with_observations(state, self._pad(observations, self.model.obs_max))
