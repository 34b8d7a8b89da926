"""The training console: the bar's total, the open tasks' lines, the end-of-run summary."""

import re
from pathlib import Path

import pytest

from training.config import RunConfig
from training.console import Console, end_frames, success_lines, summary
from training.reporting import EpisodeStats


def _stats(outcomes: dict[str, list[bool]]) -> EpisodeStats:
    stats = EpisodeStats()
    for task, results in outcomes.items():
        for ok in results:
            stats.add(task, ok, float(ok), 10)
    return stats


@pytest.mark.parametrize("target,frames,per_update,end", [
    (100_000, 0, 2048, 100_352),  # whole updates: the run stops past --frames
    (10_000, 4096, 2048, 10_240),  # resumed at 4,096
    (4096, 4096, 2048, 4096),  # nothing left to do
    (2048, 0, 2048, 2048),
])
def test_the_bar_ends_at_the_frames_the_run_stops_at(target, frames, per_update, end):
    assert end_frames(target, frames, per_update) == end


def test_lines_show_open_tasks_only_by_family_wrapped():
    stats = _stats({"Empty-5x5": [True, True, False, True], "GoToDoor-5x5": [False, True]})
    open_tasks = ["Empty-5x5", "LavaGapS5", "GoToDoor-5x5", "Fetch-5x5-N2"]
    lines = success_lines(stats, open_tasks, width=60)
    text = "\n".join(lines)
    assert lines[0].startswith("  navigation  0.75 | Empty-5x5 0.75, LavaGapS5 -")  # no episode yet: -
    assert re.search(r"^  recognition 0.50 \| GoToDoor-5x5 0.50, Fetch-5x5-N2 -$", text, re.M), text
    assert "DoorKey" not in text and "ColorGoTo" not in text
    many = ["Empty-5x5", "Empty-8x8", "LavaGapS5", "LavaGapS6", "LavaGapS7", "DoorKey-5x5", "DoorKey-6x6", "FourRooms"]
    wrapped = success_lines(stats, many, width=60)
    assert len(wrapped) > 1 and all(len(line) <= 60 for line in wrapped), wrapped
    assert all(line.startswith(" " * 20) for line in wrapped[1:])  # continuation lines indented under the tasks


def test_summary_has_each_open_task_the_means_and_the_next_commands(tmp_path):
    stats = _stats({"Empty-5x5": [True] * 9 + [False], "GoToDoor-5x5": [True, False]})
    run = tmp_path / "runs" / "r1"
    text = summary(stats, ["Empty-5x5", "GoToDoor-5x5"], frames=100_352, session_frames=100_352, seconds=125.4, level=1,
                   total_tasks=24, run_dir=run, runs_dir=tmp_path / "runs", saved=run / "checkpoints" / "final.pt")
    assert text.startswith("done: 100,352 frames in 2:05 (800 frames/s); level 1, 2 of 24 tasks open")
    assert re.search(r"^  Empty-5x5 +navigation +0\.90 +10$", text, re.M), text
    assert re.search(r"^  GoToDoor-5x5 +recognition +0\.50 +2$", text, re.M), text
    assert re.search(r"^  mean navigation +0\.90$", text, re.M) and re.search(r"^  mean recognition +0\.50$", text, re.M)
    assert f"saved {run / 'checkpoints' / 'final.pt'}" in text
    commands = text[text.index("next:"):]
    assert f"python evaluate.py {run} --split train" in commands and f"tensorboard --logdir {tmp_path / 'runs'}" in commands
    resumed = summary(stats, ["Empty-5x5"], frames=200_704, session_frames=100_352, seconds=3725, level=2, total_tasks=24,
                      run_dir=run, runs_dir=tmp_path, saved=run)
    assert "200,704 frames (100,352 of them in this session, 1:02:05, 27 frames/s)" in resumed


def test_console_prints_only_when_enabled_and_its_bar_reaches_100_percent(capsys):
    config = RunConfig(tasks="Empty-5x5,GoToDoor-5x5,DoorKey-5x5", frames=5000, log_every=2)
    stats = _stats({"Empty-5x5": [True], "GoToDoor-5x5": [False]})
    quiet = Console(config, stats, enabled=False, frames=0, frames_per_update=2048)
    quiet.after_update(frames=2048, updates=2, open_tasks=["Empty-5x5"], level=1)
    quiet.close()
    assert capsys.readouterr().out == ""
    console = Console(config, stats, enabled=True, frames=0, frames_per_update=2048)
    for update in (1, 2, 3):
        console.after_update(frames=2048 * update, updates=update, open_tasks=["Empty-5x5", "GoToDoor-5x5"], level=1)
    console.close()
    out = capsys.readouterr().out.replace("\r", "\n")
    assert "100%|" in out and "6,144/6,144 frames" in out and "frames/s, nav 1.00, rec 0.00]" in out, out
    assert out.count("level 1, 2 of 3 tasks open") == 1  # updates 2 only (log_every=2)
    console.finish(frames=6144, open_tasks=["Empty-5x5"], level=1, saved=Path("x.pt"), run_dir=Path("runs/r"))
    assert "done: 6,144 frames in " in capsys.readouterr().out
