"""The task registry: counts, every task in the common format, CLI table, SB3."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from envs import TASKS, get_task, list_tasks, make
from envs.wrappers import NOT_IN_VIEW, VOCAB, observation_space
from tests.conftest import ROOT, expect, failure, python


def _levels(split, family):
    return {spec.level for spec in list_tasks(split=split, family=family)}


def test_registry_has_the_required_tasks():
    assert len(list_tasks(split="train", family="navigation")) >= 8
    assert len(_levels("train", "navigation")) >= 3
    assert len(list_tasks(split="train", family="recognition")) >= 6
    assert len(_levels("train", "recognition")) >= 3
    assert len(list_tasks(split="heldout", family="navigation")) >= 3
    assert len(list_tasks(split="heldout", family="recognition")) >= 3
    for spec in TASKS.values():
        assert spec.family in ("navigation", "recognition"), spec
        assert spec.split in ("train", "heldout"), spec
        assert spec.level >= 1 and spec.max_steps > 0, spec


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("obs", ["symbolic", "rgb"])
def test_every_task_has_the_common_spaces(name, obs):
    env = make(name, obs=obs)
    expected = observation_space(obs, num_tasks=len(TASKS), mission_length=16)
    assert env.observation_space == expected
    assert env.action_space == gym.spaces.Discrete(7)
    observation, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    episodes_ended = 0
    for _ in range(60):
        assert expected.contains(observation), (name, observation)
        assert observation["task"] == get_task(name).index
        assert observation["family"] == (0 if get_task(name).family == "navigation" else 1)
        assert info["view_labels"].shape == (7, 7, 2)
        assert 0 <= info["target_cell"] <= NOT_IN_VIEW
        observation, reward, terminated, truncated, info = env.step(int(rng.integers(7)))
        if terminated or truncated:
            episodes_ended += 1
            assert isinstance(info["success"], bool)
            assert info["success"] == (reward > 0)
            observation, info = env.reset()
        else:
            assert "success" not in info
    env.close()


def test_missions_use_known_words_only():
    unk = VOCAB.index("<unk>")
    for name in TASKS:
        env = make(name)
        for seed in range(5):
            observation, _ = env.reset(seed=seed)
            assert unk not in observation["mission"], (name, env.unwrapped.mission)
            assert observation["mission"][0] != 0, name


def test_unknown_task_names_close_matches():
    with pytest.raises(ValueError, match=r"unknown task 'DoorKey-5x6'.*DoorKey-5x5"):
        get_task("DoorKey-5x6")
    with pytest.raises(ValueError, match="split='test'"):
        list_tasks(split="test")


def test_list_tasks_prints_one_task_a_line():
    out = expect(python("train.py", "--list-tasks")).stdout.splitlines()
    assert out[0].split() == ["name", "family", "level", "split", "max_steps"]
    rows = {line.split()[0]: line.split()[1:] for line in out[1:]}
    assert list(rows) == list(TASKS)
    for name, (family, level, split, max_steps) in rows.items():
        spec = TASKS[name]
        assert (family, int(level), split, int(max_steps)) == (spec.family, spec.level, spec.split, spec.max_steps)


def test_list_tasks_into_a_closed_pipe_ends_quietly():
    """``train.py --list-tasks | head -3``: the reader goes before the table is written; no traceback, exit 141."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: the case of `| head` on a slow start, every time
    try:
        done = subprocess.run([sys.executable, "train.py", "--list-tasks"], cwd=ROOT, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == "", failure(done)  # 128 + SIGPIPE, as `seq 100000 | head` gives
    head = subprocess.run(f"{sys.executable} train.py --list-tasks | head -3", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert len(head.stdout.splitlines()) == 3 and head.stderr == "", failure(head)


def test_make_is_seedable_and_max_steps_truncates():
    a, b = make("MultiRoom-N2-S4", seed=7), make("MultiRoom-N2-S4", seed=7)
    oa, _ = a.reset()
    ob, _ = b.reset()
    assert all(np.array_equal(oa[k], ob[k]) for k in oa)
    env = make("Empty-8x8")
    env.reset(seed=0)
    for step in range(1, 300):
        _, _, terminated, truncated, info = env.step(0)  # turning never reaches the goal
        if truncated:
            break
    assert step == TASKS["Empty-8x8"].max_steps and not terminated and info["success"] is False


def test_stable_baselines3_dummy_vec_env_accepts_a_task():
    from stable_baselines3.common.env_checker import check_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    check_env(make("DoorKey-5x5"), warn=False)
    vec = DummyVecEnv([lambda: make("DoorKey-5x5"), lambda: make("GoToObject-6x6-N2")])
    vec.seed(0)
    obs = vec.reset()
    assert obs["image"].shape == (2, 7, 7, 3) and obs["mission"].shape == (2, 16)
    obs, rewards, dones, infos = vec.step(np.array([2, 2]))
    assert obs["task"].tolist() == [TASKS["DoorKey-5x5"].index, TASKS["GoToObject-6x6-N2"].index]
