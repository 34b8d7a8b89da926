"""Once a task holds 0.9, does it keep it? The lowest rolling success of each task after it first did.

Trains one agent on the given tasks (default: the default preset's level 1,
threshold curriculum, so no harder level ever opens) and reports, per task,
the frames at which its rolling success (last 100 episodes, full window)
first reached 0.9, the lowest it fell to after that (and when), and where it
ended. It separates what a task loses to training on the tasks it shares the
agent with from what it loses to a new level (``bench/level_transfer.py``).

Run:
    python bench/hold_after_mastery.py --seeds 1 --max-frames 800000
    python bench/hold_after_mastery.py --seeds 1 --max-frames 800000 --set distill_coef=1.0
    python bench/hold_after_mastery.py --tasks Fetch-5x5-N2 --seeds 1 --max-frames 600000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from learning_frames import _apply  # noqa: E402
from level_transfer import THRESHOLD, levels_of  # noqa: E402

from training.config import RunConfig  # noqa: E402
from training.loop import SUCCESS_WINDOW, Trainer  # noqa: E402


def run_seed(tasks: list[str], seed: int, args: argparse.Namespace) -> dict[str, tuple]:
    """Per task: (frames first at 0.9 or None, (lowest after, frames) or None, final rolling success)."""
    config = RunConfig.from_yaml((ROOT / args.config).read_text())
    config.tasks, config.frames, config.seed = ",".join(tasks), args.max_frames, seed
    config.video_every, config.checkpoint_every = 0, 0
    config.runs_dir = tempfile.mkdtemp(prefix="omnigrid-bench-")
    _apply(config, ["threads=1", *args.set])
    config.validate()
    trainer = Trainer(config, progress=False)
    first: dict[str, int] = {}
    lowest: dict[str, tuple[float, int]] = {}
    try:
        while trainer.frames < args.max_frames:
            trainer.collect()
            for name in tasks:
                window = trainer.stats.success[name]
                if len(window) < SUCCESS_WINDOW:
                    continue
                rate = sum(window) / len(window)
                if name not in first and rate >= THRESHOLD:
                    first[name] = trainer.frames
                if name in first and rate < lowest.get(name, (2.0, 0))[0]:
                    lowest[name] = (rate, trainer.frames)
            trainer.update()
    finally:
        trainer.env.close()
    return {name: (first.get(name), lowest.get(name), trainer.stats.success_rate(name)) for name in tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.yaml", help="preset of the agent and PPO settings")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: the preset's lowest level)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--max-frames", type=int, default=800_000, help="budget of each run")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides (every run)")
    args = parser.parse_args()
    if args.max_frames <= 0:
        parser.error(f"--max-frames {args.max_frames}: must be a positive number of frames")
    probe = RunConfig.from_yaml((ROOT / args.config).read_text())
    _apply(probe, args.set)  # an unknown field stops here, before any training
    tasks = args.tasks.split(",") if args.tasks else levels_of(probe)[0]
    print(f"tasks: {', '.join(tasks)}; budget {args.max_frames:,} frames a seed; overrides: {' '.join(args.set) or 'none'}")
    print(f"{'seed':>4}  {'task':<20}{'first at 0.9':>14}{'lowest after':>14}{'at frames':>12}{'final':>8}")
    for seed in args.seeds:
        for name, (first, low, final) in run_seed(tasks, seed, args).items():
            shown = "-" if first is None else f"{first:,}"
            low_text = ("-", "-") if low is None else (f"{low[0]:.2f}", f"{low[1]:,}")
            final_text = "-" if final is None else f"{final:.2f}"
            print(f"{seed:>4}  {name:<20}{shown:>14}{low_text[0]:>14}{low_text[1]:>12}{final_text:>8}", flush=True)


if __name__ == "__main__":
    main()
