"""Parameterised DMC scenarios (MrCoM, seed 002, §5 and App. C): a task with its torso resized
and its target speed changed, named ``<task>@<param>=<value>,...``:
``dmc-cheetah-run@torso=1.2,length=0.9,speed=0.6``.

- ``torso``: the torso geom's radius times this; ``length``: its length times this (about its
  middle). Both edit the model XML before MuJoCo compiles it, so the body's mass and inertia
  follow the new geometry (scaling ``geom_size`` of a compiled model would leave them stale);
  the other bodies keep theirs (see :func:`scaled_model_xml` for cheetah's fixed total mass).
- ``speed``: the task's target speed times this (cheetah-run 10 m/s, walker-walk 1, walker-run
  8, hopper-hop 2), through the task's own reward (the same tolerance, another bound). That
  reward is one-sided: any speed at or above the target scores fully. Scenarios that differ only
  in speed therefore share their best behaviour (run as fast as possible) and differ in how soon
  the reward saturates, so a lower target is an easier task, not another one. The paper's reward
  formula is not readable in the seed text.

The seed text does not keep the paper's sampling ranges. Ours, a documented choice
(``ScenarioRanges``): training scenarios draw torso and length from [0.8, 1.2] and speed from
[0.5, 1.0]; out-of-distribution ones draw each from outside those, within the allowed
[0.5, 1.5] (torso, length) and [0.25, 1.5] (speed); :func:`scenario_split` draws them seeded.

``<task>@train`` is the task with a new training scenario drawn at every reset, its parameters
appended to the observation (:func:`condition`): the env a scenario-conditioned behaviour policy
learns in. Dataset ids cannot hold ``@``, ``=`` or ``,`` (Minari's id rules), so a scenario is
written there as a slug (:func:`slug`: ``dmc-cheetah-run_torso1p2_speed0p6``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from genworld.errors import GenworldError

SCENARIO_TASKS = (
    "dmc-cheetah-run",
    "dmc-walker-walk",
    "dmc-walker-run",
    "dmc-hopper-hop",
    "dmc-walker-stand",
    "dmc-hopper-stand",
)
"""DMC tasks with scenarios (the stand tasks take no ``speed``: they have none)."""
SPEED_TASKS = {
    "dmc-cheetah-run": 10.0,
    "dmc-walker-walk": 1.0,
    "dmc-walker-run": 8.0,
    "dmc-hopper-hop": 2.0,
}
"""Target speed of each task with one (dm_control's ``_RUN_SPEED`` / ``_WALK_SPEED`` /
``_HOP_SPEED``)."""
ALLOWED = {"torso": (0.5, 1.5), "length": (0.5, 1.5), "speed": (0.25, 1.5)}
"""Each parameter's allowed range."""
GAP = 0.01
"""Out-of-distribution values keep at least this distance from the training ranges."""


@dataclass(frozen=True)
class Scenario:
    task: str
    """The DMC task it varies (``dmc-cheetah-run``)."""
    torso: float = 1.0
    """Torso radius scale."""
    length: float = 1.0
    """Torso length scale."""
    speed: float = 1.0
    """Target-speed scale."""

    @property
    def name(self) -> str:
        params = [(k, getattr(self, k)) for k in ALLOWED if getattr(self, k) != 1.0]
        return self.task + ("@" + ",".join(f"{k}={v:g}" for k, v in params) if params else "")


TRAIN = "train"
"""``<task>@train``: a new training scenario at every reset, its parameters in the observation."""


def randomized_task(name: str) -> str | None:
    """The task of a ``<task>@train`` name, else None."""
    task, mark, text = name.partition("@")
    if not mark or text != TRAIN:
        return None
    if task not in SCENARIO_TASKS:
        raise GenworldError(
            f"{name!r}: scenarios exist for {', '.join(SCENARIO_TASKS)}, not {task!r}"
        )
    return task


def condition_keys(task: str) -> tuple[str, ...]:
    """The scenario parameters of ``task`` that a conditioned policy sees, in order."""
    return tuple(k for k in ALLOWED if k != "speed" or task in SPEED_TASKS)


