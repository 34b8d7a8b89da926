"""The task slots of the python (minigrid) backend, and their wire format.

Each slot is a :class:`TaskSlot`: it owns one environment per task it has run
(built on first use, then kept) and a probability vector over tasks. At every
reset, explicit or automatic, it draws the task of its next episode from that
vector. No worker is restarted when the vector changes, and each change costs
one message per worker.

On the wire, a slot packs its observation *and* its labels into one flat
uint8 array (every field fits a byte: ids below 256, see :class:`Packing`).
An async worker then sends one small array per step instead of a dict of
arrays, labels included; in sync mode, batching is one ``np.stack``.

Seeding: ``reset(seed=s)`` gives slot ``i`` the seed ``s + i``. The slot's own
generator then draws the task of each episode and seeds each task env the first
time it runs after that reset (later episodes continue that env's stream), so
the whole stream of observations is a function of the seed and the task
assignments.

Crashes: an exception raised by a task env inside ``step`` or ``reset`` does
not end the run. The slot drops that env (a fresh one is built on next use)
and ends the episode as truncated, with ``final_info["crashed"]`` holding the
error; the episode counts as failed.

Exact resume: :attr:`TaskSlot.episode_state` is plain data (generator states,
the current episode's reset seed and the actions taken since); setting it
rebuilds the slot by replaying the episode in flight.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.tasks import TASK_INDEX, TASK_NAMES, TASKS, get_task, make
from envs.wrappers import DEFAULT_MISSION_LENGTH, VIEW_SIZE, VOCAB, ObsMode, observation_space

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


def check_slots(tasks: str | Sequence[str], num_envs: int) -> list[str]:
    """The task list of a vector env (a name or names, all registered) after checking ``num_envs``; ValueError naming the bad value."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks:
        raise ValueError("tasks is empty; give at least one task name (python train.py --list-tasks).")
    for name in tasks:
        get_task(name)
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r} must be a positive integer.")
    return tasks


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
