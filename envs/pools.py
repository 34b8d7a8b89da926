"""Task pools: many environments of one task, stepped as one batch.

The pooled vector env (:mod:`envs.pooled`) keeps one pool per task and steps
a subset of each pool's environments at every step:

* :class:`EnvPoolTask`: EnvPool's C++ MiniGrid (sail-sg/envpool), its own
  worker threads, stepped with ``send``/``recv`` so that the pools of several
  tasks run at the same time. EnvPool auto-resets an environment on the step
  *after* its episode ended; a pool here never steps an ended environment: the
  vector env resets it explicitly (same-step auto-reset, as the python backend).
* :class:`MiniGridTask`: python MiniGrid environments, for the tasks EnvPool
  lacks (the project's own ``Color*`` tasks). Built on first use.

Both answer in MiniGrid's raw terms (image, direction, mission text, reward,
terminated, truncated); the vector env turns a batch of those into the common
observation and labels once, for all slots.
"""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Any

import numpy as np

from envs import recognition
from envs.labels import GOAL, NO_TARGET, mission_target
from envs.tasks import TaskSpec, _goal, excludes_targets, raw
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from envs.wrappers import Target

ENVPOOL_VERSIONS = ">=1.2.5,<1.3"
"""EnvPool releases the parity tests passed on (pyproject pins the same range)."""

MAX_REDRAWS = 1000  # resets tried before an episode that targets a held-out pair is given up on

# Odd 64-bit multipliers, one per word of a mission row: the row's hash is the
# wrapping sum of word * multiplier (a collision is caught by the bytes check).
_HASH_MULTIPLIERS = np.random.default_rng(0).integers(1, 2**63, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)

_HELDOUT = {(OBJECT_TO_IDX[kind], COLOR_TO_IDX[color]) for color, kind in recognition.HELDOUT_PAIRS}


@functools.cache
def envpool_problem() -> str | None:
    """Why EnvPool cannot be used here (one line), or None when it can."""
    try:
        import envpool
    except Exception as err:  # ImportError, or a broken native library
        return f"envpool cannot be imported ({type(err).__name__}: {err})"
    from packaging.specifiers import SpecifierSet

    version = getattr(envpool, "__version__", "0")
    if version not in SpecifierSet(ENVPOOL_VERSIONS):
        return f"envpool {version} is installed; omnigrid is tested with envpool{ENVPOOL_VERSIONS}"
    return None


@functools.cache
def envpool_ids() -> frozenset[str]:
    """The MiniGrid/BabyAI ids EnvPool registers (empty when it cannot be used)."""
    if envpool_problem() is not None:
        return frozenset()
    import envpool

    return frozenset(envpool.list_all_envs())


NOT_SERVED = ("MiniGrid-MultiRoom-",)
"""EnvPool ids run on python MiniGrid all the same: EnvPool's MultiRoom (1.1.1 to 1.2.5)
draws the next room's corner from ``[y - size + 2, y + 1]`` where MiniGrid draws
from ``[y - size + 2, y]``, so a door can open onto the next room's wall: the
goal is unreachable in 31 % of MultiRoom-N2-S4 and 86 % of MultiRoom-N4-S5
layouts (0 % in MiniGrid; ``bench/envpool_layouts.py``, 2,000 resets each)."""


def served_by_envpool(spec: TaskSpec) -> bool:
    """Whether EnvPool runs this task: ``MiniGrid-*`` tasks but MultiRoom (:data:`NOT_SERVED`); not the project's own."""
    return spec.env_id in envpool_ids() and not spec.env_id.startswith(NOT_SERVED)


_RAW_STATE = ("info:env_id", "done", "trunc", "reward", "obs:image", "obs:direction", "obs:mission")
_RAW_ACTION = ["env_id", "players.env_id", "action"]


def _raw_layout(pool: Any) -> dict[str, int]:
    """Where each field sits in EnvPool's raw answer list.

    The pools talk to EnvPool's native ``_send``/``_recv``/``_reset`` directly:
    its python ``send``/``recv`` rebuild the config dict and a pytree on every
    call, a quarter of a step's time at 256 slots over six tasks. That layer
    is private, so the layout is checked here (and by ``tests/test_envpool_parity.py``)
    against the pinned versions; a release that changes it stops with this
    message instead of misreading arrays.
    """
    state_keys = list(pool._state_keys)
    action_keys = list(pool._spec._action_keys)
    missing = [key for key in _RAW_STATE if key not in state_keys]
    if missing or action_keys != _RAW_ACTION:
        import envpool

        raise RuntimeError(
            f"envpool {envpool.__version__}'s native layout changed (state keys missing {missing}, "
            f"action keys {action_keys}); omnigrid is tested with envpool{ENVPOOL_VERSIONS}."
        )
    return {key: state_keys.index(key) for key in _RAW_STATE}


