"""Checks before any work starts (training/preflight.py): one live run per folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, expect, failure, hold_run_folder, kill, python, tail
from training import preflight
from training.checkpoint import list_checkpoints


# ------------------------------------------------------------------ the run folder's lock
def test_a_locked_folder_is_refused_naming_the_holder_and_freed_by_kill_9(tmp_path):
    folder = tmp_path / "run"
    holder, _ = hold_run_folder(folder)
    try:
        with pytest.raises(ValueError) as refused:
            preflight.lock_run_folder(folder)
        message = str(refused.value)
        assert f"run folder {str(folder)!r} is in use by a live run (pid {holder.pid})" in message
        assert "\n" not in message
    finally:
        holder.kill()  # SIGKILL: no handler, no cleanup
        holder.communicate()
    lock = preflight.lock_run_folder(folder)  # the kernel dropped the dead process's lock: never stale
    try:
        assert (folder / preflight.LOCK_NAME).read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_a_forked_child_does_not_keep_the_folder_locked_after_its_parent_dies(tmp_path):
    folder = tmp_path / "run"
    holder, child = hold_run_folder(folder, fork=True)
    try:
        holder.kill()
        holder.communicate()
        assert os.path.exists(f"/proc/{child}")  # the child outlives the killed holder...
        lock = preflight.lock_run_folder(folder)  # ...without holding its lock
        lock.release()
    finally:
        kill(child)


def test_release_undo_removes_the_folders_it_created_and_nothing_else(tmp_path):
    lock = preflight.lock_run_folder(tmp_path / "runs" / "new")
    lock.release(undo=True)
    assert list(tmp_path.iterdir()) == []  # runs/ too: it did not exist before
    (tmp_path / "old").mkdir()
    lock = preflight.lock_run_folder(tmp_path / "old")
    lock.release(undo=True)
    assert (tmp_path / "old" / preflight.LOCK_NAME).exists()  # an existing folder keeps its lock file
    lock = preflight.lock_run_folder(tmp_path / "other")
    (tmp_path / "other" / "kept.txt").write_text("x")
    lock.release(undo=True)
    assert (tmp_path / "other" / "kept.txt").exists()


def test_a_run_folder_that_cannot_be_created_is_one_line():
    with pytest.raises(ValueError, match=r"run folder '/proc/omnigrid-runs/x' cannot be created: "):
        preflight.lock_run_folder("/proc/omnigrid-runs/x")


TINY = ["--tasks", "Empty-5x5", "--num-envs", "4", "--num-steps", "64", "--batch-size", "128", "--threads", "1",
        "--device", "cpu", "--video-every", "0", "--curriculum", "none"]


def test_a_second_train_py_on_a_live_run_is_refused_and_a_killed_run_resumes(tmp_path):
    run = tmp_path / "live"
    live = subprocess.Popen(
        [sys.executable, "train.py", *TINY, "--frames", "100000000", "--checkpoint-every", "1", "--runs-dir", tmp_path,
         "--run-name", "live"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 120
        while not list_checkpoints(run):  # training, and with a checkpoint to resume from
            if live.poll() is not None or time.time() > deadline:
                live.kill()
                pytest.fail(f"the live run did not reach a checkpoint; last lines of its stderr:\n{tail(live.communicate()[1])}")
            time.sleep(0.2)
        config = (run / "config.yaml").read_text()
        for args in (["--resume", run, "--frames", "512"], [*TINY, "--frames", "512", "--runs-dir", tmp_path, "--run-name", "live"]):
            refused = expect(python("train.py", *args, timeout=120), 2)
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and f"{str(run)!r} is in use by a live run (pid {live.pid})" in lines[0], failure(refused)
            assert len(list(run.glob("events.out.tfevents.*"))) == 1  # no second TensorBoard file...
            assert (run / "config.yaml").read_text() == config  # ...and the live run's config as it was
    finally:
        live.kill()  # kill -9
        live.communicate()
    resumed = expect(python("train.py", "--resume", run, "--frames", "512", timeout=120))
    assert "resuming" in resumed.stdout, failure(resumed)

