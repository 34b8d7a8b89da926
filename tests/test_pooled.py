"""The envpool backend keeps the vector env's contract (envs/pooled.py)."""

import numpy as np
import pytest

from envs import TASKS
from envs.labels import target_cells
from envs.pooled import PooledVectorEnv
from envs.recognition import HELDOUT_PAIRS
from envs.tasks import TASK_INDEX
from envs.vector import MultiTaskVectorEnv, make_vector_env
from envs.wrappers import COLOR_TO_IDX, OBJECT_TO_IDX, target_cell
from training.config import RunConfig

MIX = ["DoorKey-5x5", "GoToObject-6x6-N2", "ColorPickup-6x6-N3", "Fetch-5x5-N2"]


def _random_steps(env, steps, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield env.step(rng.integers(0, 7, env.num_envs))


def test_observation_and_labels_match_the_python_backend_format():
    pooled, python = PooledVectorEnv(MIX, 8), MultiTaskVectorEnv(MIX, 8, vectorization="sync")
    (a, ia), (b, ib) = pooled.reset(seed=1), python.reset(seed=1)
    for key in b:
        assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
    assert pooled.single_observation_space == python.single_observation_space
    assert a["task"].tolist() == b["task"].tolist() == [TASK_INDEX[MIX[i % 4]] for i in range(8)]
    for key in ("view_labels", "target_cell"):
        assert ia[key].shape == ib[key].shape and ia[key].dtype == ib[key].dtype, key
    ended = 0
    for obs, reward, terminated, truncated, info in _random_steps(pooled, 300):
        np.testing.assert_array_equal(info["view_labels"], obs["image"][..., :2])
        np.testing.assert_array_equal(info["target_cell"], target_cells(obs["image"], pooled._target))
        done = terminated | truncated
        if done.any():
            ended += done.sum()
            final = info["final_obs_batch"]
            assert (info["_final_obs"] == done).all()
            # success is a positive reward at termination, never on a time-out
            assert (info["final_info"]["success"] == (terminated & (reward > 0))).all()
            assert set(final) == set(obs)
            np.testing.assert_array_equal(info["final_info"]["view_labels"][done], final["image"][done][..., :2])
    assert ended > 20
    pooled.close(), python.close()


def test_batched_target_cells_equal_the_per_slot_labels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 6, (4000, 7, 7, 3)).astype(np.uint8)
    targets = rng.integers(0, 6, (4000, 2))
    expected = [target_cell(image, (int(t), int(c))) for image, (t, c) in zip(images, targets)]
    assert target_cells(images, targets).tolist() == expected


def test_same_seed_same_stream_and_set_state_restarts_the_same_way():
    def stream(env, seed):
        obs, _ = env.reset(seed=seed)
        env.set_task_probs({name: 1.0 for name in MIX})
        out = [obs["image"].copy()]
        out += [obs["image"].copy() for obs, *_ in _random_steps(env, 50)]
        return np.stack(out)

    one, two = PooledVectorEnv(MIX, 6), PooledVectorEnv(MIX, 6)
    np.testing.assert_array_equal(stream(one, 3), stream(two, 3))
    state = one.get_state()
    first, _ = one.set_state(state)
    second, _ = two.set_state(state)
    assert two.current_tasks() == one.current_tasks()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    a = [o["image"] for o, *_ in _random_steps(one, 30, seed=5)]
    b = [o["image"] for o, *_ in _random_steps(two, 30, seed=5)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))


def test_slots_switch_task_at_their_next_episode_without_rebuilding_pools():
    env = PooledVectorEnv(["Empty-5x5"], 4)
    env.reset(seed=0)
    env.set_task_probs({"Empty-5x5": 1.0, "GoToDoor-5x5": 1.0})
    for _ in _random_steps(env, 200):
        pass
    pools = dict(env._pools)
    assert set(env.current_tasks()) <= {"Empty-5x5", "GoToDoor-5x5"} and len(pools) == 2
    env.set_tasks(["GoToDoor-5x5"] * 4)
    for _ in _random_steps(env, 300, seed=1):
        pass
    assert env.current_tasks() == ["GoToDoor-5x5"] * 4
    assert all(env._pools[task] is pool for task, pool in pools.items())  # the same pools, threads and all
    # no two slots share an environment of a pool
    pairs = set(zip(env._task.tolist(), env._env.tolist()))
    assert len(pairs) == 4


