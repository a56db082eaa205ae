"""CMT: a trajectory auto-encoder pretrained on offline data, then improved by prompt tuning.

Paper: seed 001 (``/work/shared/seeds/001_7dac0ec803c8d671.txt``), "Contextual Transformer for
Offline Reinforcement Learning", §4.1 and Fig. 1. No reference implementation is public (the
paper's reproducibility statement promises one); the planner follows Trajectory Transformer
(jannerm/trajectory-transformer, ``trajectory/search/core.py`` ``beam_plan``, commit 3b7654a5)
and the network Decision Transformer (:mod:`genworld.algos.dt`).

Two stages in one agent; ``update`` runs the first ``pretrain_updates`` updates as stage 1, the
rest as stage 2 (``prompt_tuning=False``, the ``cmt-no-pt`` variant: no stage 2, the updates
after stage 1 change nothing, so it is scored on the very model CMT tunes).

1. Representation (pretraining). A bidirectional trajectory encoder A_e turns the history
   segment before a window (or the window itself, ``prompt_source``) into a policy prompt z;
   a causal GPT generator A_g reads
   ``[z; (s, a, r) tokens]`` of the window and predicts each a_t, r_t and s_{t+1}
   (:mod:`genworld.algos.cmt_model`). ``L = L1 + γ·L2``: L1 the MSE of action, reward and next
   state (eq. 2, :func:`reconstruction_loss`), L2 InfoNCE on prompts (eq. 3, :func:`info_nce`)
   whose positive is another segment of the same trajectory and whose negatives are the other
   rows' segments, temperature α.
2. Improvement (prompt tuning). The pretrained model is frozen. Once, at the first stage-2
   update, a fixed subset of dataset states is relabelled with the first action of a beam-search
   plan that uses A_g as the model (:mod:`genworld.algos.cmt_planner`); then only an adaptor
   z' = L(z; ξ), a zero-initialised residual MLP, is trained with
   ``L3 = MSE(â, π(s, τ<t; L(z))) + β‖z − L(z)‖²`` (eq. 4–5, :func:`prompt_tuning_loss`).

Acting: the window is the episode's last K steps, z comes from the H steps before it (none in
the first K steps of an episode; with ``prompt_source="trajectory"``: from the last H completed
steps, none at the first step, a segment that pretraining never shows empty), and the action is
A_g's at the current step given L(z).

Multi-env: per-env projections and heads (padded dims never leak in, predicted padded dims are
exactly zero), an env embedding on every token, every loss over real dims of real steps only.

Deviations:
- Appendix A.2 (hyper-parameters) is lost from the seed text. Not in the seed text, and taken
  from Decision Transformer (kzl/CORL): K=20, embedding 128, 3 layers, 1 head, dropout 0.1,
  AdamW lr 1e-4, weight decay 1e-4, warm-up 10k, batch 64, gradient clip 0.25, 100k pretraining
  updates (kzl: 10 iterations of 10k). Not in the seed text, and taken from Trajectory
  Transformer's planner (``config/offline.py``, commit 0b4e0fc0): horizon 15, beam 128, expand
  2, discount 0.99. Not in the seed text, and chosen here: history length H = K, prompt size
  128, γ = 0.1 and β = 1 (inside the paper's ablation ranges γ ∈ [1e-6, 1], β ∈ [0, 50]),
  α = 0.1, 2,048 relabelled states, adaptor width 256 and its lr 1e-4.
- A value head (the discounted return after each step, scaled by ``value_scale``) is trained
  beside L1 (``value_weight``): TT's beam search scores plans with a value at the horizon,
  and A_g has none in the paper.
- Planner candidates are the policy's action plus Gaussian noise with the generator's own
  residual spread (per env and action dim, over the relabelled states; ``planner_noise_scale``
  times it): TT samples its discretised action tokens from its model's distribution, and A_g
  regresses a deterministic action, whose MSE residuals are its predictive spread. The
  noise-free action is always a candidate.
- Prompts are L2-normalised inside InfoNCE's logits (cosine similarity, as SimCLR/MoCo); eq. 3
  writes the raw dot product, whose logits are unbounded.
- By default the history segment precedes the window A_g reconstructs (Fig. 1: "the policy
  prompt from the history trajectory"), so the prompt never sees the actions it is asked to
  predict; ``prompt_source="trajectory"`` (the ``cmt-ae`` variants) encodes the window itself,
  §4.1's auto-encoder reading. Segments of the anchor's own episode are not its negatives;
  rows with an empty history (episode starts) are left out of L2.
- TT's termination penalty is not used; plans may run through terminal states.
- Task prompts (§4.2; ``task_prompt_len`` > 0): the anchor and its InfoNCE positive each read
  their own context segment of the task, drawn independently (one shared context would let
  InfoNCE match a row by its context alone), and half of pretraining's context segments
  (``context_truncation``) are cut to a uniform length in 0 … C, because zero-shot acting
  starts from an empty context that grows with the episode. Neither is in the seed text.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn
from torch.nn import functional as F

from genworld.algos.cmt_config import PRESETS, STAGE_TWO_FIELDS, CMTConfig
from genworld.algos.cmt_model import (
    CMTNet,
    EpisodePolicy,
    Predictions,
    PromptAdaptor,
    cat_batches,
    discounted_returns_after,
    gather_contexts,
    random_segments,
    sample_pretraining,
)
from genworld.algos.cmt_planner import TuningSet, plan_actions, residual_std
from genworld.algos.registry import AlgoContext, resolve_config
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.types import SeqBatch
from genworld.utils.device import fused_optimizer


def build(ctx: AlgoContext) -> CMT:
    cfg = resolve_config(CMTConfig, PRESETS, ctx)
    if cfg.prompt_tuning and ctx.updates is not None and cfg.pretrain_updates >= ctx.updates:
        raise GenworldError(
            f"cmt: pretrain_updates ({cfg.pretrain_updates:,}) ≥ the run's {ctx.updates:,} "
            "updates, so prompt tuning would never run: lower pretrain_updates below the "
            "run's updates (or use cmt-no-pt for the untuned model)"
        )
    return CMT(ctx.dataset, ctx.normalizer, cfg, ctx.device, seed=ctx.seed, contexts=ctx.prompts)


# ---------------------------------------------------------------- losses


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` (broadcast to the target) is 1."""
    mask = mask.expand_as(target)
    return ((prediction - target).pow(2) * mask).sum() / mask.sum().clamp_min(1.0)


