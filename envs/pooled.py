"""The pooled vector env: EnvPool's C++ MiniGrid behind the multi-task vector env's contract.

Same observations, labels, task ids and same-step auto-reset as
:class:`envs.vector.MultiTaskVectorEnv` (the python backend), much faster:

* one pool of environments per task (:mod:`envs.pools`): EnvPool's for every
  ``MiniGrid-*`` task, python MiniGrid's for the project's own ``Color*``
  tasks, in the same vector env. A pool is built the first time one of its
  tasks is drawn and holds ``num_envs`` environments, so any spread of slots
  over tasks fits and no pool (nor its worker threads) is ever rebuilt when
  the curriculum changes the spread;
* a slot is a place in the batch: at each of its resets it draws a task from
  its probability row (:meth:`set_task_probs`) and takes a free environment of
  that task's pool. A step sends every pool its slots' actions, then gathers
  the answers: a Python loop over *tasks*, never over slots;
* labels (``view_labels``, ``target_cell``) are computed for the whole batch
  by :mod:`envs.labels`; mission texts are decoded and tokenised at reset only,
  once per distinct mission.

Differences from the python backend, by necessity:

* ``info["final_obs"]`` is not gymnasium's per-slot object array: the final
  observations come as ``info["final_obs_batch"]``, a dict of arrays over all
  slots whose rows ``info["_final_obs"]`` are the ended ones (the python
  backend gives both).
* No exact resume: EnvPool cannot save an episode in flight. :meth:`set_state`
  restores the slots' tasks and the generator, then *restarts* every slot's
  episode in pools seeded from that generator, so resuming the same
  checkpoint twice gives the same run (:attr:`exact_resume` is False).
* Symbolic observations only (EnvPool renders no egocentric RGB view).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from envs.labels import target_cells
from envs.pools import EnvPoolTask, MiniGridTask, served_by_envpool
from envs.slots import _probs_row, check_slots
from envs.tasks import TASK_NAMES, TASKS
from envs.wrappers import DEFAULT_MISSION_LENGTH, FAMILIES, VIEW_SIZE, observation_space, tokenize

_FAMILY = np.array([FAMILIES.index(spec.family) for spec in TASKS.values()], dtype=np.int64)


class PooledVectorEnv:
    """``num_envs`` slots over per-task pools (see the module docstring).

    Args:
        tasks: tasks of the first episodes, assigned to slots round-robin.
        num_envs: number of slots.
        mission_length: tokens kept of a mission.
        env_threads: EnvPool worker threads in all (0: every core this process may
            use), shared out among the tasks open when each pool is built (at least one each).
    """

    exact_resume = False
    metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        tasks: Sequence[str],
        num_envs: int,
        *,
        mission_length: int = DEFAULT_MISSION_LENGTH,
        env_threads: int = 0,
    ) -> None:
        tasks = check_slots(tasks, num_envs)
        self.num_envs = int(num_envs)
        self.mission_length = mission_length
        self.env_threads = env_threads or len(os.sched_getaffinity(0))
        self.single_observation_space = observation_space("symbolic", num_tasks=len(TASKS), mission_length=mission_length)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = gym.spaces.Discrete(7)
        self.action_space = gym.spaces.MultiDiscrete([7] * self.num_envs)
        self._probs = np.stack([_probs_row({tasks[i % len(tasks)]: 1.0}) for i in range(self.num_envs)])
        self._rng = np.random.default_rng()
        self._seed = 0
        self._pools: dict[int, EnvPoolTask | MiniGridTask] = {}
        self._in_use: dict[int, np.ndarray] = {}  # task -> which of its pool's environments hold a slot
        n = self.num_envs
        self._task = np.full(n, -1, dtype=np.int64)  # task of each slot's episode (-1: none yet)
        self._env = np.zeros(n, dtype=np.int64)  # the slot's environment in that task's pool
        self._image = np.zeros((n, VIEW_SIZE, VIEW_SIZE, 3), dtype=np.uint8)
        self._direction = np.zeros(n, dtype=np.int64)
        self._tokens = np.zeros((n, mission_length), dtype=np.int64)
        self._target = np.zeros((n, 2), dtype=np.int64)
        self._groups: list[tuple[int, np.ndarray, np.ndarray]] | None = None
        self._token_cache: dict[str, np.ndarray] = {}
        self.closed = False

    # ---------------------------------------------------------------- pools
    def _pool(self, task: int) -> EnvPoolTask | MiniGridTask:
        pool = self._pools.get(task)
        if pool is None:
            spec = TASKS[TASK_NAMES[task]]
            kind = EnvPoolTask if served_by_envpool(spec) else MiniGridTask
            seed = int(np.random.SeedSequence([self._seed, task]).generate_state(1)[0] >> 1)
            # env_threads is shared out among the tasks open when the pool is built: one
            # pool per task runs side by side, and N pools of 2 threads on 2 cores step
            # 20 % slower than N pools of 1 (bench/env_throughput.py --env-threads).
            open_tasks = max(1, int((self._probs.sum(axis=0) > 0).sum()))
            threads = max(1, self.env_threads // open_tasks)
            pool = self._pools[task] = kind(spec, self.num_envs, seed=seed, num_threads=threads)
            self._in_use[task] = np.zeros(self.num_envs, dtype=bool)
        return pool

    def _close_pools(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools, self._in_use = {}, {}
        self._task[:] = -1
        self._groups = None

    def _tokens_of(self, missions: list[str]) -> np.ndarray:
        rows = []
        for text in missions:
            tokens = self._token_cache.get(text)
            if tokens is None:
                tokens = self._token_cache[text] = tokenize(text, self.mission_length)
            rows.append(tokens)
        return np.stack(rows)

    def _draw(self, slots: np.ndarray) -> np.ndarray:
        """Task of each slot's next episode, drawn from its row (one uniform per slot, in slot order)."""
        rows = self._probs[slots]
        cumulative = rows.cumsum(axis=1)
        cumulative /= cumulative[:, -1:]
        u = self._rng.random(len(slots))
        return np.minimum((u[:, None] >= cumulative).sum(axis=1), rows.shape[1] - 1)

    def _start(self, slots: np.ndarray, tasks: np.ndarray | None = None) -> None:
        """Begin new episodes in ``slots``: draw their tasks (unless given), move them, reset."""
        if len(slots) == 0:
            return
        tasks = self._draw(slots) if tasks is None else tasks
        old = self._task[slots]
        moving = old != tasks
        for task in np.unique(old[moving & (old >= 0)]):
            self._in_use[task][self._env[slots[moving & (old == task)]]] = False
        asked = []
        for task in np.unique(tasks):
            here = slots[tasks == task]
            pool = self._pool(int(task))
            movers = here[moving[tasks == task]]
            if len(movers):
                free = np.flatnonzero(~self._in_use[task])[: len(movers)]
                self._in_use[task][free] = True
                self._env[movers] = free
            pool.reset_send(self._env[here])  # every pool asked first, so their threads reset side by side
            asked.append((pool, here))
        for pool, here in asked:
            image, direction, missions, targets = pool.reset_recv()
            self._image[here], self._direction[here] = image, direction
            self._tokens[here], self._target[here] = self._tokens_of(missions), targets
        self._task[slots] = tasks
        if moving.any():
            self._groups = None

    def _by_task(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(task, its slots, their environments) for each running task; recomputed only when slots move."""
        if self._groups is None:
            order = np.argsort(self._task, kind="stable")
            tasks, starts = np.unique(self._task[order], return_index=True)
            bounds = list(starts[1:]) + [len(order)]
            self._groups = [
                (int(task), order[start:stop], self._env[order[start:stop]])
                for task, start, stop in zip(tasks, starts, bounds)
            ]
        return self._groups

    # ------------------------------------------------------------ gymnasium
    def _observation(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Copies (the arrays are refilled in place by the next step) and the labels."""
        obs = {
            "image": self._image.copy(),
            "direction": self._direction.copy(),
            "mission": self._tokens.copy(),
            "task": self._task.copy(),
            "family": _FAMILY[self._task],
        }
        info = {"view_labels": obs["image"][..., :2], "target_cell": target_cells(obs["image"], self._target)}
        return obs, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """New episodes in every slot (or in ``options["reset_mask"]``'s); ``seed`` rebuilds the pools seeded from it."""
        if seed is not None:
            self._close_pools()
            self._seed = int(seed)
            self._rng = np.random.default_rng(seed)
        mask = (options or {}).get("reset_mask")
        slots = np.arange(self.num_envs) if mask is None or (self._task < 0).any() else np.flatnonzero(mask)
        self._start(slots)
        return self._observation()

    def step(self, actions):
        actions = np.asarray(actions)
        groups = self._by_task()
        for task, slots, envs in groups:
            self._pools[task].send(envs, actions[slots])
        n = self.num_envs
        reward = np.zeros(n)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        crashes: dict[int, str] = {}
        for task, slots, envs in groups:
            image, direction, reward[slots], terminated[slots], truncated[slots], crashed = self._pools[task].recv()
            self._image[slots], self._direction[slots] = image, direction
            crashes.update({int(slots[k]): reason for k, reason in crashed.items()})
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            final, final_info = self._observation()
            success = terminated & (reward > 0)  # MiniGrid rewards success only (1 - 0.9 t / max_steps)
            info["final_obs_batch"], info["_final_obs"] = final, done
            info["final_info"] = {"success": success, "_success": done}
            for key, value in final_info.items():
                info["final_info"][key], info["final_info"][f"_{key}"] = value, done
            if crashes:
                crashed = np.zeros(n, dtype=bool)
                crashed[list(crashes)] = True
                info["final_info"]["crashed"] = np.array([crashes.get(i) for i in range(n)], dtype=object)
                info["final_info"]["_crashed"] = crashed
            self._start(np.flatnonzero(done))
        obs, labels = self._observation()
        info.update(labels)
        return obs, reward, terminated, truncated, info

    # ------------------------------------------------------- task switching
    @property
    def task_probs(self) -> np.ndarray:
        """Per-slot probabilities over registered tasks, shape (num_envs, num_tasks)."""
        return self._probs.copy()

    def set_task(self, slot: int, task: str) -> None:
        """Run ``task`` in ``slot`` from the slot's next reset on."""
        if not 0 <= slot < self.num_envs:
            raise ValueError(f"slot={slot} is outside [0, {self.num_envs}).")
        self._probs[slot] = _probs_row({task: 1.0})

    def set_tasks(self, tasks: Sequence[str]) -> None:
        """One task per slot, each from that slot's next reset on."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_tasks needs one task per slot ({self.num_envs}); got {len(tasks)}.")
        self._probs = np.stack([_probs_row({name: 1.0}) for name in tasks])

    def set_task_probs(self, probs: Mapping[str, float] | Sequence[Mapping[str, float]] | np.ndarray) -> None:
        """As :meth:`envs.vector.MultiTaskVectorEnv.set_task_probs`: one row for all slots, or one per slot."""
        if isinstance(probs, Mapping) or (isinstance(probs, np.ndarray) and probs.ndim == 1):
            self._probs = np.tile(_probs_row(probs), (self.num_envs, 1))
            return
        if len(probs) != self.num_envs:
            raise ValueError(f"set_task_probs needs one row per slot ({self.num_envs}); got {len(probs)}.")
        self._probs = np.stack([_probs_row(row) for row in probs])

    def current_tasks(self) -> list[str]:
        """Name of the task each slot is running now."""
        return [TASK_NAMES[t] for t in self._task]

    # --------------------------------------------------------------- resume
    def get_state(self) -> dict[str, Any]:
        """Plain data to continue from: the generator, task rows and each slot's task (not its episode)."""
        return {
            "backend": "envpool",
            "rng": self._rng.bit_generator.state,
            "probs": self._probs.tolist(),
            "tasks": self._task.tolist(),
        }

    def set_state(self, state: Mapping[str, Any]):
        """Continue from :meth:`get_state`: every slot restarts an episode of its task, in pools seeded from the generator."""
        if not isinstance(state, Mapping) or state.get("backend") != "envpool":
            raise ValueError("set_state needs a state saved by the envpool backend (the checkpoint is another backend's).")
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._probs = np.asarray(state["probs"], dtype=np.float64)
        self._close_pools()
        self._seed = int(self._rng.integers(2**31 - 1))
        self._start(np.arange(self.num_envs), np.asarray(state["tasks"], dtype=np.int64))
        return self._observation()

    def close(self, terminate: bool = False) -> None:
        if not self.closed:
            self._close_pools()
            self.closed = True
