"""Two processes of this project on the same cores: torch's old default threads against the rule of training/threads.py.

Users evaluate while they train and run seeds side by side. With torch's
default (one OpenMP thread per core, idle threads spinning before they
sleep), a second process finds every core busy and slows down several-fold.
This benchmark measures, in one invocation, each *mode* (how threads are
chosen) on real ``train.py`` and ``evaluate.py`` commands:

* ``eval``: the wall time of ``evaluate.py`` alone, and beside a running
  ``train.py`` (started first; the evaluation is timed once the training loop
  runs, and the training is then killed);
* ``train``: frames/s (each run's TensorBoard ``train/fps``, the training
  loop's frames over its time) of one ``train.py`` alone, and of each of two
  started side by side.

Modes: ``old`` is torch's default as it was (every process on all cores,
libgomp's default spin, ``GOMP_SPINCOUNT=300000``); ``new`` is what
``training/threads.py`` resolves for ``--threads 0`` (the threads are passed
explicitly, so the measurement holds whether or not an entry point is wired
to the rule yet) with :func:`training.threads.openmp_env`. Other candidates
are spelt ``TRAIN/EVAL/WAIT``: thread counts (a number, ``all`` or ``half``
of the cores) and ``spin`` or ``passive`` (``OMP_WAIT_POLICY=PASSIVE``),
e.g. ``all/1/passive``. Modes alternate within every round, so that the
machine's noise hits them alike; the tables show medians over rounds and the
slowdown ratios (beside / alone for the evaluation's time, alone / side by
side for frames/s). A command still running after ``--cap`` seconds is killed
and reported as a bound (``>45.0`` s, ``<46`` frames/s): the old default can
take minutes where the new rule takes seconds, and the defaults (2 rounds,
45 s) keep a run near 10 minutes. The 1-minute load average is printed before
and after: other work on the machine shows there, and it is part of what is
measured (a process never knows what else shares its cores).

Run (under the shared lock, so that no two measurements overlap):
    flock /tmp/omnigrid-bench.lock python bench/shared_machine.py
    flock /tmp/omnigrid-bench.lock python bench/shared_machine.py --sections train --modes old,1/1/spin,all/all/passive
    python bench/shared_machine.py --sections eval --rounds 5 --cap 120

Measured on the 2-core development machine, shared with other users' tests,
default settings (backend envpool, whose env threads take every core in
both modes), two invocations (555 s at load average 2.7-4.2, 533 s at
3.5-6.7):

    mode   eval alone s  beside train s  slowdown  |  train alone fps  side by side (each)  slowdown
    old           >45.0           >45.0         ?  |             <46                 <46         ?
    new            11.8            18.6     1.58x  |           1,056                 529     1.99x
    old           >45.0           >45.0         ?  |             231                 <46    >5.08x
    new             9.5            19.6     2.06x  |           1,181                 557     2.12x

Side by side, two one-thread runs share two cores that other work also
wants: half the frames/s each (their sum is the run alone) is the fair
share, not a collapse. The old default collapses even "alone" here, since
other users' jobs are a second process too. In a quieter spell (load about
3, 8,192 frames, one round): old 1,259 frames/s alone and 123 side by side;
1/1/spin 1,043 and 1,131; all/all/passive 802 and 876.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.threads import available_cores, openmp_env, resolve_threads  # noqa: E402

# Inherited settings that would decide the threads behind the benchmark's back.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
LIBGOMP_DEFAULT_SPIN = {"GOMP_SPINCOUNT": "300000"}  # what libgomp does when nothing is set
NUM_STEPS = 128  # steps per slot in a rollout (train.py's default), so that a rollout's frames are known
SETTLE_S = 2.0  # after the training loop starts: past its first rollout's start-up (first forward passes, allocations)


@dataclass(frozen=True)
class Mode:
    """How every process of a measurement chooses its threads."""

    name: str
    train_threads: int
    eval_threads: int
    env: dict[str, str] = field(hash=False)

    def describe(self) -> str:
        wait = "passive" if self.env.get("OMP_WAIT_POLICY") == "PASSIVE" else "spin"
        return f"{self.name}: train {self.train_threads} thread(s), evaluate {self.eval_threads}, {wait} wait"


def _count(spec: str, cores: int) -> int:
    if spec == "all":
        return cores
    if spec == "half":
        return max(1, cores // 2)
    if spec.isdigit() and int(spec) > 0:
        return int(spec)
    raise ValueError(f"thread count {spec!r}: use a positive number, all or half.")


def parse_mode(spec: str, cores: int) -> Mode:
    """``old``, ``new`` or ``TRAIN/EVAL/WAIT`` (e.g. ``all/1/passive``) -> a :class:`Mode`."""
    if spec == "old":
        return Mode("old", cores, cores, dict(LIBGOMP_DEFAULT_SPIN))
    if spec == "new":
        clean: dict[str, str] = {}  # the rule as a user who set nothing gets it
        return Mode("new", resolve_threads(0, role="train", cores=cores, environ=clean),
                    resolve_threads(0, role="evaluate", cores=cores, environ=clean), openmp_env(clean))
    parts = spec.split("/")
    if len(parts) != 3 or parts[2] not in ("spin", "passive"):
        raise ValueError(f"mode {spec!r}: use old, new or TRAIN/EVAL/WAIT such as all/1/passive.")
    env = {"OMP_WAIT_POLICY": "PASSIVE"} if parts[2] == "passive" else dict(LIBGOMP_DEFAULT_SPIN)
    return Mode(spec, _count(parts[0], cores), _count(parts[1], cores), env)


def _env(mode: Mode) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARIABLES}
    return {**env, **mode.env, "PYTHONUNBUFFERED": "1", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}


def _train_command(args: argparse.Namespace, threads: int, runs: Path, name: str, frames: int) -> list[str]:
    return [
        sys.executable, "train.py", "--tasks", args.train_tasks, "--frames", str(frames), "--num-envs", str(args.num_envs),
        "--num-steps", str(NUM_STEPS), "--backend", args.backend, "--threads", str(threads), "--device", "cpu",
        "--video-every", "0", "--checkpoint-every", "0", "--log-every", "1000000", "--seed", "1",
        "--runs-dir", str(runs), "--run-name", name,
    ]


def _eval_command(args: argparse.Namespace, threads: int, run: Path) -> list[str]:
    return [
        sys.executable, "evaluate.py", str(run), "--split", "train", "--tasks", args.eval_tasks,
        "--episodes", str(args.episodes), "--threads", str(threads), "--device", "cpu", "--no-tensorboard",
        "--json", str(run.parent / "eval.json"),
    ]


class Measure(NamedTuple):
    """One measurement. ``capped``: the command ran into ``--cap``, so the truth lies beyond ``value``."""

    value: float
    capped: bool = False


def _run(command: list[str], env: dict[str, str], cap: float) -> Measure:
    """Wall seconds of ``command`` (``capped`` if it ran past ``cap`` and was killed); SystemExit if it fails."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return Measure(cap, capped=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Measure(wall)


