"""Checks before any work starts (training/preflight.py): one live run per folder, slots that fit in memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, expect, failure, hold_run_folder, kill, python, tail
from training import preflight
from training.checkpoint import list_checkpoints
from training.config import RunConfig


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


# ------------------------------------------------------------------ memory
def _config(**fields) -> RunConfig:
    config = RunConfig(tasks="Empty-5x5", device="cpu", **fields)
    config.ppo.num_steps, config.ppo.batch_size = 128, 128
    return config


def test_memory_estimate_is_environments_plus_rollout_buffer():
    config = _config(num_envs=1000)
    assert preflight.rollout_bytes_per_step(config) == 440  # 7x7x3 view, 16 int64 mission words, labels, learner
    assert preflight.estimate_memory(config) == 1000 * (preflight.SLOT_BYTES + 128 * 440)
    assert preflight.estimate_memory(config, ranks=2) == 2 * preflight.estimate_memory(config)
    config.vectorization = "async"  # a worker process per slot
    assert preflight.estimate_memory(config) == 1000 * (preflight.WORKER_BYTES + preflight.SLOT_BYTES + 128 * 440)


def test_slots_beyond_the_available_memory_are_refused_in_one_line():
    config = _config(num_envs=10_000_000)
    with pytest.raises(ValueError) as refused:
        preflight.check_memory(config, available=16 << 30)
    message = str(refused.value)
    assert message.startswith("num_envs=10,000,000 needs at least 600.8 GiB") and "\n" not in message
    assert "more than the 16.0 GiB available (MemAvailable); at most --num-envs 266,305 could fit." in message
    preflight.check_memory(_config(num_envs=266_305), available=16 << 30)  # the count it names fits


def test_without_meminfo_the_memory_check_is_skipped(tmp_path, monkeypatch):
    assert preflight.available_memory(tmp_path / "missing") is None
    (tmp_path / "meminfo").write_text("MemTotal:  1000 kB\nMemFree:  10 kB\nMemAvailable:  600 kB\n")
    assert preflight.available_memory(tmp_path / "meminfo") == 600 * 1024
    monkeypatch.setattr(preflight, "available_memory", lambda: None)
    preflight.check_memory(_config(num_envs=10**12))  # nothing to compare with: no refusal


# Measured in a fresh process: in this one, memory freed by earlier tests would be reused and hide the growth.
MEASURE_SLOT = """
import gc
import numpy as np
from envs.vector import MultiTaskVectorEnv

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

warm = MultiTaskVectorEnv(["Empty-5x5"], 1, vectorization="sync")
warm.reset(seed=0)
warm.close()
gc.collect()
n, before = 256, rss()
env = MultiTaskVectorEnv(["Empty-5x5"], n, vectorization="sync")
env.reset(seed=0)
for _ in range(10):
    env.step(np.zeros(n, dtype=np.int64))
print((rss() - before) / n)
"""


def test_the_slot_bound_is_below_the_real_memory_of_a_slot():
    """SLOT_BYTES must never refuse a run that fits: a python MiniGrid slot of the smallest task takes more."""
    per_slot = float(expect(python("-c", MEASURE_SLOT, timeout=120)).stdout.split()[-1])
    assert per_slot > preflight.SLOT_BYTES, per_slot


def test_train_py_refuses_too_many_slots_before_building_them():
    out = expect(python("train.py", "--num-envs", "1000000000", timeout=60), 2)  # 60 s: building them would take hours
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "num_envs=1,000,000,000 needs at least" in lines[0] and "MemAvailable" in lines[0], failure(out)
