"""How many CPU threads torch uses in a process of this project, and how they wait.

One owner of the rule (``train.py``, ``evaluate.py`` and the benchmarks ask
here; nothing else calls ``torch.set_num_threads`` with a number of its own).

Why it matters: torch's default is one OpenMP thread per core, and the bundled
GNU OpenMP (``torch/lib/libgomp.so.1``) lets a thread that waits at the end of
a parallel region spin on its core for about 300,000 iterations before it
sleeps. One process alone does not notice; a second process on the same cores
(an ``evaluate.py`` beside a ``train.py``, two seeds side by side) finds every
core taken by the first one's spinning threads, and each small op waits for a
time slice. Measured on a 2-core machine (issue: evaluation beside training,
two tasks x 32 episodes): 45.7 s with the default threads, 2.6 s with one.

The rule, chosen by measurement (``bench/shared_machine.py``; its docstring
has the tables):

* ``evaluate`` and ``bench``: one thread. Evaluation acts on a handful of
  observations per forward pass: alone, one thread took 8.2-13.9 s for two
  tasks x 32 episodes and two passive threads 10.4-10.5 s, so more threads
  buy nothing and only take cores from a neighbour. Benchmarks measure the
  code and must not depend on what else shares the machine.
* ``train``: one thread with ``vectorization="async"`` (the env workers are
  processes that need the cores); otherwise half the cores, at least one, so
  that a second process (an evaluation, another seed) has cores of its own.
  On 2 cores: all cores ran 1,259-1,306 frames/s alone in a quiet spell
  (114 and under 46 beside other users' jobs) but 37-123 each with a second
  run beside it; one thread 1,043-1,220 alone and 438-1,214 beside.
* An explicit request (``--threads N``, N > 0) always wins; so does
  ``OMP_NUM_THREADS`` set in the environment (torchrun sets it to 1 for its
  ranks) when nothing was requested.

:func:`configure_openmp` additionally makes OpenMP's waiting threads sleep at
once (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a wait policy
(``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set). A one-thread process never
waits on a team, so this only matters when a process runs several threads (4+
cores, or ``--threads``) and something shares its cores: with two threads
each on 2 cores, passive waiting ran 521-948 frames/s side by side where
spinning ran 37-123, at a cost alone (686-984 against 1,259-1,306). The
cores are not ours alone (another user's job is as much a neighbour as our
own evaluation), so the bounded cost is taken against the unbounded one. It
must run before torch is imported: libgomp reads its environment once, when
it is loaded (checked by tests/test_threads.py), so this module does not
import torch at module level.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ROLES = ("train", "evaluate", "bench")
"""The kinds of process the rule knows."""

# Variables through which a user chooses how OpenMP threads wait; if any is set,
# configure_openmp leaves the choice to them. GOMP_SPINCOUNT=300000 restores
# libgomp's own default (spin, then sleep), which bench/shared_machine.py uses
# to measure the old behaviour.
_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The OpenMP variables :func:`configure_openmp` would add to ``environ``.

    Args:
        environ: the environment to complete (default: ``os.environ``).

    Returns:
        ``{"OMP_WAIT_POLICY": "PASSIVE"}``, or ``{}`` when ``environ`` already
        sets a wait policy or a spin count.
    """
    environ = os.environ if environ is None else environ
    if any(name in environ for name in _WAIT_VARIABLES):
        return {}
    return {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_openmp(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Make OpenMP's idle threads sleep instead of spinning; call before ``import torch``.

    Args:
        environ: the environment to change (default: ``os.environ``, which
            libgomp reads when torch loads it).

    Returns:
        The variables set (empty when the user had chosen already).
    """
    environ = os.environ if environ is None else environ
    added = openmp_env(environ)
    environ.update(added)
    return added


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under ``taskset`` or a cgroup cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _env_threads(environ: MutableMapping[str, str]) -> int:
    """``OMP_NUM_THREADS`` when set to a positive integer (the user's choice for every OpenMP program), else 0."""
    value = environ.get("OMP_NUM_THREADS", "").strip()
    # OpenMP also accepts a list ("4,2") for nested levels; the first level is torch's.
    first = value.split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else 0


def resolve_threads(
    requested: int,
    *,
    role: str,
    vectorization: str = "sync",
    cores: int | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> int:
    """Torch CPU threads for a process of this project (see the module doc for why).

    Args:
        requested: ``--threads``: a positive number is used as given; 0 = auto.
        role: ``train``, ``evaluate`` or ``bench``.
        vectorization: ``train`` only: ``sync`` or ``async`` (async env
            workers are processes that need the cores themselves).
        cores: cores available (default: :func:`available_cores`).
        environ: where to look for ``OMP_NUM_THREADS`` (default: ``os.environ``).

    Returns:
        The number of threads, >= 1.

    Raises:
        ValueError: ``requested`` < 0, or an unknown role.
    """
    if role not in ROLES:
        raise ValueError(f"role={role!r} is unknown; known: {', '.join(ROLES)}.")
    if requested < 0:
        raise ValueError(f"--threads={requested} must be an integer >= 0 (0 = auto).")
    if requested > 0:
        return requested
    from_env = _env_threads(os.environ if environ is None else environ)
    if from_env:
        return from_env
    if role in ("evaluate", "bench") or vectorization == "async":
        return 1
    cores = available_cores() if cores is None else cores
    return max(1, cores // 2)


def apply_threads(requested: int, *, role: str, vectorization: str = "sync") -> int:
    """:func:`resolve_threads`, then ``torch.set_num_threads``; returns the number set."""
    import torch  # here, not at the top: configure_openmp must be importable before torch

    threads = resolve_threads(requested, role=role, vectorization=vectorization)
    torch.set_num_threads(threads)
    return threads
