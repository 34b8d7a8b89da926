"""Shared test setup: quiet pygame's import banner, import from the checkout, run child processes.

A test that runs ``train.py``, ``evaluate.py`` or ``torchrun`` as a child
process uses :func:`run` and :func:`expect` (or :func:`failure` in its own
assert): when the child fails, the test's failure message holds the command,
its exit status and the last lines of its stderr, which is where the cause is.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TAIL_LINES = 40


def tail(text: str | bytes | None, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a child's output."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def run(
    cmd: Sequence[object], *, timeout: float = 300, env: Mapping[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the checkout with its output captured as text.

    Args:
        cmd: the command; items are turned into strings (paths welcome).
        timeout: seconds; past it the test fails with the child's output so far.
        env: variables set on top of this process's environment.
        **kwargs: passed to :func:`subprocess.run` (``cwd``, default the checkout; ``preexec_fn``...).

    Returns:
        The finished process; check it with :func:`expect` or :func:`failure`.
    """
    args = [str(c) for c in cmd]
    try:
        return subprocess.run(
            args, cwd=kwargs.pop("cwd", ROOT), capture_output=True, text=True, timeout=timeout,
            env=None if env is None else {**os.environ, **env}, **kwargs,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{shlex.join(args)} did not end within {timeout} s; last lines of its stderr:\n{tail(err.stderr)}")


def python(*args: object, **kwargs) -> subprocess.CompletedProcess:
    """:func:`run` of this Python on ``args`` (``python("train.py", "--frames", 512)``)."""
    return run([sys.executable, *args], **kwargs)


def failure(done: subprocess.CompletedProcess) -> str:
    """What a failing assert on a child should say: its command, exit status and the end of its stderr."""
    return f"{shlex.join(map(str, done.args))} exited with {done.returncode}; last lines of its stderr:\n{tail(done.stderr)}"


def expect(done: subprocess.CompletedProcess, returncode: int = 0) -> subprocess.CompletedProcess:
    """Assert that the child exited with ``returncode`` (the message: :func:`failure`); returns it."""
    assert done.returncode == returncode, f"expected exit status {returncode}: {failure(done)}"
    return done


# A process that locks a run folder as train.py does (training/preflight.py), says so, and lives on;
# with "fork", it first forks a child that outlives it (as an async env worker would, for a moment, after a kill -9).
_HOLDER = """
import os, sys, time
from training import preflight
preflight.lock_run_folder(sys.argv[1])
child = os.fork() if sys.argv[2] == "fork" else 0
if child == 0 and sys.argv[2] == "fork":
    devnull = os.open(os.devnull, os.O_WRONLY)  # let go of the test's pipes: it reads them to their end
    os.dup2(devnull, 1), os.dup2(devnull, 2)
    time.sleep(600)
    os._exit(0)
print("locked", child, flush=True)
time.sleep(600)
"""


def hold_run_folder(folder: Path, *, fork: bool = False) -> tuple[subprocess.Popen, int]:
    """Start a process that holds ``folder``'s run lock: (the process, the pid of its forked child or 0).

    The caller kills both (``proc.kill()``; :func:`kill` for the child).
    """
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), "fork" if fork else "plain"], cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline().split()
    if line[:1] != ["locked"]:
        proc.kill()
        pytest.fail(f"the lock holder did not start; last lines of its stderr:\n{tail(proc.communicate()[1])}")
    return proc, int(line[1])


def kill(pid: int) -> None:
    """SIGKILL ``pid`` if it still runs."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
