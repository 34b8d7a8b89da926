"""Copy an EnvPool MiniGrid env's state into a python MiniGrid env of the same task.

EnvPool (sail-sg's C++ MiniGrid) and python ``minigrid`` draw layouts from
different random streams, so the same seed gives different episodes. To
compare their *dynamics*, the parity test lets EnvPool generate an episode,
reads its full state with ``env.debug_states([i])`` and installs that state
in a python env; from then on both must step identically under the same
actions.

Only the state is copied, once, at reset: nothing is re-synchronised after a
step (EnvPool's own alignment test re-copies the state after every step, which
would hide a divergence that builds up over several steps).

What is copied:

* the grid: every cell's object by type, colour and state (door open, closed,
  locked), with a box's contents; each object gets ``init_pos``/``cur_pos``
  as ``place_obj`` would give it;
* the agent's position and direction, the carried object (and its contents),
  the mission text and the step count;
* the attributes a task's ``step()`` (or the project's target function)
  reads: Fetch's ``targetType``/``targetColor``, GoToDoor's ``target_pos``/
  ``target_color``, GoToObject's ``targetType``/``target_color``/
  ``target_pos``, KeyCorridor's ``obj`` (the very object in the grid:
  MiniGrid compares it by identity); and, for a faithful layout though no
  ``step()`` reads them, the goal positions of MultiRoom and Crossing and
  LavaGap's goal and gap positions.

The classes covered are those of the registry's MiniGrid tasks: Empty,
DoorKey, FourRooms, MultiRoom, Crossing (Simple/Lava), LavaGap, Fetch,
GoToDoor, GoToObject, KeyCorridor.

A python env class this module does not know raises ``NotImplementedError``
rather than being half-copied.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT
from minigrid.core.grid import Grid
from minigrid.core.world_object import Box, WorldObj
from minigrid.envs import (
    CrossingEnv,
    DoorKeyEnv,
    EmptyEnv,
    FetchEnv,
    FourRoomsEnv,
    GoToDoorEnv,
    GoToObjectEnv,
    KeyCorridorEnv,
    LavaGapEnv,
    MultiRoomEnv,
)
from minigrid.minigrid_env import MiniGridEnv

from envs.wrappers import CommonObs, ExcludeTargets

# Python env classes whose step() reads nothing beyond the grid, the agent and
# the step count (goal positions etc. are copied when the class has them).
_PLAIN = (EmptyEnv, DoorKeyEnv, FourRoomsEnv, MultiRoomEnv, CrossingEnv, LavaGapEnv)
_TARGETED = (FetchEnv, GoToDoorEnv, GoToObjectEnv, KeyCorridorEnv)


def _decode(type_idx: int, color_idx: int, state: int) -> WorldObj | None:
    """One object from its (type, colour, state) triple; None for an empty cell.

    grid_contains holds (0, 0, 0), "unseen", where a cell contains nothing;
    MiniGrid decodes that, like "empty", to None.
    """
    return WorldObj.decode(int(type_idx), int(color_idx), int(state))


def grid_from_debug(debug: Any) -> Grid:
    """The python :class:`Grid` of an EnvPool debug state (cells are x-major)."""
    width, height = int(debug.width), int(debug.height)
    cells = np.asarray(debug.grid, dtype=np.uint8).reshape(width, height, 3)
    contains = np.asarray(debug.grid_contains, dtype=np.uint8).reshape(width, height, 3)
    grid = Grid(width, height)
    for x in range(width):
        for y in range(height):
            obj = _decode(*cells[x, y])
            if obj is None:
                continue
            inner = _decode(*contains[x, y])
            if inner is not None:
                if not isinstance(obj, Box):
                    raise ValueError(f"cell ({x}, {y}) holds a {obj.type} with contents; only boxes hold objects")
                obj.contains = inner
            obj.init_pos = (x, y)
            obj.cur_pos = (x, y)
            grid.set(x, y, obj)
    return grid


def carrying_from_debug(debug: Any) -> WorldObj | None:
    """The carried object of an EnvPool debug state, or None."""
    if not debug.has_carrying:
        return None
    obj = WorldObj.decode(int(debug.carrying_type), int(debug.carrying_color), int(debug.carrying_state))
    if obj is None:
        raise ValueError(f"debug state carries a type {debug.carrying_type} object, which python cannot hold")
    if debug.carrying_has_contains:
        obj.contains = WorldObj.decode(
            int(debug.carrying_contains_type),
            int(debug.carrying_contains_color),
            int(debug.carrying_contains_state),
        )
    obj.cur_pos = np.array([-1, -1])
    return obj


def _pos(pair: Any) -> tuple[int, int]:
    return int(pair[0]), int(pair[1])


def _task_attributes(env: MiniGridEnv, debug: Any) -> None:
    """Set the task-specific attributes ``env.step()`` and the labels read."""
    target_type = IDX_TO_OBJECT[int(debug.target_type)]
    target_color = IDX_TO_COLOR[int(debug.target_color)]
    if isinstance(env, FetchEnv):
        env.targetType, env.targetColor = target_type, target_color
    elif isinstance(env, GoToDoorEnv):
        if target_type != "door":
            raise ValueError(f"GoToDoor debug state names a {target_type} as target")
        env.target_pos, env.target_color = _pos(debug.target_pos), target_color
    elif isinstance(env, GoToObjectEnv):
        env.targetType, env.target_color = target_type, target_color
        env.target_pos = _pos(debug.target_pos)
    elif isinstance(env, KeyCorridorEnv):
        # MiniGrid rewards `self.carrying == self.obj`, an identity test: obj
        # must be the very object in the grid (or the one carried).
        obj = env.grid.get(*_pos(debug.target_pos)) if debug.target_pos[0] >= 0 else None
        if obj is None and env.carrying is not None:
            obj = env.carrying
        if obj is None or (obj.type, obj.color) != (target_type, target_color):
            raise ValueError(f"KeyCorridor target {target_color} {target_type} is not at {debug.target_pos}")
        env.obj = obj
    # Goal / gap positions: nothing in step() reads them, but they describe the
    # layout, so a mirrored env must not keep the python draw's values.
    goal = _pos(debug.goal_pos)
    if isinstance(env, MultiRoomEnv):
        env.goal_pos = goal
        env.rooms = []  # the room list is not in the debug state; step() never reads it
    elif isinstance(env, CrossingEnv):
        env.goal_position = goal
    elif isinstance(env, LavaGapEnv):
        env.goal_pos = np.array(goal)
        inner = [(x, y) for x in range(1, env.width - 1) for y in range(1, env.height - 1)]
        columns = {x for x, y in inner if isinstance(env.grid.get(x, y), env.obstacle_type)}
        gaps = [(x, y) for x, y in inner if x in columns and env.grid.get(x, y) is None]
        if len(columns) != 1 or len(gaps) != 1:
            raise ValueError(f"LavaGap layout: obstacle columns {sorted(columns)}, gaps {gaps}; expected one of each")
        env.gap_pos = np.array(gaps[0])


def install_state(env: MiniGridEnv, debug: Any, step_count: int = 0) -> None:
    """Make the raw MiniGrid env ``env`` hold the EnvPool state ``debug``.

    Args:
        env: the unwrapped python env of the same task (same size and max_steps).
        debug: one element of EnvPool's ``env.debug_states([i])``.
        step_count: steps taken in the episode (EnvPool's ``info["elapsed_step"]``).
    """
    if not isinstance(env, _PLAIN + _TARGETED):
        raise NotImplementedError(f"no mirror for {type(env).__name__}; add its task attributes to envpool_mirror")
    if (env.width, env.height) != (int(debug.width), int(debug.height)):
        raise ValueError(f"grid sizes differ: python {env.width}x{env.height}, EnvPool {debug.width}x{debug.height}")
    if env.max_steps != int(debug.max_steps):
        raise ValueError(f"max_steps differ: python {env.max_steps}, EnvPool {debug.max_steps}")
    env.grid = grid_from_debug(debug)
    env.agent_pos = _pos(debug.agent_pos)
    env.agent_dir = int(debug.agent_dir)
    env.carrying = carrying_from_debug(debug)
    env.mission = str(debug.mission)
    env.step_count = int(step_count)
    _task_attributes(env, debug)


def reset_to(env: gym.Env, debug: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reset ``env`` (any wrapper chain over a MiniGrid env) into EnvPool's state.

    The python env's own reset runs with its layout generator replaced, once,
    by :func:`install_state`; so every wrapper sees an ordinary reset of the
    mirrored layout (CommonObs computes its mission target, observation and
    labels from it). The debug state must be taken right after EnvPool's reset
    (step count 0, nothing carried: MiniGrid's reset clears both).
    """
    raw = env.unwrapped
    if debug.has_carrying:
        raise ValueError("a reset state carries nothing; take the debug state right after EnvPool's reset")

    def gen_grid(width: int, height: int) -> None:
        install_state(raw, debug, step_count=0)

    raw._gen_grid = gen_grid  # instance attribute shadows the class's generator
    try:
        return env.reset()
    finally:
        del raw._gen_grid


def without_exclusion(env: gym.Env) -> gym.Env:
    """``env`` (from :func:`envs.tasks.make`) without its :class:`ExcludeTargets` layer.

    ExcludeTargets redraws a train-split episode whose target is a held-out
    pair; a mirrored episode is fixed by EnvPool, so a redraw would install
    the same state again and again. Dynamics do not depend on the exclusion,
    so the parity test drops it (the EnvPool backend applies it separately).
    """
    if not isinstance(env, CommonObs):
        raise TypeError(f"expected CommonObs outermost, got {type(env).__name__}")
    if isinstance(env.env, ExcludeTargets):
        env.env = env.env.env
    if not isinstance(env.env, MiniGridEnv):
        raise TypeError(f"unexpected wrapper {type(env.env).__name__} under CommonObs")
    return env

