"""Frames until the rolling success rate first reaches a threshold, per task group and seed.

A group is one agent trained on one or more tasks (comma-separated); it is done
when every task of the group has a full window of episodes (100) whose
success rate is at least the threshold (0.9). Each run uses the default agent
and PPO settings unless overridden with ``--set field=value`` (any RunConfig,
AgentConfig or PPOConfig field).

Run:
    python bench/learning_frames.py                                   # the three default groups, 3 seeds
    python bench/learning_frames.py --groups DoorKey-5x5 --seeds 1 2 3 --max-frames 200000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from training.config import RunConfig  # noqa: E402
from training.loop import SUCCESS_WINDOW, Trainer  # noqa: E402

DEFAULT_GROUPS = ["DoorKey-5x5", "GoToObject-6x6-N2", "DoorKey-5x5,GoToObject-6x6-N2"]


def _apply(config: RunConfig, assignments: list[str]) -> None:
    for item in assignments:
        key, _, raw = item.partition("=")
        for target in (config, config.agent, config.ppo):
            fields = {f.name: f for f in dataclasses.fields(target)}
            if key in fields:
                current = getattr(target, key)
                value = type(current)(raw) if current is not None and not isinstance(current, bool) else raw
                if isinstance(current, bool):
                    value = raw.lower() in ("1", "true", "yes")
                setattr(target, key, value)
                break
        else:
            raise SystemExit(f"--set {item}: no config field named {key!r}")


def frames_to_threshold(
    tasks: str,
    seed: int,
    *,
    threshold: float,
    max_frames: int,
    overrides: list[str],
    curve: list | None = None,
    stop: bool = True,
):
    """Train until every task's rolling success >= threshold; (frames or None, seconds, final rates).

    ``curve``, if given, receives ``(frames, lowest rolling success over the tasks)`` after every rollout.
    With ``stop=False`` the run goes on to ``max_frames`` (final rates at the budget); the frames
    returned are still those where the threshold was first reached.
    """
    config = RunConfig(tasks=tasks, frames=max_frames, seed=seed, runs_dir=tempfile.mkdtemp(prefix="omnigrid-bench-"))
    _apply(config, overrides)
    trainer = Trainer(config, progress=False)
    start = time.perf_counter()
    reached = None
    try:
        while trainer.frames < max_frames:
            trainer.collect()
            if curve is not None:
                curve.append((trainer.frames, min(trainer.stats.success_rate(name) or 0.0 for name in config.task_list)))
            if reached is None and all(
                len(trainer.stats.success[name]) == SUCCESS_WINDOW and trainer.stats.success_rate(name) >= threshold
                for name in config.task_list
            ):
                reached = trainer.frames
                if stop:
                    break
            trainer.update()
    finally:
        trainer.env.close()
    rates = {name: trainer.stats.success_rate(name) for name in config.task_list}
    return reached, time.perf_counter() - start, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", nargs="+", default=DEFAULT_GROUPS, help="task groups (comma-separated tasks)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--max-frames", type=int, default=500_000)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides")
    args = parser.parse_args()

    print(f"{'group':<34}{'seed':>5}{'frames':>10}{'seconds':>9}  final success")
    summary = {}
    for group in args.groups:
        frames = []
        for seed in args.seeds:
            reached, seconds, rates = frames_to_threshold(
                group, seed, threshold=args.threshold, max_frames=args.max_frames, overrides=args.set
            )
            frames.append(reached)
            shown = "not reached" if reached is None else f"{reached:,}"
            rate_text = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in rates.items())
            print(f"{group:<34}{seed:>5}{shown:>10}{seconds:>9.0f}  {rate_text}", flush=True)
        summary[group] = frames
    print()
    print(f"{'group':<34}{'median frames':>15}{'min':>10}{'max':>10}  reached")
    for group, frames in summary.items():
        done = [f for f in frames if f is not None]
        if done:
            # Runs that never reached it count as the budget: the median stays honest.
            capped = [f if f is not None else args.max_frames for f in frames]
            print(f"{group:<34}{statistics.median(capped):>15,.0f}{min(done):>10,}{max(done):>10,}  {len(done)}/{len(frames)}")
        else:
            print(f"{group:<34}{'-':>15}{'-':>10}{'-':>10}  0/{len(frames)}")


if __name__ == "__main__":
    main()
