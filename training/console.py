"""What a training run prints: one progress bar, the open tasks' success now and then, a summary at the end.

The console is for a person watching: it shows only the tasks the curriculum
has opened (24 tasks of which 18 are still closed made every line wrap six to
nine times), grouped by family and wrapped to the terminal, one speed figure
(frames per second since this process started, the same average as the bar's
estimate), and a bar whose total is the frame count the run really stops at
(a run stops after whole updates, so ``--frames 100000`` ends at 100,352).
At the end it prints what a newcomer needs next: each open task's success,
the frames, the wall time, and the commands that evaluate the agent and open
its curves. TensorBoard has everything else.
"""

from __future__ import annotations

import math
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from envs.tasks import TASKS
from training.config import RunConfig
from training.reporting import FAMILIES, SUCCESS_WINDOW, EpisodeStats, family_means

FAMILY_SHORT = {"navigation": "nav", "recognition": "rec"}


def end_frames(target: int, frames: int, frames_per_update: int) -> int:
    """The frame count a run at ``frames`` stops at: whole updates until ``target`` is reached."""
    if frames >= target:
        return frames
    return frames + math.ceil((target - frames) / frames_per_update) * frames_per_update


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _rate(stats: EpisodeStats, task: str) -> str:
    rate = stats.success_rate(task)
    return "-" if rate is None else f"{rate:.2f}"


def success_lines(stats: EpisodeStats, open_tasks: Sequence[str], *, width: int) -> list[str]:
    """A line per family (wrapped to ``width``): its mean, then each open task's success, ``-`` before its first episode."""
    means = family_means(stats, open_tasks)
    lines = []
    for family in FAMILIES:
        tasks = [t for t in open_tasks if TASKS[t].family == family]
        if not tasks:
            continue
        mean = f"{means[family]:.2f}" if family in means else "-"
        head = f"  {family:<11} {mean:>4} |"
        body = ", ".join(f"{t} {_rate(stats, t)}" for t in tasks)
        lines += textwrap.wrap(body, width=max(40, width), initial_indent=head + " ",
                               subsequent_indent=" " * (len(head) + 1), break_on_hyphens=False)
    return lines


def summary(
    stats: EpisodeStats,
    open_tasks: Sequence[str],
    *,
    frames: int,
    session_frames: int,
    seconds: float,
    level: int,
    total_tasks: int,
    run_dir: Path,
    runs_dir: Path,
    saved: Path,
) -> str:
    """The end-of-run text: frames and wall time, each open task's success, the next commands."""
    fps = session_frames / seconds if seconds > 0 else 0.0
    means = family_means(stats, open_tasks)
    width = max(len("task"), *(len(t) for t in open_tasks), *(len(f"mean {f}") for f in means))
    pace = f"in {_duration(seconds)} ({fps:,.0f} frames/s)"
    if session_frames != frames:  # resumed: the wall time is this process's
        pace = f"({session_frames:,} of them in this session, {_duration(seconds)}, {fps:,.0f} frames/s)"
    lines = [
        f"done: {frames:,} frames {pace}; level {level}, {len(open_tasks)} of {total_tasks} tasks open",
        f"  {'task':<{width}}  {'family':<11}  {f'success (last {SUCCESS_WINDOW})':>18}  {'episodes':>8}",
    ]
    for family in FAMILIES:
        for task in (t for t in open_tasks if TASKS[t].family == family):
            lines.append(f"  {task:<{width}}  {family:<11}  {_rate(stats, task):>18}  {stats.episodes.get(task, 0):>8,}")
    for family, mean in means.items():
        lines.append(f"  {f'mean {family}':<{width}}  {'':<11}  {mean:>18.2f}")
    commands = [
        (f"python evaluate.py {run_dir} --split train", "each trained task, 100 fresh episodes"),
        (f"python evaluate.py {run_dir}", "the held-out tasks"),
        (f"tensorboard --logdir {runs_dir}", "curves and rollout GIFs"),
    ]
    pad = max(len(command) for command, _ in commands)
    lines += [f"saved {saved}", "next:", *(f"  {command:<{pad}}  # {why}" for command, why in commands)]
    return "\n".join(lines)


class Console:
    """The progress bar and the lines printed above it (nothing at all when ``enabled`` is false).

    Args:
        config: the run's config (frames, task list, log interval).
        stats: the trainer's episode statistics (read only).
        enabled: print anything (rank 0 of a run with ``progress``).
        frames: the frame counter at the start (a resumed run starts at its checkpoint's).
        frames_per_update: frames one update adds (all ranks together).
    """

    def __init__(self, config: RunConfig, stats: EpisodeStats, *, enabled: bool, frames: int, frames_per_update: int) -> None:
        self.config = config
        self.stats = stats
        self.enabled = enabled
        self.start_frames = frames
        self.frames_per_update = frames_per_update
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=end_frames(config.frames, frames, frames_per_update), initial=frames, unit="frames", disable=not enabled,
            file=sys.stdout, dynamic_ncols=True, smoothing=0,  # the average since start: one speed, as in the summary
            # tqdm's own rate would be a second speed (and reads "1152.32frames/s"): the postfix has ours.
            bar_format="{percentage:3.0f}%|{bar}| {n:,}/{total:,} frames [{elapsed}<{remaining}{postfix}]",
        )

    def fps(self, frames: int) -> float:
        """Frames per second of this process (not since the run began: a resumed run has its own)."""
        return (frames - self.start_frames) / max(1e-9, time.perf_counter() - self.start)

    def after_update(self, *, frames: int, updates: int, open_tasks: Sequence[str], level: int) -> None:
        """Advance the bar; every ``log_every`` updates, the open tasks' success above it."""
        if not self.enabled:
            return
        self.bar.update(frames - self.bar.n)
        means = family_means(self.stats, open_tasks)
        postfix = [f"{self.fps(frames):,.0f} frames/s"] + [f"{FAMILY_SHORT[f]} {m:.2f}" for f, m in means.items()]
        self.bar.set_postfix_str(", ".join(postfix), refresh=False)
        if self.config.log_every and updates % self.config.log_every == 0:
            width = shutil.get_terminal_size((100, 24)).columns
            head = (f"[{frames:,} frames, {_duration(time.perf_counter() - self.start)}] level {level}, "
                    f"{len(open_tasks)} of {len(self.config.task_list)} tasks open; success (last {SUCCESS_WINDOW}):")
            self.bar.write("\n".join([head, *success_lines(self.stats, open_tasks, width=width)]))

    def close(self) -> None:
        self.bar.close()

    def finish(self, *, frames: int, open_tasks: Sequence[str], level: int, saved: Path, run_dir: Path) -> None:
        """The end-of-run summary (after the final checkpoint is written)."""
        if not self.enabled:
            return
        print(summary(
            self.stats, open_tasks, frames=frames, session_frames=frames - self.start_frames,
            seconds=time.perf_counter() - self.start, level=level, total_tasks=len(self.config.task_list),
            run_dir=run_dir, runs_dir=Path(self.config.runs_dir), saved=saved,
        ))