def condition(scenario: Scenario) -> np.ndarray:
    """The scenario's parameters (``condition_keys`` order) as a conditioned policy sees them:
    each scale minus 1, so the unchanged task is all zeros."""
    return np.array([getattr(scenario, k) - 1.0 for k in condition_keys(scenario.task)], np.float32)


def draw_training_scenario(
    task: str, rng: np.random.Generator, ranges: ScenarioRanges | None = None
) -> Scenario:
    """One scenario of ``task`` drawn uniformly from the training ranges."""
    ranges = ranges or ScenarioRanges()
    values = {k: float(rng.uniform(*ranges.train[k])) for k in condition_keys(task)}
    return Scenario(task, **values)


def slug(name: str) -> str:
    """A scenario name as dataset ids can hold it: ``dmc-cheetah-run@torso=1.2,speed=0.6`` →
    ``dmc-cheetah-run_torso1p2_speed0p6``, ``<task>@train`` → ``<task>_train``; other names as
    they are."""
    task, mark, text = name.partition("@")
    if not mark:
        return name
    parts = [p.replace("=", "").replace(".", "p") for p in filter(None, text.split(","))]
    return "_".join([task, *parts])


def unslug(text: str) -> str:
    """The inverse of :func:`slug` (a name that is not a DMC slug is returned as it is)."""
    task, _, rest = text.partition("_")
    if not rest or not text.startswith("dmc-"):
        return text
    if rest == TRAIN:
        return f"{task}@{TRAIN}"
    params = []
    for part in rest.split("_"):
        match = re.fullmatch(r"([a-z]+)(\d+(?:p\d+)?)", part)
        if not match:
            raise GenworldError(
                f"{text!r}: a scenario slug is <task>_<param><value> with p for the decimal "
                f"point (dmc-cheetah-run_torso1p2_speed0p6), not {part!r}"
            )
        params.append(f"{match[1]}={match[2].replace('p', '.')}")
    return f"{task}@{','.join(params)}"


def parse_scenario(name: str) -> Scenario | None:
    """``dmc-cheetah-run@torso=1.2,speed=0.6`` → Scenario; None for a name without ``@`` and
    for ``<task>@train`` (:func:`randomized_task`)."""
    if "@" not in name or randomized_task(name):
        return None
    task, _, text = name.partition("@")
    if task not in SCENARIO_TASKS:
        raise GenworldError(
            f"{name!r}: scenarios exist for {', '.join(SCENARIO_TASKS)}, not {task!r}"
        )
    values: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in ALLOWED or not re.fullmatch(r"\d+(\.\d+)?", value):
            raise GenworldError(
                f"{name!r}: give parameters as torso=<x>,length=<x>,speed=<x> (numbers), "
                f"not {part!r}"
            )
        low, high = ALLOWED[key]
        if not low <= float(value) <= high:
            raise GenworldError(f"{name!r}: {key} must be in [{low}, {high}], got {value}")
        values[key] = float(value)
    if values.get("speed", 1.0) != 1.0 and task not in SPEED_TASKS:
        raise GenworldError(f"{name!r}: {task} has no target speed to vary (torso, length only)")
    return Scenario(task, **values)


def scaled_model_xml(xml: str, torso: float, length: float, compile_xml=None) -> str:
    """The model XML with the ``torso`` geom's radius times ``torso`` and its length (a capsule
    given by ``fromto``, or by radius and half-length) times ``length`` about its middle.

    A model that fixes its total mass (cheetah: ``settotalmass="14"``) would hand a heavier
    torso's mass over from the other bodies; instead its geoms get the one density that gives
    the unscaled model that total (``compile_xml(xml)`` compiles the model for it), so only the
    torso's mass and inertia change."""
    root = ET.fromstring(xml)
    compiler = root.find("compiler")
    if compiler is not None and compiler.get("settotalmass") is not None:
        total = float(compiler.attrib.pop("settotalmass"))
        if compile_xml is None:
            raise GenworldError("a model with settotalmass needs compile_xml to keep its density")
        unscaled = compile_xml(ET.tostring(root, encoding="unicode")).model.body_mass.sum()
        ET.SubElement(root.find("default"), "geom", density=repr(1000.0 * total / float(unscaled)))
    geom = root.find(".//geom[@name='torso']")
    if geom is None:
        raise GenworldError("this model has no geom named 'torso' to scale")
    size = [float(x) for x in geom.get("size").split()]
    size[0] *= torso
    if geom.get("fromto"):
        a, b = np.split(np.array([float(x) for x in geom.get("fromto").split()]), 2)
        mid, half = (a + b) / 2, (b - a) / 2 * length
        geom.set("fromto", " ".join(repr(float(x)) for x in [*(mid - half), *(mid + half)]))
    else:
        size[1] *= length
    geom.set("size", " ".join(repr(x) for x in size))
    return ET.tostring(root, encoding="unicode")


