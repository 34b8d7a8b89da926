"""Multi-task vector env: many slots, each running any task, switchable live.

Built on gymnasium's vector envs (``AsyncVectorEnv`` with one worker process
per slot, or ``SyncVectorEnv`` stepping every slot in this process), so the
usual gymnasium API holds: ``reset``/``step`` return batched dict
observations, and infos batched the gymnasium way (``info["target_cell"]`` is
an array over slots). Auto-reset is gymnasium's ``SAME_STEP`` mode: the step
that ends an episode returns the first observation of the next one, with the
final observation in ``info["final_obs"]`` and the final info (``success``,
labels) in ``info["final_info"]``, so a learner can bootstrap on truncation.

Each slot is a :class:`TaskSlot`: it owns one environment per task it has run
(built on first use, then kept) and a probability vector over tasks. At every
reset, explicit or automatic, it draws the task of its next episode from that
vector. ``set_task``/``set_tasks`` put all the mass on one task, so a slot
switches on its next reset; ``set_task_probs`` lets a curriculum sample. No
worker is restarted, and each change costs one message per worker.

On the wire, a slot packs its observation *and* its labels into one flat
uint8 array (every field fits a byte: ids below 256, see :class:`Packing`).
An async worker then sends one small array per step instead of a dict of
arrays, labels included; in sync mode, batching is one ``np.stack``. :class:`MultiTaskVectorEnv` unpacks
the batch into the format of :mod:`envs.wrappers` (observation dict, labels in
``info``), so users never see the packing.

Seeding: ``reset(seed=s)`` gives slot ``i`` the seed ``s + i``. The slot's own
generator then draws the task of each episode and seeds each task env the first
time it runs after that reset (later episodes continue that env's stream), so
the whole stream of observations is a function of the seed and the task
assignments.

Crashes: an exception raised by a task env inside ``step`` or ``reset`` does
not end the run. The slot drops that env (a fresh one is built on next use)
and ends the episode as truncated, with ``final_info["crashed"]`` holding the
error; the episode counts as failed. With ``async``, a worker process that
dies (killed, segfault) is restarted on a fresh slot the same way
(:class:`RestartingAsyncVectorEnv`). Deciding when crashes are too many is the
learner's job (the trainer stops a run whose task keeps crashing).

Exact resume: :meth:`MultiTaskVectorEnv.get_state` returns, per slot, plain
data (generator states, the current episode's reset seed and the actions taken
since), and :meth:`MultiTaskVectorEnv.set_state` rebuilds every slot from it
in fresh workers by replaying the episode in flight. A checkpoint thus holds
no pickled environment, and a resumed run sees the observations the
uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.async_vector_env import AsyncState, _async_worker
from gymnasium.vector.utils import CloudpickleWrapper, iterate

from envs.tasks import TASK_INDEX, TASK_NAMES, TASKS, get_task, make
from envs.wrappers import DEFAULT_MISSION_LENGTH, VIEW_SIZE, VOCAB, ObsMode, observation_space

Vectorization = Literal["sync", "async"]
VECTORIZATIONS: tuple[str, ...] = ("sync", "async")

LABEL_KEYS: tuple[str, ...] = ("view_labels", "target_cell")
RESET_ATTEMPTS = 3  # consecutive failed resets of a slot before the error is raised


class Packing:
    """Byte layout of one slot's observation and labels in a flat uint8 array.

    Fields, in order: image, view labels (only with ``obs="rgb"``: in the
    symbolic view they *are* the image's first two channels, so they are not
    sent twice), mission tokens, direction, task, family, target cell.

    Args:
        obs: observation mode (decides the image shape).
        mission_length: tokens kept of a mission.
    """

    def __init__(self, obs: ObsMode, mission_length: int) -> None:
        assert len(TASKS) < 256 and len(VOCAB) < 256, "task and token ids must fit a byte"
        self.common = observation_space(obs, num_tasks=len(TASKS), mission_length=mission_length)
        self.labels_in_image = obs == "symbolic"
        shapes: dict[str, tuple[int, ...]] = {"image": self.common["image"].shape}
        if not self.labels_in_image:
            shapes["view_labels"] = (VIEW_SIZE, VIEW_SIZE, 2)
        shapes.update(mission=(mission_length,), direction=(), task=(), family=(), target_cell=())
        self.fields: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        offset = 0
        for key, shape in shapes.items():
            size = int(np.prod(shape))
            self.fields[key] = (offset, offset + size, shape)
            offset += size
        self.size = offset
        self.space = gym.spaces.Box(0, 255, (self.size,), dtype=np.uint8)

    def pack(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        """One slot's common observation plus its info labels -> ``(size,)`` uint8.

        Pops the labels from ``info``. Runs on every step of every slot, hence
        bytes joins rather than one numpy slice assignment per field.
        """
        view_labels = info.pop("view_labels")
        parts = [obs["image"].tobytes()]
        if not self.labels_in_image:
            parts.append(view_labels.tobytes())
        parts.append(obs["mission"].astype(np.uint8).tobytes())
        parts.append(bytes((obs["direction"], obs["task"], obs["family"], info.pop("target_cell"))))
        return np.frombuffer(b"".join(parts), dtype=np.uint8)

    def unpack(self, flat: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A batch ``(num_envs, size)`` -> (observation dict, labels dict).

        Images and view labels are views into ``flat``; ids are widened to int64.
        """
        n = flat.shape[0]
        obs: dict[str, np.ndarray] = {}
        labels: dict[str, np.ndarray] = {}
        for key, (start, stop, shape) in self.fields.items():
            value = flat[:, start:stop].reshape(n, *shape)
            if key == "image" or key == "view_labels":
                (obs if key == "image" else labels)[key] = value
            elif key == "target_cell":
                labels[key] = value.astype(np.int64)
            else:
                obs[key] = value.astype(np.int64)
        if self.labels_in_image:
            labels["view_labels"] = obs["image"][..., :2]
        return obs, labels


