"""train.py from the command line: a tiny real run, --help, and bad input."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _run(*args, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_tiny_training_run_reports_progress():
    out = _run("--tasks", "Empty-5x5,GoToDoor-5x5", "--frames", "1024", "--num-envs", "4", "--num-steps", "64",
               "--batch-size", "128", "--device", "cpu", "--log-every", "1")
    assert out.returncode == 0, out.stderr
    assert "training on 2 tasks, 1,024 frames, 4 envs, device cpu" in out.stdout
    assert "success: Empty-5x5" in out.stdout and "GoToDoor-5x5" in out.stdout


def test_help_documents_the_fields():
    out = _run("--help")
    assert out.returncode == 0
    for flag, text in [("--tasks", "Comma-separated task names"), ("--conditioning", "FiLM"),
                       ("--weighting", "uncertainty"), ("--bptt", "truncated BPTT")]:
        assert flag in out.stdout and text in out.stdout, flag


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tasks", "DoorKey-5x6"], "unknown task 'DoorKey-5x6'. Did you mean DoorKey-6x6, DoorKey-5x5"),
        (["--frames", "0"], "frames=0 must be a positive integer"),
        (["--batch-size", "300"], "batch_size must divide num_steps * num_envs. Currently batch_size=300"),
        (["--weighting", "magic"], "weighting='magic' is unknown; known: static, uncertainty"),
        (["--aux", "vision"], "aux='vision' names unknown heads"),
        (["--gamma", "1.5"], "gamma=1.5 must be in [0, 1]"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(args, message):
    out = _run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_cuda_on_a_machine_without_it_is_refused():
    # Hide any GPU so that the refusal is observable on every machine.
    out = _run("--device", "cuda", env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 2 and "device='cuda' but no CUDA device" in out.stderr