@pytest.mark.parametrize("task", ["GoToObject-6x6-N2", "Fetch-5x5-N2"])
def test_heldout_pairs_are_never_a_train_target(task):
    env = PooledVectorEnv([task], 32)
    env.reset(seed=0)
    heldout = {(OBJECT_TO_IDX[kind], COLOR_TO_IDX[color]) for color, kind in HELDOUT_PAIRS}
    seen = set()
    for _ in range(40):  # 1280 fresh episodes
        env.reset(options={"reset_mask": np.ones(32, dtype=bool)})
        seen |= set(map(tuple, env._target.tolist()))
    assert not seen & heldout
    assert len(seen) >= 8  # the other pairs do come up


def test_make_vector_env_and_config_choose_the_backend(monkeypatch, capsys):
    assert isinstance(make_vector_env(["Empty-5x5"], 2, backend="auto"), PooledVectorEnv)
    assert isinstance(make_vector_env(["Empty-5x5"], 2, backend="auto", obs="rgb"), MultiTaskVectorEnv)
    with pytest.raises(ValueError, match="envpool renders no egocentric RGB view"):
        make_vector_env(["Empty-5x5"], 2, backend="envpool", obs="rgb")
    import envs.pools

    envs.pools.envpool_problem.cache_clear()
    monkeypatch.setattr(envs.pools, "envpool_problem", lambda: "envpool cannot be imported (ImportError: nope)")
    with pytest.raises(ValueError, match=r"envpool cannot be imported .*use --backend minigrid"):
        RunConfig(tasks="Empty-5x5", backend="envpool").validate()
    config = RunConfig(tasks="Empty-5x5")
    config.validate()
    assert config.resolved_backend() == "minigrid"
    assert capsys.readouterr().err.count("notice: backend minigrid") == 1


@pytest.mark.parametrize("value", [-1, 10_000])
def test_env_threads_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match=f"env_threads={value}"):
        RunConfig(tasks="Empty-5x5", env_threads=value).validate()


def test_every_envpool_task_runs_and_ends_episodes():
    served = [name for name, spec in TASKS.items() if spec.env_id.startswith("MiniGrid-") and "MultiRoom" not in name]
    env = PooledVectorEnv(served, len(served))
    env.reset(seed=0)
    assert all(type(env._pools[t]).__name__ == "EnvPoolTask" for t in np.unique(env._task))
    for _ in _random_steps(env, 100):
        pass
    env.close()


def test_a_goal_reached_on_the_last_step_is_a_success_as_in_minigrid():
    # Empty-5x5: start (1, 1) facing right, goal (3, 3), max_steps 100. EnvPool alone reports
    # this last-step success as truncated only (tests/test_envpool_parity.py documents it).
    done, forward, right = 6, 2, 1
    actions = [done] * 95 + [forward, forward, right, forward, forward]
    for backend in ("envpool", "minigrid"):
        env = make_vector_env(["Empty-5x5"], 1, backend=backend)
        env.reset(seed=0)
        for action in actions[:-1]:
            _, _, terminated, truncated, _ = env.step([action])
            assert not (terminated | truncated).any(), backend
        _, reward, terminated, truncated, info = env.step([actions[-1]])
        assert (bool(terminated[0]), bool(truncated[0])) == (True, True), backend
        assert info["final_info"]["success"][0] and reward[0] == pytest.approx(0.1), backend
        env.close()


def test_multiroom_runs_on_python_minigrid_inside_the_pooled_env():
    env = PooledVectorEnv(["MultiRoom-N2-S4", "DoorKey-5x5"], 2)
    env.reset(seed=0)
    kinds = {TASKS[name].name: type(env._pools[TASKS[name].index]).__name__ for name in env.current_tasks()}
    assert kinds == {"MultiRoom-N2-S4": "MiniGridTask", "DoorKey-5x5": "EnvPoolTask"}