class TaskSlot(gym.Env):
    """One vector-env slot: runs any registered task, chosen at each reset.

    Args:
        initial_task: task of the first episode (until told otherwise).
        obs: observation mode of every task (see :func:`envs.make`).
        mission_length: tokens kept of a mission.
        render_mode: passed to each task env.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        initial_task: str,
        *,
        obs: ObsMode = "symbolic",
        mission_length: int = DEFAULT_MISSION_LENGTH,
        render_mode: str | None = None,
    ) -> None:
        self.obs_mode: ObsMode = obs
        self.mission_length = mission_length
        self.render_mode = render_mode
        self.packing = Packing(obs, mission_length)
        self.observation_space = self.packing.space
        self.action_space = gym.spaces.Discrete(7)
        self._envs: dict[int, gym.Env] = {}
        self._probs = np.zeros(len(TASKS))
        self._probs[TASK_INDEX[initial_task]] = 1.0
        self._rng = np.random.default_rng()
        self._seeded: set[int] = set()  # task envs seeded since the last seeded reset
        self._current: gym.Env | None = None
        self.task_index = TASK_INDEX[initial_task]
        # The current episode, as needed to replay it: its reset seed, the task
        # env's generator state before the reset, the actions taken since.
        self._episode_seed: int | None = None
        self._episode_rng: dict[str, Any] | None = None
        self._actions: list[int] = []
        self._restored: np.ndarray | None = None
        self._last: np.ndarray | None = None  # the last observation sent: a crashed episode's final one

    @property
    def task_probs(self) -> np.ndarray:
        """Probability of each registered task for the next episodes, shape (num_tasks,)."""
        return self._probs

    @task_probs.setter
    def task_probs(self, probs: np.ndarray) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(TASKS),) or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
            raise ValueError(f"task_probs must be {len(TASKS)} non-negative numbers summing to 1; got {probs!r}.")
        self._probs = probs

    @property
    def task(self) -> str:
        """Name of the task of the current episode."""
        return TASK_NAMES[self.task_index]

    def _env_for(self, index: int) -> gym.Env:
        env = self._envs.get(index)
        if env is None:
            env = self._envs[index] = make(
                TASK_NAMES[index], obs=self.obs_mode, mission_length=self.mission_length, render_mode=self.render_mode
            )
        return env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._seeded.clear()
        for attempt in range(RESET_ATTEMPTS):
            try:
                return self._reset(options)
            except Exception as err:
                if attempt == RESET_ATTEMPTS - 1:
                    raise RuntimeError(
                        f"task {TASK_NAMES[self.task_index]} failed to reset {RESET_ATTEMPTS} times in a row: "
                        f"{type(err).__name__}: {err}"
                    ) from err
                self._drop_current(err)

    def _reset(self, options: dict[str, Any] | None):
        nonzero = np.flatnonzero(self._probs)
        if nonzero.size == 1:
            self.task_index = int(nonzero[0])
        else:
            self.task_index = int(self._rng.choice(len(self._probs), p=self._probs))
        self._current = self._env_for(self.task_index)
        env_seed = None
        if self.task_index not in self._seeded:
            # Seeding costs a new generator: once per task env, not per episode.
            self._seeded.add(self.task_index)
            env_seed = int(self._rng.integers(2**31 - 1))
        self._episode_seed, self._actions = env_seed, []
        self._episode_rng = None if env_seed is not None else self._current.unwrapped.np_random.bit_generator.state
        obs, info = self._current.reset(seed=env_seed, options=options)
        self._last = self.packing.pack(obs, info)
        return self._last, info

    def step(self, action):
        assert self._current is not None, "TaskSlot.step called before reset"
        self._actions.append(int(action))
        try:
            obs, reward, terminated, truncated, info = self._current.step(action)
        except Exception as err:
            # The episode ends here, failed; the env that raised is rebuilt on next use.
            crash = self._drop_current(err)
            return self._last, 0.0, False, True, {"success": False, "crashed": crash}
        self._last = self.packing.pack(obs, info)
        return self._last, reward, terminated, truncated, info

    def _drop_current(self, err: Exception) -> str:
        """Forget the task env that raised ``err``; returns the one-line description of the crash."""
        crash = f"{type(err).__name__}: {err}"
        print(
            f"warning: environment of {TASK_NAMES[self.task_index]} crashed ({crash}); the slot continues on a fresh env.",
            file=sys.stderr,
        )
        traceback.print_exc(file=sys.stderr)
        env = self._envs.pop(self.task_index, None)
        self._seeded.discard(self.task_index)
        self._current = None
        if env is not None:
            try:
                env.close()
            except Exception:
                pass
        return crash

    @property
    def episode_state(self) -> dict[str, Any]:
        """Everything that decides this slot's future, as plain data (see :meth:`MultiTaskVectorEnv.get_state`)."""
        assert self._current is not None, "TaskSlot.episode_state read before reset"
        return {
            "rng": self._rng.bit_generator.state,
            "probs": self._probs.tolist(),
            "seeded": sorted(self._seeded),
            # Generators of the task envs not running now, as they are.
            "env_rngs": {
                index: env.unwrapped.np_random.bit_generator.state
                for index, env in self._envs.items()
                if index != self.task_index and env.unwrapped._np_random is not None
            },
            "task": self.task_index,
            "episode_seed": self._episode_seed,
            "episode_rng": self._episode_rng,
            "actions": list(self._actions),
        }

    @episode_state.setter
    def episode_state(self, state: dict[str, Any]) -> None:
        """Rebuild the slot from :attr:`episode_state`: replays the episode in flight."""
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self.task_probs = np.asarray(state["probs"])
        self._seeded = set(state["seeded"])
        for index, rng_state in state["env_rngs"].items():
            self._env_for(int(index)).unwrapped.np_random = _generator(rng_state)
        self.task_index = int(state["task"])
        self._current = self._env_for(self.task_index)
        if state["episode_rng"] is not None:
            self._current.unwrapped.np_random = _generator(state["episode_rng"])
        self._episode_seed, self._episode_rng = state["episode_seed"], state["episode_rng"]
        obs, info = self._current.reset(seed=self._episode_seed)
        for action in state["actions"]:
            obs, _, terminated, truncated, info = self._current.step(action)
            if terminated or truncated:
                raise ValueError("episode_state replays past the end of its episode: the environment is not the one saved.")
        self._actions = list(state["actions"])
        self._restored = self.packing.pack(obs, info)

    def restored_observation(self) -> np.ndarray:
        """The packed observation reached by the last :attr:`episode_state` restore."""
        assert self._restored is not None, "no episode_state was restored"
        return self._restored

    def render(self):
        return self._current.render() if self._current is not None else None

    def close(self):
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def _make_slot(*args: Any, **kwargs: Any) -> TaskSlot:
    """Build a slot; in a worker process, leave Ctrl-C to the parent.

    A terminal's Ctrl-C reaches the whole process group. Workers ignore it, so
    that the trainer, which handles it, can still talk to them and close them.
    """
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return TaskSlot(*args, **kwargs)