def reconstruction_loss(
    pred: Predictions, target: Predictions, step_mask, obs_mask, act_mask
) -> dict[str, torch.Tensor]:
    """L1 (eq. 2): MSE of the action (policy), the reward (reward function) and the next state
    (dynamics) at every real step, over each env's real dims; the three terms, to be summed."""
    steps = step_mask.float()  # (B, L)
    return {
        "action": masked_mse(pred.actions, target.actions, steps[..., None] * act_mask[:, None]),
        "reward": masked_mse(pred.rewards, target.rewards, steps),
        "next_state": masked_mse(
            pred.next_observations, target.next_observations, steps[..., None] * obs_mask[:, None]
        ),
    }


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    temperature: float,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """L2 (eq. 3): ``-log exp(z_q·z_+/α) / Σ_i exp(z_q·z_i/α)``, averaged over anchors; row i's
    positive is ``positives[i]``, its negatives the other rows' positives (K = batch size).
    With ``groups (B,)``, another row of the anchor's own group is not one of its negatives."""
    logits = anchors @ positives.T / temperature  # (B, B)
    if groups is not None:
        same = (groups[:, None] == groups[None, :]) & ~torch.eye(
            len(groups), dtype=torch.bool, device=groups.device
        )
        logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(len(anchors), device=anchors.device)
    return F.cross_entropy(logits, labels)


def prompt_tuning_loss(
    actions: torch.Tensor,
    relabeled: torch.Tensor,
    act_mask: torch.Tensor,
    prompt: torch.Tensor,
    tuned: torch.Tensor,
    beta: float,
) -> dict[str, torch.Tensor]:
    """L3 (eq. 4): MSE between the policy's actions under the tuned prompt and the relabelled
    actions â (real dims), plus the behaviour constraint β·‖z − L(z)‖² (mean over rows).

    Eq. 4 sums a distance D(â_t, π(s_t, τ<t)) over a trajectory's T steps against one β term.
    The seed text names neither D nor T: here each row is one relabelled step (its window's
    last), D is the mean squared error over the action's real dims, and both terms are means
    over rows. Read with D a sum over dims and T the window's K steps, the paper's imitation
    term would be K × act_dim times ours, so its β (the ablation's 50) and ours differ in scale
    by that unknown factor."""
    imitation = masked_mse(actions, relabeled, act_mask)
    constraint = (prompt - tuned).pow(2).sum(-1).mean()
    return {
        "imitation": imitation,
        "constraint": constraint,
        "total": imitation + beta * constraint,
    }


