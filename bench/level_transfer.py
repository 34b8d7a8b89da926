"""Does the agent keep level 1 when the curriculum opens level 2, and learn level 2?

The default preset (``configs/default.yaml``: agent, PPO, threshold
curriculum) on the tasks of its two lowest levels (16 tasks), for each seed.
After every rollout the rolling success of every task (last 100 episodes) is
read; per seed the bench reports:

* ``level 2 at``: the frames at which the curriculum opened level 2;
* ``lowest L1``: the lowest rolling success of any level-1 task after that,
  among windows that are full (and which task, at what frames);
* ``L2 >= 0.9``: level-2 tasks whose full window holds at least 0.9 at the
  end of the run;
* ``all 16``: the frames at which every task first held 0.9 (full windows);
  the run stops there, or at the budget.

and writes a plot of every task's success against frames (one panel a seed,
level-1 tasks solid, level-2 dashed, level 2's opening marked).

Run:
    python bench/level_transfer.py                                 # seeds 1-3, 4M frames each
    python bench/level_transfer.py --seeds 1 --max-frames 1000000 --set advantage_norm=none

Targets (issue: keep what is learnt): after level 2 opens no level-1 task's
rolling success falls below 0.8 in any seed; all 16 tasks hold 0.9 within 4M
frames in at least 2 of 3 seeds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from learning_frames import _apply  # noqa: E402

from envs import get_task  # noqa: E402
from training.config import RunConfig  # noqa: E402
from training.loop import SUCCESS_WINDOW, Trainer  # noqa: E402

THRESHOLD = 0.9


def levels_of(config: RunConfig) -> tuple[list[str], list[str]]:
    """The preset's tasks of its lowest level and of the next one."""
    levels = sorted({get_task(name).level for name in config.task_list})
    first = [name for name in config.task_list if get_task(name).level == levels[0]]
    second = [name for name in config.task_list if len(levels) > 1 and get_task(name).level == levels[1]]
    return first, second


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    """One training run; what the bench reports of it and its curves."""
    config = RunConfig.from_yaml((ROOT / args.config).read_text())
    level1, level2 = levels_of(config)
    config.tasks = ",".join(level1 + level2)
    config.frames, config.seed, config.curriculum = args.max_frames, seed, "threshold"
    config.video_every, config.checkpoint_every = 0, 0
    config.runs_dir = tempfile.mkdtemp(prefix="omnigrid-bench-")
    _apply(config, args.set)
    config.validate()
    trainer = Trainer(config, progress=False)
    tasks = level1 + level2
    curves: dict[str, list[tuple[int, float]]] = {name: [] for name in tasks}
    opened = None
    lowest = (1.0, None, None)  # (success, task, frames) of level 1 after level 2 opened
    all_held = None
    next_report = args.every
    start = time.perf_counter()
    try:
        while trainer.frames < args.max_frames:
            trainer.collect()
            full = {name: len(trainer.stats.success[name]) == SUCCESS_WINDOW for name in tasks}
            rates = {name: trainer.stats.success_rate(name) for name in tasks}
            for name, rate in rates.items():
                if rate is not None:
                    curves[name].append((trainer.frames, rate))
            if opened is None and trainer.curriculum.level() > get_task(level1[0]).level:
                opened = trainer.frames
            if opened is not None:
                for name in level1:
                    if full[name] and rates[name] < lowest[0]:
                        lowest = (rates[name], name, trainer.frames)
            if args.every and trainer.frames >= next_report:
                next_report += args.every
                held1 = sum(full[n] and rates[n] >= THRESHOLD for n in level1)
                held2 = sum(full[n] and rates[n] >= THRESHOLD for n in level2)
                print(f"      seed {seed} at {trainer.frames:,} frames ({time.perf_counter() - start:.0f} s): level "
                      f"{trainer.curriculum.level()}, level 1 at 0.9: {held1}/{len(level1)}, level 2: {held2}/{len(level2)}"
                      + ("" if lowest[1] is None else f", lowest level 1 so far {lowest[0]:.2f} ({lowest[1]})"),
                      flush=True)
            if all(full[name] and rates[name] >= THRESHOLD for name in tasks):
                all_held = trainer.frames
                break
            trainer.update()
    finally:
        trainer.env.close()
    final = {name: trainer.stats.success_rate(name) for name in tasks}
    held2 = [name for name in level2 if len(trainer.stats.success[name]) == SUCCESS_WINDOW and final[name] >= THRESHOLD]
    return {
        "seed": seed, "opened": opened, "lowest": lowest if opened is not None else None, "held2": held2,
        "all_held": all_held, "frames": trainer.frames, "seconds": time.perf_counter() - start, "final": final,
        "curves": curves, "level1": level1, "level2": level2,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 3.2 * len(results)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, result in zip(axes[:, 0], results):
        for k, name in enumerate(result["level1"] + result["level2"]):
            curve = result["curves"][name]
            if curve:
                x, y = zip(*curve)
                style = "-" if name in result["level1"] else "--"
                ax.plot(x, y, style, color=colours[k % len(colours)], linewidth=1, label=name)
        if result["opened"] is not None:
            ax.axvline(result["opened"], color="black", linewidth=1, linestyle=":")
        ax.axhline(THRESHOLD, color="grey", linewidth=0.8, linestyle="--")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("success (last 100)")
        ax.set_title(f"seed {result['seed']}: level 1 solid, level 2 dashed, dotted line: level 2 opens", fontsize=9)
    axes[-1, 0].set_xlabel("frames")
    axes[0, 0].legend(fontsize=6, ncol=4, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.yaml", help="preset whose two lowest levels are run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--max-frames", type=int, default=4_000_000, help="budget of each run")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides (every run)")
    parser.add_argument("--every", type=int, default=250_000, help="a progress line every this many frames (0: none)")
    parser.add_argument("--plot", default="bench/out/level_transfer.png", help="PNG of every task's success vs frames")
    args = parser.parse_args()
    if args.max_frames <= 0:
        parser.error(f"--max-frames {args.max_frames}: must be a positive number of frames")
    probe = RunConfig.from_yaml((ROOT / args.config).read_text())
    _apply(probe, args.set)  # an unknown field stops here, before any training
    level1, level2 = levels_of(probe)
    print(f"level 1: {', '.join(level1)}\nlevel 2: {', '.join(level2)}\nbudget {args.max_frames:,} frames a seed; "
          f"overrides: {' '.join(args.set) or 'none'}")
    print(f"{'seed':>4}{'level 2 at':>12}{'lowest L1 after':>17}  {'(task, frames)':<30}{'L2 >= 0.9':>10}{'all 16':>12}{'seconds':>9}")
    results = []
    for seed in args.seeds:
        r = run_seed(seed, args)
        results.append(r)
        opened = "-" if r["opened"] is None else f"{r['opened']:,}"
        low = "-" if r["lowest"] is None or r["lowest"][1] is None else f"{r['lowest'][0]:.2f}"
        where = "" if r["lowest"] is None or r["lowest"][1] is None else f"({r['lowest'][1]}, {r['lowest'][2]:,})"
        held = f"{len(r['held2'])}/{len(r['level2'])}"
        everything = "not reached" if r["all_held"] is None else f"{r['all_held']:,}"
        print(f"{seed:>4}{opened:>12}{low:>17}  {where:<30}{held:>10}{everything:>12}{r['seconds']:>9.0f}", flush=True)
        lagging = sorted((rate if rate is not None else -1.0, name) for name, rate in r["final"].items())[:6]
        print("      lowest at the end: " + ", ".join(f"{n} {'-' if v < 0 else f'{v:.2f}'}" for v, n in lagging))
    lows = [r["lowest"][0] for r in results if r["lowest"] is not None and r["lowest"][1] is not None]
    reached = [r["all_held"] for r in results if r["all_held"] is not None]
    print()
    print(f"lowest level-1 success after level 2 opened: "
          f"{'-' if not lows else f'median {statistics.median(lows):.2f}, min {min(lows):.2f}'} (target: >= 0.8 in every seed)")
    print(f"all tasks at 0.9: {len(reached)}/{len(results)} seeds"
          + (f", median {statistics.median(reached):,.0f} frames" if reached else "")
          + f" (target: 2 of 3 within 4M frames)")
    plot(results, ROOT / args.plot if not Path(args.plot).is_absolute() else Path(args.plot))
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