def _generator(state: dict[str, Any]) -> np.random.Generator:
    """A numpy generator in the given ``bit_generator.state``."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _probs_row(probs: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    """A probability vector over the registry from a {task: weight} mapping or an array."""
    if isinstance(probs, Mapping):
        row = np.zeros(len(TASKS))
        for name, weight in probs.items():
            if weight < 0:
                raise ValueError(f"task weight {name}={weight} is negative; weights must be >= 0.")
            row[get_task(name).index] = weight
    else:
        row = np.asarray(probs, dtype=np.float64)
        if row.shape != (len(TASKS),):
            raise ValueError(f"a task probability row needs {len(TASKS)} entries (one per registered task); got shape {row.shape}.")
        if (row < 0).any():
            raise ValueError(f"task probabilities must be >= 0; got {row!r}.")
    total = row.sum()
    if total <= 0:
        raise ValueError("task weights sum to 0; give at least one task a positive weight.")
    return row / total


class RestartingAsyncVectorEnv(AsyncVectorEnv):
    """gymnasium's ``AsyncVectorEnv`` whose dead workers are restarted instead of ending the run.

    A worker that stops answering because its process died (``kill -9``, a
    segfault in a native env, the OOM killer) is replaced by a fresh process on
    the same slot index, reset, and set up by
    ``slot_setup(index)`` (attribute values to restore, e.g. the slot's task
    probabilities). The step in which the death is noticed reports that slot's
    episode as truncated with ``final_info["crashed"]`` set and the slot's last
    observation as its final one. Exceptions raised *inside* a worker are not
    deaths: they are re-raised as gymnasium does (task envs' own exceptions are
    already caught by :class:`TaskSlot`).

    Args:
        env_fns, **kwargs: as ``AsyncVectorEnv`` (``autoreset_mode`` must be ``SAME_STEP``).
        slot_setup: ``index -> [(attribute, value), ...]`` set on a restarted slot.
    """

    def __init__(self, env_fns, *, slot_setup: Callable[[int], list[tuple[str, Any]]] | None = None, **kwargs) -> None:
        self._mp_context = kwargs.get("context")
        # Observations travel in the step replies (a few hundred bytes per slot), not in
        # shared memory: a restarted worker then needs nothing of the dead one's.
        super().__init__(env_fns, shared_memory=False, **kwargs)
        assert self.autoreset_mode == AutoresetMode.SAME_STEP, "restarts report crashes the SAME_STEP way"
        self.slot_setup = slot_setup or (lambda index: [])
        self.restarts = 0
        self._pending: dict[int, tuple[str, np.ndarray, np.ndarray, dict]] = {}  # slot -> crash report for its next step

    def _revive(self) -> None:
        """Restart the workers that died since the last operation (each public operation starts here)."""
        for index, process in enumerate(self.processes):
            if not process.is_alive() and index not in self._pending:
                self._restart(index)

    def _restart(self, index: int) -> None:
        old = self.processes[index]
        old.join(timeout=2)  # its pipe closed: the process is exiting, if not gone already
        reason = f"worker process died (exit code {old.exitcode})"
        if old.is_alive():
            reason = "worker stopped answering"
            old.terminate()
            old.join(timeout=5)
        with contextlib.suppress(Exception):
            self.parent_pipes[index].close()
        ctx = multiprocessing.get_context(self._mp_context)
        parent_pipe, child_pipe = ctx.Pipe()
        process = ctx.Process(
            target=_async_worker,
            name=old.name,
            args=(index, CloudpickleWrapper(self.env_fns[index]), child_pipe, parent_pipe, None, self.error_queue,
                  self.autoreset_mode, None),
            daemon=old.daemon,
        )
        process.start()
        child_pipe.close()
        self.processes[index], self.parent_pipes[index] = process, parent_pipe
        for name, value in self.slot_setup(index):
            parent_pipe.send(("_setattr", (name, value)))
            parent_pipe.recv()
        parent_pipe.send(("reset", {}))
        (observation, info), ok = parent_pipe.recv()
        if not ok:
            raise RuntimeError(f"environment slot {index} could not be restarted after its {reason}")
        last = np.array(self.observations[index], copy=True)  # the dead slot's last observation
        self._pending[index] = (reason, last, observation, info)
        self.restarts += 1
        print(f"warning: environment slot {index}: {reason}; restarted on a fresh env.", file=sys.stderr)

    def reset_async(self, *args, **kwargs):
        self._revive()
        return super().reset_async(*args, **kwargs)

    def reset_wait(self, *args, **kwargs):
        # Slots restarted before this reset are reset again: their crash is still reported at the next step.
        obs, info = super().reset_wait(*args, **kwargs)
        for index, (reason, last, _, reset_info) in list(self._pending.items()):
            self._pending[index] = (reason, last, np.array(obs[index], copy=True), reset_info)
        return obs, info

    def step_async(self, actions) -> None:
        self._revive()
        self._assert_is_running()
        for index, (pipe, action) in enumerate(zip(self.parent_pipes, iterate(self.action_space, actions))):
            if index in self._pending:
                continue  # restarted: its result this step is the crash report
            try:
                pipe.send(("step", action))
            except (BrokenPipeError, ConnectionResetError, OSError):
                self._restart(index)
        self._state = AsyncState.WAITING_STEP

    def step_wait(self, timeout: float | None = None):
        self._assert_is_running()
        if timeout is not None:  # e.g. close(terminate=True) after Ctrl-C: do not wait for replies
            end = time.perf_counter() + timeout
            for index, pipe in enumerate(self.parent_pipes):
                if index in self._pending:
                    continue
                if pipe is None or pipe.closed or not pipe.poll(max(end - time.perf_counter(), 0.0)):
                    self._state = AsyncState.DEFAULT
                    raise multiprocessing.TimeoutError(f"The call to `step_wait` has timed out after {timeout} second(s).")
        observations, rewards, terminations, truncations, infos, successes = [], [], [], [], {}, []
        for index in range(self.num_envs):
            if index not in self._pending:
                try:
                    result, success = self.parent_pipes[index].recv()
                except (EOFError, ConnectionResetError, BrokenPipeError, OSError):
                    self._restart(index)
            if index in self._pending:
                reason, last, observation, reset_info = self._pending.pop(index)
                info = {"final_info": {"success": False, "crashed": reason}, "final_obs": last, **reset_info}
                result, success = (observation, 0.0, False, True, info), True
            successes.append(success)
            if success:
                observations.append(result[0])
                rewards.append(result[1])
                terminations.append(result[2])
                truncations.append(result[3])
                infos = self._add_info(infos, result[4], index)
        self._raise_if_errors(successes)
        self.observations = np.stack(observations)
        self._state = AsyncState.DEFAULT
        return (
            np.array(self.observations, copy=True) if self.copy else self.observations,
            np.array(rewards, dtype=np.float64),
            np.array(terminations, dtype=np.bool_),
            np.array(truncations, dtype=np.bool_),
            infos,
        )

    def call_async(self, *args, **kwargs):
        self._revive()
        return super().call_async(*args, **kwargs)

    def set_attr(self, *args, **kwargs):
        self._revive()
        return super().set_attr(*args, **kwargs)


class MultiTaskVectorEnv(gym.vector.VectorWrapper):
    """``num_envs`` :class:`TaskSlot` s behind gymnasium's vector-env API.

    Args:
        tasks: tasks of the first episodes, assigned to slots round-robin.
        num_envs: number of slots.
        obs: observation mode (``symbolic`` or ``rgb``).
        vectorization: ``async`` (a worker process per slot) or ``sync``
            (all slots in this process: fastest for cheap envs on few cores).
        mission_length: tokens kept of a mission.
        render_mode: passed to every task env.
        context: multiprocessing start method for ``async``
            (default: gymnasium's choice).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        num_envs: int,
        *,
        obs: ObsMode = "symbolic",
        vectorization: Vectorization = "async",
        mission_length: int = DEFAULT_MISSION_LENGTH,
        render_mode: str | None = None,
        context: str | None = None,
    ) -> None:
        if isinstance(tasks, str):
            tasks = [tasks]
        if not tasks:
            raise ValueError("tasks is empty; give at least one task name (python train.py --list-tasks).")
        for name in tasks:
            get_task(name)
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be a positive integer.")
        if vectorization not in VECTORIZATIONS:
            raise ValueError(f"vectorization={vectorization!r} is unknown; use one of {VECTORIZATIONS}.")
        fns = [
            partial(
                _make_slot,
                tasks[i % len(tasks)],
                obs=obs,
                mission_length=mission_length,
                render_mode=render_mode,
            )
            for i in range(num_envs)
        ]
        if vectorization == "async":
            env = RestartingAsyncVectorEnv(
                fns, autoreset_mode=AutoresetMode.SAME_STEP, context=context, slot_setup=self._slot_setup
            )
        else:
            env = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
        super().__init__(env)
        self.packing = Packing(obs, mission_length)
        self.single_observation_space = self.packing.common
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.vectorization: Vectorization = vectorization
        self._probs = np.stack([_probs_row({tasks[i % len(tasks)]: 1.0}) for i in range(num_envs)])

    def _slot_setup(self, index: int) -> list[tuple[str, Any]]:
        """What a restarted worker's slot must be told: its current task probabilities."""
        return [("task_probs", self._probs[index])]

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._labels_to_info(obs, info), info

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        return self._labels_to_info(obs, info), rewards, terminated, truncated, info

    def _labels_to_info(self, flat: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """Unpack the slots' flat arrays; the labels go into ``info``."""
        obs, labels = self.packing.unpack(flat)
        info.update(labels)
        if "final_obs" in info:
            ended = info["_final_obs"]
            final = np.stack([info["final_obs"][i] if ended[i] else flat[i] for i in range(len(ended))])
            final_obs, final_labels = self.packing.unpack(final)
            info["final_obs"] = np.array(
                [{k: v[i] for k, v in final_obs.items()} if ended[i] else None for i in range(len(ended))],
                dtype=object,
            )
            for key, value in final_labels.items():
                info["final_info"][key] = value
                info["final_info"][f"_{key}"] = ended.copy()
        return obs

    @property
    def task_probs(self) -> np.ndarray:
        """Per-slot probabilities over registered tasks, shape (num_envs, num_tasks)."""
        return self._probs.copy()

    def _push(self, probs: np.ndarray) -> None:
        self.env.set_attr("task_probs", [row for row in probs])
        self._probs = probs

    def set_task(self, slot: int, task: str) -> None:
        """Run ``task`` in ``slot`` from the slot's next reset on."""
        if not 0 <= slot < self.num_envs:
            raise ValueError(f"slot={slot} is outside [0, {self.num_envs}).")
        probs = self._probs.copy()
        probs[slot] = _probs_row({task: 1.0})
        self._push(probs)

    def set_tasks(self, tasks: Sequence[str]) -> None:
        """One task per slot, each from that slot's next reset on."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_tasks needs one task per slot ({self.num_envs}); got {len(tasks)}.")
        self._push(np.stack([_probs_row({name: 1.0}) for name in tasks]))

    def set_task_probs(self, probs: Mapping[str, float] | Sequence[Mapping[str, float]] | np.ndarray) -> None:
        """Let every slot sample the task of each next episode.

        Args:
            probs: one ``{task: weight}`` mapping for all slots, a list of
                mappings (one per slot), or an array of shape ``(num_tasks,)``
                or ``(num_envs, num_tasks)``; weights are normalised.
        """
        if isinstance(probs, Mapping):
            rows = [_probs_row(probs)] * self.num_envs
        elif isinstance(probs, np.ndarray) and probs.ndim == 1:
            rows = [_probs_row(probs)] * self.num_envs
        else:
            if len(probs) != self.num_envs:
                raise ValueError(f"set_task_probs needs one row per slot ({self.num_envs}); got {len(probs)}.")
            rows = [_probs_row(row) for row in probs]
        self._push(np.stack(rows))

    def get_state(self) -> list[dict[str, Any]]:
        """Per slot, the plain data that decides its future (generators, episode in flight).

        Ints, floats, lists and dicts only: fit for a ``weights_only`` checkpoint.
        """
        return list(self.env.get_attr("episode_state"))

    def set_state(self, states: Sequence[dict[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Restore every slot from :meth:`get_state`; returns ``(obs, info)`` like ``reset``.

        The episodes in flight are replayed, so the returned observation is the
        one the saved run was about to act on, and stepping on continues its stream.
        """
        if len(states) != self.num_envs:
            raise ValueError(f"set_state needs one state per slot ({self.num_envs}); got {len(states)}.")
        self.env.set_attr("episode_state", list(states))
        flat = np.stack(self.env.call("restored_observation"))
        self._probs = np.stack([np.asarray(state["probs"], dtype=np.float64) for state in states])
        info: dict[str, Any] = {}
        return self._labels_to_info(flat, info), info

    def current_tasks(self) -> list[str]:
        """Name of the task each slot is running now."""
        return list(self.env.get_attr("task"))
