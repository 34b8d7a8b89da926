"""Held-out colour-type pairs: never a train target; the only held-out targets."""

import pytest
from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT

from envs import HELDOUT_PAIRS, TASKS, TRAIN_PAIRS, list_tasks, make
from envs.recognition import ALL_PAIRS, ColorObjectEnv



def _targets_objects(spec):
    """Whether the task's mission targets a key, ball or box (not a goal or door)."""
    if spec.target is None:
        return False
    env = spec.factory()
    env.reset(seed=0)
    return IDX_TO_OBJECT[spec.target(env)[0]] in ("key", "ball", "box")


TRAIN_WITH_OBJECT_TARGETS = [spec.name for spec in list_tasks(split="train") if _targets_objects(spec)]


def _target_pair(spec, env):
    obj, color = spec.target(env.unwrapped)
    return IDX_TO_COLOR[color], IDX_TO_OBJECT[obj]


def _objects_in_grid(env):
    grid = env.unwrapped.grid
    return {(cell.color, cell.type) for cell in grid.grid if cell is not None and cell.type in ("key", "ball", "box")}


def test_object_target_tasks_are_found():
    assert {"GoToObject-6x6-N2", "Fetch-8x8-N3", "KeyCorridorS3R1", "ColorPickup-6x6-N3"} <= set(TRAIN_WITH_OBJECT_TARGETS)


def test_pairs_split_cleanly():
    assert len(ALL_PAIRS) == 18 and len(HELDOUT_PAIRS) == 6 and len(TRAIN_PAIRS) == 12
    assert not HELDOUT_PAIRS & set(TRAIN_PAIRS)
    # every colour and every type still appears among train targets
    assert {c for c, _ in TRAIN_PAIRS} == {c for c, _ in ALL_PAIRS}
    assert {t for _, t in TRAIN_PAIRS} == {t for _, t in ALL_PAIRS}


@pytest.mark.parametrize("name", TRAIN_WITH_OBJECT_TARGETS)
def test_heldout_pairs_are_never_train_targets(name):
    spec = TASKS[name]
    env = make(name, seed=0)
    seen = set()
    for _ in range(300):
        env.reset()
        pair = _target_pair(spec, env)
        seen.add(pair)
        assert pair not in HELDOUT_PAIRS, (name, pair)
        assert env.unwrapped.mission.endswith(f"{pair[0]} {pair[1]}")
        if name.startswith("Color"):  # our own train tasks never show a held-out pair at all
            assert not _objects_in_grid(env) & HELDOUT_PAIRS, name
    assert len(seen) >= 4, (name, seen)  # the filter does not collapse the task


@pytest.mark.parametrize("name", [spec.name for spec in list_tasks(split="heldout", family="recognition")])
def test_heldout_split_targets_only_heldout_pairs(name):
    spec = TASKS[name]
    env = make(name, seed=0)
    targets = set()
    for _ in range(200):
        env.reset()
        targets.add(_target_pair(spec, env))
    assert targets == set(HELDOUT_PAIRS)


def test_distractors_share_colour_and_type_with_the_target():
    env = ColorObjectEnv(size=8, num_objs=4, split="train")
    for seed in range(50):
        env.reset(seed=seed)
        target = (env.target_color, env.target_type)
        others = _objects_in_grid(env) - {target}
        assert len(others) == 3
        assert any(c == target[0] for c, _ in others), (target, others)
        assert any(t == target[1] for _, t in others), (target, others)


def _face(env, obj):
    """Put the agent west of ``obj``, facing it (east)."""
    x, y = obj.cur_pos
    env.grid.set(x - 1, y, None)
    env.agent_pos, env.agent_dir = (x - 1, y), 0


def _find_scene(mode, seed=0):
    env = ColorObjectEnv(size=6, num_objs=3, mode=mode)
    for s in range(seed, seed + 100):
        env.reset(seed=s)
        target = env.target_obj
        other = next(o for o in env.grid.grid if o is not None and o.type in ("key", "ball", "box") and o is not target)
        if target.cur_pos[0] >= 2 and other.cur_pos[0] >= 2:
            return env, target, other
    raise AssertionError("no scene with room west of both objects")


@pytest.mark.parametrize("mode,action", [("goto", 6), ("pickup", 3)])
def test_success_only_on_the_named_object(mode, action):
    env, target, other = _find_scene(mode)
    _face(env, target)
    _, reward, terminated, _, _ = env.step(action)
    assert terminated and reward > 0
    env, target, other = _find_scene(mode)
    _face(env, other)
    _, reward, terminated, _, _ = env.step(action)
    assert terminated and reward == 0


def test_goto_done_without_target_fails_and_ends():
    env = ColorObjectEnv(size=6, num_objs=2, mode="goto")
    env.reset(seed=0)
    env.agent_dir = 0
    front = env.grid.get(*env.front_pos)
    if front is env.target_obj:
        env.agent_dir = 2
    _, reward, terminated, _, _ = env.step(6)
    assert terminated and reward == 0


def test_bad_recognition_arguments():
    with pytest.raises(ValueError, match="num_objs=1"):
        ColorObjectEnv(num_objs=1)
    with pytest.raises(ValueError, match="mode='look'"):
        ColorObjectEnv(mode="look")
    with pytest.raises(ValueError, match="num_objs=40"):
        ColorObjectEnv(size=5, num_objs=40)
