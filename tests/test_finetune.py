"""Fine-tuning: --init-from a trained run, --freeze shared."""

import torch

from agents import load
from training.config import RunConfig
from training.loop import Trainer
from tests.conftest import expect, failure, python


def _config(root, name, **overrides):
    config = RunConfig(tasks="Empty-5x5,GoToDoor-5x5", frames=512, num_envs=4, seed=0, runs_dir=str(root),
                       run_name=name, threads=1, video_every=0)
    config.ppo.num_steps, config.ppo.batch_size = 64, 128
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def test_init_from_and_freeze_shared_train_only_the_task_specific_parts(tmp_path):
    Trainer(_config(tmp_path, "base"), progress=False).run()
    base = load(tmp_path / "base")
    tuned = Trainer(_config(tmp_path, "tuned", init_from=str(tmp_path / "base"), freeze="shared", seed=5), progress=False)
    start = {k: v.clone() for k, v in tuned.model.state_dict().items()}
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in start.items())  # weights copied
    tuned.run()
    after = tuned.model.state_dict()
    for name, value in after.items():
        shared = name.split(".")[0] in ("encoder", "conditioning", "memory", "sharing") and "gate" not in name \
            and not name.startswith("conditioning.task.")
        if shared:
            assert torch.equal(value, start[name]), f"{name} moved although frozen"
    assert not torch.equal(after["actor.net.0.weight"], start["actor.net.0.weight"])  # heads trained


def test_init_from_another_architecture_is_refused(tmp_path):
    Trainer(_config(tmp_path, "base"), progress=False).run()
    out = expect(python("train.py", "--tasks", "Empty-5x5", "--init-from", tmp_path / "base", "--sharing", "mmoe",
                        "--runs-dir", tmp_path, "--run-name", "refused", "--frames", "256", timeout=120), 2)
    assert "has another architecture (sharing: 'hard' there, 'mmoe' here)" in out.stderr, failure(out)
    assert not (tmp_path / "refused").exists()  # nothing written: not even an empty run folder