class EnvPoolTask:
    """``capacity`` EnvPool environments of one task.

    Args:
        spec: the task.
        capacity: environments in the pool (the most slots the task can get).
        seed: seed of the pool (environment ``i`` is seeded ``seed + i`` by EnvPool).
        num_threads: EnvPool worker threads of this pool.
    """

    def __init__(self, spec: TaskSpec, capacity: int, *, seed: int, num_threads: int) -> None:
        import envpool

        self.spec = spec
        self.goal = spec.target is _goal
        self.exclude = excludes_targets(spec)
        self.pool = envpool.make(
            spec.env_id, env_type="gymnasium", num_envs=capacity, seed=seed,
            max_episode_steps=spec.max_steps, num_threads=min(num_threads, capacity),
        )
        self._at = _raw_layout(self.pool)
        self._missions: dict[int, tuple[bytes, str, Target]] = {}  # hash -> (mission bytes, text, target)
        self._resetting: np.ndarray | None = None
        self._stepping: np.ndarray | None = None

    def _decode(self, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Mission texts and targets of ``rows`` (uint8, NUL-padded); one decode per distinct mission.

        Rows are told apart by a 64-bit hash of their bytes (``np.unique`` over
        whole rows sorts 96-byte records: 10x slower), checked against the
        bytes of the mission the hash was first seen with.
        """
        words = np.ascontiguousarray(rows).view(np.uint64)  # 96 or 512 bytes: whole 64-bit words
        hashes = (words * _HASH_MULTIPLIERS[: words.shape[1]]).sum(axis=1)
        unique, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        texts, targets = [], []
        for key, row in zip(unique.tolist(), first.tolist()):
            known = self._missions.get(key)
            if known is None or known[0] != rows[row].tobytes():
                raw = rows[row].tobytes()
                text = raw.rstrip(b"\0").decode()
                known = self._missions[key] = (raw, text, mission_target(text, goal=self.goal))
            texts.append(known[1])
            targets.append(known[2])
        inverse = inverse.reshape(-1)
        return [texts[i] for i in inverse], np.asarray(targets, dtype=np.int64).reshape(-1, 2)[inverse]

    def _answer(self, ids: np.ndarray) -> list[np.ndarray]:
        """EnvPool's answer to the last request, checked to be about ``ids`` in that order."""
        state = self.pool._recv()
        if not np.array_equal(state[self._at["info:env_id"]], ids):
            raise RuntimeError(f"{self.spec.name}: EnvPool answered for other environments than were sent.")
        return state

    def reset_send(self, ids: np.ndarray) -> None:
        """Ask for new episodes in environments ``ids`` (answered by :meth:`reset_recv`)."""
        self._resetting = ids.astype(np.int32)
        self.pool._reset(self._resetting)

    def reset_recv(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """(image, direction, missions, targets) of the episodes :meth:`reset_send` asked for."""
        ids, self._resetting = self._resetting, None
        assert ids is not None, "EnvPoolTask.reset_recv without reset_send"
        at = self._at
        state = self._answer(ids)
        image, direction = state[at["obs:image"]], state[at["obs:direction"]].astype(np.int64)
        missions, targets = self._decode(state[at["obs:mission"]])
        for _ in range(MAX_REDRAWS):
            if not self.exclude:
                break
            # Train split: an episode whose target is a held-out pair is redrawn
            # before its first observation reaches anyone.
            bad = np.fromiter(((int(t), int(c)) in _HELDOUT for t, c in targets), dtype=bool, count=len(targets))
            if not bad.any():
                break
            self.pool._reset(ids[bad])
            again = self._answer(ids[bad])
            image[bad], direction[bad] = again[at["obs:image"]], again[at["obs:direction"]]
            new_missions, targets[bad] = self._decode(again[at["obs:mission"]])
            for i, text in zip(np.flatnonzero(bad), new_missions):
                missions[i] = text
        else:
            raise RuntimeError(f"{self.spec.name}: no episode without a held-out target in {MAX_REDRAWS} resets.")
        return image, direction, missions, targets

    def reset(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """Start new episodes in environments ``ids``: (image, direction, missions, targets)."""
        self.reset_send(ids)
        return self.reset_recv()

    def send(self, ids: np.ndarray, actions: np.ndarray) -> None:
        ids = self._stepping = ids.astype(np.int32)
        self.pool._send([ids, ids, actions.astype(np.int32)])  # env_id, players.env_id (one player), action

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        """(image, direction, reward, terminated, truncated, crashes by position) of the last :meth:`send`."""
        ids, self._stepping = self._stepping, None
        assert ids is not None, "EnvPoolTask.recv without send"
        at = self._at
        state = self._answer(ids)
        reward, truncated = state[at["reward"]], state[at["trunc"]]
        terminated = state[at["done"]] & ~truncated
        # An episode that reaches its goal on its last allowed step is terminated *and*
        # truncated in MiniGrid; EnvPool reports it truncated only.
        terminated |= truncated & (reward > 0)
        return state[at["obs:image"]], state[at["obs:direction"]], reward, terminated, truncated, {}

    def close(self) -> None:
        self.pool.close()


class MiniGridTask:
    """Python MiniGrid environments of one task, built on first use.

    An environment that raises in ``step`` ends its episode as truncated and
    is rebuilt (the crash is reported, as the python backend's slots do).
    """

    def __init__(self, spec: TaskSpec, capacity: int, *, seed: int, num_threads: int = 1) -> None:
        self.spec = spec
        self.seed = seed
        self.envs: list[Any] = [None] * capacity
        # Each env's last observation: what a step that crashes reports as the episode's final one.
        self._last_image = np.zeros((capacity, 7, 7, 3), dtype=np.uint8)
        self._last_direction = np.zeros(capacity, dtype=np.int64)
        self._pending: tuple[np.ndarray, np.ndarray] | None = None
        self._resetting: np.ndarray | None = None

    def _target(self, env: Any) -> Target:
        if self.spec.target is None:
            return NO_TARGET
        return GOAL if self.spec.target is _goal else self.spec.target(env.unwrapped)

    def reset(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        images, directions, missions, targets = [], [], [], []
        for i in ids.tolist():
            seed = None
            if self.envs[i] is None:
                self.envs[i] = raw(self.spec.name)
                seed = self.seed + i  # first episode of this env: seeded, later ones continue its stream
            obs, _ = self.envs[i].reset(seed=seed)
            images.append(obs["image"])
            directions.append(obs["direction"])
            missions.append(obs["mission"])
            targets.append(self._target(self.envs[i]))
        self._last_image[ids], self._last_direction[ids] = np.stack(images), directions
        return (np.stack(images), np.asarray(directions, dtype=np.int64), missions,
                np.asarray(targets, dtype=np.int64).reshape(-1, 2))

    def reset_send(self, ids: np.ndarray) -> None:
        self._resetting = ids

    def reset_recv(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        ids, self._resetting = self._resetting, None
        assert ids is not None, "MiniGridTask.reset_recv without reset_send"
        return self.reset(ids)

    def send(self, ids: np.ndarray, actions: np.ndarray) -> None:
        self._pending = (ids, actions)

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        assert self._pending is not None, "MiniGridTask.recv without send"
        ids, actions = self._pending
        n = len(ids)
        image = np.zeros((n, 7, 7, 3), dtype=np.uint8)
        direction = np.zeros(n, dtype=np.int64)
        reward = np.zeros(n)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        crashes: dict[int, str] = {}
        for k, (i, action) in enumerate(zip(ids.tolist(), actions.tolist())):
            try:
                obs, reward[k], terminated[k], truncated[k], _ = self.envs[i].step(action)
                image[k], direction[k] = obs["image"], obs["direction"]
            except Exception as err:
                crashes[k] = f"{type(err).__name__}: {err}"
                print(f"warning: environment of {self.spec.name} crashed ({crashes[k]}); "
                      "the slot continues on a fresh env.", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
                self.envs[i] = None  # rebuilt at the slot's next reset
                truncated[k] = True
                image[k], direction[k] = self._last_image[i], self._last_direction[i]
        self._last_image[ids], self._last_direction[ids] = image, direction
        return image, direction, reward, terminated, truncated, crashes

    def close(self) -> None:
        for env in self.envs:
            if env is not None:
                env.close()
