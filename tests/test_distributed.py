"""Data-parallel training under torchrun: 2 processes on this machine's CPU, gloo backend.

Each test launches the real ``torchrun`` (``python -m torch.distributed.run``)
with ``--standalone`` (rendezvous on localhost, a free port). ``tests/dist_probe.py``
runs the real Trainer in each rank and reports what the rank ended with.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import expect, failure, hold_run_folder, python, run
from training import checkpoint

PER_RANK = 4 * 32  # frames per rank per update


def _torchrun(*args, nproc=2, env=None, timeout=300):
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args],
               env=env, timeout=timeout)


def _train_args(tmp_path, *extra):
    return ["--tasks", "Empty-5x5,GoToDoor-5x5,DoorKey-5x5", "--num-envs", "4", "--num-steps", "32", "--batch-size", "64",
            "--video-every", "0", "--threads", "1", "--device", "cpu", "--curriculum-window", "10",
            "--curriculum-threshold", "0.2", "--checkpoint-every", "2", "--runs-dir", str(tmp_path), "--run-name", "d",
            *extra]


def _probe(tmp_path, *extra, env=None):
    """torchrun of tests/dist_probe.py: (the finished torchrun, each rank's report); the test fails, with
    torchrun's stderr, if it failed."""
    out_dir = tmp_path / "probe"
    out_dir.mkdir(exist_ok=True)
    done = expect(_torchrun("tests/dist_probe.py", str(out_dir), "--", *_train_args(tmp_path, *extra), env=env))
    return done, [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("weighting", ["uncertainty", "gradnorm", "dwa", "pcgrad"])
def test_two_ranks_keep_identical_parameters_weights_and_curriculum(tmp_path, weighting):
    _, (r0, r1) = _probe(tmp_path, "--frames", "3072", "--weighting", weighting)
    assert (r0["world_size"], r1["world_size"]) == (2, 2)
    for key in ("params", "optimizer", "weighter", "weights", "curriculum", "opened", "episodes", "frames", "updates"):
        assert r0[key] == r1[key], key
    # The frame counter counts both ranks: 12 updates x 2 ranks x 128 frames.
    assert r0["frames"] == 3072 == r0["updates"] * PER_RANK * 2
    assert sum(r0["episodes"].values()) > 0
    assert len(r0["opened"][-1]) > len(r0["opened"][0])  # the curriculum opened a level, on both ranks alike
    assert r0["first_obs_seed_check"] != r1["first_obs_seed_check"]  # the ranks step different episodes


def test_rank_0_writes_the_run_which_resumes_distributed_or_alone_and_evaluates(tmp_path):
    _probe(tmp_path, "--frames", "2048")
    run = tmp_path / "d"
    saved = checkpoint.load(run / "checkpoints" / "final.pt")
    assert saved["frames"] == 2048 and len(saved["ranks"]) == 1  # rank 1's slots beside rank 0's
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("events")) and len(list(run.glob("events*"))) == 1
    # While another process holds the run (a live run), torchrun refuses it on rank 0, and no rank waits forever.
    holder, _ = hold_run_folder(run)
    try:
        refused = _torchrun("train.py", "--resume", str(run), "--frames", "3072", timeout=120)
    finally:
        holder.kill()
        holder.communicate()
    assert refused.returncode != 0 and f"is in use by a live run (pid {holder.pid})" in refused.stderr, failure(refused)
    # Resume with torchrun: both ranks continue from their own slots.
    again = expect(_torchrun("train.py", "--resume", str(run), "--frames", "3072"))
    assert "resuming" in again.stdout and "on each of 2 ranks" in again.stdout
    assert checkpoint.load(run / "checkpoints" / "final.pt")["frames"] == 3072
    # The same run continues in a single process (rank 0's slots), and evaluates.
    expect(python("train.py", "--resume", run, "--frames", "3584"))
    assert checkpoint.load(run / "checkpoints" / "final.pt")["frames"] == 3584
    ev = expect(python("evaluate.py", run, "--tasks", "Empty-5x5", "--episodes", "4"))
    assert "Empty-5x5" in ev.stdout


def test_a_crashing_rank_brings_the_job_down_and_keeps_the_last_checkpoint(tmp_path):
    out_dir = tmp_path / "probe"
    out_dir.mkdir()
    done = _torchrun("tests/dist_probe.py", str(out_dir), "--", *_train_args(tmp_path, "--frames", "8192"),
                     env={"PROBE_FAIL_RANK": "1", "PROBE_FAIL_UPDATE": "6"})
    assert done.returncode != 0, failure(done)
    assert "simulated failure of rank 1 at update 6" in done.stdout + done.stderr
    warnings = []
    last = checkpoint.resumable_checkpoint(tmp_path / "d", warn=warnings.append)
    assert not warnings and last.name == f"ckpt-{4 * PER_RANK * 2:012d}.pt"  # written at update 4, verified whole
    assert checkpoint.load(last)["updates"] == 4
