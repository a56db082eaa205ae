"""Task families for unseen-task generalisation (seed 000 §6.2, Fig. 4; Prompt-DT / MACAW).

- **cheetah-vel**: 40 target velocities ``linspace(0.075, 3.0, 40)``; reward
  ``-|v_x - v_goal| - 0.05·‖a‖²``; 200-step episodes; never terminates.
- **ant-dir**: 50 goal directions, angles ``U[0, 2π)`` drawn with ``numpy.random.default_rng(
  ANT_DIR_SEED)``; reward ``v_xy·(cos θ, sin θ) - 0.5·‖a‖² - 0.5e-3·‖clip(cfrc_ext, -1, 1)‖² + 1``;
  healthy-z termination (torso z in [0.2, 1.0], Gymnasium Ant's rule); 200 steps.
- **ant-fwd-back**: ant-dir's env with the two directions {0, π} (FOCAL's and CMT's Ant-Fwd-Back,
  seed 001 §5.2). Both tasks train and both are evaluated (FOCAL's protocol: the task is
  known only through its context), so its split has no unseen task.

Built on Gymnasium **v5** HalfCheetah / Ant and registered with ``gymnasium.register``
(``genworld/CheetahVel-v0``, ``genworld/AntDir-v0``, the task's goal as a make kwarg) so Minari
can recover them. Observation layout differs from the mujoco-py versions used by Prompt-DT:
cheetah-vel here is HalfCheetah-v5's 17-dim observation (qpos without x, qvel) where Prompt-DT's
is 20-dim (it appends the torso's COM/body position); ant-dir is Ant-v5 without contact forces
(27-dim: qpos without x/y, qvel), where Prompt-DT's is 27-dim from the older Ant with a different
contact model. Rewards follow the formulas above exactly, computed from the v5 simulator.

Task envs are named ``<family>-<index>`` (``cheetah-vel-7``, ``ant-dir-23``) and resolve to an
EnvSpec like the four robots, so datasets, world models and algorithms take them unchanged.
Reference returns per task (0 = uniform-random policy, 100 = our per-task expert) are measured
when a task's data is built and stored in ``assets/tasks/<family>.json`` and the datasets'
metadata; until then the spec carries a placeholder range (documented in its card).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from genworld.envs.robots import ENV_SPECS
from genworld.errors import GenworldError

ANT_DIR_SEED = 1337
TASK_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "tasks"


@dataclass(frozen=True)
class Family:
    name: str
    gym_id: str
    base: str
    """The registered robot whose dims/termination the tasks share."""
    count: int
    goal_key: str
    prompt_dt_test: tuple[int, ...]
    """Prompt-DT's held-out task indices (kept as an option)."""
    holds_out: bool = True
    """False: every task trains and is evaluated, none is unseen (FOCAL's protocol, where the
    task is known only through its context)."""

    @property
    def directions(self) -> bool:
        """The goals are directions of the Ant (angles), not target velocities."""
        return self.goal_key == "goal_direction"

    def goals(self) -> np.ndarray:
        if self.name == "cheetah-vel":
            return np.linspace(0.075, 3.0, self.count)
        if self.name == "ant-fwd-back":
            return np.array([0.0, np.pi])
        return np.random.default_rng(ANT_DIR_SEED).uniform(0.0, 2 * np.pi, self.count)


FAMILIES: dict[str, Family] = {
    "cheetah-vel": Family(
        "cheetah-vel",
        "genworld/CheetahVel-v0",
        "halfcheetah",
        40,
        "goal_velocity",
        (2, 7, 15, 23, 26),
    ),
    "ant-dir": Family(
        "ant-dir", "genworld/AntDir-v0", "ant", 50, "goal_direction", (6, 17, 23, 30, 41)
    ),
    "ant-fwd-back": Family(
        "ant-fwd-back", "genworld/AntDir-v0", "ant", 2, "goal_direction", (), holds_out=False
    ),
}
EPISODE_STEPS = 200
_TASK = re.compile(r"^(?P<family>[a-z]+(?:-[a-z]+)+)-(?P<index>\d+)$")


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise GenworldError(
            f"unknown task family {name!r}: choose one of {', '.join(FAMILIES)}"
        ) from None


def split(family: str, *, scheme: str = "paper") -> tuple[list[int], list[int]]:
    """(train, test) task indices. ``paper`` (seed 000 §6.2): the tasks ordered by their goal
    (velocity, or direction angle: ant-dir's are drawn at random, so index order says nothing),
    10 picked at equal intervals of that order, the first 5 train, the last 5 unseen (Fig. 4:
    the last direction comes back near the first). ``prompt-dt``: Prompt-DT's test list, every
    other task trains. A family that holds no task out (ant-fwd-back) trains on every task
    and has no unseen one under either scheme."""
    fam = get_family(family)
    if scheme in ("paper", "prompt-dt") and not fam.holds_out:
        return list(range(fam.count)), []
    if scheme == "paper":
        order = np.argsort(fam.goals(), kind="stable")
        ten = [int(order[i]) for i in np.round(np.linspace(0, fam.count - 1, 10)).astype(int)]
        return ten[:5], ten[5:]
    if scheme == "prompt-dt":
        test = list(fam.prompt_dt_test)
        return [i for i in range(fam.count) if i not in test], test
    raise GenworldError(f"unknown split {scheme!r}: choose paper or prompt-dt")