def prompt_spread(prompts: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
    """The share of the prompts' mean squared norm that varies between rows of the same env:
    ``Σ_k Σ_{i∈k} ‖z_i − z̄_k‖² / Σ_i ‖z_i‖²`` for ``prompts (N, P)`` (0: one prompt for every
    state, 1: prompts centred on zero)."""
    k = int(env_idx.max()) + 1
    counts = torch.zeros(k, dtype=prompts.dtype, device=prompts.device).index_add_(
        0, env_idx, torch.ones_like(env_idx, dtype=prompts.dtype)
    )
    means = (
        prompts.new_zeros(k, prompts.shape[-1]).index_add_(0, env_idx, prompts)
        / counts.clamp_min(1.0)[:, None]
    )
    return (prompts - means[env_idx]).pow(2).sum() / prompts.pow(2).sum().clamp_min(1e-12)


def task_info_nce(agent: CMT, task_prompt, task_positive, tasks) -> torch.Tensor:
    """§4.2's task-level InfoNCE: the task prompt of each row against that of another
    (context, history) pair of its task; other rows of the same task are not its negatives."""
    context, history = (agent.inputs(part) for part in task_positive)
    _, positive = agent.net.encode_prompts(history, tasks, context)
    return info_nce(
        F.normalize(task_prompt, dim=-1),
        F.normalize(positive, dim=-1),
        agent.cfg.temperature,
        tasks,
    )


# ---------------------------------------------------------------- agent


class CMT:
    """The agent contract (registry.py): pretraining, then relabelling and prompt tuning."""

    def __init__(
        self,
        dataset: MultiEnvDataset,
        normalizer: Normalizer,
        cfg: CMTConfig,
        device,
        *,
        seed: int = 0,
        contexts: MultiEnvDataset | None = None,
    ):
        self.cfg, self.dataset, self.device, self.seed = cfg, dataset, device, seed
        self.context_data = contexts if contexts is not None else dataset
        """Where ``task_context="offline"`` draws task prompts: env k's data for env k."""
        self.normalizer = normalizer.to(device)
        self.net = CMTNet(dataset, cfg).to(device)
        self.adaptor = PromptAdaptor(cfg.prompt_dim, cfg.adaptor_hidden).to(device)
        self.opt = torch.optim.AdamW(
            self.net.parameters(),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            fused=fused_optimizer(device),
        )
        warmup = cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda step: min((step + 1) / warmup, 1.0)
        )
        self.tune_opt = torch.optim.Adam(self.adaptor.parameters(), lr=cfg.tune_lr)
        self.value_targets = [
            discounted_returns_after(env, cfg.discount) * cfg.value_scale for env in dataset.envs
        ]
        self.act_masks = dataset.act_masks().float().to(device)  # (num_envs, act_max)
        self.relabeled: dict[str, torch.Tensor] | None = None
        """``env_idx``, ``current`` (flat transition in its env) and ``actions`` (â) of the
        relabelled states; kept in checkpoints, the rest is recomputed from them."""
        self.tuning_set: TuningSet | None = None
        self.updates = 0

    # ------------------------------------------------------------ inputs

    def normalise(self, observations, actions, rewards, timesteps, step_mask, env_idx) -> tuple:
        """Raw padded steps → network inputs (per-env normalised observations and rewards)."""
        env_idx = self.net.param_env(env_idx)  # shared parameters: the normaliser's env 0
        obs = self.normalizer.normalize_obs(observations.transpose(0, 1), env_idx).transpose(0, 1)
        rew = self.normalizer.normalize_reward(rewards.T, env_idx).T  # (B, L)
        m = step_mask.float()
        return obs * m[..., None], actions * m[..., None], rew * m, timesteps, step_mask

    def inputs(self, batch: SeqBatch) -> tuple:
        return self.normalise(
            batch.observations,
            batch.actions,
            batch.rewards,
            batch.timesteps,
            batch.step_mask,
            batch.env_idx,
        )

    def policy(
        self, history: tuple, window: tuple, env_idx: torch.Tensor, context: tuple | None = None
    ) -> torch.Tensor:
        """Actions ``(B, L, act_max)`` of A_g under the adapted prompt L(A_e(history)) (with a
        task prompt: L(A_e(context, [SEP], history)))."""
        prompt = self.adaptor(self.net.encode(history, env_idx, context))
        return self.net.generate(prompt, window, env_idx).actions

    def offline_contexts(self, env_idx: torch.Tensor, generator: torch.Generator) -> tuple:
        """Network inputs of one random task-prompt segment per row from each row's env in
        :attr:`context_data` (rows sorted by env or not)."""
        env_idx = env_idx.cpu()
        order = torch.argsort(env_idx, stable=True)
        parts = [
            random_segments(
                self.context_data, k, int((env_idx == k).sum()), self.cfg.task_prompt_len, generator
            )
            for k in env_idx[order].unique_consecutive().tolist()
        ]
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        batch = cat_batches(parts).to(self.device)
        return tuple(v[inverse.to(self.device)] for v in self.inputs(batch))

    # ------------------------------------------------------------ stage 1

    def pretrain_step(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        self.net.train()
        batch = sample_pretraining(
            self.dataset,
            self.value_targets,
            cfg.batch_size,
            cfg.context_len,
            cfg.history_len,
            generator,
            cfg.sampling,
            cfg.task_prompt_len,
            cfg.context_truncation,
        ).to(self.device)
        window, env_idx = batch.window, batch.window.env_idx
        window_inputs = self.inputs(window)
        context = None if batch.context is None else self.inputs(batch.context)
        if cfg.prompt_source == "trajectory":  # z of the window itself (§4.1's auto-encoder)
            source, encoded = batch.window, window_inputs
        else:  # z of the history before the window
            source, encoded = batch.history, self.inputs(batch.history)
        prompt, task_prompt = self.net.encode_prompts(encoded, env_idx, context)
        pred = self.net.generate(prompt, window_inputs, env_idx)
        next_obs = self.normalizer.normalize_obs(
            window.next_observations.transpose(0, 1), self.net.param_env(env_idx)
        )
        target = Predictions(
            actions=window.actions,
            rewards=window_inputs[2],  # normalised rewards
            next_observations=next_obs.transpose(0, 1) * window.step_mask[..., None],
            values=batch.values,
        )
        l1 = reconstruction_loss(pred, target, window.step_mask, window.obs_mask, window.act_mask)
        value = masked_mse(pred.values, target.values, window.step_mask.float())
        # (B,) rows whose encoded segment has steps (histories are empty at episode starts)
        encoded_rows = source.step_mask.any(dim=1)
        l2 = torch.zeros((), device=self.device)
        if int(encoded_rows.sum()) > 1:
            positive_context = None
            if batch.positive_context is not None:
                positive_context = self.inputs(batch.positive_context)
            positive = self.net.encode(self.inputs(batch.positive), env_idx, positive_context)
            l2 = info_nce(
                F.normalize(prompt[encoded_rows], dim=-1),
                F.normalize(positive[encoded_rows], dim=-1),
                cfg.temperature,
                batch.episodes[encoded_rows],
            )
        l2_task = torch.zeros((), device=self.device)
        if task_prompt is not None:
            l2_task = task_info_nce(self, task_prompt, batch.task_positive, env_idx)
        contrastive = cfg.contrastive_weight * (l2 + l2_task)
        loss = sum(l1.values()) + cfg.value_weight * value + contrastive
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip_grad)
        self.opt.step()
        self.scheduler.step()
        return {
            "losses/action_mse": l1["action"].detach(),
            "losses/reward_mse": l1["reward"].detach(),
            "losses/next_state_mse": l1["next_state"].detach(),
            "losses/value_mse": value.detach(),
            "losses/info_nce": l2.detach(),
            "losses/task_info_nce": l2_task.detach(),
            "charts/learning_rate": torch.tensor(self.scheduler.get_last_lr()[0]),
        }

    # ------------------------------------------------------------ stage 2

    @torch.no_grad()
    def relabel(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw ``relabel_states`` dataset states and plan a better action for each (once)."""
        cfg, dataset = self.cfg, self.dataset
        counts = dataset.env_counts(cfg.relabel_states, generator, cfg.sampling)
        env_idx = torch.repeat_interleave(torch.arange(dataset.num_envs), torch.tensor(counts))
        current = torch.cat(
            [
                torch.randint(len(env), (n,), generator=generator)
                for env, n in zip(dataset.envs, counts, strict=True)
            ]
        )
        data_set = self.contexts(env_idx, current, torch.zeros(len(current), dataset.act_max))
        data_actions = data_set.window[1][:, -1]  # (N, act_max) the dataset's own actions
        predicted = self.net.generate(data_set.prompts, data_set.window, data_set.env_idx)
        policy = predicted.actions[:, -1]  # (N, act_max) the pretrained policy's actions
        spread = residual_std(
            data_actions - policy, data_set.env_idx, self.act_masks
        )  # (K, act_max): the generator's predictive std
        noise = cfg.planner_noise_scale * spread
        actions = plan_actions(
            self.net, self.normalizer, self.act_masks, cfg, data_set, noise, generator
        )  # (N, act_max)
        dims = self.act_masks[data_set.env_idx].sum()
        stats = {  # mean per true action dim, kept with the relabelled set
            "action_change": (actions - data_actions).abs().sum() / dims,
            "policy_change": (actions - policy).abs().sum() / dims,
            "noise_std": noise[data_set.env_idx].sum() / dims,
            "prompt_effect": self.prompt_effect(data_set, policy) / dims,
            "zero_prompt_effect": self.zero_prompt_effect(data_set, policy) / dims,
            "prompt_spread": prompt_spread(data_set.prompts, data_set.env_idx),
        }
        self.relabeled = {
            "env_idx": env_idx,
            "current": current,
            "actions": actions.cpu(),
            **{f"stats_{k}": v.cpu() for k, v in stats.items()},
        }
        return self.relabel_metrics()

    @torch.no_grad()
    def prompt_effect(self, data_set: TuningSet, policy: torch.Tensor) -> torch.Tensor:
        """How much the pretrained policy reads its prompt: the summed change of its actions
        when each row gets the prompt of another row with its env id as the model sees it (with
        ``shared_params``, every task's rows: another task's prompt), drawn with a generator of
        its own (planning draws nothing less). Near 0, prompt tuning has nothing to move."""
        generator = torch.Generator().manual_seed(self.seed)
        env = data_set.env_idx.cpu()
        perm = torch.arange(len(env))
        for k in env.unique():
            rows = torch.nonzero(env == k).squeeze(1)
            perm[rows] = rows[torch.randperm(len(rows), generator=generator)]
        perm = perm.to(data_set.prompts.device)
        other = self.net.generate(data_set.prompts[perm], data_set.window, data_set.env_idx)
        return (other.actions[:, -1] - policy).abs().sum()

    @torch.no_grad()
    def zero_prompt_effect(self, data_set: TuningSet, policy: torch.Tensor) -> torch.Tensor:
        """How much the pretrained policy reads its prompt at all: the summed change of its
        actions when every prompt is zero. Large beside a small :meth:`prompt_effect`, the
        generator reads the prompt but the encoder's prompts hardly differ."""
        zero = self.net.generate(
            torch.zeros_like(data_set.prompts), data_set.window, data_set.env_idx
        )
        return (zero.actions[:, -1] - policy).abs().sum()

    def relabel_metrics(self) -> dict[str, torch.Tensor]:
        """How far the planner moved the relabelled actions (mean per true action dim): from the
        data's (``action_change``) and from the pretrained policy's (``policy_change``), the
        candidates' noise std, how far another row's prompt and a zero prompt move the
        pretrained policy's actions (``prompt_effect``, ``zero_prompt_effect``), and the share
        of the prompts' squared norm that differs between rows (``prompt_spread``); logged with
        every tuning update."""
        r = self.relabeled or {}
        return {f"relabel/{k[6:]}": v for k, v in r.items() if k.startswith("stats_")}

    @torch.no_grad()
    def contexts(self, env_idx, current, actions) -> TuningSet:
        """The frozen model's view of dataset states: prompt z and window for each."""
        self.net.eval()
        cfg = self.cfg
        history, window = gather_contexts(
            self.dataset, env_idx, current, cfg.context_len, cfg.history_len, cfg.prompt_source
        )
        history, window = history.to(self.device), window.to(self.device)
        context = None
        if cfg.task_prompt_len:  # drawn from a fixed seed: recomputed alike after a resume
            generator = torch.Generator().manual_seed(self.seed)
            context = self.offline_contexts(window.env_idx, generator)
        prompts = self.net.encode(self.inputs(history), window.env_idx, context)
        env_idx = self.net.param_env(window.env_idx)  # the planner's normaliser rows too
        return TuningSet(prompts, self.inputs(window), env_idx, actions.to(self.device))

    def tune_step(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.tuning_set is None:
            self.net.requires_grad_(False)  # frozen from here on
            if self.relabeled is None:
                self.relabel(generator)
            r = self.relabeled
            self.tuning_set = self.contexts(r["env_idx"], r["current"], r["actions"])
        self.net.eval()
        data = self.tuning_set
        rows = torch.randint(len(data.env_idx), (self.cfg.batch_size,), generator=generator)
        rows = rows.to(self.device)
        env_idx, prompt = data.env_idx[rows], data.prompts[rows]
        tuned = self.adaptor(prompt)  # (B, P)
        window = tuple(v[rows] for v in data.window)
        actions = self.net.generate(tuned, window, env_idx).actions[:, -1]  # (B, act_max)
        losses = prompt_tuning_loss(
            actions,
            data.actions[rows],
            self.act_masks[env_idx],
            prompt,
            tuned,
            self.cfg.behaviour_weight,
        )
        self.tune_opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        nn.utils.clip_grad_norm_(self.adaptor.parameters(), self.cfg.clip_grad)
        self.tune_opt.step()
        return {
            **self.relabel_metrics(),
            "losses/tuning_imitation_mse": losses["imitation"].detach(),
            "losses/tuning_constraint": losses["constraint"].detach(),
            # the constraint's scale: ‖z‖² of the pretrained prompts (β's unit, which the
            # paper leaves open)
            "losses/tuning_prompt_sq_norm": prompt.detach().pow(2).sum(-1).mean(),
        }

    # ------------------------------------------------------------ contract

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.updates < self.cfg.pretrain_updates:
            metrics = self.pretrain_step(generator)
        elif self.cfg.prompt_tuning:
            metrics = self.tune_step(generator)
        else:  # CMT w/o PT: the pretrained model as it is (Q1 compares the same model)
            metrics = {}
        self.updates += 1
        return metrics

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        """A one-step window at timestep 0 with an empty history."""
        self.net.eval()
        obs, env_idx = obs.to(self.device), env_idx.to(self.device)
        n, act_max = len(obs), self.dataset.act_max

        def steps(observations: torch.Tensor, real: bool) -> tuple:
            length = observations.shape[1]
            mask = torch.full((n, length), real, dtype=torch.bool, device=self.device)
            timesteps = torch.zeros(n, length, dtype=torch.int64, device=self.device)
            no_actions, no_rewards = obs.new_zeros(n, length, act_max), obs.new_zeros(n, length)
            return self.normalise(observations, no_actions, no_rewards, timesteps, mask, env_idx)

        history = steps(obs.new_zeros(n, self.cfg.history_len, obs.shape[-1]), real=False)
        context = None  # no interactions yet: offline, or the [SEP] token alone
        if self.cfg.task_prompt_len and self.cfg.task_context == "offline":
            context = self.offline_contexts(env_idx, torch.Generator().manual_seed(self.seed))
        elif self.cfg.task_prompt_len:
            context = steps(obs.new_zeros(n, self.cfg.task_prompt_len, obs.shape[-1]), real=False)
        window = steps(obs[:, None], real=True)
        return self.policy(history, window, env_idx, context)[:, 0]  # (n, act_max)

    def shared_prefix(self) -> tuple[int, dict] | None:
        """Pretraining reads no stage-2 setting, so variants that differ only there (``cmt``,
        ``cmt-no-pt``, ``cmt-beta=…``) make the same first ``pretrain_updates`` updates: those
        steps and every setting they read (:mod:`genworld.train.prefix`). The adaptor exists
        from the start in every variant (its initialisation draws from torch's RNG), so its
        width stays among them."""
        if self.cfg.pretrain_updates <= 0:
            return None
        settings = {k: v for k, v in asdict(self.cfg).items() if k not in STAGE_TWO_FIELDS}
        return self.cfg.pretrain_updates, {"algo": "cmt", **settings}

    def episode_policy(self, env_k: int, episodes: int) -> EpisodePolicy:
        return EpisodePolicy(self, env_k, episodes)

    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "adaptor": self.adaptor.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "tune_optimizer": self.tune_opt.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "relabeled": None if self.relabeled is None else dict(self.relabeled),
            "updates": self.updates,
        }

    def load_networks(self, other: CMT) -> None:
        """``other``'s pretrained model and adaptor (with shared parameters: trained on other
        tasks of the robot), to act in this agent's envs."""
        self.net.load_state_dict(other.net.state_dict())
        self.adaptor.load_state_dict(other.adaptor.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.adaptor.load_state_dict(state["adaptor"])
        self.opt.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.tune_opt.load_state_dict(state["tune_optimizer"])
        self.normalizer.load_state_dict(state["normalizer"])
        relabeled = state["relabeled"]
        self.relabeled = None if relabeled is None else {k: v.cpu() for k, v in relabeled.items()}
        self.tuning_set = None  # recomputed from the relabelled states at the next update
        self.updates = int(state["updates"])