def load_scenario(scenario: Scenario, seed: int | None):
    """The dm_control environment of ``scenario``: the suite's own task construction, with the
    edited model and the scaled target speed."""
    from dm_control.rl import control
    from dm_control.suite import cheetah, hopper, walker
    from dm_control.utils import rewards

    domain = scenario.task.split("-")[1]
    module = {"cheetah": cheetah, "walker": walker, "hopper": hopper}[domain]
    xml, assets = module.get_model_and_assets()
    xml = xml.decode() if isinstance(xml, bytes) else xml

    def compile_xml(text: str):
        return module.Physics.from_xml_string(text, assets)

    physics = compile_xml(scaled_model_xml(xml, scenario.torso, scenario.length, compile_xml))
    target = SPEED_TASKS.get(scenario.task, 0.0) * scenario.speed
    if domain == "cheetah":

        class Task(cheetah.Cheetah):
            def get_reward(self, physics):  # dm_control cheetah.py, with the target speed
                return rewards.tolerance(
                    physics.speed(),
                    bounds=(target, float("inf")),
                    margin=target,
                    value_at_margin=0,
                    sigmoid="linear",
                )

        task = Task(random=seed)
    elif domain == "walker":
        task = walker.PlanarWalker(move_speed=target, random=seed)
    else:
        hopping = scenario.task.endswith("hop")

        class Task(hopper.Hopper):
            def get_reward(self, physics):  # dm_control hopper.py, with the target speed
                if not hopping:
                    return super().get_reward(physics)
                standing = rewards.tolerance(physics.height(), (hopper._STAND_HEIGHT, 2))
                return standing * rewards.tolerance(
                    physics.speed(),
                    bounds=(target, float("inf")),
                    margin=target / 2,
                    value_at_margin=0.5,
                    sigmoid="linear",
                )

        task = Task(hopping=hopping, random=seed)
    timestep = getattr(module, "_CONTROL_TIMESTEP", None)
    kwargs = {"control_timestep": timestep} if timestep else {}
    return control.Environment(physics, task, time_limit=module._DEFAULT_TIME_LIMIT, **kwargs)


@dataclass(frozen=True)
class ScenarioRanges:
    """Sampling ranges of training and out-of-distribution scenarios (a documented choice)."""

    train: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"torso": (0.8, 1.2), "length": (0.8, 1.2), "speed": (0.5, 1.0)}
    )
    """Each parameter's training range."""


def scenario_split(
    task: str, n_train: int, n_ood: int, seed: int = 0, ranges: ScenarioRanges | None = None
) -> tuple[list[str], list[str]]:
    """Seeded scenario names of ``task``: ``n_train`` inside the training ranges, ``n_ood``
    with every parameter outside them (within ``ALLOWED``)."""
    if task not in SCENARIO_TASKS:
        raise GenworldError(f"scenarios exist for {', '.join(SCENARIO_TASKS)}, not {task!r}")
    ranges = ranges or ScenarioRanges()
    rng = np.random.default_rng([seed, 2])
    keys = [k for k in ALLOWED if k != "speed" or task in SPEED_TASKS]

    def draw(ood: bool) -> str:
        values = {}
        for key in keys:
            low, high = ranges.train[key]
            if not ood:
                values[key] = round(float(rng.uniform(low, high)), 3)
                continue
            a, b = ALLOWED[key]
            below, above = (low - GAP) - a, b - (high + GAP)  # lengths of the two OOD intervals
            x = rng.uniform(0.0, below + above)
            values[key] = round(float(a + x if x < below else high + GAP + (x - below)), 3)
        return Scenario(task, **values).name

    return [draw(False) for _ in range(n_train)], [draw(True) for _ in range(n_ood)]
