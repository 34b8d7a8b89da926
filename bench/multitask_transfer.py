"""Positive transfer: one multi-task agent against one single-task agent per task.

For every seed, the default agent trains (a) on all the tasks at once and (b)
on each task alone. Each run stops when every one of its tasks has a full
window of 100 episodes with at least 90 % success (or at the frame budget,
which then counts as its frames). The transfer ratio of a seed is

    frames of the multi-task run / sum of the frames of the single-task runs

below 1 the shared agent needs fewer frames than separate agents together
(positive transfer), above 1 tasks get in each other's way.

Run:
    python bench/multitask_transfer.py                        # 4 tasks of both families, seeds 1-3
    python bench/multitask_transfer.py --tasks Empty-5x5,GoToDoor-5x5 --seeds 1 --max-frames 200000

Target: median ratio <= 0.7.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from learning_frames import frames_to_threshold  # noqa: E402
from plotting import plot_curves  # noqa: E402

from envs import get_task  # noqa: E402

DEFAULT_TASKS = "Empty-5x5,LavaGapS5,GoToDoor-5x5,Fetch-5x5-N2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated tasks (>= 2)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--max-frames", type=int, default=400_000, help="budget of each run")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="overrides of the config of every run")
    parser.add_argument("--plot", default="bench/out/multitask_transfer.png", help="PNG of success vs frames")
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if len(tasks) < 2:
        parser.error(f"--tasks {args.tasks!r}: a transfer needs at least 2 tasks")
    for task in tasks:
        try:
            get_task(task)  # unknown names fail here, before any training
        except ValueError as err:
            parser.error(str(err))
    torch.set_num_threads(1)
    fair = ["threads=1", "video_every=0", "checkpoint_every=0", *args.set]

    print(f"tasks: {', '.join(tasks)} ({', '.join(sorted({get_task(t).family for t in tasks}))}); "
          f"frames until every task of a run has {args.threshold:.0%} of its last 100 episodes (budget {args.max_frames:,})")
    print(f"{'seed':>4}  {'run':<28}{'frames':>12}{'seconds':>9}  final success")
    curves: dict[str, list] = {"multi-task (lowest task)": []}
    ratios, multi_all, single_all = [], [], []
    for seed in args.seeds:
        rows = []
        for group in [",".join(tasks), *tasks]:
            curve: list[tuple[int, float]] = []
            reached, seconds, rates = frames_to_threshold(
                group, seed, threshold=args.threshold, max_frames=args.max_frames, overrides=fair, curve=curve
            )
            label = "multi-task" if "," in group else group
            curves.setdefault("multi-task (lowest task)" if "," in group else f"single: {group}", []).append(curve)
            rows.append((label, reached))
            shown = "not reached" if reached is None else f"{reached:,}"
            rate_text = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in rates.items())
            print(f"{seed:>4}  {label:<28}{shown:>12}{seconds:>9.0f}  {rate_text}", flush=True)
        frames = [r if r is not None else args.max_frames for _, r in rows]
        multi, single = frames[0], sum(frames[1:])
        ratios.append(multi / single)
        multi_all.append(multi)
        single_all.append(single)
        capped = " (a run hit the budget: counted as the budget)" if any(r is None for _, r in rows) else ""
        print(f"{seed:>4}  transfer ratio {multi:,} / {single:,} = {multi / single:.2f}{capped}", flush=True)

    print()
    print(f"{'':<26}{'median':>12}{'min':>12}{'max':>12}")
    for name, values, fmt in (("multi-task frames", multi_all, ",.0f"), ("sum of single-task frames", single_all, ",.0f"),
                              ("transfer ratio", ratios, ".2f")):
        print(f"{name:<26}{statistics.median(values):>12{fmt}}{min(values):>12{fmt}}{max(values):>12{fmt}}")
    print(f"median transfer ratio {statistics.median(ratios):.2f} (target <= 0.7)")
    if args.plot:
        plot_curves(curves, ROOT / args.plot, threshold=args.threshold,
                    title=f"multi-task vs single-task agents, seeds {', '.join(map(str, args.seeds))}")
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
