"""The one observation format every task shares, and the auxiliary labels.

:class:`CommonObs` turns any MiniGrid environment into::

    obs = {
        "image":     uint8 (7, 7, 3) symbolic view, or (56, 56, 3) RGB with obs="rgb",
        "direction": int in [0, 4),
        "mission":   int64 (mission_length,) token ids, 0-padded,
        "task":      int, index of the task in the registry,
        "family":    int, 0 = navigation, 1 = recognition,
    }

and adds to ``info`` on every reset and step::

    info["view_labels"] = uint8 (7, 7, 2)  per view cell: object type id (MiniGrid's
                                          OBJECT_TO_IDX) and colour id (COLOR_TO_IDX)
    info["target_cell"] = int              view cell of the mission's target, y * 7 + x,
                                          or 49 = not in view
    info["success"] = bool                 only on the step that ends an episode

View cells are indexed like MiniGrid's image, ``image[x, y]``: ``x`` runs left
to right, ``y`` from the far row (0) to the agent's row (6); the agent stands
at ``x = 3, y = 6`` facing ``y = 0``. Cells the agent cannot see are labelled
``unseen`` (0), as in the symbolic view: the labels describe what is in view.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Callable, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import COLOR_NAMES, COLOR_TO_IDX, OBJECT_TO_IDX

ObsMode = Literal["symbolic", "rgb"]
OBS_MODES: tuple[str, ...] = ("symbolic", "rgb")

FAMILIES: tuple[str, ...] = ("navigation", "recognition")
"""Task families; an observation's ``family`` is the index in this tuple."""

VIEW_SIZE = 7
NUM_CELLS = VIEW_SIZE * VIEW_SIZE
NOT_IN_VIEW = NUM_CELLS
"""Target label when the mission's target is not in view (class 49 of 50)."""

RGB_TILE_SIZE = 8
"""Pixels per cell of the rendered egocentric view: 7 * 8 = 56 pixels a side."""

DEFAULT_MISSION_LENGTH = 16
"""Tokens kept of a mission; the longest registered mission has 12 words."""

# The fixed vocabulary: MiniGrid's and BabyAI's mission grammar. Ids never change
# meaning: new words are only ever appended, so saved agents stay valid.
PAD, UNK = "<pad>", "<unk>"
VOCAB: tuple[str, ...] = (
    PAD, UNK,
    # colours and object types
    *COLOR_NAMES, "key", "ball", "box", "door", "goal", "lava", "wall", "object", "square",
    # MiniGrid mission words
    "a", "the", "to", "and", "then", "get", "go", "use", "open", "reach", "traverse",
    "rooms", "room", "avoid", "find", "opening", "pick", "up", "fetch", "you", "must",
    "put", "near", "unlock", "hallway", "end", "of", "at", "matching", "from",
    # BabyAI grammar
    "next", "after", "on", "your", "left", "right", "in", "front", "behind",
)
TOKEN_IDS: dict[str, int] = {word: i for i, word in enumerate(VOCAB)}
assert len(TOKEN_IDS) == len(VOCAB), "VOCAB holds a word twice"

_WORD = re.compile(r"[a-z]+")

# A task's mission target: (object type id, colour id).
Target = tuple[int, int]
TargetFn = Callable[[Any], "Target | None"]


def tokenize(mission: str, length: int = DEFAULT_MISSION_LENGTH) -> np.ndarray:
    """Token ids of a mission string, padded with 0 (``<pad>``) to ``length``.

    Words outside :data:`VOCAB` become ``<unk>``; a mission longer than
    ``length`` words is cut to its first ``length`` words.

    Returns:
        int64 array of shape ``(length,)``.
    """
    ids = [TOKEN_IDS.get(word, 1) for word in _WORD.findall(mission.lower())]
    out = np.zeros(length, dtype=np.int64)
    out[: min(len(ids), length)] = ids[:length]
    return out


