"""World-model accuracy on held-out episodes: k-step open-loop errors per env.

From a held-out start state (with its dataset history as the prompt, for TGW) the model is fed
the dataset's own actions for k steps on its own predictions (deterministic: member mean, no
sampling). Errors are normalised with the training data's statistics: observation MSE averaged
over the env's real dims in units of each dim's std, reward MSE in units of the reward std. The
*mean predictor* (always predicts the training mean) scores ≈ 1 on both by construction. The
*copy predictor* (``COPY``: the start observation at every step, the training mean's reward) is
the error of a model that predicts no change: a model near it has not learned the dynamics,
however small its one-step error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.utils.io import save_figure

HORIZONS = (1, 5, 10)
COPY = "copy"
"""``k_step_errors``' model that predicts no change (see the module docstring)."""


def open_loop_starts(
    held: MultiEnvDataset, horizon: int, per_env: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start transitions with at least ``horizon`` steps left in their episode."""
    g = torch.Generator().manual_seed(seed)
    envs, idx = [], []
    for k, data in enumerate(held.envs):
        candidates = torch.nonzero(data.steps_left >= horizon).flatten()
        if len(candidates) == 0:
            continue
        pick = candidates[torch.randint(len(candidates), (per_env,), generator=g)]
        envs.append(torch.full((per_env,), k, dtype=torch.int64))
        idx.append(pick)
    return torch.cat(envs), torch.cat(idx)


@torch.no_grad()
def k_step_errors(
    model,
    held: MultiEnvDataset,
    normalizer: Normalizer,
    horizons=HORIZONS,
    per_env: int = 256,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``{env: {obs_h1, rew_h1, obs_h5, ...}}`` for ``model`` (None = the mean predictor,
    ``COPY`` = the copy predictor)."""
    h_max = max(horizons)
    env_idx, index = open_loop_starts(held, h_max, per_env, seed)
    b = len(env_idx)
    obs = torch.zeros(b, held.obs_max)
    true_obs = torch.zeros(h_max + 1, b, held.obs_max)
    true_act = torch.zeros(h_max, b, held.act_max)
    true_rew = torch.zeros(h_max, b)
    for k, data in enumerate(held.envs):
        sel = env_idx == k
        d, a = data.spec.obs_dim, data.spec.act_dim
        start = index[sel]
        true_obs[0, sel, :d] = data.observations[start]
        for j in range(h_max):
            true_obs[j + 1, sel, :d] = data.next_observations[start + j]
            true_act[j, sel, :a] = data.actions[start + j]
            true_rew[j, sel] = data.rewards[start + j]
    obs[:] = true_obs[0]
    std, mean = normalizer.obs_std[env_idx], normalizer.obs_mean[env_idx]
    mask = held.obs_masks()[env_idx].float()
    learned = model is not None and not (isinstance(model, str) and model == COPY)
    state = model.encode(held, env_idx, index) if learned else None
    result: dict[str, dict[str, float]] = {s.name: {} for s in held.specs}
    for j in range(h_max):
        if not learned:
            pred_obs = mean.clone() if model is None else true_obs[0]
            pred_rew = normalizer.reward_mean[env_idx]
        else:
            out = model.next(state, obs, true_act[j], env_idx, deterministic=True)
            state, pred_obs, pred_rew = out.state, out.next_observations, out.extrinsic
            obs = pred_obs
        if j + 1 in horizons:
            obs_err = (((pred_obs - true_obs[j + 1]) / std).pow(2) * mask).sum(-1) / mask.sum(
                -1
            )  # (B,)
            rew_err = ((pred_rew - true_rew[j]) / normalizer.reward_std[env_idx]).pow(2)  # (B,)
            for k, spec in enumerate(held.specs):
                sel = env_idx == k
                result[spec.name][f"obs_h{j + 1}"] = float(obs_err[sel].mean())
                result[spec.name][f"rew_h{j + 1}"] = float(rew_err[sel].mean())
    return result


@torch.no_grad()
def resample_sensitivity(
    model, held: MultiEnvDataset, per_env: int = 256, seed: int = 0
) -> dict[str, dict[str, float]] | None:
    """Is the stochastic state alive? Per env, from ``per_env`` held-out start states (their
    dataset history as the prompt) and the data's actions: the variance of each member's decoded
    next observation (its mean) when u is drawn afresh from the prior (``u_var``: half the mean
    squared difference of two draws), beside the observation head's own variance (``head_var``)
    and their ratio, all in units of the training data's per-dim variance, averaged over real
    dims. None for a model without a stochastic state (MLP ensemble, TGW w/o RSSM)."""
    cfg = getattr(model, "cfg", None)
    if not hasattr(model, "forward_sequence") or not getattr(cfg, "use_stochastic", False):
        return None
    env_idx, index = open_loop_starts(held, 1, per_env, seed)
    memory = model.encode(held, env_idx, index)
    actions = torch.zeros(len(env_idx), held.act_max)
    for k, data in enumerate(held.envs):
        sel = env_idx == k
        actions[sel, : data.spec.act_dim] = data.actions[index[sel]]
    rows, last = torch.arange(len(env_idx)), memory.count - 1
    act_seq = memory.actions.clone()
    act_seq[rows, last] = actions
    valid = torch.arange(memory.observations.shape[1])[None] < memory.count[:, None]
    g = torch.Generator().manual_seed(seed)
    shape = (cfg.ensemble_size, len(env_idx), 1, cfg.stoch_dim)
    first, second = (
        model.forward_sequence(
            memory.observations,
            act_seq,
            memory.prev_rewards,
            env_idx,
            valid,
            query_index=last,
            stoch_noise=torch.randn(shape, generator=g),
        )
        for _ in range(2)
    )
    u_var = (first["obs_mean"] - second["obs_mean"]).pow(2)[:, :, 0] / 2  # (E, B, obs_max)
    head_var = first["obs_logvar"][:, :, 0].exp()
    mask = held.obs_masks()[env_idx].float()[None]  # (1, B, obs_max)
    result = {}
    for k, spec in enumerate(held.specs):
        sel = env_idx == k
        n = (mask[:, sel].sum() * u_var.shape[0]).clamp_min(1)
        u = float((u_var[:, sel] * mask[:, sel]).sum() / n)
        head = float((head_var[:, sel] * mask[:, sel]).sum() / n)
        result[spec.name] = {"u_var": u, "head_var": head, "ratio_to_head": u / max(head, 1e-12)}
    return result


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of two 1-D tensors (ties broken by order; 0 when either is constant)."""
    if bool(a.max() == a.min()) or bool(b.max() == b.min()):
        return 0.0
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else 0.0


@torch.no_grad()
def penalty_calibration(
    model, data: MultiEnvDataset, normalizer: Normalizer, per_env: int = 512, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Does the model's uncertainty (the penalty of MBPO-style agents) see its own error?

    One step from ``per_env`` random transitions of each env of ``data`` with the data's own
    actions (deterministic model: member means). Per env: mean ``uncertainty``; one-step
    observation MSE and signed reward error (``reward_bias``), both in units of the training
    data's stds; and the Spearman rank correlation between uncertainty and the step's error
    (observation MSE + squared reward error). Run it on held-out data and on data of another
    policy (e.g. random): a useful penalty is higher off the data and correlates with the error.
    """
    g = torch.Generator().manual_seed(seed)
    env_idx = torch.cat(
        [torch.full((per_env,), k, dtype=torch.int64) for k in range(data.num_envs)]
    )
    index = torch.cat([torch.randint(len(d), (per_env,), generator=g) for d in data.envs])
    obs = torch.zeros(len(env_idx), data.obs_max)
    act = torch.zeros(len(env_idx), data.act_max)
    next_obs, rew = torch.zeros_like(obs), torch.zeros(len(env_idx))
    for k, d in enumerate(data.envs):
        sel, od = env_idx == k, d.spec.obs_dim
        obs[sel, :od], next_obs[sel, :od] = (
            d.observations[index[sel]],
            d.next_observations[index[sel]],
        )
        act[sel, : d.spec.act_dim], rew[sel] = d.actions[index[sel]], d.rewards[index[sel]]
    state = model.encode(data, env_idx, index)
    out = model.next(state, obs, act, env_idx, deterministic=True)
    mask = data.obs_masks()[env_idx].float()
    obs_err = (
        ((out.next_observations - next_obs) / normalizer.obs_std[env_idx]).pow(2) * mask
    ).sum(-1) / mask.sum(-1)
    rew_err = (out.extrinsic - rew) / normalizer.reward_std[env_idx]
    result = {}
    for k, spec in enumerate(data.specs):
        sel = env_idx == k
        u = out.uncertainty[sel]
        result[spec.name] = {
            "uncertainty": float(u.mean()),
            "obs_mse": float(obs_err[sel].mean()),
            "reward_bias": float(rew_err[sel].mean()),
            "reward_rmse": float(rew_err[sel].pow(2).mean().sqrt()),
            "spearman": spearman(u, obs_err[sel] + rew_err[sel].pow(2)),
        }
    return result


def calibration_table(named: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per (env, data)."""
    lines = [
        "| env | data | uncertainty | obs MSE h1 | reward bias | reward RMSE | Spearman(u, error) |",
        "|---|---|---|---|---|---|---|",
    ]
    envs = list(dict.fromkeys(env for rows in named.values() for env in rows))
    for env in envs:
        for label, rows in named.items():
            if env in rows:
                r = rows[env]
                lines.append(
                    f"| {env} | {label} | {r['uncertainty']:.4g} | {r['obs_mse']:.4f} | "
                    f"{r['reward_bias']:+.3f} | {r['reward_rmse']:.3f} | {r['spearman']:+.2f} |"
                )
    return "\n".join(lines)


def error_table(named: dict[str, dict[str, dict[str, float]]], horizons=HORIZONS) -> str:
    """Markdown table: one row per (env, model), columns obs/rew error per horizon."""
    header = (
        "| env | model | "
        + " | ".join(f"obs h{h}" for h in horizons)
        + " | "
        + " | ".join(f"rew h{h}" for h in horizons)
        + " |"
    )
    lines = [header, "|" + "---|" * (2 + 2 * len(horizons))]
    envs = list(dict.fromkeys(env for errors in named.values() for env in errors))
    for env in envs:
        for name, errors in named.items():
            if env not in errors:
                continue
            e = errors[env]
            cells = [f"{e[f'obs_h{h}']:.4f}" for h in horizons] + [
                f"{e[f'rew_h{h}']:.4f}" for h in horizons
            ]
            lines.append(f"| {env} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_errors(
    named: dict[str, dict[str, dict[str, float]]], path: Path, horizons=HORIZONS
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(env for errors in named.values() for env in errors))
    fig, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for name, errors in named.items():
            if env in errors:
                ax.plot(
                    horizons, [errors[env][f"obs_h{h}"] for h in horizons], marker="o", label=name
                )
        ax.set_yscale("log")
        ax.set_title(env)
        ax.set_xlabel("open-loop horizon k")
        ax.set_ylabel("obs MSE (normalised)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)