def goal_distance(family: str, a: float, b: float) -> float:
    """How far apart two goals are: |Δ velocity| (m/s), or the angle between two directions
    (degrees, 0–180)."""
    if get_family(family).directions:
        return float(np.degrees(abs(wrap_angle(a - b))))
    return abs(float(a) - float(b))


def unseen_distances(family: str, scheme: str = "paper") -> dict[str, float]:
    """Each unseen task's goal distance to the nearest training task (:func:`goal_distance`)."""
    fam = get_family(family)
    goals = fam.goals()
    train, test = split(family, scheme=scheme)
    return {
        task_name(family, i): min(goal_distance(family, goals[i], goals[j]) for j in train)
        for i in test
    }


def split_names(family: str, scheme: str = "paper") -> tuple[list[str], list[str]]:
    """The task env names of a family's training and unseen tasks (:func:`split`)."""
    train, test = split(family, scheme=scheme)
    return [task_name(family, i) for i in train], [task_name(family, i) for i in test]


def task_name(family: str, index: int) -> str:
    fam = get_family(family)
    if not 0 <= index < fam.count:
        raise GenworldError(f"{family} has tasks 0..{fam.count - 1}, not {index}")
    return f"{family}-{index}"


def parse_task(name: str) -> tuple[Family, int] | None:
    """``cheetah-vel-7`` → (family, 7); None if ``name`` is not a task env."""
    match = _TASK.match(name)
    if not match or match["family"] not in FAMILIES:
        return None
    fam, index = FAMILIES[match["family"]], int(match["index"])
    if not 0 <= index < fam.count:
        raise GenworldError(f"{fam.name} has tasks 0..{fam.count - 1}, not {index}")
    return fam, index


def reference_scores(family: str) -> dict[str, list[float]]:
    """``{"<index>": [ref_min, ref_max]}`` measured for this family (empty if none yet)."""
    path = TASK_ASSETS / f"{family}.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())["reference_returns"]


def task_spec(name: str):
    """The EnvSpec of a task env (dims and termination of its robot, 200-step episodes)."""
    from dataclasses import replace

    parsed = parse_task(name)
    if parsed is None:
        return None
    fam, index = parsed
    base = ENV_SPECS[fam.base]
    ref = reference_scores(fam.name).get(str(index))
    ref_min, ref_max = ref if ref else PLACEHOLDER_REF[fam.name]
    return replace(
        base,
        name=name,
        gym_id=fam.gym_id,
        max_episode_steps=EPISODE_STEPS,
        ref_min_score=float(ref_min),
        ref_max_score=float(ref_max),
        make_kwargs={**base.make_kwargs, fam.goal_key: float(fam.goals()[index])},
        medium_band=(0.0, 100.0),
        expert_target=90.0,
    )


# ------------------------------------------------------------------ ant-dir experts by symmetry
ANT_OBS_DIM = 27


def wrap_angle(theta: float) -> float:
    """``theta`` in (−π, π]."""
    return float(np.arctan2(np.sin(theta), np.cos(theta)))


def ant_frame_matrix(theta: float) -> np.ndarray:
    """``M (27, 27)`` such that ``M @ obs`` is the Ant-v5 observation (no contact forces) of the
    same state seen from a frame turned by ``theta`` about the vertical axis.

    The floor is flat and gravity vertical, so the simulator is exactly symmetric under turns
    about z. Of the 27 observed numbers only two groups depend on the heading: the torso's
    orientation quaternion (obs 1–4, ``(w, x, y, z)``, turned by left-multiplying with
    ``q_z(−θ)``) and its world-frame planar velocity (obs 13–14, turned by ``−θ``). Height
    (obs 0), vertical velocity (15), the free joint's angular velocity (16–18: MuJoCo reports it
    in the body frame) and the 8 hinge angles and velocities are unchanged. ``theta`` is taken
    in (−π, π], so the turned quaternion keeps ``w ≥ 0`` at the start (the sign the forward
    policy was trained on)."""
    t = wrap_angle(theta)
    m = np.eye(ANT_OBS_DIM)
    pw, pz = np.cos(-t / 2), np.sin(-t / 2)
    m[1:5, 1:5] = [[pw, 0, 0, -pz], [0, pw, -pz, 0], [0, pz, pw, 0], [pz, 0, 0, pw]]
    c, s = np.cos(-t), np.sin(-t)
    m[13:15, 13:15] = [[c, -s], [s, c]]
    return m