def _fps(run: Path) -> float | None:
    """The run's last ``train/fps`` (its loop's frames over its time so far), None before its first update."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not run.is_dir():  # killed before it made its folder
        return None
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    if "train/fps" not in events.Tags().get("scalars", []):
        return None
    return events.Scalars("train/fps")[-1].value


def _start_training(command: list[str], env: dict[str, str], log: Path, timeout: float) -> subprocess.Popen:
    """Start ``command`` and return once its training loop runs (tqdm drew its bar)."""
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while "%|" not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise SystemExit(f"background training ended before its loop ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"background training did not start within {timeout:.0f} s")
        time.sleep(0.1)
    time.sleep(SETTLE_S)
    return proc


def measure_eval(mode: Mode, args: argparse.Namespace, run: Path, tmp: Path, tag: str) -> tuple[Measure, Measure]:
    """(evaluation alone, evaluation beside a training run): wall seconds of evaluate.py."""
    env = _env(mode)
    alone = _run(_eval_command(args, mode.eval_threads, run), env, args.cap)
    train = _train_command(args, mode.train_threads, tmp, f"bg-{tag}", 100_000_000)
    proc = _start_training(train, env, tmp / f"bg-{tag}.log", max(args.cap, 120.0))
    try:
        beside = _run(_eval_command(args, mode.eval_threads, run), env, args.cap)
    finally:
        proc.kill()
        proc.wait()
    return alone, beside


def _train_runs(mode: Mode, args: argparse.Namespace, tmp: Path, names: list[str]) -> list[Measure]:
    """Frames/s of ``len(names)`` training runs started together; a run still going at ``--cap`` is killed.

    A killed run's frames/s is its last logged one (the updates it finished);
    one that finished no update is ``capped`` below one rollout over ``--cap``.
    """
    env = _env(mode)
    procs = [
        subprocess.Popen(_train_command(args, mode.train_threads, tmp, name, args.frames), cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for name in names
    ]
    deadline = time.monotonic() + args.cap
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            continue
        if proc.returncode != 0:
            raise SystemExit(f"training failed ({proc.returncode}):\n{err[-3000:]}")
    rollout = args.num_envs * NUM_STEPS
    results = []
    for name in names:
        fps = _fps(tmp / name)
        results.append(Measure(rollout / args.cap, capped=True) if fps is None else Measure(fps))
    return results


def measure_train(mode: Mode, args: argparse.Namespace, tmp: Path, tag: str) -> tuple[Measure, list[Measure]]:
    """(frames/s of one run alone, frames/s of each of two runs side by side)."""
    (alone,) = _train_runs(mode, args, tmp, [f"alone-{tag}"])
    return alone, _train_runs(mode, args, tmp, [f"pair0-{tag}", f"pair1-{tag}"])


def _median(values: list[Measure]) -> Measure:
    """The median; a capped value among the middle ones makes it that bound (its true value is unknown)."""
    if not values:
        return Measure(float("nan"))
    ordered = sorted(values)
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    capped = [m for m in middle if m.capped]
    return capped[0] if capped else Measure(statistics.fmean(m.value for m in middle))


def _show(m: Measure, *, fmt: str, beyond: str) -> str:
    return (beyond if m.capped else "") + format(m.value, fmt)


def _ratio(top: Measure, bottom: Measure, *, top_beyond: str) -> str:
    """``top / bottom`` marked > or < when a cap leaves it a bound; ? when both are bounds."""
    value = f"{top.value / bottom.value:.2f}x"
    if top.capped and bottom.capped:
        return "?"
    if top.capped:
        return top_beyond + value
    if bottom.capped:
        return {">": "<", "<": ">"}[top_beyond] + value
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="old,new", help="comma-separated: old, new, TRAIN/EVAL/WAIT (all/1/passive)")
    parser.add_argument("--sections", default="eval,train", help="eval, train or both")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-tasks", default="DoorKey-5x5")
    parser.add_argument("--frames", type=int, default=8192, help="frames of each timed training run")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--backend", default="auto", choices=("auto", "envpool", "minigrid"), help="train.py's env backend")
    parser.add_argument("--eval-tasks", default="DoorKey-5x5,GoToDoor-5x5")
    parser.add_argument("--episodes", type=int, default=32, help="evaluation episodes per task")
    parser.add_argument("--checkpoint", default="", help="run folder to evaluate (default: a 2,048-frame run trained first)")
    parser.add_argument("--cap", type=float, default=45.0,
                        help="seconds a measured command may take; past it, it is killed and reported as a bound")
    args = parser.parse_args()
    cores = available_cores()
    try:
        modes = [parse_mode(spec.strip(), cores) for spec in args.modes.split(",") if spec.strip()]
    except ValueError as err:
        parser.error(str(err))
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if not sections or not sections <= {"eval", "train"}:
        parser.error(f"--sections {args.sections!r}: use eval, train or eval,train.")
    for name in ("rounds", "frames", "num_envs", "episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be a positive integer.")

    from envs.vector import resolve_backend

    backend, _ = resolve_backend(args.backend, obs="symbolic", vectorization="sync")
    print(f"{cores} cores, load average {os.getloadavg()[0]:.2f}, backend {backend}; "
          + "; ".join(m.describe() for m in modes), flush=True)
    evals: dict[str, list[tuple[Measure, Measure]]] = {m.name: [] for m in modes}
    trains: dict[str, list[tuple[Measure, list[Measure]]]] = {m.name: [] for m in modes}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shared-machine-") as name:
        tmp = Path(name)
        run = Path(args.checkpoint)
        if "eval" in sections and not args.checkpoint:
            run = tmp / "agent"  # one agent for every mode: the episodes, hence the work, are the same
            _run(_train_command(args, 1, tmp, "agent", 2048), _env(parse_mode("1/1/spin", cores)), 600.0)
        for r in range(args.rounds):
            # Alternate the order as well as the modes: the first of a round should not always be the same.
            for k, mode in enumerate(modes if r % 2 == 0 else modes[::-1]):
                tag = f"{r}-{k}"
                if "eval" in sections:
                    alone, beside = measure_eval(mode, args, run, tmp, tag)
                    evals[mode.name].append((alone, beside))
                    print(f"round {r + 1} {mode.name}: evaluation alone {_show(alone, fmt='.1f', beyond='>')} s, "
                          f"beside training {_show(beside, fmt='.1f', beyond='>')} s", flush=True)
                if "train" in sections:
                    alone, pair = measure_train(mode, args, tmp, tag)
                    trains[mode.name].append((alone, pair))
                    print(f"round {r + 1} {mode.name}: training alone {_show(alone, fmt=',.0f', beyond='<')} frames/s, "
                          f"side by side " + " and ".join(_show(p, fmt=',.0f', beyond='<') for p in pair), flush=True)
    print(f"\n{args.rounds} round(s) in {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.2f}; "
          f"train: {args.train_tasks}, {args.frames:,} frames, {args.num_envs} envs; "
          f"evaluate: {args.eval_tasks}, {args.episodes} episodes each; medians over rounds; "
          f"> and <: a command stopped at --cap {args.cap:.0f} s")
    if "eval" in sections:
        print(f"\n{'mode':<16}  {'eval alone s':>12}  {'beside train s':>14}  {'slowdown':>8}")
        for mode in modes:
            alone = _median([a for a, _ in evals[mode.name]])
            beside = _median([b for _, b in evals[mode.name]])
            print(f"{mode.name:<16}  {_show(alone, fmt='.1f', beyond='>'):>12}  {_show(beside, fmt='.1f', beyond='>'):>14}  "
                  f"{_ratio(beside, alone, top_beyond='>'):>8}")
    if "train" in sections:
        print(f"\n{'mode':<16}  {'alone fps':>9}  {'side by side fps (each)':>23}  {'slowdown':>8}")
        for mode in modes:
            alone = _median([a for a, _ in trains[mode.name]])
            pair = _median([f for _, p in trains[mode.name] for f in p])
            print(f"{mode.name:<16}  {_show(alone, fmt=',.0f', beyond='<'):>9}  {_show(pair, fmt=',.0f', beyond='<'):>23}  "
                  f"{_ratio(alone, pair, top_beyond='<'):>8}")


if __name__ == "__main__":
    main()
