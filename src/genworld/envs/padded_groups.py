"""Several :class:`~genworld.envs.groups.EnvGroup` s stepped as one batch (online agents, PPO):
their observations padded to ``obs_max`` into one ``(C, obs_max)`` tensor, group after group (all
copies of a group together); and the deterministic returns of one env under a batched policy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from genworld.envs.groups import EnvGroup, EnvInfo


class PaddedGroups:
    """``groups`` as one batch of ``rows`` env copies, on ``device``."""

    def __init__(self, groups: list[EnvGroup], obs_max: int, device: torch.device):
        self.groups, self.obs_max, self.device = groups, obs_max, device
        self.rows = sum(len(grp.envs) for grp in groups)

    def reset(self) -> torch.Tensor:
        return self.pad([grp.reset() for grp in self.groups])

    def pad(self, per_group: list[np.ndarray]) -> torch.Tensor:
        out = torch.zeros(self.rows, self.obs_max)
        start = 0
        for grp, obs in zip(self.groups, per_group, strict=True):
            out[start : start + len(obs), : grp.info.obs_dim] = torch.as_tensor(
                obs, dtype=torch.float32
            )
            start += len(obs)
        return out.to(self.device)

    def step(
        self,
        actions: torch.Tensor,
        scale_rewards: Callable[[EnvGroup, np.ndarray, np.ndarray], np.ndarray],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``actions (C, act_max)`` → padded next observations (reset ones where an episode
        ended), rewards ``(C,)`` on the CPU, each group's passed through
        ``scale_rewards(group, rewards, terminated)``, and dones ``(C,)`` (float, on the
        device)."""
        obs, rewards, dones, start = [], [], [], 0
        for grp in self.groups:
            n = len(grp.envs)
            o, r, term, d = grp.step(actions[start : start + n].cpu().numpy())
            obs.append(o)
            rewards.append(scale_rewards(grp, r, term))
            dones.append(d)
            start += n
        scaled = torch.as_tensor(np.concatenate(rewards), dtype=torch.float32)
        done = torch.as_tensor(np.concatenate(dones), dtype=torch.float32, device=self.device)
        return self.pad(obs), scaled, done

    def pop_returns(self) -> dict[str, float]:
        """Mean return of the episodes each env finished since the last call, by env name."""
        out = {}
        for grp in self.groups:
            if grp.finished:
                out[grp.info.name] = float(np.mean(grp.finished))
                grp.finished = []
        return out

    def close(self) -> None:
        for grp in self.groups:
            grp.close()


def group_returns(
    info: EnvInfo,
    g: int,
    episodes: int,
    seed: int,
    act: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    obs_max: int,
) -> np.ndarray:
    """Returns of ``episodes`` episodes of env ``g``, episode ``i`` reset with ``seed + i``, under
    ``act``: padded raw observations ``(n, obs_max)`` and env indices ``(n,)`` → actions."""
    group = EnvGroup(info, episodes, seed)
    obs = [e.reset(seed=seed + i)[0].reshape(-1) for i, e in enumerate(group.envs)]
    returns, alive = np.zeros(episodes), np.ones(episodes, bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        padded = torch.zeros(len(idx), obs_max)
        padded[:, : info.obs_dim] = torch.as_tensor(
            np.stack([obs[i] for i in idx]), dtype=torch.float32
        )
        actions = act(padded, torch.full((len(idx),), g)).cpu().numpy()
        for j, i in enumerate(idx):
            env_action = group.to_env_actions(actions[j : j + 1])[0]
            o, r, term, trunc, _ = group.envs[i].step(env_action)
            obs[i], returns[i] = np.asarray(o).reshape(-1), returns[i] + r
            alive[i] = not (term or trunc)
    group.close()
    return returns


def padded_masks(infos: Sequence[EnvInfo]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per env, True on its real dims: observations ``(K, obs_max)``, actions ``(K, act_max)``."""
    obs_max = max(i.obs_dim for i in infos)
    act_max = max(i.act_dim for i in infos)
    dims = torch.tensor([i.obs_dim for i in infos])
    adims = torch.tensor([i.act_dim for i in infos])
    return torch.arange(obs_max)[None] < dims[:, None], torch.arange(act_max)[None] < adims[:, None]
