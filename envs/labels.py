"""The auxiliary labels, computed for a whole batch of slots at once.

:func:`envs.wrappers.target_cell` labels one slot's view; the pooled backend
(:mod:`envs.pooled`) steps hundreds of slots per call and labels them here in
a few numpy operations instead of a Python loop over slots. Both give the
same labels (``tests/test_labels.py`` checks them against each other).

A task's mission target is known at reset; from then on only the view
changes, so the per-step work is :func:`target_cells` on the batch.
"""

from __future__ import annotations

import re

import numpy as np
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from envs.wrappers import NOT_IN_VIEW, NUM_CELLS, VIEW_SIZE, Target

NO_TARGET: Target = (255, 255)
"""Target of a task whose mission names no object: matches no cell."""

GOAL: Target = (OBJECT_TO_IDX["goal"], COLOR_TO_IDX["green"])

_NAMED = re.compile(r"\b(" + "|".join(COLOR_TO_IDX) + r") (key|ball|box|door)\b")

# Rank of each view cell, as target_cell breaks ties: nearest to the agent
# (x = 3, y = 6; Manhattan distance), then the lower cell index y * 7 + x.
# Indexed [x, y] like the image.
_x, _y = np.meshgrid(np.arange(VIEW_SIZE), np.arange(VIEW_SIZE), indexing="ij")
_RANK = ((np.abs(_x - VIEW_SIZE // 2) + (VIEW_SIZE - 1 - _y)) * NUM_CELLS + _y * VIEW_SIZE + _x).astype(np.int32)
_CELL = (_y * VIEW_SIZE + _x).reshape(-1)
_NO_MATCH = np.iinfo(np.int32).max


def mission_target(mission: str, *, goal: bool) -> Target:
    """The ``(object type id, colour id)`` a mission asks for.

    Args:
        mission: MiniGrid's mission text.
        goal: the task's target is the green goal square (DoorKey, LavaGap,
            ...: their missions name a key or door on the way, not the target).

    Returns:
        The goal, the last "<colour> <type>" the mission names, or
        :data:`NO_TARGET` when it names none.
    """
    if goal:
        return GOAL
    named = _NAMED.findall(mission)
    if not named:
        return NO_TARGET
    color, kind = named[-1]
    return OBJECT_TO_IDX[kind], COLOR_TO_IDX[color]


def target_cells(images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """:func:`envs.wrappers.target_cell` for a batch.

    Args:
        images: symbolic views, uint8 ``(n, 7, 7, 3)`` indexed ``[x, y]``.
        targets: ``(n, 2)`` object type id and colour id per slot
            (:data:`NO_TARGET` for none).

    Returns:
        int64 ``(n,)``: the nearest matching cell ``y * 7 + x``, or
        :data:`~envs.wrappers.NOT_IN_VIEW` (49).
    """
    n = images.shape[0]
    match = (images[..., 0] == targets[:, 0, None, None]) & (images[..., 1] == targets[:, 1, None, None])
    ranks = np.where(match, _RANK, _NO_MATCH).reshape(n, NUM_CELLS)
    best = ranks.argmin(axis=1)
    cells = _CELL[best].astype(np.int64)
    cells[ranks[np.arange(n), best] == _NO_MATCH] = NOT_IN_VIEW
    return cells
