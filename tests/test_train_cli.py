"""train.py from the command line: a tiny real run, --help, and bad input."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.losses import ADVANTAGE_NORMS
from agents.model import AgentConfig
from agents.ppo import PPOConfig
from agents.weighting import WEIGHTERS
from training.config import RunConfig

from tests.conftest import expect, failure, python
from training import cli

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, timeout=300, env=None):
    return python("train.py", *args, timeout=timeout, env=env)


def test_tiny_training_run_reports_progress_and_evaluates(tmp_path):
    # DoorKey-5x5 is level 2: closed all run long, so the console never names it until the curriculum opens it.
    out = _run("--tasks", "Empty-5x5,GoToDoor-5x5,DoorKey-5x5", "--frames", "1000", "--num-envs", "4", "--num-steps", "64",
               "--batch-size", "128", "--device", "cpu", "--log-every", "1", "--runs-dir", str(tmp_path), "--threads", "1",
               "--run-name", "tiny")
    expect(out)
    assert "training on 3 tasks, 1,000 frames, 4 envs, device cpu" in out.stdout
    text = out.stdout.replace("\r", "\n")
    assert "level 1, 2 of 3 tasks open; success (last 100):" in text, failure(out)
    assert re.search(r"^  navigation +[-0-9.]+ \| Empty-5x5 [-0-9.]+$", text, re.M), failure(out)
    assert re.search(r"^  recognition +[-0-9.]+ \| GoToDoor-5x5 [-0-9.]+$", text, re.M), failure(out)
    assert "DoorKey-5x5" not in text.split("training on")[1], failure(out)  # closed: on no line
    # The bar ends at the frames the run stops at (whole updates: 1,024), at 100 %, with one speed figure.
    assert "100%|" in text and "1,024/1,024 frames" in text and "fps" not in text, failure(out)
    summary = text[text.index("done: 1,024 frames in "):]
    assert re.search(r"^  Empty-5x5 +navigation +[0-9.]+ +[0-9,]+$", summary, re.M), summary
    assert re.search(r"^  mean recognition +[0-9.]+$", summary, re.M), summary
    run = tmp_path / "tiny"
    assert f"python evaluate.py {run} --split train" in summary and f"tensorboard --logdir {tmp_path}" in summary
    assert f"saved {run / 'checkpoints' / 'final.pt'}" in summary
    saved = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert saved["frames"] == 1024
    weights = saved["ppo"]["weighter"]["_extra_state"]["weights"]  # the loss weights in force
    required = {"ppo/Empty-5x5", "ppo/GoToDoor-5x5", "aux/recognition"}  # aux/reward once a reward was seen
    assert required <= set(weights) <= required | {"aux/reward"}, weights
    assert {"optimizer", "weighter", "generator", "reward_store"} <= set(saved["ppo"])
    assert "tasks: Empty-5x5,GoToDoor-5x5,DoorKey-5x5" in (run / "config.yaml").read_text()
    ev = expect(python("evaluate.py", run, "--tasks", "Empty-5x5,GoToObject-6x6-N2", "--episodes", "4"))
    lines = ev.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task"))
    rule = next(i for i, line in enumerate(lines) if i > header and line.startswith("---"))  # the family means follow
    rows = {line.split()[0]: line.split() for line in lines[header + 1:rule]}
    assert set(rows) == {"Empty-5x5", "GoToObject-6x6-N2"}
    assert rows["Empty-5x5"][3] == "yes" and rows["GoToObject-6x6-N2"][3] == "no"  # trained on, or not
    assert all(0.0 <= float(r[4]) <= 1.0 for r in rows.values())


def test_evaluate_rejects_a_path_that_is_not_a_run(tmp_path):
    ev = expect(python("evaluate.py", tmp_path), 2)
    assert "is not a run folder with a checkpoint" in ev.stderr, failure(ev)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    ev = expect(python("evaluate.py", tmp_path / "junk.pt"), 2)
    assert "is not a readable checkpoint" in ev.stderr and "Traceback" not in ev.stderr, failure(ev)


def test_help_documents_the_fields():
    out = expect(_run("--help"))
    for flag, text in [("--tasks", "Comma-separated task names"), ("--conditioning", "FiLM"),
                       ("--weighting", "uncertainty"), ("--bptt", "truncated BPTT")]:
        assert flag in out.stdout and text in out.stdout, flag


def _flags(cls) -> list[str]:
    return [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(cls) if f.name not in ("agent", "ppo")]


def test_help_lists_every_option_with_its_choices_and_units():
    text = " ".join(expect(_run("--help")).stdout.replace("│", " ").split())  # the box and its wrapping undone
    for cls in (RunConfig, AgentConfig, PPOConfig):
        for flag in _flags(cls):
            assert f" {flag} " in text or f" {flag}, " in text, flag
    for flag in ("--config PATH", "--resume RUN", "--list-tasks "):  # read before the config, listed all the same
        assert flag in text, flag
    assert f"--weighting {{{','.join(WEIGHTERS)}}}" in text
    assert f"--advantage-norm {{{','.join(ADVANTAGE_NORMS)}}}" in text
    assert "--target-kl FLOAT" in text and "{None}" not in text
    for flag in ("--video-every", "--checkpoint-every", "--log-every"):
        help_of = text.split(f" {flag} INT ")[1].split(" --")[0]
        assert "One update is num_envs x num_steps frames" in help_of, flag


def test_help_cut_short_by_a_closed_pipe_is_quiet():
    out = subprocess.run(f"{sys.executable} train.py --help | head -1", shell=True, capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.stdout.startswith("usage: train.py") and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tasks", "DoorKey-5x6"], "unknown task 'DoorKey-5x6'. Did you mean DoorKey-6x6, DoorKey-5x5"),
        (["--frames", "0"], "frames=0 must be a positive integer"),
        (["--batch-size", "300"], "batch_size must divide num_steps * num_envs. Currently batch_size=300"),
        (["--weighting", "magic"], "weighting='magic' is unknown; known: static, uncertainty"),
        (["--aux", "vision"], "aux='vision' names unknown heads"),
        (["--gamma", "1.5"], "gamma=1.5 must be in [0, 1]"),
        (["--run-name", "a/b"], "run_name='a/b' must be a plain folder name"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(args, message):
    out = expect(_run(*args), 2)
    assert message in out.stderr, failure(out)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, failure(out)


def test_cuda_on_a_machine_without_it_is_refused():
    # Hide any GPU so that the refusal is observable on every machine.
    out = expect(_run("--device", "cuda", env={"CUDA_VISIBLE_DEVICES": ""}), 2)
    assert "device='cuda' but no CUDA device" in out.stderr, failure(out)


def test_check_writable_probes_the_folder_and_leaves_nothing(tmp_path):
    cli.check_writable(tmp_path / "runs" / "x", "runs_dir")
    assert list(tmp_path.iterdir()) == []  # the probe folder is gone, and nothing was created
    # os.access says yes to root in /proc; the probe says what mkdir would.
    with pytest.raises(ValueError, match=r"^runs_dir: cannot create a folder in '/proc' |^runs_dir: '/proc' is not writable"):
        cli.check_writable("/proc/omnigrid-runs", "runs_dir")


def test_a_failing_child_shows_the_end_of_its_stderr():
    done = python("-c", "import sys; print('\\n'.join(f'line {i}' for i in range(100)), file=sys.stderr); sys.exit(3)")
    with pytest.raises(AssertionError) as failed:
        expect(done)
    message = str(failed.value)
    assert "exited with 3" in message and "line 99" in message and "line 10\n" not in message  # the last 40 lines
