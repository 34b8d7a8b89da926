"""The multi-task vector env: task switching, seeding, labels, packing."""

import numpy as np
import pytest

from envs import TASKS, MultiTaskVectorEnv, make
from envs.slots import Packing

TASK_MIX = ["DoorKey-5x5", "GoToObject-6x6-N2", "ColorGoTo-6x6-N3"]


def _run(env, steps, seed, action_seed=0):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    trace = [obs]
    for _ in range(steps):
        obs, *_ = env.step(rng.integers(0, 7, env.num_envs))
        trace.append(obs)
    return trace


def _same(a, b):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_same_seed_same_observations_sync_and_async():
    sync = MultiTaskVectorEnv(TASK_MIX, 3, vectorization="sync")
    sync2 = MultiTaskVectorEnv(TASK_MIX, 3, vectorization="sync")
    asyn = MultiTaskVectorEnv(TASK_MIX, 3, vectorization="async")
    try:
        a, b, c = _run(sync, 120, seed=5), _run(sync2, 120, seed=5), _run(asyn, 120, seed=5)
        assert _same(a, b)
        assert _same(a, c)  # a worker process sees exactly what this process sees
        assert not _same(a, _run(sync, 120, seed=6))
    finally:
        sync.close(), sync2.close(), asyn.close()


def test_slot_switches_task_on_its_next_reset():
    env = MultiTaskVectorEnv(["Empty-5x5", "Empty-5x5"], 2, vectorization="sync")
    obs, _ = env.reset(seed=0)
    empty, goto = TASKS["Empty-5x5"].index, TASKS["GoToObject-6x6-N2"].index
    assert obs["task"].tolist() == [empty, empty]
    env.set_task(0, "GoToObject-6x6-N2")
    # Not before the episode ends: turning in place never ends Empty-5x5 early.
    for _ in range(10):
        obs, _, terminated, truncated, _ = env.step(np.array([0, 0]))
        assert obs["task"].tolist() == [empty, empty]
    # Auto-reset: the step that ends slot 0's episode already shows the new task.
    for _ in range(200):
        obs, _, terminated, truncated, info = env.step(np.array([0, 0]))
        if terminated[0] or truncated[0]:
            break
    assert truncated[0] and obs["task"].tolist() == [goto, empty]
    assert info["final_obs"][0]["task"] == empty  # the episode that ended was still Empty
    assert env.current_tasks() == ["GoToObject-6x6-N2", "Empty-5x5"]
    # Explicit reset applies pending tasks too.
    env.set_tasks(["Empty-5x5", "FourRooms"])
    obs, _ = env.reset()
    assert obs["task"].tolist() == [empty, TASKS["FourRooms"].index]
    env.close()


def test_async_switch_keeps_the_same_workers():
    env = MultiTaskVectorEnv(["Empty-5x5"], 2, vectorization="async")
    try:
        env.reset(seed=0)
        pids = [p.pid for p in env.env.processes]
        env.set_task(1, "FourRooms")
        obs, _ = env.reset()
        assert obs["task"][1] == TASKS["FourRooms"].index
        assert [p.pid for p in env.env.processes] == pids
        assert all(p.is_alive() for p in env.env.processes)
    finally:
        env.close()


def test_task_probs_sample_each_episode():
    env = MultiTaskVectorEnv(["Empty-5x5"], 2, vectorization="sync")
    env.set_task_probs({"GoToObject-6x6-N2": 1, "GoToDoor-5x5": 1})
    env.reset(seed=0)
    seen = set()
    for _ in range(300):  # random actions end these tasks within a few steps
        obs, *_ = env.step(np.random.default_rng(len(seen)).integers(0, 7, 2))
        seen.update(obs["task"].tolist())
    assert seen == {TASKS["GoToObject-6x6-N2"].index, TASKS["GoToDoor-5x5"].index}
    assert env.task_probs.shape == (2, len(TASKS))
    with pytest.raises(ValueError, match="negative"):
        env.set_task_probs({"Empty-5x5": -1})
    with pytest.raises(ValueError, match="unknown task 'Nope'"):
        env.set_task(0, "Nope")
    env.close()


def test_labels_and_success_are_batched_in_info():
    env = MultiTaskVectorEnv(["GoToObject-6x6-N2"], 4, vectorization="sync")
    obs, info = env.reset(seed=1)
    assert set(obs) == {"image", "direction", "mission", "task", "family"}
    assert np.array_equal(info["view_labels"], obs["image"][..., :2])
    assert info["target_cell"].shape == (4,)
    ended = 0
    rng = np.random.default_rng(0)
    for _ in range(100):
        obs, rewards, terminated, truncated, info = env.step(rng.integers(0, 7, 4))
        done = terminated | truncated
        if done.any():
            final = info["final_info"]
            assert np.array_equal(final["_success"], done)
            assert np.array_equal(final["success"][done], rewards[done] > 0)
            assert final["view_labels"].shape == (4, 7, 7, 2) and np.array_equal(final["_target_cell"], done)
            for i in np.flatnonzero(done):
                assert np.array_equal(final["view_labels"][i], info["final_obs"][i]["image"][..., :2])
            ended += done.sum()
    assert ended > 10
    env.close()


@pytest.mark.parametrize("mode", ["symbolic", "rgb"])
def test_packing_round_trip(mode):
    env = make("Fetch-5x5-N2", obs=mode)
    packing = Packing(mode, 16)
    obs, info = env.reset(seed=3)
    expected_labels = {k: np.copy(info[k]) for k in ("view_labels", "target_cell")}
    flat = packing.pack(obs, dict(info))
    assert flat.shape == (packing.size,) and flat.dtype == np.uint8
    unpacked, labels = packing.unpack(np.stack([flat, flat]))
    for key, value in obs.items():
        assert np.array_equal(unpacked[key][1], value), key
    assert np.array_equal(labels["view_labels"][0], expected_labels["view_labels"])
    assert labels["target_cell"][0] == expected_labels["target_cell"]


def test_bad_vector_arguments():
    with pytest.raises(ValueError, match="num_envs=0"):
        MultiTaskVectorEnv(["Empty-5x5"], 0)
    with pytest.raises(ValueError, match="vectorization='threads'"):
        MultiTaskVectorEnv(["Empty-5x5"], 1, vectorization="threads")
    with pytest.raises(ValueError, match="unknown task 'Empty-4x4'"):
        MultiTaskVectorEnv(["Empty-4x4"], 1)
