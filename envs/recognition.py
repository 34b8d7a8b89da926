"""Recognition tasks of our own: find an object named by colour and type.

A room holds a few objects (keys, balls, boxes in MiniGrid's six colours). The
mission names one of them by colour *and* type, so the agent has to recognise
both attributes: distractors always share the target's colour or its type when
there is room for them. Six of the eighteen colour-type pairs are held out:

* in the ``train`` split they never appear at all (neither as target nor as a
  distractor), so a trained agent has never seen, say, a red ball;
* in the ``heldout`` split every target is a held-out pair, while distractors
  come from all pairs.

Evaluating on the held-out split therefore measures compositional
generalisation: the agent knows "red" (from red keys and boxes) and "ball"
(from balls of other colours) but has never been asked for a red ball.

Two modes share one environment class:

* ``goto``: "go to the {colour} {type}". The agent succeeds by taking the
  ``done`` action while facing the target; ``done`` anywhere else, or picking
  an object up, ends the episode as a failure (as MiniGrid's GoToObject, but it
  must face the object, as in BabyAI's GoTo levels).
* ``pickup``: "pick up the {colour} {type}". Picking up the target succeeds;
  picking up anything else ends the episode as a failure (as MiniGrid's Fetch).

The environments are registered with gymnasium under ``Omnigrid-*`` ids.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import gymnasium as gym
from minigrid.core.constants import COLOR_NAMES
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Box, Key, WorldObj
from minigrid.minigrid_env import MiniGridEnv

OBJECT_TYPES: tuple[str, ...] = ("key", "ball", "box")
"""Object types a recognition mission can name."""

ALL_PAIRS: tuple[tuple[str, str], ...] = tuple(itertools.product(COLOR_NAMES, OBJECT_TYPES))
"""Every (colour, type) pair: 6 colours x 3 types = 18."""

HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        # Each colour is held out once and each type twice, so every colour and
        # every type is still seen as a target in training with other partners.
        ("red", "ball"),
        ("green", "box"),
        ("blue", "key"),
        ("purple", "ball"),
        ("yellow", "box"),
        ("grey", "key"),
    }
)
"""(colour, type) pairs never used as a target in the train split."""

TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in HELDOUT_PAIRS)
"""The twelve pairs the train split draws targets (and distractors) from."""

Mode = Literal["goto", "pickup"]
Split = Literal["train", "heldout"]

_OBJECT_CLASSES = {"key": Key, "ball": Ball, "box": Box}


def _make_object(color: str, obj_type: str) -> WorldObj:
    return _OBJECT_CLASSES[obj_type](color)


class ColorObjectEnv(MiniGridEnv):
    """A room with ``num_objs`` objects; the mission names one by colour and type.

    Args:
        size: side of the square room, walls included.
        num_objs: objects in the room (target plus distractors), at least 2.
        mode: ``"goto"`` (face the target and take ``done``) or ``"pickup"``.
        split: ``"train"`` (held-out pairs never appear) or ``"heldout"``
            (the target is always a held-out pair).
        max_steps: episode length limit; default ``5 * size**2`` as in
            MiniGrid's GoToObject.
        **kwargs: passed to :class:`MiniGridEnv` (e.g. ``render_mode``).
    """

    def __init__(
        self,
        size: int = 6,
        num_objs: int = 3,
        *,
        mode: Mode = "goto",
        split: Split = "train",
        max_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if mode not in ("goto", "pickup"):
            raise ValueError(f"mode={mode!r} is not a recognition mode; use 'goto' or 'pickup'.")
        if split not in ("train", "heldout"):
            raise ValueError(f"split={split!r} is not a split; use 'train' or 'heldout'.")
        if num_objs < 2:
            raise ValueError(f"num_objs={num_objs} leaves no distractor; use num_objs >= 2.")
        if num_objs > (size - 2) ** 2 - 1:
            raise ValueError(
                f"num_objs={num_objs} objects do not fit a {size}x{size} room with the agent; "
                f"use num_objs <= {(size - 2) ** 2 - 1}."
            )
        self.size = size
        self.num_objs = num_objs
        self.mode: Mode = mode
        self.split: Split = split
        self.target_pairs = sorted(HELDOUT_PAIRS) if split == "heldout" else list(TRAIN_PAIRS)
        self.distractor_pairs = list(ALL_PAIRS) if split == "heldout" else list(TRAIN_PAIRS)
        verb = "go to the" if mode == "goto" else "pick up the"
        mission_space = MissionSpace(
            mission_func=lambda color, obj_type: f"{verb} {color} {obj_type}",
            ordered_placeholders=[list(COLOR_NAMES), list(OBJECT_TYPES)],
        )
        self._verb = verb
        self.target_color = ""
        self.target_type = ""
        self.target_obj: WorldObj | None = None
        super().__init__(
            mission_space=mission_space,
            width=size,
            height=size,
            see_through_walls=True,
            max_steps=max_steps if max_steps is not None else 5 * size**2,
            **kwargs,
        )

    def _pick_scene(self) -> list[tuple[str, str]]:
        """Target pair first, then distractor pairs, all distinct."""
        target = self._rand_elem(self.target_pairs)
        others = [p for p in self.distractor_pairs if p != target]
        # Hard distractors first: one sharing the colour, one sharing the type,
        # so neither attribute alone identifies the target.
        same_color = [p for p in others if p[0] == target[0]]
        same_type = [p for p in others if p[1] == target[1]]
        scene = [target]
        for pool in (same_color, same_type):
            if len(scene) < self.num_objs and pool:
                scene.append(self._rand_elem(pool))
        rest = [p for p in others if p not in scene]
        while len(scene) < self.num_objs:
            pick = self._rand_elem(rest)
            rest.remove(pick)
            scene.append(pick)
        return scene

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        scene = self._pick_scene()
        objects = [_make_object(color, obj_type) for color, obj_type in scene]
        for obj in objects:
            self.place_obj(obj)
        self.place_agent()
        self.target_obj = objects[0]
        self.target_color, self.target_type = scene[0]
        self.mission = f"{self._verb} {self.target_color} {self.target_type}"

    def step(self, action: int):
        fwd_cell = self.grid.get(*self.front_pos)
        obs, reward, terminated, truncated, info = super().step(action)
        if self.mode == "goto" and action == self.actions.done:
            terminated = True
            if fwd_cell is self.target_obj:
                reward = self._reward()
        elif self.carrying is not None:
            # Picking something up ends the episode: a success only when the
            # mission asked for exactly that object.
            terminated = True
            if self.mode == "pickup" and self.carrying is self.target_obj:
                reward = self._reward()
        return obs, reward, terminated, truncated, info


# (gym id suffix, kwargs); registered as Omnigrid-<suffix>-v0.
RECOGNITION_VARIANTS: dict[str, dict[str, Any]] = {
    "ColorGoTo-5x5-N2": dict(size=5, num_objs=2, mode="goto", split="train"),
    "ColorGoTo-6x6-N3": dict(size=6, num_objs=3, mode="goto", split="train"),
    "ColorGoTo-8x8-N4": dict(size=8, num_objs=4, mode="goto", split="train"),
    "ColorPickup-6x6-N3": dict(size=6, num_objs=3, mode="pickup", split="train"),
    "ColorPickup-8x8-N4": dict(size=8, num_objs=4, mode="pickup", split="train"),
    "ColorGoTo-6x6-N3-Heldout": dict(size=6, num_objs=3, mode="goto", split="heldout"),
    "ColorGoTo-8x8-N4-Heldout": dict(size=8, num_objs=4, mode="goto", split="heldout"),
    "ColorPickup-6x6-N3-Heldout": dict(size=6, num_objs=3, mode="pickup", split="heldout"),
    "ColorPickup-8x8-N4-Heldout": dict(size=8, num_objs=4, mode="pickup", split="heldout"),
}


def gym_id(variant: str) -> str:
    """The gymnasium id of one of :data:`RECOGNITION_VARIANTS`."""
    return f"Omnigrid-{variant}-v0"


def register_recognition_envs() -> None:
    """Register every recognition variant with gymnasium (idempotent)."""
    for variant, kwargs in RECOGNITION_VARIANTS.items():
        env_id = gym_id(variant)
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="envs.recognition:ColorObjectEnv", kwargs=kwargs)


register_recognition_envs()
