"""Checkpoints: atomic periodic files, full learner state, resume without duplicated TensorBoard steps."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import load
from training import checkpoint
from training.config import RunConfig
from training.loop import Trainer
from tests.conftest import expect, failure, python


def _config(root, **overrides):
    # backend minigrid: resuming bit for bit (episodes in flight replayed) is the python backend's contract;
    # envpool resumes with fresh episodes (exact_resume False).
    config = RunConfig(tasks="Empty-5x5,GoToDoor-5x5", frames=2048, num_envs=4, seed=3, runs_dir=str(root),
                       run_name="ck", threads=1, video_every=0, checkpoint_every=2, keep_checkpoints=2,
                       curriculum="learning-progress", backend="minigrid")
    config.ppo.num_steps, config.ppo.batch_size = 64, 128
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def test_periodic_checkpoints_keep_the_newest(tmp_path):
    Trainer(_config(tmp_path), progress=False).run()  # 8 updates: checkpoints at 2, 4, 6, 8 + final
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path / "ck")]
    assert names == ["ckpt-000000001536.pt", "ckpt-000000002048.pt"]
    assert checkpoint.latest_checkpoint(tmp_path / "ck").name == "final.pt"
    payload = checkpoint.load(tmp_path / "ck" / "checkpoints" / "final.pt")
    assert payload["frames"] == 2048 and payload["updates"] == 8
    assert {"optimizer", "weighter", "reward_store", "generator"} <= set(payload["ppo"])
    assert set(payload["rng"]) == {"python", "numpy", "torch", "cuda"} and payload["vocab"][:2] == ["<pad>", "<unk>"]
    assert RunConfig.from_yaml(payload["config"]).tasks == "Empty-5x5,GoToDoor-5x5"
    assert len(payload["curriculum"]["outcomes"]["Empty-5x5"]) > 0


def test_resume_restores_the_learner_and_continues_the_same_tensorboard_run(tmp_path):
    first = Trainer(_config(tmp_path, frames=1024), progress=False)
    first.run()  # 4 updates, then pretend it was stopped there
    params = {k: v.clone() for k, v in first.model.state_dict().items()}
    curriculum = first.curriculum.state_dict()

    resumed = Trainer(_config(tmp_path, frames=2048), progress=False, resume=checkpoint.latest_checkpoint(tmp_path / "ck"))
    assert resumed.frames == 1024 and resumed.updates == 4
    assert all(torch.equal(v, params[k]) for k, v in resumed.model.state_dict().items())
    assert resumed.curriculum.state_dict() == curriculum
    assert resumed.ppo.optimizer.state_dict()["state"].keys() == first.ppo.optimizer.state_dict()["state"].keys()
    resumed.run()
    assert resumed.frames == 2048

    events = EventAccumulator(str(tmp_path / "ck"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/fps")]
    assert steps == sorted(set(steps)) == list(range(256, 2049, 256))  # one point per update, none twice


def test_resume_from_the_command_line_and_bad_run_folders(tmp_path):
    Trainer(_config(tmp_path, frames=512), progress=False).run()
    out = expect(python("train.py", "--resume", tmp_path / "ck", "--frames", "1024"))
    assert "resuming" in out.stdout and "1,024 frames" in out.stdout
    assert checkpoint.load(tmp_path / "ck" / "checkpoints" / "final.pt")["frames"] == 1024
    assert load(tmp_path / "ck").space_info["num_tasks"] > 0  # agents.load reads the same files
    bad = expect(python("train.py", "--resume", tmp_path / "missing", timeout=120), 2)
    assert "does not exist" in bad.stderr, failure(bad)


def test_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"something": 1}, path)
    with pytest.raises(ValueError, match="is not an omnigrid checkpoint"):
        checkpoint.load(path)


class _Interrupt:
    """Wraps ``owner.<name>`` to raise KeyboardInterrupt (as Ctrl-C would) on its ``at_call``-th call."""

    def __init__(self, owner, name: str, at_call: int) -> None:
        self.at_call, self.calls = at_call, 0
        self.wrapped = getattr(owner, name)
        setattr(owner, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt
        return self.wrapped(*args, **kwargs)


@pytest.mark.parametrize(
    "overrides, agent, where",
    [
        ({"schedule": "mixed", "vectorization": "sync"}, {}, "rollout"),
        ({"schedule": "mixed", "vectorization": "sync"}, {}, "update"),
        ({"schedule": "alternate", "vectorization": "async"}, {"memory": "lstm"}, "rollout"),
        # every task mastered once its window is full: teachers are taken and resumed
        ({"schedule": "mixed", "vectorization": "sync", "mastered_threshold": 0.0}, {"distill_coef": 1.0}, "update"),
    ],
    ids=["mixed-sync-in-rollout", "mixed-sync-in-update", "alternate-async-lstm-in-rollout", "distill-in-update"],
)
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, overrides, agent, where):
    """Ctrl-C in the middle of a rollout or of an update, then --resume: bit-identical to a run never stopped.

    Episodes in flight at the checkpoint are replayed in fresh workers; the
    partial rollout (or half-done update) is dropped and redone with the same
    RNG states.
    """
    tasks = "DoorKey-5x5,GoToObject-6x6-N2,FourRooms,ColorGoTo-5x5-N2"

    def config(name):
        cfg = _config(tmp_path, tasks=tasks, run_name=name, frames=1536, checkpoint_every=2, **overrides)
        for key, value in agent.items():
            setattr(cfg.agent if hasattr(cfg.agent, key) else cfg.ppo, key, value)
        return cfg

    whole = Trainer(config("whole"), progress=False)
    whole.run()  # 6 updates of 4 slots x 64 steps

    broken = Trainer(config("broken"), progress=False)
    # Inside the 4th rollout, or after 3 of the 4th update's optimizer steps; the newest periodic checkpoint is from update 2.
    if where == "rollout":
        _Interrupt(broken.env, "step", at_call=3 * 64 + 40)
    else:
        steps_per_update = broken.config.ppo.update_epochs * (256 // broken.config.ppo.batch_size)
        _Interrupt(broken.ppo.optimizer, "step", at_call=3 * steps_per_update + 3)
    with pytest.raises(KeyboardInterrupt):
        broken.run()
    saved = checkpoint.load(checkpoint.latest_checkpoint(tmp_path / "broken"))
    assert saved["frames"] == 3 * 256  # Ctrl-C saves the end of the last complete update
    resumed = Trainer(config("broken"), progress=False, resume=checkpoint.latest_checkpoint(tmp_path / "broken"))
    assert resumed.frames == 3 * 256
    resumed.run()

    assert resumed.frames == whole.frames == 1536
    mine, theirs = resumed.model.state_dict(), whole.model.state_dict()
    differing = [key for key in theirs if not torch.equal(mine[key], theirs[key])]
    assert not differing, f"parameters differ after resume: {differing[:5]}"
    assert resumed.stats.episodes == whole.stats.episodes
    assert resumed.curriculum.state_dict() == whole.curriculum.state_dict()
    if whole.ppo.keeper is not None:  # distillation (the default without memory): the same teachers
        assert resumed.ppo.keeper.teacher_of == whole.ppo.keeper.teacher_of
        assert whole.ppo.keeper.teacher_of or overrides.get("mastered_threshold") != 0.0, "no teacher was taken"
    for a, b in zip(resumed.ppo.optimizer.state_dict()["state"].values(), whole.ppo.optimizer.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
