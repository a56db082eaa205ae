"""CMT's configuration and scale presets (:mod:`genworld.algos.cmt`; where each default comes
from is in that module's "Deviations")."""

from __future__ import annotations

from dataclasses import dataclass

from genworld.errors import GenworldError


@dataclass(frozen=True)
class CMTConfig:
    context_len: int = 20
    """K: steps in A_g's window (DT's K; not in the seed text)."""
    history_len: int = 20
    """H: steps in the history segment A_e encodes, and in InfoNCE's positive (not in the seed
    text; = K)."""
    embed_dim: int = 128
    """Token width D of A_e and A_g (DT: 128; not in the seed text)."""
    layers: int = 3
    """Transformer blocks of A_e and of A_g, each (DT: 3; not in the seed text)."""
    heads: int = 1
    """Attention heads per block; must divide embed_dim (DT: 1; not in the seed text)."""
    dropout: float = 0.1
    """Embedding, attention and residual dropout (DT: 0.1; not in the seed text)."""
    prompt_dim: int = 128
    """Size of the policy prompt z (not in the seed text)."""
    lr: float = 1e-4
    """AdamW learning rate of pretraining after warm-up (DT: 1e-4; not in the seed text)."""
    weight_decay: float = 1e-4
    """AdamW weight decay of pretraining (DT: 1e-4; not in the seed text)."""
    warmup_steps: int = 10_000
    """Linear warm-up of pretraining: ``lr * min((step + 1) / warmup_steps, 1)`` (DT)."""
    clip_grad: float = 0.25
    """Gradient-norm clip of every update, both stages (DT: 0.25; not in the seed text)."""
    batch_size: int = 64
    """Rows per update, over all envs, both stages (DT: 64; not in the seed text)."""
    contrastive_weight: float = 0.1
    """γ of ``L = L1 + γ·L2`` (paper's ablation: 1e-6 and 1; the default is not in the seed
    text)."""
    temperature: float = 0.1
    """α of InfoNCE, eq. 3 (not in the seed text)."""
    value_weight: float = 1.0
    """Weight of the value head's MSE beside L1 (the value exists for the planner)."""
    value_scale: float = 1e-3
    """Value targets (discounted returns) are multiplied by this (DT scales returns by 1e-3)."""
    discount: float = 0.99
    """Discount of the value targets and of the planner's scores (TT: 0.99)."""
    pretrain_updates: int = 100_000
    """Updates of stage 1; later updates tune the prompt (DT's 100k; not in the seed text)."""
    prompt_tuning: bool = True
    """False: no relabelling or tuning; updates after stage 1 change nothing (CMT w/o PT: the
    same pretrained model as CMT's, untuned)."""
    relabel_states: int = 2_048
    """Dataset states relabelled once by the planner, over all envs (not in the seed text)."""
    relabel_batch: int = 16
    """States planned together in one batched beam search (memory: × beam × expand rows)."""
    planner_horizon: int = 15
    """Planning steps (TT: 15; 5 for its halfcheetah, ant and walker2d-medium-expert runs; one
    horizon for all envs of a cell here)."""
    beam_width: int = 128
    """Sequences kept per state at every planning step (TT: 128)."""
    expand: int = 2
    """Candidate actions per kept sequence at every planning step (TT: 2)."""
    planner_noise_scale: float = 1.0
    """The planner's candidate actions are the policy's action plus Gaussian noise of this many
    times the generator's residual action std (per env and action dim, ``data − predicted``
    over the relabelled states): the predictive spread of a generator trained by MSE, as TT
    draws its candidates from its model's own distribution. 0 = the policy's action only. Not
    in the seed text."""
    adaptor_hidden: int = 256
    """Hidden width of the adaptor L's residual MLP (not in the seed text)."""
    behaviour_weight: float = 1.0
    """β of eq. 4, weight of ‖z − L(z)‖² (paper's ablation: 0 and 50; the default is not in
    the seed text)."""
    tune_lr: float = 1e-4
    """Adam learning rate of the adaptor (DT's lr; not in the seed text)."""
    sampling: str = "balanced"
    """balanced (equal share per env) or proportional (to each env's transitions)."""
    shared_params: bool = False
    """The envs are tasks of one robot (same dims): one parameter set and the normaliser's env 0
    for all, no env embedding, so a task is known only through its prompts and the network
    applies unchanged to new tasks (the offline meta-RL setting, §4.2)."""
    task_prompt_len: int = 0
    """C: steps of the context trajectory (task prompt) that A_e reads before a learned [SEP]
    token and the history (§4.2); 0 = no task prompt (offline RL, §4.1). Not in the seed text."""
    context_truncation: float = 0.5
    """The fraction of pretraining's task-prompt segments cut to a uniform length in 0 … C
    (0: the [SEP] token alone), so that the short and empty contexts of zero-shot acting (an
    episode's first steps: online contexts grow from nothing) are seen in training. Not in
    the seed text."""
    task_context: str = "online"
    """Where acting takes the task prompt (§4.2 "Meta Test", Fig. 5 Q4): online (a random
    segment of the agent's own interactions so far in the env: zero-shot), offline (a random
    segment of the env's prompt data: the unseen study's task data, else the training data),
    or none (the [SEP] token alone)."""
    prompt_source: str = "history"
    """What A_e encodes in pretraining. history: the H steps before the window A_g
    reconstructs (Fig. 1's "policy prompt from the history trajectory"; z never sees the
    actions it is asked to predict, so it adds only what the window lacks). trajectory: the
    window itself, §4.1's trajectory-level auto-encoder (z_τ = A_e(τ), τ_{t+1} = A_g(· | z_τ,
    τ_{<t})), the prompt's size its bottleneck; acting and tuning then read z of the last H
    completed steps (the current action is not known yet), which InfoNCE makes alike to the
    window's."""

    def validate(self) -> None:
        positive = ("context_len", "history_len", "batch_size", "warmup_steps", "prompt_dim")
        positive += ("relabel_states", "relabel_batch", "planner_horizon", "beam_width")
        positive += ("expand", "adaptor_hidden")
        for name in positive:
            if getattr(self, name) < 1:
                raise GenworldError(f"cmt.{name} must be >= 1, got {getattr(self, name)}")
        if self.embed_dim % self.heads:
            raise GenworldError(f"embed_dim {self.embed_dim} is not divisible by {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise GenworldError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.temperature <= 0 or self.value_scale <= 0 or not 0 < self.discount <= 1:
            raise GenworldError("temperature and value_scale must be > 0, discount in (0, 1]")
        if min(self.contrastive_weight, self.behaviour_weight, self.value_weight) < 0:
            raise GenworldError("contrastive, behaviour and value weights must be >= 0")
        if self.planner_noise_scale < 0:
            raise GenworldError(
                f"cmt.planner_noise_scale must be >= 0, got {self.planner_noise_scale}"
            )
        if self.pretrain_updates < 0:
            raise GenworldError(f"pretrain_updates must be >= 0, got {self.pretrain_updates}")
        if self.sampling not in ("balanced", "proportional"):
            raise GenworldError(f"sampling {self.sampling!r}: use balanced or proportional")
        if self.task_prompt_len < 0:
            raise GenworldError(f"cmt.task_prompt_len must be >= 0, got {self.task_prompt_len}")
        if not 0.0 <= self.context_truncation <= 1.0:
            raise GenworldError(
                f"cmt.context_truncation must be in [0, 1], got {self.context_truncation}"
            )
        if self.prompt_source not in PROMPT_SOURCES:
            raise GenworldError(
                f"cmt.prompt_source {self.prompt_source!r}: use one of {', '.join(PROMPT_SOURCES)}"
            )
        if self.task_context not in TASK_CONTEXTS:
            raise GenworldError(
                f"cmt.task_context {self.task_context!r}: use one of {', '.join(TASK_CONTEXTS)}"
            )


TASK_CONTEXTS = ("online", "offline", "none")
PROMPT_SOURCES = ("history", "trajectory")

STAGE_TWO_FIELDS = (
    "prompt_tuning",
    "relabel_states",
    "relabel_batch",
    "planner_horizon",
    "beam_width",
    "expand",
    "planner_noise_scale",
    "behaviour_weight",
    "tune_lr",
)
"""The settings only prompt tuning (stage 2) reads: pretraining is the same whatever they are."""


PRESETS: dict[str, dict] = {
    # tiny: seconds (train/table.py BUDGETS["tiny"] = 20 updates: 10 pretraining, 10 tuning)
    "tiny": {
        "context_len": 4,
        "history_len": 4,
        "embed_dim": 16,
        "layers": 1,
        "prompt_dim": 8,
        "batch_size": 8,
        "warmup_steps": 10,
        "lr": 1e-3,
        "pretrain_updates": 5,
        "relabel_states": 8,
        "relabel_batch": 8,
        "planner_horizon": 3,
        "beam_width": 4,
        "adaptor_hidden": 16,
        "tune_lr": 1e-3,
    },
    # mini: 2 CPU cores, 10k updates (BUDGETS["mini"]): DT's mini network, a history of 10
    # steps (three transformer passes per update: history, positive, window), 7k pretraining
    # and 3k tuning updates (a table scores the last 3 evaluations, at 8k, 9k and 10k: all of
    # them tuned), a planner sized to relabel 256 states in under a minute
    "mini": {
        "history_len": 10,
        "embed_dim": 64,
        "layers": 2,
        "prompt_dim": 64,
        "batch_size": 32,
        "warmup_steps": 1_000,
        "lr": 3e-4,
        "pretrain_updates": 7_000,
        "relabel_states": 256,
        "relabel_batch": 32,
        "planner_horizon": 5,
        "beam_width": 16,
        "adaptor_hidden": 128,
        "tune_lr": 1e-3,
    },
    "full": {},
}