def target_cell(image: np.ndarray, target: Target | None) -> int:
    """View cell (``y * 7 + x``) of the visible object matching ``target``.

    Several matching objects (e.g. two red keys in Fetch) give the one nearest
    to the agent (Manhattan distance in the view; ties go to the lower cell).

    Args:
        image: symbolic view, uint8 ``(7, 7, 3)`` indexed ``[x, y]``.
        target: ``(object type id, colour id)``, or None when the task has no
            single target object.

    Returns:
        The cell index in ``[0, 49)``, or :data:`NOT_IN_VIEW` (49).
    """
    if target is None:
        return NOT_IN_VIEW
    # Searching the raw bytes is ~5x faster than numpy masks on a 7x7 array,
    # and this runs on every step. Cell (x, y) starts at byte 3 * (7 * x + y).
    buf = image.tobytes()
    needle = bytes(target)
    best, best_dist = NOT_IN_VIEW, NUM_CELLS
    pos = buf.find(needle)
    while pos != -1:
        if pos % 3 == 0:
            x, y = divmod(pos // 3, VIEW_SIZE)
            dist = abs(x - VIEW_SIZE // 2) + (VIEW_SIZE - 1 - y)
            cell = y * VIEW_SIZE + x
            if dist < best_dist or (dist == best_dist and cell < best):
                best, best_dist = cell, dist
        pos = buf.find(needle, pos + 1)
    return best


def observation_space(obs: ObsMode, *, num_tasks: int, mission_length: int) -> spaces.Dict:
    """The observation space shared by every task in one observation mode."""
    side = VIEW_SIZE * RGB_TILE_SIZE if obs == "rgb" else VIEW_SIZE
    return spaces.Dict(
        {
            "image": spaces.Box(0, 255, (side, side, 3), dtype=np.uint8),
            "direction": spaces.Discrete(4),
            "mission": spaces.Box(0, len(VOCAB) - 1, (mission_length,), dtype=np.int64),
            "task": spaces.Discrete(num_tasks),
            "family": spaces.Discrete(len(FAMILIES)),
        }
    )


class CommonObs(gym.Wrapper):
    """Give a MiniGrid env the common observation, labels and ``success``.

    Args:
        env: a MiniGrid environment (raw dict observations).
        task_index: index of the task in the registry (``obs["task"]``).
        num_tasks: size of the task registry (the ``task`` space).
        family: ``"navigation"`` or ``"recognition"``.
        target_fn: maps the unwrapped env (after reset) to its mission target,
            or None when the task has none; used for the target-cell label.
        obs: ``"symbolic"`` (7x7x3 ids) or ``"rgb"`` (rendered egocentric view).
        mission_length: tokens kept of the mission.
    """

    def __init__(
        self,
        env: gym.Env,
        *,
        task_index: int,
        num_tasks: int,
        family: str,
        target_fn: TargetFn | None = None,
        obs: ObsMode = "symbolic",
        mission_length: int = DEFAULT_MISSION_LENGTH,
    ) -> None:
        super().__init__(env)
        if obs not in OBS_MODES:
            raise ValueError(f"obs={obs!r} is not an observation mode; use one of {OBS_MODES}.")
        if family not in FAMILIES:
            raise ValueError(f"family={family!r} is not a task family; use one of {FAMILIES}.")
        if not 0 <= task_index < num_tasks:
            raise ValueError(f"task_index={task_index} is outside [0, {num_tasks}).")
        self.task_index = task_index
        self.family_index = FAMILIES.index(family)
        self.obs_mode: ObsMode = obs
        self.mission_length = mission_length
        self.target_fn = target_fn
        self.observation_space = observation_space(obs, num_tasks=num_tasks, mission_length=mission_length)
        self.action_space = spaces.Discrete(7)
        self._tokens: dict[str, np.ndarray] = {}
        self._target: Target | None = None
        self._warned_long = False

    def _mission_tokens(self, mission: str) -> np.ndarray:
        tokens = self._tokens.get(mission)
        if tokens is None:
            if not self._warned_long and len(_WORD.findall(mission.lower())) > self.mission_length:
                warnings.warn(
                    f"mission {mission!r} is longer than mission_length={self.mission_length} words "
                    "and is cut; raise mission_length to keep it whole.",
                    stacklevel=3,
                )
                self._warned_long = True
            tokens = self._tokens[mission] = tokenize(mission, self.mission_length)
        return tokens

    def _convert(self, raw: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        symbolic = raw["image"]
        if self.obs_mode == "rgb":
            image = self.env.unwrapped.get_pov_render(tile_size=RGB_TILE_SIZE)
        else:
            image = symbolic
        # Two flat keys, not a nested dict: gymnasium batches infos key by key.
        info["view_labels"] = symbolic[:, :, :2]
        info["target_cell"] = target_cell(symbolic, self._target)
        return {
            "image": image,
            "direction": int(raw["direction"]),
            "mission": self._mission_tokens(raw["mission"]),
            "task": self.task_index,
            "family": self.family_index,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        raw, info = self.env.reset(seed=seed, options=options)
        self._target = self.target_fn(self.env.unwrapped) if self.target_fn is not None else None
        return self._convert(raw, info), info

    def step(self, action):
        raw, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            # MiniGrid rewards only success (1 - 0.9 * steps / max_steps > 0);
            # failures (lava, wrong object, time-out) end with reward 0.
            info["success"] = bool(terminated and reward > 0)
        return self._convert(raw, info), float(reward), terminated, truncated, info


class ExcludeTargets(gym.Wrapper):
    """Redraw episodes whose mission target is one of ``excluded`` pairs.

    Used on the train split so that a held-out (colour, type) pair is never a
    target there, whichever MiniGrid task generated the episode. Redrawing
    continues the env's own random stream, so seeding stays deterministic.

    Args:
        env: a MiniGrid environment.
        target_fn: maps the unwrapped env to ``(object type id, colour id)``.
        excluded: (colour name, type name) pairs that must never be the target.
        max_tries: resets tried before giving up with an error.
    """

    def __init__(self, env: gym.Env, *, target_fn: TargetFn, excluded, max_tries: int = 1000) -> None:
        super().__init__(env)
        self.target_fn = target_fn
        self.excluded = {(OBJECT_TO_IDX[t], COLOR_TO_IDX[c]) for c, t in excluded}
        self.max_tries = max_tries

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        for _ in range(self.max_tries):
            if self.target_fn(self.env.unwrapped) not in self.excluded:
                return obs, info
            obs, info = self.env.reset(options=options)
        raise RuntimeError(
            f"{type(self.env.unwrapped).__name__}: no episode without an excluded target in "
            f"{self.max_tries} resets; the task cannot avoid targets {sorted(self.excluded)}."
        )
