"""gymnasium's ``AsyncVectorEnv`` with workers that are restarted when they die.

Used by the python backend with ``vectorization="async"`` (one worker process
per :class:`envs.slots.TaskSlot`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState, _async_worker
from gymnasium.vector.utils import CloudpickleWrapper, iterate


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
