"""Small fixed-seed runs that must show learning within a frame budget (CPU)."""

from training.config import RunConfig
from training.loop import Trainer


def _train(tasks: str, frames: int, runs_dir, seed: int = 1, **agent) -> Trainer:
    config = RunConfig(tasks=tasks, frames=frames, seed=seed, num_envs=16, runs_dir=str(runs_dir), threads=1)
    for key, value in agent.items():
        setattr(config.agent, key, value)
    trainer = Trainer(config, progress=False)
    trainer.run()
    return trainer


def test_empty_5x5_reaches_90_percent_success(tmp_path):
    trainer = _train("Empty-5x5", frames=40_960, runs_dir=tmp_path)
    success = trainer.stats.success["Empty-5x5"]
    assert len(success) == 100
    assert sum(success) / len(success) >= 0.9, f"rolling success {sum(success) / len(success):.2f}"
    # and it got there by learning: the first episodes were far from it
    assert trainer.stats.episodes["Empty-5x5"] > 300
