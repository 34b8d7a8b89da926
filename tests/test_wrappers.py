"""The common observation: mission tokens and labels checked against hand-built scenes."""

import numpy as np
import pytest
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Key
from minigrid.minigrid_env import MiniGridEnv

from envs.wrappers import NOT_IN_VIEW, VOCAB, CommonObs, target_cell, tokenize

KEY, BALL, WALL, EMPTY = (OBJECT_TO_IDX[n] for n in ("key", "ball", "wall", "empty"))
RED, BLUE = COLOR_TO_IDX["red"], COLOR_TO_IDX["blue"]


def test_tokenize_pads_marks_unknown_words_and_cuts():
    ids = tokenize("Go to the RED key", length=8)
    assert ids.dtype == np.int64 and ids.shape == (8,)
    assert [VOCAB[i] for i in ids[:5]] == ["go", "to", "the", "red", "key"]
    assert ids[5:].tolist() == [0, 0, 0]
    assert tokenize("go to the zebra", length=5)[3] == VOCAB.index("<unk>")
    assert tokenize("a b c d e f", length=3).shape == (3,)


class Scene(MiniGridEnv):
    """An 8x8 room built by hand: agent at (1, 3) facing right (east).

    World objects: red key at (4, 3), three cells straight ahead; blue ball at
    (2, 1), one cell ahead and two to the agent's left; a second red key at
    (6, 2) when ``second_key`` is set.
    """

    def __init__(self, second_key=False, agent_dir=0):
        self.second_key = second_key
        self.start_dir = agent_dir
        super().__init__(
            mission_space=MissionSpace(mission_func=lambda: "go to the red key"),
            width=8,
            height=8,
            max_steps=20,
            see_through_walls=True,
        )

    def _gen_grid(self, width, height):
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        self.grid.set(4, 3, Key("red"))
        self.grid.set(2, 1, Ball("blue"))
        if self.second_key:
            self.grid.set(6, 2, Key("red"))
        self.agent_pos = (1, 3)
        self.agent_dir = self.start_dir
        self.mission = "go to the red key"


def _wrapped(**kwargs):
    return CommonObs(
        Scene(**kwargs), task_index=0, num_tasks=1, family="recognition", target_fn=lambda env: (KEY, RED)
    )


def test_labels_match_a_hand_built_scene():
    obs, info = _wrapped().reset(seed=0)
    objects, colors = info["view_labels"][..., 0], info["view_labels"][..., 1]
    # View (x, y): agent at (3, 6) looking towards y = 0; k cells ahead is (3, 6 - k).
    assert (objects[3, 3], colors[3, 3]) == (KEY, RED)  # the red key, 3 ahead
    assert (objects[1, 5], colors[1, 5]) == (BALL, BLUE)  # the ball: 1 ahead, 2 left
    assert (objects[3, 5], objects[3, 4]) == (EMPTY, EMPTY)  # floor between agent and key
    assert all(objects[0, y] == WALL for y in range(1, 7))  # the north wall, 3 to the left
    assert objects[3, 0] == WALL  # the east wall, 6 ahead
    assert info["target_cell"] == 3 * 7 + 3
    # Nothing else in view is a key or a ball.
    assert np.count_nonzero(objects == KEY) == 1 and np.count_nonzero(objects == BALL) == 1
    assert obs["image"].shape == (7, 7, 3) and np.array_equal(obs["image"][..., :2], info["view_labels"])


def test_target_not_in_view_when_facing_away():
    _, info = _wrapped(agent_dir=2).reset(seed=0)  # facing west: the key is behind
    assert info["target_cell"] == NOT_IN_VIEW


def test_nearest_of_two_matching_targets_wins():
    _, info = _wrapped(second_key=True).reset(seed=0)
    # Second red key at (6, 2): 5 ahead, 1 left -> view (2, 1); the first is nearer.
    assert info["view_labels"][2, 1, 0] == KEY
    assert info["target_cell"] == 3 * 7 + 3


def test_target_cell_on_raw_arrays():
    image = np.zeros((7, 7, 3), dtype=np.uint8)
    assert target_cell(image, (KEY, RED)) == NOT_IN_VIEW
    assert target_cell(image, None) == NOT_IN_VIEW
    image[5, 1] = (KEY, RED, 0)  # far: distance 2 + 5 = 7
    assert target_cell(image, (KEY, RED)) == 1 * 7 + 5
    image[1, 4] = (KEY, RED, 0)  # nearer: distance 2 + 2 = 4
    image[2, 4] = (KEY, BLUE, 0)  # nearest, wrong colour
    assert target_cell(image, (KEY, RED)) == 4 * 7 + 1
    image[5, 4] = (KEY, RED, 0)  # same distance as (1, 4): the lower cell wins
    assert target_cell(image, (KEY, RED)) == 4 * 7 + 1
    # A byte pair straddling two cells must not match: (.., KEY) then (RED, ..).
    straddle = np.zeros((7, 7, 3), dtype=np.uint8)
    straddle[0, 0, 2], straddle[0, 1, 0] = KEY, RED
    assert target_cell(straddle, (KEY, RED)) == NOT_IN_VIEW


def test_rgb_view_is_rendered_and_labels_stay_symbolic():
    env = CommonObs(Scene(), task_index=0, num_tasks=1, family="recognition", target_fn=lambda e: (KEY, RED), obs="rgb")
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (56, 56, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 0
    assert info["view_labels"][3, 3, 0] == KEY and info["target_cell"] == 24


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="obs='pixels'"):
        CommonObs(Scene(), task_index=0, num_tasks=1, family="navigation", obs="pixels")
    with pytest.raises(ValueError, match="family='vision'"):
        CommonObs(Scene(), task_index=0, num_tasks=1, family="vision")
