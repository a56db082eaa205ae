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

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from genworld.algos.cmt_config import CMTConfig
from genworld.data.multi_env import EnvData, MultiEnvDataset
from genworld.errors import GenworldError
from genworld.nn.gpt import GPT, BidirectionalEncoder, init_weights
from genworld.nn.tokenizers import PerEnvHead, TrajectoryEmbedding
from genworld.types import SeqBatch

# ---------------------------------------------------------------- segments


def right_padded(first: torch.Tensor, steps: torch.Tensor, length: int):
    """Flat indices ``(n, length)`` of segments starting at ``first (n,)`` and their validity:
    the first ``steps (n,)`` positions are real, the rest padding."""
    offsets = torch.arange(length, device=first.device)  # (L,)
    return first[:, None] + offsets, offsets[None, :] < steps[:, None]


def context_before(current: torch.Tensor, step_in_episode: torch.Tensor, length: int, history: int):
    """The window of at most ``length`` steps that ends at flat transition ``current (n,)``
    (left-padded: its last position is ``current``) and the history segment of at most
    ``history`` steps just before that window (right-padded), both inside the episode
    (``step_in_episode (n,)``: how many steps of the episode precede ``current``).

    Returns ``(window_index, window_valid, history_index, history_valid)``, each ``(n, ·)``.
    """
    back = step_in_episode.clamp(max=length - 1)  # (n,) earlier steps inside the window
    before = length - 1 - torch.arange(length, device=current.device)  # (L,) distance to the end
    window_index = current[:, None] - before  # (n, L)
    window_valid = before[None, :] <= back[:, None]  # (n, L)
    steps = (step_in_episode - back).clamp(max=history)  # (n,) history steps available
    history_index, history_valid = right_padded(current - back - steps, steps, history)
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

    def to(self, device) -> PretrainingBatch:
        moved = {name: getattr(self, name).to(device) for name in vars(self)}
        return PretrainingBatch(**moved)


def sample_pretraining(
    dataset: MultiEnvDataset,
    value_targets: list[torch.Tensor],
    batch_size: int,
    length: int,
    history: int,
    generator: torch.Generator,
    mode: str,
) -> PretrainingBatch:
    """A :class:`PretrainingBatch` of ``batch_size`` rows over the envs (``mode``: balanced or
    proportional)."""
    counts = dataset.env_counts(batch_size, generator, mode)
    histories, windows, positives, values, episodes, offset = [], [], [], [], [], 0
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
        offset += len(env)
    return PretrainingBatch(
        history=cat_batches(histories),
        window=cat_batches(windows),
        positive=cat_batches(positives),
        values=torch.cat(values),
        episodes=torch.cat(episodes),
    )


def gather_contexts(
    dataset: MultiEnvDataset,
    env_idx: torch.Tensor,
    current: torch.Tensor,
    length: int,
    history: int,
) -> tuple[SeqBatch, SeqBatch]:
    """(history, window) of the transitions ``current (n,)`` of envs ``env_idx (n,)`` (sorted by
    env), as at acting time: the window of at most ``length`` steps ending at the transition
    (left-padded), the history of at most ``history`` steps before the window."""
    histories, windows = [], []
    for k in env_idx.unique_consecutive().tolist():
        rows = current[env_idx == k]
        w_index, w_valid, h_index, h_valid = context_before(
            rows, dataset.envs[k].timesteps[rows], length, history
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

    def encode(self, history: tuple, env_idx: torch.Tensor) -> torch.Tensor:
        """A_e: the policy prompt ``z (B, prompt_dim)`` of a history segment (may be empty)."""
        obs, act, rew, timesteps, step_mask = history
        tokens = self.encoder_embedding(obs, act, rew, timesteps, env_idx)  # (B, 3H, D)
        tokens = self.drop(self.encoder_ln(tokens))
        valid = step_mask.repeat_interleave(3, dim=1)  # (B, 3H)
        return self.to_prompt(self.encoder(tokens, valid))  # (B, P)

    def generate(self, prompt: torch.Tensor, window: tuple, env_idx: torch.Tensor) -> Predictions:
        """A_g on ``[z; window tokens]``: every prediction at a position sees only z, earlier
        steps and (for rewards, next states and values) its own state and action."""
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
    ``agent``: a :class:`genworld.algos.cmt.CMT` (its ``normalise`` and ``policy``)."""

    def __init__(self, agent, env_k: int, episodes: int):
        self.agent, self.env_k = agent, env_k
        dataset, device = agent.dataset, agent.device
        self.horizon = dataset.specs[env_k].max_episode_steps
        shape = (episodes, self.horizon)
        self.observations = torch.zeros(*shape, dataset.obs_max, device=device)
        self.actions = torch.zeros(*shape, dataset.act_max, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.length = torch.zeros(episodes, dtype=torch.int64, device=device)

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
        w_index, w_valid, h_index, h_valid = context_before(t, t, cfg.context_len, cfg.history_len)
        window = self.steps(idx, w_index, w_valid)
        history = self.steps(idx, h_index, h_valid)
        env_idx = torch.full_like(idx, self.env_k)
        action = agent.policy(history, window, env_idx)[:, -1]  # (n, act_max)
        self.actions[idx, t] = action
        self.length[idx] += 1
        return action

    def observe(self, idx, rewards) -> None:
        idx = torch.as_tensor(idx, dtype=torch.int64, device=self.agent.device)
        rewards = torch.as_tensor(rewards, dtype=torch.float32, device=self.agent.device)
        self.rewards[idx, self.length[idx] - 1] = rewards