def turn_ant_policy(actor, theta: float):
    """A copy of an Ant policy (``TanhGaussianActor`` on the 27-dim observation) that runs in
    direction ``theta`` where the original runs along +x: its first layer becomes ``W @ M(θ)``
    (:func:`ant_frame_matrix`), so it is again a plain actor, bit-for-bit the original applied
    to the turned observation up to float rounding."""
    import copy

    import torch

    if actor.obs_dim != ANT_OBS_DIM:
        raise GenworldError(
            f"turn_ant_policy needs an Ant policy on the {ANT_OBS_DIM}-dim observation (no "
            f"contact forces), got obs_dim {actor.obs_dim}"
        )
    turned = copy.deepcopy(actor)
    first = turned.net[0]
    with torch.no_grad():
        m = torch.as_tensor(ant_frame_matrix(theta), dtype=first.weight.dtype)
        first.weight.copy_(first.weight @ m)
    return turned


# Until a family's per-task references are measured (random policy → 0, our expert → 100):
# the range of returns a 200-step episode can span, so scores are finite and clearly marked.
PLACEHOLDER_REF = {
    "cheetah-vel": (-600.0, 0.0),
    "ant-dir": (-100.0, 600.0),
    "ant-fwd-back": (-100.0, 600.0),
}


# ------------------------------------------------------------------ environments
def true_reward_fn(family: str, goal: float):
    """The task's reward on padded (obs, action, next obs) tensors, from observations only
    (TGW-newR: the new task's reward on imagined transitions, seed 000 §6.2).

    Two approximations of the simulator's reward, both forced by the observation: the velocity
    is the mean of the observed velocities before and after the step (the simulator divides the
    displacement by dt), and ant-dir leaves out the contact cost (the 27-dim observation has no
    contact forces; the cost is at most 0.5e-3 · 84 = 0.042 a step: 14 bodies × 6 clipped forces)."""

    import torch

    def cheetah_vel(obs, act, next_obs):
        v = 0.5 * (obs[:, 8] + next_obs[:, 8])  # qvel[0], the root's x velocity, averaged
        return -(v - goal).abs() - 0.05 * act[:, :6].pow(2).sum(-1)

    def ant_dir(obs, act, next_obs):
        v = 0.5 * (obs[:, 13:15] + next_obs[:, 13:15])  # qvel[0:2], the torso's, averaged
        direction = torch.tensor([np.cos(goal), np.sin(goal)], dtype=v.dtype)
        return v @ direction - 0.5 * act[:, :8].pow(2).sum(-1) + 1.0

    return ant_dir if get_family(family).directions else cheetah_vel


def task_reward_fn(task: str):
    """:func:`true_reward_fn` of a task env name (``cheetah-vel-7``)."""
    parsed = parse_task(task)
    if parsed is None:
        raise GenworldError(
            f"{task!r} is not a task env: a task reward needs cheetah-vel-<i>, ant-dir-<i> or "
            "ant-fwd-back-<i>"
        )
    family, index = parsed
    return true_reward_fn(family.name, float(family.goals()[index]))


from gymnasium.envs.mujoco.ant_v5 import AntEnv  # noqa: E402
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv  # noqa: E402


class CheetahVel(HalfCheetahEnv):
    """HalfCheetah-v5 with the target-velocity reward."""

    def __init__(self, goal_velocity: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.goal_velocity = float(goal_velocity)

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        action = np.asarray(action, dtype=np.float64)
        forward = -abs(info["x_velocity"] - self.goal_velocity)
        ctrl = -0.05 * float(np.square(action).sum())
        info = {**info, "reward_forward": forward, "reward_ctrl": ctrl}
        return obs, forward + ctrl, terminated, truncated, info


class AntDir(AntEnv):
    """Ant-v5 (no contact forces in the observation) with the goal-direction reward."""

    def __init__(self, goal_direction: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.goal_direction = float(goal_direction)

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        action = np.asarray(action, dtype=np.float64)
        direction = np.array([np.cos(self.goal_direction), np.sin(self.goal_direction)])
        forward = float(np.dot([info["x_velocity"], info["y_velocity"]], direction))
        ctrl = -0.5 * float(np.square(action).sum())
        forces = np.clip(self.data.cfrc_ext, -1.0, 1.0)
        contact = -0.5e-3 * float(np.square(forces).sum())
        info = {**info, "reward_forward": forward, "reward_ctrl": ctrl, "reward_contact": contact}
        return obs, forward + ctrl + contact + 1.0, terminated, truncated, info


def register() -> None:
    """Register the families with Gymnasium (idempotent)."""
    for fam, entry in (("cheetah-vel", CheetahVel), ("ant-dir", AntDir)):
        gym_id = FAMILIES[fam].gym_id
        if gym_id not in gym.registry:
            gym.register(
                id=gym_id,
                entry_point=f"{__name__}:{entry.__name__}",
                max_episode_steps=EPISODE_STEPS,
            )


register()
