"""train.py from the command line: a tiny real run, --help, and bad input."""

import pytest
import torch

from tests.conftest import expect, failure, python
from training import cli


def _run(*args, timeout=300, env=None):
    return python("train.py", *args, timeout=timeout, env=env)


def test_tiny_training_run_reports_progress_and_evaluates(tmp_path):
    out = _run("--tasks", "Empty-5x5,GoToDoor-5x5", "--frames", "1024", "--num-envs", "4", "--num-steps", "64",
               "--batch-size", "128", "--device", "cpu", "--log-every", "1", "--runs-dir", str(tmp_path), "--threads", "1",
               "--run-name", "tiny")
    expect(out)
    assert "training on 2 tasks, 1,024 frames, 4 envs, device cpu" in out.stdout
    assert "success: Empty-5x5" in out.stdout and "GoToDoor-5x5" in out.stdout
    run = tmp_path / "tiny"
    saved = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert saved["frames"] == 1024
    weights = saved["ppo"]["weighter"]["_extra_state"]["weights"]  # the loss weights in force
    required = {"ppo/Empty-5x5", "ppo/GoToDoor-5x5", "aux/recognition"}  # aux/reward once a reward was seen
    assert required <= set(weights) <= required | {"aux/reward"}, weights
    assert {"optimizer", "weighter", "generator", "reward_store"} <= set(saved["ppo"])
    assert "tasks: Empty-5x5,GoToDoor-5x5" in (run / "config.yaml").read_text()
    ev = expect(python("evaluate.py", run, "--tasks", "Empty-5x5,GoToObject-6x6-N2", "--episodes", "4"))
    lines = ev.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task"))
    rows = {line.split()[0]: line.split() for line in lines[header + 1:]}
    assert set(rows) == {"Empty-5x5", "GoToObject-6x6-N2"}
    assert all(0.0 <= float(r[3]) <= 1.0 for r in rows.values())


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
