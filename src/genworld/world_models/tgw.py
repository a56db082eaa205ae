"""TGW world model: task-state prompter + TransRSSM + reward module, an ensemble in one pass.

Paper: "Task-prompt Generalised World Model" (seed 000), §4–5, Algorithms 1–2, eq. 2–8.
There is no reference implementation and the paper gives no hyper-parameters; every choice below
that the paper does not fix is ours and listed under *Deviations*.

Data flow for a sample of env ``k`` (shapes: B batch, L = M prompt steps, E members, D d_model):
- **Task-state prompter** (§5.1, eq. 2): the prompt ``h_t`` is the last M steps of the same task.
  Step ``j`` becomes one token ``W^obs_k o_j + W^act_k a_j + w^rew r_{j-1} + e_k + p_j``: per-env
  projections (``PerEnvLinear``; padded dims are masked out before projecting), a learned env
  embedding ``e_k`` and a position embedding ``p_j``. At rollout time a FIFO memory starts from
  the dataset's own history of the start state and is replaced step by step by imagined (or real)
  steps (``PromptMemory``).
- **TransRSSM** (§5.2, Algorithm 1): a causal transformer over the prompt gives the deterministic
  state ``s_{t+1}`` at each position. The stochastic state ``u_{t+1}`` has, as in PlaNet's RSSM
  (the paper's ref. [10]), a prior ``p(u | s_{t+1})`` and a posterior ``q(u | s_{t+1}, o_{t+1})``:
  training decodes from posterior samples and adds the KL between the two (DreamerV3's balancing
  and free bits, ``kl_dyn`` / ``kl_rep`` / ``free_nats``); imagination samples the prior. The
  observation model decodes ``o_{t+1} = f(s_{t+1}, u_{t+1})`` into each env's own dims
  (``EnsemblePerEnvHead``) as a Gaussian over the normalised next observation (residual on o_t);
  imagined observations are drawn from it (``sample_obs_noise``) or are its mean.
- **Reward module** (eq. 5): ``re_{t+1} = f(h_t, s_{t+1}, u_{t+1})``, with ``h_t`` entering as the
  current step's token, Gaussian over the per-env normalised reward.
- **Ensemble** (§5.3): E transformers + stochastic heads with different initialisations, run as
  one batched computation (``EnsembleCausalTransformer``). Intrinsic reward ``ri = Var_members(s)``
  averaged over latent dims (eq. 4), returned by ``next()`` with ``re``; the agent forms
  ``r = re − β·ri`` (eq. 6).
- **Loss** (eq. 7–8): negative log-likelihood (or MSE) of every next observation and reward of the
  window (causal mask: position j sees steps ≤ j); no loss on the behaviour policy's actions.
- **Termination**: the registry's exact functions on the predicted next observation
  (``termination="registry"``, default) or a learned head (``"learned"``, BCE).

Deviations (choices the paper leaves open, or changes we made):
- one token per step (o, a, previous r summed) instead of interleaved s/a tokens: same
  information, a 2–3× shorter sequence; the first token of a window carries no reward;
- every member has its own observation model, reward module and termination head (θ_o per member,
  Algorithm 1): with these shared, the members agree off the data and a reward bias on the
  policy's actions goes unseen by the penalty (measured: docs/notes/history.md);
- the default intrinsic reward is the members' spread of the predicted *reward* (its std, in the
  env's reward units), not eq. 4's variance of ``s`` (``intrinsic="state"``, kept). With a model
  per member, each member's ``s`` lives in its own latent space: its variance is *lower* off the
  data than on it and anti-correlated with the one-step error, while the reward spread is higher
  off the data (measured: docs/notes/history.md, "Does the uncertainty penalty see the model's
  error?"). ``"observation"`` uses the variance of the members' decoded next observations
  (MOPO-like);
- the paper names an RSSM without writing its posterior or KL: we take PlaNet's structure with
  DreamerV3's KL weights (0.5 / 0.1) and free bits (1 nat); "w/o RSSM" has no stochastic state
  (u is the prior's mean: no posterior, no KL), and sampling the observation head is its own
  switch (``sample_obs_noise``);
- "w/o prompt" (Table 2) = a context of one step (the current observation and action only). It
  keeps the env embedding ``e_k``: in multi-env runs each env's own tokenizers and heads name the
  env anyway (they must: the dims differ), and in the unseen-task study a family's tasks are one
  env, so ``e_k`` carries no task id there; what the ablation removes is the task's history.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.nn.mlp import EnsembleMLP
from genworld.nn.tokenizers import EnsemblePerEnvHead, PerEnvLinear
from genworld.nn.transformer import EnsembleCausalTransformer
from genworld.types import EnvSpec, SeqBatch
from genworld.world_models.base import WMStep, check_compatible, check_finite, registry_terminations
from genworld.world_models.prompt_memory import (
    PromptMemory,
    push,
    row_chunks,
    sample_start_states,
    start_memory,
    with_current_observations,
)
from genworld.world_models.terms import (
    balanced_kl,
    gaussian_nll,
    intrinsic_reward,
    likelihood_term,
    normalised,
    previous,
    soft_clamp,
)
from genworld.world_models.tgw_config import TGWConfig

ROLLOUT_CHUNK = 1024
"""Rows of a rollout step computed together: 10,000 rows at once make (E, B, 256) activations
of 51 MB, above glibc's largest mmap threshold (32 MiB), so every step would fault them in
afresh; chunks avoid that and keep the activations in the cache (chunk sizes compared:
docs/notes/history.md)."""


class TGWWorldModel(nn.Module):
    def __init__(self, specs: list[EnvSpec], cfg: TGWConfig, normalizer: Normalizer):
        super().__init__()
        cfg.validate()
        self.cfg, self.specs = cfg, list(specs)
        k, d, e = len(specs), cfg.d_model, cfg.ensemble_size
        obs_dims, act_dims = [s.obs_dim for s in specs], [s.act_dim for s in specs]
        self.obs_max, self.act_max = max(obs_dims), max(act_dims)
        self.normalizer = normalizer
        # task-state prompter
        self.obs_token = PerEnvLinear(k, self.obs_max, d, obs_dims)
        self.act_token = PerEnvLinear(k, self.act_max, d, act_dims)
        self.rew_token = nn.Linear(1, d)
        self.env_embedding = nn.Embedding(k, d)
        self.pos_embedding = nn.Parameter(0.02 * torch.randn(cfg.effective_context, d))
        # TransRSSM (ensemble)
        self.transformer = EnsembleCausalTransformer(e, d, cfg.n_layers, cfg.n_heads)
        self.stoch_head = EnsembleMLP(e, d, [cfg.hidden], 2 * cfg.stoch_dim)  # prior p(u | s)
        # posterior q(u | s, o_{t+1}): the next observation through its own per-env projection
        self.post_obs = PerEnvLinear(k, self.obs_max, d, obs_dims)
        self.post_head = EnsembleMLP(e, 2 * d, [cfg.hidden], 2 * cfg.stoch_dim)
        # observation model, reward module and learned termination: one MLP per member (θ_o in
        # every member, Algorithm 1), each with per-env outputs
        su_dim, h = d + cfg.stoch_dim, cfg.hidden
        self.obs_net = EnsemblePerEnvHead(e, k, su_dim, h, self.obs_max, obs_dims, groups=2)
        self.rew_net = EnsemblePerEnvHead(e, k, su_dim + d, h, 1, [1] * k, groups=2)
        self.term_net = EnsemblePerEnvHead(e, k, su_dim, h, 1, [1] * k)
        obs_masks = torch.zeros(k, self.obs_max, dtype=torch.bool)
        act_masks = torch.zeros(k, self.act_max, dtype=torch.bool)
        for i, (od, ad) in enumerate(zip(obs_dims, act_dims, strict=True)):
            obs_masks[i, :od], act_masks[i, :ad] = True, True
        self.register_buffer("obs_masks", obs_masks)
        self.register_buffer("act_masks", act_masks)

    # ---------------------------------------------------------------- forward pass
    def forward_sequence(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        prev_rew: torch.Tensor,
        env_idx: torch.Tensor,
        valid: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
        query_index: torch.Tensor | None = None,
        stoch_noise: torch.Tensor | None = None,
        next_obs_n: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Raw ``obs (B, L, obs_max)``, ``act (B, L, act_max)``, ``prev_rew (B, L)`` → predictions
        of the next step at every position, for every member (with ``query_index (B,)``: only
        at that position, as ``L = 1``: the rollout fast path). ``term_logit`` only with
        ``termination="learned"`` (the head is ~10% of a rollout step's FLOPs).

        ``next_obs_n (B, L, obs_max)``, the normalised next observations (training): u comes from
        the posterior ``q(u | s, o_{t+1})`` and the output carries ``prior`` and ``post`` (mean,
        log-std) for the KL; without it (imagination) u comes from the prior."""
        norm = self.normalizer
        obs_n = (obs - norm.obs_mean[env_idx][:, None]) / norm.obs_std[env_idx][:, None]
        obs_n = obs_n * self.obs_masks[env_idx][:, None]  # (B, L, obs_max)
        rew_n = (prev_rew - norm.reward_mean[env_idx][:, None]) / norm.reward_std[env_idx][:, None]
        rew_n = rew_n * (torch.arange(obs.shape[1], device=obs.device) > 0)  # first slot: none
        length = obs.shape[1]
        tokens = (
            self.obs_token(obs_n, env_idx)
            + self.act_token(act, env_idx)
            + self.rew_token(rew_n[..., None])
            + self.env_embedding(env_idx)[:, None]
            + self.pos_embedding[:length]
        )  # (B, L, D)
        s = self.transformer(
            tokens, valid, query_index
        )  # (E, B, L, D) deterministic states s_{t+1}
        if query_index is not None:
            rows = torch.arange(len(env_idx), device=obs.device)
            tokens, obs_n = tokens[rows, query_index][:, None], obs_n[rows, query_index][:, None]
        prior = gaussian_head(self.stoch_head, s)
        u_mean, u_logstd = prior
        post = None
        if next_obs_n is not None and self.cfg.use_stochastic:
            embedded = self.post_obs(next_obs_n, env_idx).expand(s.shape[0], -1, -1, -1)
            post = gaussian_head(self.post_head, torch.cat([s, embedded], -1))
            u_mean, u_logstd = post
        if self.cfg.use_stochastic and not deterministic:
            noise = stoch_noise
            if noise is None:
                noise = torch.randn(u_mean.shape, generator=generator, device=u_mean.device)
            u = u_mean + u_logstd.exp() * noise  # (E, B, L, S)
        else:
            u = u_mean
        su = torch.cat([s, u], -1)  # (E, B, L, D+S)
        env_b = env_idx[None, :, None]  # broadcast to (E, B, L)
        delta, obs_logvar = self.obs_net(su, env_b).unbind(-2)  # (E, B, L, obs_max), 0 on pad
        context = tokens.unsqueeze(0).expand(s.shape[0], -1, -1, -1)  # h_t's current token
        rew_out = self.rew_net(torch.cat([su, context], -1), env_b)[..., 0]  # (E, B, L, 2)
        out = {
            "s": s,
            "u": u,
            "obs_mean": obs_n + delta,  # (E, B, L, obs_max) normalised next observation
            "obs_logvar": soft_clamp(obs_logvar),
            "rew_mean": rew_out[..., 0],
            "rew_logvar": soft_clamp(rew_out[..., 1]),  # (E, B, L)
            "obs_n": obs_n,
            "prior": prior,
        }
        if post is not None:
            out["post"] = post
        if self.cfg.termination == "learned":  # the registry's exact functions need no head
            out["term_logit"] = self.term_net(su, env_b)[..., 0, 0]  # (E, B, L)
        return out

    # ---------------------------------------------------------------- training loss
    def loss(
        self, batch: SeqBatch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Eq. 8 over every position of every window, summed over members."""
        env_idx, valid = batch.env_idx, batch.step_mask
        target_obs = normalised(
            batch.next_observations, env_idx, self.normalizer.obs_mean, self.normalizer.obs_std
        )
        out = self.forward_sequence(
            batch.observations,
            batch.actions,
            previous(batch.rewards),
            env_idx,
            valid,
            generator,
            next_obs_n=target_obs * self.obs_masks[env_idx][:, None],
        )
        target_rew = normalised(
            batch.rewards, env_idx, self.normalizer.reward_mean, self.normalizer.reward_std
        )
        obs_mask = self.obs_masks[env_idx][:, None] & valid[..., None]  # (B, L, obs_max)
        obs_err = (out["obs_mean"] - target_obs).pow(2)  # (E, B, L, obs_max)
        rew_err = (out["rew_mean"] - target_rew).pow(2)  # (E, B, L)
        obs_term = likelihood_term(obs_err, out["obs_logvar"], self.cfg.loss)
        rew_term = likelihood_term(rew_err, out["rew_logvar"], self.cfg.loss)
        n_obs, n_steps = obs_mask.sum().clamp_min(1), valid.sum().clamp_min(1)
        obs_loss = (obs_term * obs_mask).sum((1, 2, 3)) / n_obs  # (E,)
        rew_loss = (rew_term * valid).sum((1, 2)) / n_steps  # (E,)
        total = (obs_loss + rew_loss).sum()
        kl_metrics = {}
        if "post" in out:  # PlaNet's KL between posterior and prior, DreamerV3-balanced
            cfg = self.cfg
            kl_loss, kl = balanced_kl(
                out["post"], out["prior"], cfg.kl_dyn, cfg.kl_rep, cfg.free_nats
            )
            total = total + ((kl_loss * valid).sum((1, 2)) / n_steps).sum()
            kl_metrics["wm/kl"] = ((kl * valid).sum() / (n_steps * kl.shape[0])).detach()
        metrics = {
            "wm/obs_mse": ((obs_err * obs_mask).sum() / (n_obs * obs_err.shape[0])).detach(),
            "wm/rew_mse": ((rew_err * valid).sum() / (n_steps * rew_err.shape[0])).detach(),
            "wm/obs_loss": obs_loss.mean().detach(),
            "wm/rew_loss": rew_loss.mean().detach(),
            **kl_metrics,
        }
        if self.cfg.termination == "learned":
            target = batch.terminations.expand_as(out["term_logit"])
            bce = F.binary_cross_entropy_with_logits(out["term_logit"], target, reduction="none")
            term_loss = (bce * valid).sum() / n_steps
            total = total + term_loss
            metrics["wm/term_loss"] = term_loss.detach()
        return total, metrics

    def finetune_reward(
        self,
        dataset: MultiEnvDataset,
        steps: int,
        seed: int,
        batch_size: int = 16,
        lr: float = 1e-4,
    ) -> TGWWorldModel:
        """A copy whose reward modules alone are trained ``steps`` Adam steps on ``dataset``
        with eq. 8's reward term (Gaussian NLL); everything else frozen (TGW-finetune, §6.2)."""
        tuned = copy.deepcopy(self).train()
        params = list(tuned.rew_net.parameters())
        for p in tuned.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            batch = tuned.sample_batch(dataset, batch_size, generator)
            env_idx, valid = batch.env_idx, batch.step_mask
            out = tuned.forward_sequence(
                batch.observations,
                batch.actions,
                previous(batch.rewards),
                env_idx,
                valid,
                generator,
            )
            target = normalised(
                batch.rewards, env_idx, tuned.normalizer.reward_mean, tuned.normalizer.reward_std
            )
            term = gaussian_nll((out["rew_mean"] - target).pow(2), out["rew_logvar"])
            loss = (term * valid).sum() / valid.sum().clamp_min(1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for p in tuned.parameters():
            p.requires_grad_(False)
        return tuned.eval()

    # ---------------------------------------------------------------- simulation
    def sample_batch(
        self, dataset: MultiEnvDataset, batch_size: int, generator: torch.Generator
    ) -> SeqBatch:
        batch = dataset.sample_windows(batch_size, self.cfg.effective_context, generator)
        check_finite(observations=batch.observations, rewards=batch.rewards)
        return batch

    def encode(
        self, dataset: MultiEnvDataset, env_idx: torch.Tensor, index: torch.Tensor
    ) -> PromptMemory:
        check_compatible(self.specs, dataset)
        return self.memory_from_dataset(dataset, env_idx, index)

    @torch.no_grad()
    def next(
        self,
        state: PromptMemory,
        observations: torch.Tensor | None,
        actions: torch.Tensor,
        env_idx: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> WMStep:
        """Act ``actions (B, act_max)`` in every rollout. The observations are the memory's current
        ones (``observations`` is accepted for the shared interface). A random member per rollout
        gives the next observation and reward (as MBPO); ``deterministic`` uses the members' mean
        and no sampling. All members give ``ri`` (eq. 4); rewards are ``re − β·ri`` (eq. 6)."""
        memory = state
        b, m = memory.count.shape[0], memory.observations.shape[1]
        if m != self.cfg.effective_context:
            raise GenworldError(
                f"prompt memory has {m} slots, the model was trained with M={self.cfg.effective_context}; "
                "build it with model.encode(...)"
            )
        rows = torch.arange(b, device=actions.device)
        last = memory.count - 1
        act_seq = memory.actions.clone()
        act_seq[rows, last] = actions * self.act_masks[memory.env_idx]
        valid = torch.arange(m, device=actions.device)[None] < memory.count[:, None]
        draws = self._draws(b, generator, deterministic, actions.device)
        parts = [
            self._predict(
                memory.observations[c],
                act_seq[c],
                memory.prev_rewards[c],
                memory.env_idx[c],
                valid[c],
                last[c],
                {k: v[:, c] if k == "stoch" else v[c] for k, v in draws.items()},
            )
            for c in row_chunks(b, ROLLOUT_CHUNK)
        ]
        next_obs, extrinsic, intrinsic, terminations = (
            torch.cat(x) for x in zip(*parts, strict=True)
        )
        new_memory = push(memory, act_seq, next_obs, extrinsic)
        return WMStep(
            next_obs,
            extrinsic,
            intrinsic,
            terminations,
            new_memory,
        )

    def with_observations(self, state: PromptMemory, observations: torch.Tensor) -> PromptMemory:
        """The prompt memory continuing from ``observations`` (its current slot replaced)."""
        return with_current_observations(state, observations)

    def _draws(
        self, b: int, generator: torch.Generator | None, deterministic: bool, device
    ) -> dict[str, torch.Tensor]:
        """A step's random numbers for all ``b`` rollouts, drawn in one fixed order before the
        rows are split into chunks, so the chunking does not change them."""
        if deterministic:
            return {}
        cfg, e = self.cfg, self.cfg.ensemble_size
        draws = {}
        if cfg.use_stochastic:
            draws["stoch"] = torch.randn(e, b, 1, cfg.stoch_dim, generator=generator, device=device)
        draws["member"] = torch.randint(e, (b,), generator=generator, device=device)
        if cfg.loss == "nll" and cfg.sample_obs_noise:
            draws["obs"] = torch.randn(b, self.obs_max, generator=generator, device=device)
        return draws

    def _predict(self, obs, act_seq, prev_rew, env, valid, last, draws: dict) -> tuple:
        """One chunk of rollouts: ``(next_obs, extrinsic, intrinsic, terminations)``; ``draws``
        from ``_draws`` (empty: deterministic, the members' mean)."""
        out = self.forward_sequence(
            obs,
            act_seq,
            prev_rew,
            env,
            valid,
            deterministic=not draws,
            query_index=last,
            stoch_noise=draws.get("stoch"),
        )
        pick = lambda x: x[:, :, 0]  # noqa: E731  (E, B, 1, ...) → (E, B, ...)
        s, obs_mean, obs_logvar = pick(out["s"]), pick(out["obs_mean"]), pick(out["obs_logvar"])
        rew_mean = pick(out["rew_mean"])
        term_logit = pick(out["term_logit"]) if "term_logit" in out else None  # (E, B)
        if not draws:
            next_n, rew_n = obs_mean.mean(0), rew_mean.mean(0)
            logit = term_logit.mean(0) if term_logit is not None else None
        else:
            member, rows = draws["member"], torch.arange(len(env), device=env.device)
            next_n, rew_n = obs_mean[member, rows], rew_mean[member, rows]
            logit = term_logit[member, rows] if term_logit is not None else None
            if "obs" in draws:
                next_n = next_n + (0.5 * obs_logvar[member, rows]).exp() * draws["obs"]
        obs_mask = self.obs_masks[env]
        next_obs = (
            next_n * self.normalizer.obs_std[env] + self.normalizer.obs_mean[env]
        ) * obs_mask
        extrinsic = rew_n * self.normalizer.reward_std[env] + self.normalizer.reward_mean[env]
        intrinsic = intrinsic_reward(
            self.cfg.intrinsic, s, obs_mean, rew_mean, obs_mask, self.normalizer.reward_std[env]
        )
        if logit is not None:
            terminations = logit > 0
        else:
            terminations = registry_terminations(self.specs, next_obs, env)
        return next_obs, extrinsic, intrinsic, terminations

    def memory_from_dataset(
        self, dataset: MultiEnvDataset, env_idx: torch.Tensor, index: torch.Tensor
    ) -> PromptMemory:
        """Prompts for rollouts starting at transition ``index`` of env ``env_idx``: the up to
        M−1 dataset steps before it in the same episode, then the start observation."""
        m = self.cfg.effective_context
        return start_memory(dataset, env_idx, index, m, self.obs_max, self.act_max)


def gaussian_head(head: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log-std) of a diagonal Gaussian from an ensemble head on ``x (E, B, L, ·)``;
    the log-std kept in [-5, 2]."""
    mean, logstd = head(x.flatten(1, 2)).unflatten(1, x.shape[1:3]).chunk(2, -1)
    return mean, logstd.clamp(-5.0, 2.0)


__all__ = ["PromptMemory", "TGWConfig", "TGWWorldModel", "sample_start_states"]
