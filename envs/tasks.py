"""The task registry: every task one agent can be trained or evaluated on.

A task is a MiniGrid environment plus what the project needs to know about it:
its ``family`` (navigation or recognition), its ``level`` (1 = easiest, used by
the curriculum), its ``split`` (``train`` or ``heldout``), its episode limit and
its mission target (for the target-cell label). ``make(name)`` returns the task
in the common observation format of :mod:`envs.wrappers`.

A task's index in :data:`TASKS` is its ``obs["task"]`` id. Tasks are only ever
appended, so saved agents keep their task ids.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from envs import recognition
from envs.wrappers import DEFAULT_MISSION_LENGTH, CommonObs, ExcludeTargets, ObsMode, Target

Family = Literal["navigation", "recognition"]
Split = Literal["train", "heldout"]
SPLITS: tuple[str, ...] = ("train", "heldout")


def _goal(env: Any) -> Target:
    return OBJECT_TO_IDX["goal"], COLOR_TO_IDX["green"]


def _named(type_attr: str, color_attr: str) -> Callable[[Any], Target]:
    def target(env: Any) -> Target:
        return OBJECT_TO_IDX[getattr(env, type_attr)], COLOR_TO_IDX[getattr(env, color_attr)]

    return target


def _door(env: Any) -> Target:
    return OBJECT_TO_IDX["door"], COLOR_TO_IDX[env.target_color]


def _key_corridor(env: Any) -> Target:
    return OBJECT_TO_IDX[env.obj.type], COLOR_TO_IDX[env.obj.color]


@dataclass(frozen=True)
class TaskSpec:
    """One task of the registry.

    Attributes:
        name: short unique name used on the command line, e.g. ``DoorKey-5x5``.
        env_id: gymnasium id of the underlying environment.
        family: ``navigation`` (reach a place) or ``recognition`` (find the
            object the mission names).
        level: difficulty, 1 = easiest; the curriculum unlocks by level.
        split: ``train`` (trained on) or ``heldout`` (only evaluated).
        max_steps: episode time limit (truncation).
        target: maps the unwrapped env after reset to its mission target
            ``(object type id, colour id)``; None if the mission names none.
        kwargs: extra constructor arguments of the environment.
    """

    name: str
    env_id: str
    family: Family
    level: int
    split: Split
    max_steps: int
    target: Callable[[Any], Target] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> int:
        """Position in :data:`TASKS`: the task's ``obs["task"]`` id."""
        return TASK_INDEX[self.name]

    def factory(self, **kwargs: Any) -> gym.Env:
        """Build the raw MiniGrid environment (MiniGrid's dict observations).

        Builds the class directly rather than through ``gym.make``, whose
        checker and order-enforcing wrappers would cost time on every step.
        """
        spec = gym.spec(self.env_id)
        creator = load_env_creator(spec.entry_point)
        return creator(**{**spec.kwargs, "max_steps": self.max_steps, **self.kwargs, **kwargs})


def _minigrid(name: str, family: Family, level: int, split: Split, max_steps: int, target=_goal) -> TaskSpec:
    return TaskSpec(name, f"MiniGrid-{name}-v0", family, level, split, max_steps, target)


def _ours(name: str, level: int, max_steps: int) -> TaskSpec:
    split: Split = "heldout" if name.endswith("-Heldout") else "train"
    return TaskSpec(name, recognition.gym_id(name), "recognition", level, split, max_steps, _named("target_type", "target_color"))


_gotoobj = _named("targetType", "target_color")
_fetch = _named("targetType", "targetColor")

