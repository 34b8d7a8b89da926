"""Multi-task vector env: many slots, each running any task, switchable live.

Built on gymnasium's vector envs (``AsyncVectorEnv`` with one worker process
per slot, or ``SyncVectorEnv`` stepping every slot in this process), so the
usual gymnasium API holds: ``reset``/``step`` return batched dict
observations, and infos batched the gymnasium way (``info["target_cell"]`` is
an array over slots). Auto-reset is gymnasium's ``SAME_STEP`` mode: the step
that ends an episode returns the first observation of the next one, with the
final observation in ``info["final_obs"]`` and the final info (``success``,
labels) in ``info["final_info"]``, so a learner can bootstrap on truncation.

Each slot is a :class:`envs.slots.TaskSlot`: it owns one environment per task it has run
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

Seeding and crashes are the slots' (:mod:`envs.slots`): ``reset(seed=s)`` gives
slot ``i`` the seed ``s + i``, and an exception in a task env ends its episode
as truncated and failed, with ``final_info["crashed"]``. With ``async``, a worker process that
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

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from envs.async_workers import RestartingAsyncVectorEnv
from envs.slots import Packing, _make_slot, _probs_row, check_slots
from envs.wrappers import DEFAULT_MISSION_LENGTH, ObsMode

Vectorization = Literal["sync", "async"]
VECTORIZATIONS: tuple[str, ...] = ("sync", "async")

LABEL_KEYS: tuple[str, ...] = ("view_labels", "target_cell")

BACKENDS: tuple[str, ...] = ("auto", "envpool", "minigrid")
"""``envpool``: EnvPool's C++ MiniGrid (:mod:`envs.pooled`); ``minigrid``: python
MiniGrid through gymnasium (this module, the reference); ``auto``: envpool
wherever it can serve the run, else minigrid."""


def backend_problem(backend: str, *, obs: str, vectorization: str) -> str | None:
    """Why ``backend`` cannot run a vector env with these settings (one line), or None."""
    if backend not in BACKENDS:
        return f"backend={backend!r} is unknown; use one of {', '.join(BACKENDS)}"
    if backend != "envpool":
        return None
    from envs.pools import envpool_problem

    problem = envpool_problem()
    if problem is not None:
        return problem
    if obs != "symbolic":
        return f"obs={obs!r}: envpool renders no egocentric RGB view (it serves obs='symbolic')"
    if vectorization != "sync":
        return f"vectorization={vectorization!r} is the python backend's worker processes (envpool has its own threads)"
    return None


def resolve_backend(backend: str, *, obs: str, vectorization: str) -> tuple[str, str | None]:
    """The backend to build and, when ``auto`` cannot be envpool, the one-line reason it is minigrid."""
    if backend != "auto":
        return backend, None
    problem = backend_problem("envpool", obs=obs, vectorization=vectorization)
    return ("minigrid", problem) if problem else ("envpool", None)


def make_vector_env(
    tasks: Sequence[str],
    num_envs: int,
    *,
    backend: str = "auto",
    obs: ObsMode = "symbolic",
    vectorization: Vectorization = "sync",
    env_threads: int = 0,
    mission_length: int = DEFAULT_MISSION_LENGTH,
):
    """The multi-task vector env on ``backend`` (``auto``: see :func:`resolve_backend`).

    Raises:
        ValueError: the backend cannot run these settings (the message says why).
    """
    backend, _ = resolve_backend(backend, obs=obs, vectorization=vectorization)
    problem = backend_problem(backend, obs=obs, vectorization=vectorization)
    if problem:
        raise ValueError(f"{problem}; use --backend minigrid.")
    if backend == "envpool":
        from envs.pooled import PooledVectorEnv

        return PooledVectorEnv(tasks, num_envs, mission_length=mission_length, env_threads=env_threads)
    return MultiTaskVectorEnv(tasks, num_envs, obs=obs, vectorization=vectorization, mission_length=mission_length)


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

    exact_resume = True  # set_state replays the episodes in flight

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
        tasks = check_slots(tasks, num_envs)
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
            info["final_obs_batch"] = final_obs  # the same, as arrays over all slots (rows of ended slots)
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
