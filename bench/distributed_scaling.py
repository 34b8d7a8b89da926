"""Training frames/s with 1 and N processes under torchrun, same per-rank settings, in one invocation.

Each measurement is a real training job: ``python train.py`` for one process
and ``torchrun --standalone --nproc-per-node N train.py`` for N, with the same
tasks, ``num_envs`` per rank, rollout, minibatch and epochs (so N processes
collect N times the frames per update). Frames/s is the run's own
``train/fps`` at its end (all ranks' frames over the training loop's wall
time, start-up excluded); wall time is the whole command's. Runs alternate
(1, N, 1, N, ...) so that machine noise hits both alike; the median is
reported. On a GPU machine, ``--device cuda`` gives each rank its own GPU
(``--procs`` at most the number of GPUs).

Run:
    python bench/distributed_scaling.py                              # 1 vs 2 processes on CPU, 2 rounds
    python bench/distributed_scaling.py --procs 4 --device cuda --num-envs 64 --frames 400000

On a 2-core CPU machine two processes share the two cores that one process
already uses (one env stepping, one torch thread each), so expect a ratio near
or below 1 there: the benchmark reports it as measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _fps(run: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars("train/fps")[-1].value


def run_once(procs: int, args: argparse.Namespace, workdir: Path, label: str) -> tuple[float, float]:
    """(frames/s of the training loop, wall seconds of the command)."""
    train = [
        "train.py", "--tasks", args.tasks, "--frames", str(args.frames), "--num-envs", str(args.num_envs),
        "--num-steps", str(args.num_steps), "--batch-size", str(args.batch_size), "--update-epochs", str(args.epochs),
        "--threads", str(args.threads), "--device", args.device, "--video-every", "0", "--checkpoint-every", "0",
        "--curriculum", "none", "--log-every", "1000000", "--runs-dir", str(workdir), "--run-name", label,
    ]
    if procs == 1:
        command = [sys.executable, *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", *train]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])}... failed:\n{done.stderr[-3000:]}")
    return _fps(workdir / label), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, default=2, help="processes of the distributed run")
    parser.add_argument("--tasks", default="DoorKey-5x5,GoToDoor-5x5")
    parser.add_argument("--frames", type=int, default=40_960, help="frames of the 1-process run (N-process runs: N times)")
    parser.add_argument("--num-envs", type=int, default=8, help="slots per process")
    parser.add_argument("--num-steps", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.procs < 2:
        parser.error(f"--procs={args.procs}: the distributed run needs at least 2 processes.")

    results: dict[int, list[tuple[float, float]]] = {1: [], args.procs: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for procs in (1, args.procs):
                frames = args.frames * procs
                fps, wall = run_once(procs, argparse.Namespace(**{**vars(args), "frames": frames}), Path(tmp), f"p{procs}-r{r}")
                results[procs].append((fps, wall))
                print(f"round {r + 1}: {procs} process(es), {frames:,} frames: {fps:,.0f} frames/s, {wall:.1f} s", flush=True)

    one = statistics.median(f for f, _ in results[1])
    many = statistics.median(f for f, _ in results[args.procs])
    print()
    print(f"{'processes':>9}  {'frames/s (median)':>17}  {'min':>7}  {'max':>7}  {'vs 1':>5}")
    for procs, runs in results.items():
        fps = [f for f, _ in runs]
        print(f"{procs:>9}  {statistics.median(fps):>17,.0f}  {min(fps):>7,.0f}  {max(fps):>7,.0f}  {statistics.median(fps) / one:>5.2f}")
    print(f"\n{args.procs} processes / 1 process: {many / one:.2f}x frames/s "
          f"({args.tasks}, {args.num_envs} envs per process, device {args.device}, {os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    main()
