"""Checks before any work starts: the run folder is free, and the slots fit in memory.

A validated config can still name a run that cannot go well, and both
problems are cheap to see now and expensive to find out later:

* :func:`lock_run_folder`: a second ``train.py`` on a folder that a live run
  is writing (``--resume runs/X`` while X trains, or the same ``--run-name``)
  would write a second TensorBoard event file beside the first and overwrite
  config.yaml. The live run holds an exclusive ``flock`` on ``<run>/.lock``
  (holding its pid); the kernel drops the lock when the process ends, however
  it ends (``kill -9`` included), so a lock is never stale and a killed run
  resumes at once.
* :func:`check_memory`: ``--num-envs 10000000`` would build environments for
  minutes before running out of memory; the estimate refuses it at once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the lock half is imported by light processes, without torch
    from training.config import RunConfig

LOCK_NAME = ".lock"
"""The lock file in a run folder; its content is the pid of the run holding it (for the message)."""

SLOT_BYTES = 8 * 1024
"""Resident memory of one environment slot, a lower bound (the estimate refuses only runs that cannot fit).

Measured (RSS growth over a baseline, slots stepped, the 24 default tasks):
python MiniGrid, sync, 19-26 KiB per slot with the single env a slot starts
with (64 to 1024 slots), 364 KiB once a slot has run every task (one env per
task, about 14.5 KiB each); envpool 10-15 KiB per slot with one task, about
200 KiB with all 24. 8 KiB is below all of them.
"""

WORKER_BYTES = 4 * 1024 * 1024
"""Memory of one ``vectorization=async`` worker process beyond what it shares with its parent: measured
5.6-5.8 MiB private per worker (forked, stepped); 4 MiB is below it."""

_HELD: set[int] = set()  # file descriptors of the locks this process holds


def _close_in_child() -> None:
    # A forked child (an async env worker) inherits the lock's descriptor, and a
    # flock lasts while any descriptor of it is open: a worker outliving a killed
    # run would keep its folder locked. Closing the child's copy leaves the parent's lock as it is.
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunFolderLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, held until :meth:`release` or the end of the process.

    Args:
        folder: the run folder.
        fd: the open, locked lock file.
        created: folders this lock's taking created, deepest first (removed by ``release(undo=True)``).
    """

    def __init__(self, folder: Path, fd: int, created: list[Path]) -> None:
        self.folder, self._fd, self._created = folder, fd, created

    def release(self, *, undo: bool = False) -> None:
        """Drop the lock; ``undo``: also remove the lock file and the folders it created, if nothing else is in them.

        ``undo`` is for a run that stopped before writing anything (say, a bad
        ``--init-from``): it leaves no empty run folder behind.
        """
        if self._fd < 0:
            return
        if undo and self._created:
            # Unlinked while still locked: a process that opened the old file finds it gone (see lock_run_folder).
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
            for folder in self._created:
                try:
                    folder.rmdir()
                except OSError:  # something else was written there: keep it
                    break
        _HELD.discard(self._fd)
        os.close(self._fd)
        self._fd = -1


def lock_run_folder(folder: str | os.PathLike) -> RunFolderLock:
    """Create ``folder`` if needed and lock it for this process.

    Raises:
        ValueError: (one line) another live process holds the folder (its pid
            named), or the folder cannot be created or locked.
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"run folder {str(folder)!r} cannot be created: {err.strerror}; give a --runs-dir you can write to.") from None
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ValueError(f"run folder {str(folder)!r}: cannot open {path.name}: {err.strerror}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            pid = _holder(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ValueError(f"run folder {str(folder)!r}: cannot lock {path.name}: {err.strerror}.") from None
            raise ValueError(
                f"run folder {str(folder)!r} is in use by a live run (pid {pid}); wait for it to end "
                f"(or stop it with kill -INT {pid}), or give another --run-name."
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        # We locked a file that a run giving up removed meanwhile (release(undo=True)): try the current one.
        os.close(fd)
        folder.mkdir(parents=True, exist_ok=True)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD.add(fd)
    return RunFolderLock(folder, fd, created)


def _holder(fd: int) -> str:
    """The pid written in a lock file held by another process ('unknown' if it has not written it yet)."""
    for _ in range(20):  # the holder writes its pid right after taking the lock: a moment's wait at most
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


# ------------------------------------------------------------------ memory
def available_memory(meminfo: str | os.PathLike = "/proc/meminfo") -> int | None:
    """``MemAvailable`` in bytes: what can be allocated without swapping; None where it cannot be read."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                value, unit = line.split()[1:3]
                return int(value) * {"kB": 1024}.get(unit, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def rollout_bytes_per_step(config: RunConfig) -> int:
    """Bytes the rollout buffer holds per slot and step: one step of one slot of the real buffer, measured.

    The observation (a 7x7x3 view, a 16-word mission), the labels and the
    learner's fields: 440 bytes with the defaults.
    """
    from agents.buffer import RolloutBuffer
    from envs.tasks import TASKS
    from envs.wrappers import DEFAULT_MISSION_LENGTH, observation_space

    space = observation_space(config.obs, num_tasks=len(TASKS), mission_length=DEFAULT_MISSION_LENGTH)
    memory = config.agent.hidden_size if config.agent.memory == "lstm" else 0
    one = RolloutBuffer(space, 1, 1, device="cpu", memory_size=memory)
    return sum(value.nbytes for value in vars(one).values() if hasattr(value, "nbytes"))


def estimate_memory(config: RunConfig, *, ranks: int = 1) -> int:
    """A lower bound, in bytes, of the host memory the run's slots need on this machine.

    Args:
        config: a validated config.
        ranks: processes of the job on this machine (torchrun's ``--nproc-per-node``); each steps ``num_envs`` slots.
    """
    per_slot = WORKER_BYTES + SLOT_BYTES if config.vectorization == "async" else SLOT_BYTES
    if config.resolved_device().type == "cpu":  # on a GPU the rollout buffer lives in the GPU's memory
        per_slot += config.ppo.num_steps * rollout_bytes_per_step(config)
    return ranks * config.num_envs * per_slot


def check_memory(config: RunConfig, *, available: int | None = None, ranks: int | None = None) -> None:
    """Raise ValueError (one line) if the slots cannot fit in the available memory.

    Args:
        config: a validated config.
        available: bytes available; default: ``MemAvailable`` (the check is skipped where it cannot be read).
        ranks: processes on this machine; default: torchrun's ``LOCAL_WORLD_SIZE``, else 1.
    """
    available = available_memory() if available is None else available
    if available is None:
        return
    if ranks is None:
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    needed = estimate_memory(config, ranks=ranks)
    if needed <= available:
        return
    per_slot = needed // (ranks * config.num_envs)
    fits = available // (ranks * per_slot)
    where = f" on each of {ranks} ranks here" if ranks > 1 else ""
    raise ValueError(
        f"num_envs={config.num_envs:,}{where} needs at least {_size(needed)} (environments and rollout buffer of "
        f"num_steps={config.ppo.num_steps}, {_size(per_slot)} per slot), more than the {_size(available)} available "
        f"(MemAvailable); " + (f"at most --num-envs {fits:,} could fit." if fits else "free some memory first.")
    )


def _size(num_bytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:,.1f} {unit}"
    return f"{num_bytes} bytes"