# max_steps are MiniGrid's own defaults, so results compare with the literature.
_SPECS: tuple[TaskSpec, ...] = (
    # navigation, train
    _minigrid("Empty-5x5", "navigation", 1, "train", 100),
    _minigrid("Empty-8x8", "navigation", 1, "train", 256),
    _minigrid("LavaGapS5", "navigation", 1, "train", 100),
    _minigrid("DoorKey-5x5", "navigation", 2, "train", 250),
    _minigrid("DoorKey-6x6", "navigation", 2, "train", 360),
    _minigrid("LavaGapS7", "navigation", 2, "train", 196),
    _minigrid("MultiRoom-N2-S4", "navigation", 2, "train", 40),
    _minigrid("SimpleCrossingS9N1", "navigation", 2, "train", 324),
    _minigrid("DoorKey-8x8", "navigation", 3, "train", 640),
    _minigrid("FourRooms", "navigation", 3, "train", 100),
    _minigrid("KeyCorridorS3R1", "navigation", 3, "train", 270, _key_corridor),
    # recognition, train
    _minigrid("GoToDoor-5x5", "recognition", 1, "train", 100, _door),
    _minigrid("Fetch-5x5-N2", "recognition", 1, "train", 125, _fetch),
    _ours("ColorGoTo-5x5-N2", 1, 125),
    _minigrid("GoToDoor-6x6", "recognition", 2, "train", 144, _door),
    _minigrid("GoToObject-6x6-N2", "recognition", 2, "train", 180, _gotoobj),
    _minigrid("Fetch-6x6-N2", "recognition", 2, "train", 180, _fetch),
    _ours("ColorGoTo-6x6-N3", 2, 180),
    _ours("ColorPickup-6x6-N3", 2, 180),
    _minigrid("GoToDoor-8x8", "recognition", 3, "train", 256, _door),
    _minigrid("GoToObject-8x8-N2", "recognition", 3, "train", 320, _gotoobj),
    _minigrid("Fetch-8x8-N3", "recognition", 3, "train", 320, _fetch),
    _ours("ColorGoTo-8x8-N4", 3, 320),
    _ours("ColorPickup-8x8-N4", 3, 320),
    # navigation, held-out: larger or unseen layouts
    _minigrid("DoorKey-16x16", "navigation", 4, "heldout", 2560),
    _minigrid("MultiRoom-N4-S5", "navigation", 4, "heldout", 120),
    _minigrid("LavaCrossingS9N1", "navigation", 3, "heldout", 324),
    _minigrid("LavaGapS6", "navigation", 2, "heldout", 144),
    _minigrid("SimpleCrossingS11N5", "navigation", 4, "heldout", 484),
    # recognition, held-out: unseen colour-type pairs as targets
    _ours("ColorGoTo-6x6-N3-Heldout", 2, 180),
    _ours("ColorPickup-6x6-N3-Heldout", 2, 180),
    _ours("ColorGoTo-8x8-N4-Heldout", 3, 320),
    _ours("ColorPickup-8x8-N4-Heldout", 3, 320),
)

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _SPECS}
"""Every task by name, in registry order (the order gives ``obs["task"]``)."""
TASK_INDEX: dict[str, int] = {name: i for i, name in enumerate(TASKS)}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
"""Task names by task index."""
assert len(TASKS) == len(_SPECS), "two tasks share a name"


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``; a ValueError naming close matches if unknown."""
    try:
        return TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, TASKS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown task {name!r}.{hint} Known tasks: {', '.join(TASKS)} (python train.py --list-tasks)."
        ) from None


def list_tasks(*, split: str | None = None, family: str | None = None) -> list[TaskSpec]:
    """Tasks in registry order, optionally only one split and/or family."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r} is not a split; use one of {SPLITS}.")
    if family is not None and family not in ("navigation", "recognition"):
        raise ValueError(f"family={family!r} is not a task family; use navigation or recognition.")
    return [
        spec
        for spec in TASKS.values()
        if (split is None or spec.split == split) and (family is None or spec.family == family)
    ]


def excludes_targets(spec: TaskSpec) -> bool:
    """Whether the task's train-split episodes must be redrawn when they target a held-out pair.

    Only missions naming a key, ball or box can hit a held-out pair; goal and
    door targets never can, so their resets skip the check.
    """
    return spec.split == "train" and spec.target not in (None, _goal, _door)


