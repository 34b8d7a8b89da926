"""Ablations: what each part of the agent is worth, on one budget and the same seeds.

Every variant is the default agent with one choice changed; all train on the
same tasks (both families, all sampled from the start: no curriculum) for
the same frame budget and seeds. For each the
table gives the frames until every task first had 90 % success over its last
100 episodes (median over seeds; a seed that never got there counts as the
budget) and each task's success over its last 100 episodes at the budget (mean
over seeds).

Variant groups (``--groups``):
    aux          auxiliary heads: recognition + reward (default) / recognition / reward / none
    weighting    loss weighting: static (default) / uncertainty / gradnorm / dwa / pcgrad
    sharing      hard (default) / mmoe / ple
    conditioning film (default) / concat / task-id
    mission      mission encoder: gru (default) / bow

Run:
    python bench/ablations.py                                     # every group, 2 seeds, 150k frames
    python bench/ablations.py --groups aux sharing --seeds 1 2 3 --frames 300000
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

DEFAULT_TASKS = "DoorKey-5x5,GoToDoor-5x5,Fetch-5x5-N2"

GROUPS: dict[str, list[tuple[str, list[str]]]] = {
    "aux": [("aux: recognition", ["aux=recognition"]), ("aux: reward", ["aux=reward"]), ("aux: none", ["aux=none"])],
    "weighting": [(f"weighting: {w}", [f"weighting={w}"]) for w in ("uncertainty", "gradnorm", "dwa", "pcgrad")],
    "sharing": [(f"sharing: {s}", [f"sharing={s}"]) for s in ("mmoe", "ple")],
    "conditioning": [(f"conditioning: {c}", [f"conditioning={c}"]) for c in ("concat", "task-id")],
    "mission": [("mission encoder: bow", ["mission_encoder=bow"])],
}
DEFAULT_LABEL = "default (film, gru, hard, static, recognition+reward)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated tasks")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--frames", type=int, default=150_000, help="budget of every run")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="overrides of every run (default too)")
    parser.add_argument("--plot", default="bench/out/ablations.png", help="PNG of success vs frames")
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for task in tasks:
        try:
            get_task(task)
        except ValueError as err:
            parser.error(str(err))
    torch.set_num_threads(1)
    # Every task from the start (no curriculum): a level gate would measure the curriculum, not the agent.
    fair = ["threads=1", "video_every=0", "checkpoint_every=0", "curriculum=none", *args.set]
    variants = [(DEFAULT_LABEL, [])] + [v for group in args.groups for v in GROUPS[group]]

    print(f"tasks {', '.join(tasks)}; {args.frames:,} frames a run; seeds {', '.join(map(str, args.seeds))}")
    results = {}
    curves: dict[str, list] = {}
    for label, overrides in variants:
        reached_all, finals = [], []
        for seed in args.seeds:
            curve: list[tuple[int, float]] = []
            reached, seconds, rates = frames_to_threshold(
                ",".join(tasks), seed, threshold=args.threshold, max_frames=args.frames,
                overrides=fair + overrides, curve=curve, stop=False,
            )
            curves.setdefault(label, []).append(curve)
            reached_all.append(reached)
            finals.append(rates)
            shown = "not reached" if reached is None else f"{reached:,}"
            print(f"  {label:<52} seed {seed}: threshold at {shown:>11}, {seconds:5.0f} s, "
                  + ", ".join(f"{k} {v or 0:.2f}" for k, v in rates.items()), flush=True)
        results[label] = (reached_all, finals)

    short = [t[:19] for t in tasks]
    header = f"{'variant':<52}{'frames to ' + format(args.threshold, '.0%'):>16}{'reached':>9}" + "".join(f"{s:>20}" for s in short)
    print()
    print(header)
    for label, (reached_all, finals) in results.items():
        capped = [r if r is not None else args.frames for r in reached_all]
        done = sum(r is not None for r in reached_all)
        success = [statistics.mean((f[t] or 0.0) for f in finals) for t in tasks]
        print(f"{label:<52}{statistics.median(capped):>16,.0f}{f'{done}/{len(reached_all)}':>9}"
              + "".join(f"{s:>20.2f}" for s in success))
    print("(frames: median over seeds, a seed that never reached it counts as the budget; "
          "success: last 100 episodes at the budget, mean over seeds)")
    if args.plot:
        plot_curves(curves, ROOT / args.plot, threshold=args.threshold, ylabel="lowest task's success (last 100 episodes)",
                    title=f"ablations on {', '.join(tasks)}, {args.frames:,} frames")
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
