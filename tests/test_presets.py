"""Presets (--config), Ctrl-C, and the default preset being what `python train.py` runs."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from training.checkpoint import list_checkpoints
from training.config import RunConfig
from tests.conftest import ROOT, expect, failure, python, tail

PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


def test_presets_exist_and_validate():
    assert {p.stem for p in PRESETS} >= {"default", "quick", "navigation", "recognition"}
    for path in PRESETS:
        RunConfig.from_yaml(path.read_text()).validate()


def test_default_preset_is_what_train_py_runs_without_arguments():
    preset = asdict(RunConfig.from_yaml((ROOT / "configs" / "default.yaml").read_text()))
    assert preset == asdict(RunConfig())
    assert RunConfig().curriculum == "threshold"


def _train(*args, timeout=120):
    return python("train.py", *args, timeout=timeout)


def test_bad_presets_are_one_line_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("tasks: [unclosed\n")
    out = _train("--config", str(broken))
    assert out.returncode == 2 and "is not valid YAML" in out.stderr and "Traceback" not in out.stderr, failure(out)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("tasks: Empty-5x5\nlearning_rat: 0.1\n")
    out = _train("--config", str(unknown))
    assert out.returncode == 2 and "learning_rat" in out.stderr, failure(out)
    out = _train("--config", str(tmp_path / "none.yaml"))
    assert out.returncode == 2 and "does not exist" in out.stderr, failure(out)


def test_preset_fields_can_be_overridden(tmp_path):
    out = _train("--config", "configs/quick.yaml", "--frames", "512", "--num-envs", "4", "--num-steps", "64",
                 "--batch-size", "128", "--threads", "1", "--runs-dir", str(tmp_path), "--run-name", "q")
    expect(out)
    saved = RunConfig.from_yaml((tmp_path / "q" / "config.yaml").read_text())
    assert saved.tasks == "Empty-5x5,GoToDoor-5x5" and saved.frames == 512 and saved.video_every == 10


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_ctrl_c_writes_a_checkpoint_to_resume_from(tmp_path, vectorization):
    """Ctrl-C in a terminal signals the whole process group, env workers included."""
    proc = subprocess.Popen(
        [sys.executable, "train.py", "--tasks", "Empty-5x5", "--frames", "10000000", "--num-envs", "4",
         "--num-steps", "64", "--batch-size", "128", "--threads", "1", "--runs-dir", str(tmp_path), "--run-name", "c",
         "--checkpoint-every", "1000", "--video-every", "0", "--vectorization", vectorization],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # Started with SIGINT ignored, as a script's background job is: Ctrl-C / kill -INT must still stop it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.time() + 120
    while not list((tmp_path / "c").glob("events.out.tfevents.*")):
        if time.time() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"training did not start; last lines of its stderr:\n{tail(proc.communicate()[1])}")
        time.sleep(0.2)
    time.sleep(3)  # a few updates
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # show where it is stuck (train.py dumps its stacks on SIGUSR1)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"train.py did not stop within 120 s of Ctrl-C; its stacks:\n{tail(err, 120)}") from None
    assert proc.returncode == 130, f"exit status {proc.returncode}; last lines of its stderr:\n{tail(err)}"
    assert "Traceback" not in err, tail(err)
    assert "interrupted; saved" in out and "--resume" in out
    checkpoints = list_checkpoints(tmp_path / "c")
    assert len(checkpoints) == 1 and not (tmp_path / "c" / "checkpoints" / "final.pt").exists()