def raw(task_name: str, *, render_mode: str | None = None) -> gym.Env:
    """One task's MiniGrid environment with MiniGrid's own observations.

    In the train split, held-out (colour, type) pairs are never the target.
    """
    spec = get_task(task_name)
    env = spec.factory(render_mode=render_mode)
    if excludes_targets(spec):
        env = ExcludeTargets(env, target_fn=spec.target, excluded=recognition.HELDOUT_PAIRS)
    return env


def make(
    task_name: str,
    *,
    seed: int | None = None,
    obs: ObsMode = "symbolic",
    mission_length: int = DEFAULT_MISSION_LENGTH,
    render_mode: str | None = None,
) -> gym.Env:
    """One task's environment in the common observation format.

    A plain gymnasium env: Stable-Baselines3's ``DummyVecEnv`` accepts it.
    In the train split, held-out (colour, type) pairs are never the target.

    Args:
        task_name: a name from :data:`TASKS`.
        seed: if given, the env is reset once with this seed, so the next
            ``reset()`` without a seed continues a deterministic stream.
        obs: ``"symbolic"`` (7x7x3 ids) or ``"rgb"`` (56x56x3 pixels).
        mission_length: tokens kept of the mission.
        render_mode: passed to MiniGrid (``"rgb_array"`` for videos).
    """
    spec = get_task(task_name)
    env = CommonObs(
        raw(task_name, render_mode=render_mode),
        task_index=spec.index,
        num_tasks=len(TASKS),
        family=spec.family,
        target_fn=spec.target,
        obs=obs,
        mission_length=mission_length,
    )
    if seed is not None:
        env.reset(seed=seed)
    return env


def make_external(
    env_id: str,
    *,
    family: str = "navigation",
    obs: ObsMode = "symbolic",
    mission_length: int = DEFAULT_MISSION_LENGTH,
    render_mode: str | None = None,
) -> gym.Env:
    """Any registered MiniGrid or BabyAI environment id, in the common observation format.

    For evaluating on environments outside the task registry. Such an env has
    no task id (``obs["task"]`` is 0: agents conditioned on task ids cannot be
    evaluated on it) and no mission target label (``target_cell`` is always
    "not in view"); ``family`` decides which family's towers (PLE) it uses.

    Raises:
        ValueError: the id is not registered (close matches are named), the
            env is not a MiniGrid env, or its view is not the 7x7 one agents see.
    """
    import minigrid  # noqa: F401  (registers the MiniGrid and BabyAI ids)
    from minigrid.minigrid_env import MiniGridEnv

    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; MiniGrid ids look like MiniGrid-DoorKey-5x5-v0."
        raise ValueError(f"--env {env_id!r} is not a registered gymnasium id{hint}")
    env = gym.make(env_id, render_mode=render_mode)
    if not isinstance(env.unwrapped, MiniGridEnv):
        env.close()
        raise ValueError(
            f"--env {env_id!r} is a {type(env.unwrapped).__name__}, not a MiniGrid/BabyAI environment: "
            "agents need MiniGrid's observations and seven actions."
        )
    view = env.unwrapped.agent_view_size
    if view != 7:
        env.close()
        raise ValueError(f"--env {env_id!r} has a {view}x{view} view; agents see the default 7x7 view.")
    return CommonObs(env, task_index=0, num_tasks=len(TASKS), family=family, obs=obs, mission_length=mission_length)


def format_task_table(specs: list[TaskSpec] | None = None) -> str:
    """The task table: name, family, level, split, max_steps; one task a line."""
    specs = list(TASKS.values()) if specs is None else specs
    width = max(len(spec.name) for spec in specs)
    lines = [f"{'name':<{width}}  {'family':<11}  {'level':>5}  {'split':<7}  {'max_steps':>9}"]
    lines += [
        f"{spec.name:<{width}}  {spec.family:<11}  {spec.level:>5}  {spec.split:<7}  {spec.max_steps:>9}"
        for spec in specs
    ]
    return "\n".join(lines)
