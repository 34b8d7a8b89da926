"""Checks before any work starts: the run folder is free.

A validated config can still name a run that cannot go well, and that is
cheap to see now and expensive to find out later:

* :func:`lock_run_folder`: a second ``train.py`` on a folder that a live run
  is writing (``--resume runs/X`` while X trains, or the same ``--run-name``)
  would write a second TensorBoard event file beside the first and overwrite
  config.yaml. The live run holds an exclusive ``flock`` on ``<run>/.lock``
  (holding its pid); the kernel drops the lock when the process ends, however
  it ends (``kill -9`` included), so a lock is never stale and a killed run
  resumes at once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path


LOCK_NAME = ".lock"
"""The lock file in a run folder; its content is the pid of the run holding it (for the message)."""

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