def test_envpool_resume_restarts_the_episodes_in_flight_the_same_way_twice(tmp_path):
    import shutil

    import torch

    from training import checkpoint
    from training.loop import Trainer

    def config(root, frames):
        run = RunConfig(tasks="Empty-5x5,GoToDoor-5x5", frames=frames, num_envs=4, seed=3, runs_dir=str(root),
                        run_name="ck", threads=1, video_every=0, checkpoint_every=2, backend="envpool")
        run.ppo.num_steps, run.ppo.batch_size = 64, 128
        return run

    Trainer(config(tmp_path / "a", 512), progress=False).run()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    finals = []
    for root in ("a", "b"):
        resumed = Trainer(config(tmp_path / root, 1024), progress=False,
                          resume=checkpoint.latest_checkpoint(tmp_path / root / "ck"))
        assert resumed.frames == 512 and not resumed.env.exact_resume
        assert (resumed.collector.episode_start).all()  # the episodes in flight were restarted
        resumed.run()
        finals.append(resumed.model.state_dict())
    assert all(torch.equal(finals[0][key], finals[1][key]) for key in finals[0])


def test_a_python_task_that_raises_ends_its_episode_with_its_last_observation(monkeypatch):
    from envs.recognition import ColorObjectEnv

    env = PooledVectorEnv(["ColorGoTo-5x5-N2"], 2)
    before, _ = env.reset(seed=0)

    def boom(self, action):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(ColorObjectEnv, "step", boom)
    _, _, terminated, truncated, info = env.step([0, 0])
    assert truncated.all() and not terminated.any()
    assert list(info["final_info"]["crashed"]) == ["RuntimeError: simulated crash"] * 2
    assert not info["final_info"]["success"].any()
    np.testing.assert_array_equal(info["final_obs_batch"]["image"], before["image"])


@pytest.mark.parametrize("threads", [1, 2])
def test_native_calls_answer_as_envpools_public_api(threads):
    """The pools call EnvPool's private _send/_recv/_reset (envs/pools.py): same answers as its public API."""
    import envpool

    from envs.pools import EnvPoolTask

    spec = TASKS["GoToObject-6x6-N2"]
    ours = EnvPoolTask(spec, 16, seed=5, num_threads=threads)
    ours.exclude = False  # the public pool below redraws nothing
    public = envpool.make(spec.env_id, env_type="gymnasium", num_envs=16, seed=5,
                          max_episode_steps=spec.max_steps, num_threads=threads)
    everyone = np.arange(16)
    image, direction, _, _ = ours.reset(everyone)
    expected, _ = public.reset(everyone.astype(np.int32))
    np.testing.assert_array_equal(image, expected["image"])
    np.testing.assert_array_equal(direction, expected["direction"])
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(300):
        ids = np.sort(rng.choice(16, int(rng.integers(1, 17)), replace=False))
        actions = rng.integers(0, 7, len(ids))
        ours.send(ids, actions)
        got = ours.recv()
        obs, reward, terminated, truncated, _ = public.step(actions.astype(np.int32), ids.astype(np.int32))
        for a, b in zip(got[:5], (obs["image"], obs["direction"], reward, terminated, truncated)):
            np.testing.assert_array_equal(a, b)
        done = ids[got[3] | got[4]]
        if len(done):
            ended += len(done)
            image, direction, _, _ = ours.reset(done)
            expected, _ = public.reset(done.astype(np.int32))
            np.testing.assert_array_equal(image, expected["image"])
    assert ended > 20
    ours.close(), public.close()


def test_a_changed_native_layout_stops_with_one_clear_message():
    from envs.pools import _raw_layout

    class Renamed:
        _state_keys = ["info:env_id", "done", "trunc", "reward", "obs:image", "obs:direction"]

        class _spec:
            _action_keys = ["env_id", "players.env_id", "action"]

    with pytest.raises(RuntimeError, match=r"native layout changed \(state keys missing \['obs:mission'\]"):
        _raw_layout(Renamed())


def test_env_threads_are_shared_out_among_the_open_tasks():
    two = PooledVectorEnv(["DoorKey-5x5", "Empty-5x5"], 4, env_threads=2)
    one = PooledVectorEnv(["DoorKey-5x5"], 4, env_threads=2)
    two.reset(seed=0), one.reset(seed=0)
    assert [pool.pool.config["num_threads"] for pool in two._pools.values()] == [1, 1]
    assert [pool.pool.config["num_threads"] for pool in one._pools.values()] == [2]
    two.close(), one.close()
