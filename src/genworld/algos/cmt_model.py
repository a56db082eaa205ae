"""CMT's networks and segments (:mod:`genworld.algos.cmt`): the trajectory encoder A_e, the
autoregressive generator A_g with its heads, the prompt adaptor L, the history / window /
positive segments they read, gathered from a :class:`MultiEnvDataset` as padded
:class:`SeqBatch` es (masks and env_idx in every batch), and the episode histories of acting.

Token layout of the generator, for a window of L steps (paper §4.1, Fig. 1)::

    [z, s_0, a_0, r_0, s_1, a_1, r_1, ...]        z: the policy prompt, one token

- the action ``a_t`` is read at the ``s_t`` token (the policy π(a | s, z, τ<t));
- the reward ``r_t``, the next state ``s_{t+1}`` and the value (discounted return after step
  ``t``) at the ``a_t`` token (R(s, a) and P(s' | s, a)); the ``r_t`` token is input only.

Inputs are the tuple ``(observations, actions, rewards, timesteps, step_mask)``: observations
normalised per env, rewards normalised per env, zero where ``step_mask`` is False. Positions
carry each step's timestep in its episode, never its place in the window, so a window may be
padded on the right (training) or on the left (acting, planning) alike.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from genworld.algos.cmt_config import CMTConfig
from genworld.data.multi_env import EnvData, MultiEnvDataset
from genworld.errors import GenworldError
from genworld.nn.gpt import GPT, BidirectionalEncoder, init_weights
from genworld.nn.tokenizers import PerEnvHead, TrajectoryEmbedding, shared_view
from genworld.types import SeqBatch

# ---------------------------------------------------------------- segments


def right_padded(first: torch.Tensor, steps: torch.Tensor, length: int):
    """Flat indices ``(n, length)`` of segments starting at ``first (n,)`` and their validity:
    the first ``steps (n,)`` positions are real, the rest padding."""
    offsets = torch.arange(length, device=first.device)  # (L,)
    return first[:, None] + offsets, offsets[None, :] < steps[:, None]


def context_before(
    current: torch.Tensor,
    step_in_episode: torch.Tensor,
    length: int,
    history: int,
    prompt_source: str = "history",
):
    """The window of at most ``length`` steps that ends at flat transition ``current (n,)``
    (left-padded: its last position is ``current``) and the segment of at most ``history``
    steps the prompt is read from (right-padded), both inside the episode
    (``step_in_episode (n,)``: how many steps of the episode precede ``current``). The
    segment is the steps just before the window (``prompt_source`` history), or the last
    completed steps, inside the window (trajectory: pretraining read z of the window itself,
    and the current step's action is not known yet).

    Returns ``(window_index, window_valid, history_index, history_valid)``, each ``(n, ·)``.
    """
    back = step_in_episode.clamp(max=length - 1)  # (n,) earlier steps inside the window
    before = length - 1 - torch.arange(length, device=current.device)  # (L,) distance to the end
    window_index = current[:, None] - before  # (n, L)
    window_valid = before[None, :] <= back[:, None]  # (n, L)
    skip = back * (prompt_source != "trajectory")  # (n,) window steps between segment and now
    steps = (step_in_episode - skip).clamp(max=history)  # (n,) segment steps available
    history_index, history_valid = right_padded(current - skip - steps, steps, history)
    return window_index, window_valid, history_index, history_valid


def gather_steps(
    dataset: MultiEnvDataset, k: int, index: torch.Tensor, valid: torch.Tensor
) -> SeqBatch:
    """Env ``k``'s transitions at flat ``index (n, L)`` as a zero-padded :class:`SeqBatch`;
    positions where ``valid`` is False are zero (any index may sit there)."""
    env: EnvData = dataset.envs[k]
    n, length = index.shape
    idx = index.clamp(0, len(env) - 1)  # (n, L)
    m = valid.float()
    d, a = env.spec.obs_dim, env.spec.act_dim
    obs = torch.zeros(n, length, dataset.obs_max)
    next_obs = torch.zeros(n, length, dataset.obs_max)
    act = torch.zeros(n, length, dataset.act_max)
    obs[..., :d] = env.observations[idx] * m[..., None]
    next_obs[..., :d] = env.next_observations[idx] * m[..., None]
    act[..., :a] = env.actions[idx] * m[..., None]
    env_idx = torch.full((n,), k, dtype=torch.int64)
    return SeqBatch(
        observations=obs,
        actions=act,
        rewards=env.rewards[idx] * m,
        next_observations=next_obs,
        terminations=env.terminations[idx] * m,
        timesteps=env.timesteps[idx] * valid,
        step_mask=valid,
        env_idx=env_idx,
        obs_mask=dataset.obs_masks()[env_idx],
        act_mask=dataset.act_masks()[env_idx],
    )


def random_segments(
    dataset: MultiEnvDataset,
    k: int,
    n: int,
    length: int,
    generator: torch.Generator,
    truncate: float = 0.0,
) -> SeqBatch:
    """``n`` segments of env ``k``: each from a uniform transition on, at most ``length`` steps
    and never past its episode's end (right-padded) — the context trajectories of task prompts.
    ``truncate``: the fraction of segments then cut to a uniform length in 0 … their own."""
    env = dataset.envs[k]
    start = torch.randint(len(env), (n,), generator=generator)  # (n,)
    steps = env.steps_left[start].clamp(max=length)  # (n,)
    if truncate > 0:
        cut = torch.rand(n, generator=generator) < truncate
        shorter = (torch.rand(n, generator=generator) * (steps + 1)).long()  # 0 … steps
        steps = torch.where(cut, shorter, steps)
    return gather_steps(dataset, k, *right_padded(start, steps, length))


def cat_batches(parts: list[SeqBatch]) -> SeqBatch:
    return SeqBatch(
        **{name: torch.cat([getattr(p, name) for p in parts]) for name in vars(parts[0])}
    )


def discounted_returns_to_go(env: EnvData, discount: float) -> torch.Tensor:
    """``(N,)`` ``sum_k discount^k r[n + k]`` to the end of each transition's episode.

    One backward pass over "steps left", vectorised over all episodes: the transitions with
    ``steps_left == j`` are followed, in their own episode, by those with ``j - 1``."""
    rewards = env.rewards.double()
    result = torch.zeros_like(rewards)
    order = torch.argsort(env.steps_left, stable=True)  # by steps left: 1, 1, …, 2, 2, …
    counts = torch.bincount(env.steps_left)[1:].tolist()  # transitions with 1, 2, … steps left
    for j, index in enumerate(torch.split(order, counts), start=1):
        later = result[index + 1] if j > 1 else 0.0
        result[index] = rewards[index] + discount * later
    return result.float()


def discounted_returns_after(env: EnvData, discount: float) -> torch.Tensor:
    """``(N,)`` the discounted return after each transition's step, ``sum_k discount^k
    r[n + 1 + k]`` to the end of its episode (0 at an episode's last step): Trajectory
    Transformer's value target, which its planner adds after the rewards it has already
    counted."""
    after = torch.zeros_like(env.rewards, dtype=torch.float32)
    has_next = (env.steps_left > 1).nonzero()[:, 0]  # the next transition is the episode's
    after[has_next] = discounted_returns_to_go(env, discount)[has_next + 1]
    return after


@dataclass(frozen=True)
class PretrainingBatch:
    """Per row: a window of K steps from a uniform transition on (right-padded), the history of
    at most H steps before it (empty at an episode's start), another segment of H steps from a
    uniform point of the same episode (InfoNCE's positive), the window's value targets and the
    row's episode (rows of one episode are never each other's negatives)."""

    history: SeqBatch
    window: SeqBatch
    positive: SeqBatch
    values: torch.Tensor  # (B, K) value targets of the window's steps, zero where padded
    episodes: torch.Tensor  # (B,) int64 an id per episode of the dataset
    context: SeqBatch | None = None
    """With task prompts (§4.2): a context segment of the row's env (its task), read before
    [SEP] with the history."""
    positive_context: SeqBatch | None = None
    """With task prompts: another context segment of the row's task, drawn independently, read
    before [SEP] with the positive (a context shared with the anchor would let InfoNCE match
    rows by their context alone)."""
    task_positive: tuple[SeqBatch, SeqBatch] | None = None
    """With task prompts: another (context, history) pair of the row's task, drawn
    independently: the positive of the task-level InfoNCE."""

    def to(self, device) -> PretrainingBatch:
        def move(value):
            if isinstance(value, tuple):
                return tuple(v.to(device) for v in value)
            return None if value is None else value.to(device)

        return PretrainingBatch(**{name: move(getattr(self, name)) for name in vars(self)})


def sample_pretraining(
    dataset: MultiEnvDataset,
    value_targets: list[torch.Tensor],
    batch_size: int,
    length: int,
    history: int,
    generator: torch.Generator,
    mode: str,
    task_prompt_len: int = 0,
    context_truncation: float = 0.0,
) -> PretrainingBatch:
    """A :class:`PretrainingBatch` of ``batch_size`` rows over the envs (``mode``: balanced or
    proportional); with ``task_prompt_len`` > 0 its task-prompt segments too, the fraction
    ``context_truncation`` of them cut short (:func:`random_segments`)."""
    counts = dataset.env_counts(batch_size, generator, mode)
    histories, windows, positives, values, episodes, offset = [], [], [], [], [], 0
    contexts, positive_contexts, task_contexts, task_histories = [], [], [], []
    for k, (env, count) in enumerate(zip(dataset.envs, counts, strict=True)):
        if count:
            start = torch.randint(len(env), (count,), generator=generator)  # (n,)
            before, left = env.timesteps[start], env.steps_left[start]  # (n,)
            window_index, window_valid = right_padded(start, left.clamp(max=length), length)
            windows.append(gather_steps(dataset, k, window_index, window_valid))
            steps = before.clamp(max=history)  # (n,)
            histories.append(gather_steps(dataset, k, *right_padded(start - steps, steps, history)))
            episode_start = start - before  # (n,)
            place = (torch.rand(count, generator=generator) * (before + left)).long()  # (n,)
            other = episode_start + place  # (n,) a uniform transition of the same episode
            other_steps = env.steps_left[other].clamp(max=history)
            positives.append(gather_steps(dataset, k, *right_padded(other, other_steps, history)))
            values.append(value_targets[k][window_index.clamp(max=len(env) - 1)] * window_valid)
            episodes.append(offset + episode_start)
            if task_prompt_len:
                segment = functools.partial(random_segments, dataset, k, count)
                cut = context_truncation
                contexts.append(segment(task_prompt_len, generator, cut))
                positive_contexts.append(segment(task_prompt_len, generator, cut))
                task_contexts.append(segment(task_prompt_len, generator, cut))
                task_histories.append(segment(history, generator))
        offset += len(env)
    meta = bool(task_prompt_len)
    return PretrainingBatch(
        history=cat_batches(histories),
        window=cat_batches(windows),
        positive=cat_batches(positives),
        values=torch.cat(values),
        episodes=torch.cat(episodes),
        context=cat_batches(contexts) if meta else None,
        positive_context=cat_batches(positive_contexts) if meta else None,
        task_positive=(cat_batches(task_contexts), cat_batches(task_histories)) if meta else None,
    )


def gather_contexts(
    dataset: MultiEnvDataset,
    env_idx: torch.Tensor,
    current: torch.Tensor,
    length: int,
    history: int,
    prompt_source: str = "history",
) -> tuple[SeqBatch, SeqBatch]:
    """(history, window) of the transitions ``current (n,)`` of envs ``env_idx (n,)`` (sorted by
    env), as at acting time: the window of at most ``length`` steps ending at the transition
    (left-padded), the prompt's segment of at most ``history`` steps (:func:`context_before`)."""
    histories, windows = [], []
    for k in env_idx.unique_consecutive().tolist():
        rows = current[env_idx == k]
        w_index, w_valid, h_index, h_valid = context_before(
            rows, dataset.envs[k].timesteps[rows], length, history, prompt_source
        )
        histories.append(gather_steps(dataset, k, h_index, h_valid))
        windows.append(gather_steps(dataset, k, w_index, w_valid))
    return cat_batches(histories), cat_batches(windows)


# ---------------------------------------------------------------- networks


@dataclass(frozen=True)
class Predictions:
    """The generator's outputs for every window position (meaningless where padded)."""

    actions: torch.Tensor  # (B, L, act_max) in [-1, 1], zero on padded dims
    rewards: torch.Tensor  # (B, L) normalised reward r_t
    next_observations: torch.Tensor  # (B, L, obs_max) normalised s_{t+1}, zero on padded dims
    values: torch.Tensor  # (B, L) scaled discounted return after step t


class CMTNet(nn.Module):
    """A_e (bidirectional, history → prompt z) and A_g (causal, [z; (s, a, r) tokens] →
    :class:`Predictions`). ``dataset``: anything with ``num_envs``, ``specs``, ``obs_max`` and
    ``act_max``."""

    def __init__(self, dataset, cfg: CMTConfig):
        super().__init__()
        if cfg.shared_params:
            dataset = shared_view(dataset)
        self.shared = cfg.shared_params
        n, dim, specs = dataset.num_envs, cfg.embed_dim, dataset.specs
        max_timestep = max(s.max_episode_steps for s in specs)
        self.encoder_embedding = TrajectoryEmbedding(dataset, dim, max_timestep, order="sar")
        self.encoder_ln = nn.LayerNorm(dim)
        self.encoder = BidirectionalEncoder(dim, cfg.layers, cfg.heads, cfg.dropout)
        self.to_prompt = nn.Linear(dim, cfg.prompt_dim)
        self.embedding = TrajectoryEmbedding(dataset, dim, max_timestep, order="sar")
        self.from_prompt = nn.Linear(cfg.prompt_dim, dim)
        self.embed_ln = nn.LayerNorm(dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.generator = GPT(dim, cfg.layers, cfg.heads, cfg.dropout, cfg.dropout)
        self.action_head = PerEnvHead(n, dim, dataset.act_max, [s.act_dim for s in specs])
        self.state_head = PerEnvHead(n, dim, dataset.obs_max, [s.obs_dim for s in specs])
        self.reward_head = PerEnvHead(n, dim, 1, [1] * n)
        self.value_head = PerEnvHead(n, dim, 1, [1] * n)
        self.apply(init_weights)
        if cfg.task_prompt_len:  # §4.2: a learned [SEP] between context and history
            self.separator = nn.Parameter(torch.randn(dim) * 0.02)
            self.to_task_prompt = nn.Linear(dim, cfg.prompt_dim)
            init_weights(self.to_task_prompt)

    def param_env(self, env_idx: torch.Tensor) -> torch.Tensor:
        """Each row's parameter set: its env, or 0 for every row with shared parameters."""
        return torch.zeros_like(env_idx) if self.shared else env_idx

    def _segment_tokens(self, segment: tuple, env_idx: torch.Tensor) -> tuple:
        obs, act, rew, timesteps, step_mask = segment
        tokens = self.encoder_embedding(obs, act, rew, timesteps, env_idx)  # (B, 3H, D)
        return tokens, step_mask.repeat_interleave(3, dim=1)  # (B, 3H)

    def encode_prompts(
        self, history: tuple, env_idx: torch.Tensor, context: tuple | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A_e: the policy prompt ``z (B, prompt_dim)`` of a history segment (may be empty) and,
        with a context segment (task prompts, §4.2: ``[context; SEP; history]``), the task
        prompt read at [SEP] (None without one)."""
        env_idx = self.param_env(env_idx)
        tokens, valid = self._segment_tokens(history, env_idx)
        if context is None:
            z = self.encoder(self.drop(self.encoder_ln(tokens)), valid)
            return self.to_prompt(z), None
        before, before_valid = self._segment_tokens(context, env_idx)  # (B, 3C, D)
        b, c = before_valid.shape
        sep = self.separator.expand(b, 1, -1)  # (B, 1, D)
        tokens = torch.cat([before, sep, tokens], dim=1)  # (B, 3C + 1 + 3H, D)
        always = torch.ones(b, 1, dtype=torch.bool, device=valid.device)
        valid = torch.cat([before_valid, always, valid], dim=1)
        out = self.encoder.outputs(self.drop(self.encoder_ln(tokens)), valid)  # (B, 1 + ·, D)
        return self.to_prompt(out[:, 0]), self.to_task_prompt(out[:, 1 + c])

    def encode(
        self, history: tuple, env_idx: torch.Tensor, context: tuple | None = None
    ) -> torch.Tensor:
        """The policy prompt z of :meth:`encode_prompts` (what A_g reads)."""
        return self.encode_prompts(history, env_idx, context)[0]

    def generate(self, prompt: torch.Tensor, window: tuple, env_idx: torch.Tensor) -> Predictions:
        """A_g on ``[z; window tokens]``: every prediction at a position sees only z, earlier
        steps and (for rewards, next states and values) its own state and action."""
        env_idx = self.param_env(env_idx)
        obs, act, rew, timesteps, step_mask = window
        b, length = step_mask.shape
        tokens = self.embedding(obs, act, rew, timesteps, env_idx)  # (B, 3L, D)
        tokens = torch.cat([self.from_prompt(prompt)[:, None], tokens], dim=1)  # (B, 1+3L, D)
        always = torch.ones(b, 1, dtype=torch.bool, device=step_mask.device)
        valid = torch.cat([always, step_mask.repeat_interleave(3, dim=1)], dim=1)  # (B, 1+3L)
        h = self.generator(self.drop(self.embed_ln(tokens)), valid)  # (B, 1+3L, D)
        h = h[:, 1:].reshape(b, length, 3, -1)  # (B, L, 3, D): outputs at s_t, a_t, r_t
        at_state, at_action = h[:, :, 0], h[:, :, 1]  # (B, L, D)
        env = env_idx[:, None]  # (B, 1) broadcasts over positions
        return Predictions(
            actions=torch.tanh(self.action_head(at_state, env)),  # (B, L, act_max)
            rewards=self.reward_head(at_action, env)[..., 0],  # (B, L)
            next_observations=self.state_head(at_action, env),  # (B, L, obs_max)
            values=self.value_head(at_action, env)[..., 0],  # (B, L)
        )


class PromptAdaptor(nn.Module):
    """L(z; ξ) = z + W₂·GELU(W₁·z + b₁) + b₂ with W₂, b₂ zero at initialisation, so L is the
    identity until tuned and prompt tuning starts at the pretrained policy (paper Fig. 1: "the
    adaptor layer is an identity function" during pretraining)."""

    def __init__(self, prompt_dim: int, hidden: int):
        super().__init__()
        self.hidden = nn.Linear(prompt_dim, hidden)
        self.out = nn.Linear(hidden, prompt_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.out(F.gelu(self.hidden(z)))  # (B, P)


# ---------------------------------------------------------------- acting


class EpisodePolicy:
    """Histories of ``episodes`` parallel episodes of env ``env_k`` (see eval/rollout.py):
    ``act(obs, idx)`` appends the observations of episodes ``idx`` and returns their actions from
    one forward pass; ``observe(idx, rewards)`` records the rewards of their last step.
    ``agent``: a :class:`genworld.algos.cmt.CMT` (its ``normalise`` and ``policy``).

    With task prompts, each step's context segment comes from ``agent.cfg.task_context``:
    ``online`` draws it from these episodes' steps so far (the context buffer of §4.2's
    zero-shot meta test: a random episode, a random segment of its completed steps; none before
    the first step), ``offline`` from the agent's context data, ``none`` leaves it empty."""

    def __init__(self, agent, env_k: int, episodes: int):
        self.agent, self.env_k = agent, env_k
        dataset, device = agent.dataset, agent.device
        self.horizon = dataset.specs[env_k].max_episode_steps
        shape = (episodes, self.horizon)
        self.observations = torch.zeros(*shape, dataset.obs_max, device=device)
        self.actions = torch.zeros(*shape, dataset.act_max, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.length = torch.zeros(episodes, dtype=torch.int64, device=device)
        self.generator = torch.Generator().manual_seed(agent.seed * 1_000 + env_k)

    def steps(self, rows: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> tuple:
        """Network inputs of episodes ``rows (n,)`` at steps ``index (n, L)``."""
        at = (rows[:, None], index.clamp(0, self.horizon - 1))
        env_idx = torch.full_like(rows, self.env_k)
        m = valid.float()
        return self.agent.normalise(
            self.observations[at] * m[..., None],
            self.actions[at] * m[..., None],
            self.rewards[at] * m,
            index.clamp(min=0) * valid,
            valid,
            env_idx,
        )

    @torch.no_grad()
    def act(self, obs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        agent, cfg = self.agent, self.agent.cfg
        agent.net.eval()
        idx = torch.as_tensor(idx, dtype=torch.int64, device=agent.device)
        t = self.length[idx]  # (n,) step about to be taken
        if bool((t >= self.horizon).any()):
            raise GenworldError(f"episode longer than max_episode_steps={self.horizon}")
        self.observations[idx, t] = obs.to(agent.device)
        # each episode's buffer is its own flat storage: the current step is at index t
        w_index, w_valid, h_index, h_valid = context_before(
            t, t, cfg.context_len, cfg.history_len, cfg.prompt_source
        )
        window = self.steps(idx, w_index, w_valid)
        history = self.steps(idx, h_index, h_valid)
        env_idx = torch.full_like(idx, self.env_k)
        context = self.context(len(idx)) if cfg.task_prompt_len else None
        action = agent.policy(history, window, env_idx, context)[:, -1]  # (n, act_max)
        self.actions[idx, t] = action
        self.length[idx] += 1
        return action

    def context(self, n: int) -> tuple:
        """Network inputs of ``n`` task-prompt segments (see the class docstring)."""
        agent, length = self.agent, self.agent.cfg.task_prompt_len
        source, device = agent.cfg.task_context, agent.device
        if source == "offline":
            return agent.offline_contexts(torch.full((n,), self.env_k), self.generator)
        offsets = torch.arange(length, device=device)
        done = self.length.cpu()  # (E,) completed steps of each episode
        if source == "none" or not bool((done > 0).any()):
            rows = torch.zeros(n, dtype=torch.int64, device=device)
            return self.steps(
                rows, offsets.expand(n, -1), torch.zeros(n, length, dtype=torch.bool, device=device)
            )
        rows = torch.multinomial((done > 0).float(), n, replacement=True, generator=self.generator)
        span = done[rows]  # (n,)
        start = (
            torch.rand(n, generator=self.generator) * ((span - length).clamp(min=0) + 1)
        ).long()
        start, span, rows = start.to(device), span.to(device), rows.to(device)
        valid = offsets[None, :] < (span - start).clamp(max=length)[:, None]  # (n, C)
        return self.steps(rows, start[:, None] + offsets, valid)

    def observe(self, idx, rewards) -> None:
        idx = torch.as_tensor(idx, dtype=torch.int64, device=self.agent.device)
        rewards = torch.as_tensor(rewards, dtype=torch.float32, device=self.agent.device)
        self.rewards[idx, self.length[idx] - 1] = rewards
