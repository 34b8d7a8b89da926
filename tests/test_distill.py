"""Keeping mastered tasks: the KL pull towards a task's teacher, the keeper's snapshots, the learning rate per level."""

import math

import pytest
import torch

from agents.distill import PolicyKeeper
from agents.losses import distill_task_sums
from agents.model import AgentConfig, MultiTaskActorCritic, ObsBatch
from tests.test_agents import _batch


def test_distill_loss_is_the_teachers_kl_per_task_over_the_batch():
    teacher = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]))
    policy = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.2, 0.8], [0.6, 0.4]]))
    has_teacher = torch.tensor([True, True, True, False])
    task = torch.tensor([0, 0, 2, 1])
    sums, taught = distill_task_sums(policy, teacher, has_teacher, task, num_tasks=3)

    def kl(p, q):
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    # task b's only row has no teacher: zero, not taught; the others are their rows' KL summed, over B = 4
    assert taught == [0, 2] and sums[1].item() == 0.0
    assert sums[0].item() == pytest.approx((kl([0.5, 0.5], [0.25, 0.75]) + kl([0.9, 0.1], [0.5, 0.5])) / 4)
    assert sums[2].item() == pytest.approx(0.0, abs=1e-7)  # the policy is its teacher there
    # the gradient pulls the policy's log-probabilities towards the teacher's, and nothing else
    policy.requires_grad_(True)
    distill_task_sums(policy, teacher, has_teacher, task, num_tasks=3)[0][0].backward()
    assert torch.all(policy.grad[3] == 0) and torch.all(policy.grad[2] == 0)
    assert torch.allclose(policy.grad[1], -teacher[1].exp() / 4)


def _model_and_obs():
    space, obs, _ = _batch(n=6)
    torch.manual_seed(0)
    model = MultiTaskActorCritic(space, AgentConfig())
    return model, ObsBatch.from_numpy(obs, "cpu")


def test_a_mastered_task_keeps_its_best_policy_while_the_agent_moves_on():
    model, obs = _model_and_obs()
    names = ["DoorKey-5x5", "GoToObject-6x6-N2", "ColorPickup-6x6-N3"]
    task_names = [f"task{i}" for i in range(int(obs.task.max()) + 1)]
    for k, name in enumerate(names):
        task_names[int(obs.task[k % 3])] = name  # slots are assigned tasks in turn
    keeper = PolicyKeeper(model, task_names=task_names, threshold=0.9)
    assert keeper.teacher_logprobs(obs) is None  # no teacher yet: no pull

    assert keeper.observe({"DoorKey-5x5": (0.85, 0.9), "GoToObject-6x6-N2": (0.95, 0.5)}) == ["GoToObject-6x6-N2"]
    with torch.no_grad():
        then = torch.log_softmax(model.action_logits(obs)[0], dim=-1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the agent moves on
        now = torch.log_softmax(model.action_logits(obs)[0], dim=-1)
    logp, has_teacher = keeper.teacher_logprobs(obs)
    rows = obs.task == task_names.index("GoToObject-6x6-N2")
    assert torch.equal(has_teacher, rows) and rows.any()
    assert torch.allclose(logp[rows], then[rows], atol=1e-6) and not torch.allclose(logp[rows], now[rows], atol=1e-3)
    assert torch.all(logp[~rows] == 0)

    # a lower return keeps the teacher; a new best replaces it; the old snapshot is dropped once unused
    assert keeper.observe({"GoToObject-6x6-N2": (0.97, 0.4)}) == []
    assert keeper.observe({"GoToObject-6x6-N2": (0.93, 0.6), "DoorKey-5x5": (0.9, 0.8)}) == ["GoToObject-6x6-N2", "DoorKey-5x5"]
    assert len(keeper.snapshots) == 1 and keeper.teacher_of["DoorKey-5x5"] == keeper.teacher_of["GoToObject-6x6-N2"]
    logp, has_teacher = keeper.teacher_logprobs(obs)
    both = rows | (obs.task == task_names.index("DoorKey-5x5"))
    assert torch.equal(has_teacher, both) and torch.allclose(logp[both], now[both], atol=1e-6)

    copy = PolicyKeeper(model, task_names=task_names, threshold=0.9)
    copy.load_state_dict(keeper.state_dict())
    assert torch.equal(copy.teacher_logprobs(obs)[0], logp)
    with pytest.raises(ValueError, match="tasks this run does not know: Nowhere"):
        PolicyKeeper(model, task_names=["Nowhere-else"], threshold=0.9).load_state_dict(
            {**keeper.state_dict(), "teacher_of": {"Nowhere": 0}}
        )


def test_distillation_is_on_by_default_and_off_for_agents_with_memory():
    from agents.ppo import MultiTaskPPO, PPOConfig
    from training.config import RunConfig

    from envs.tasks import TASK_NAMES as names

    space, _, _ = _batch(n=3)
    assert MultiTaskPPO(MultiTaskActorCritic(space, AgentConfig()), PPOConfig(), task_names=names).keeper is not None
    lstm = MultiTaskActorCritic(space, AgentConfig(memory="lstm"))
    assert MultiTaskPPO(lstm, PPOConfig(), task_names=names).keeper is None
    with pytest.raises(ValueError, match="needs an agent without memory"):
        PolicyKeeper(lstm, task_names=names, threshold=0.9)
    config = RunConfig(tasks="Empty-5x5")
    config.ppo.distill_coef = -1.0
    with pytest.raises(ValueError, match=r"distill_coef=-1.0 must be >= 0"):
        config.validate()


def test_training_pulls_mastered_tasks_towards_their_teachers(tmp_path):
    from training.config import RunConfig
    from training.loop import Trainer

    # Every task counts as mastered (threshold 0) once its window is full, so teachers come early.
    config = RunConfig(tasks="GoToDoor-5x5,Fetch-5x5-N2", frames=10**6, num_envs=8, seed=0, runs_dir=str(tmp_path),
                       threads=1, video_every=0, checkpoint_every=0, curriculum="none", mastered_threshold=0.0)
    config.ppo.num_steps, config.ppo.batch_size, config.ppo.distill_coef = 64, 128, 1.0
    trainer = Trainer(config, progress=False)
    logged = []
    for _ in range(6):
        trainer.collect()
        logged.append({k for k in trainer.update() if k.startswith("train/loss/distill/")})
    trainer.env.close()
    assert not logged[0], "a teacher before any window is full"
    full = {name for name, window in trainer.stats.success.items() if len(window) == 100}
    assert "GoToDoor-5x5" in full  # its untrained episodes end at the first wrong `done`
    assert set(trainer.ppo.keeper.teacher_of) == full and logged[-1] == {f"train/loss/distill/{n}" for n in full}, logged


def test_the_learning_rate_drops_by_level_lr_decay_at_each_level_the_curriculum_opens(tmp_path):
    from training.config import RunConfig
    from training.loop import Trainer

    # A threshold of 0 opens level 2 as soon as the level-1 task's window is full.
    config = RunConfig(tasks="GoToDoor-5x5,GoToDoor-6x6", frames=10**6, num_envs=8, seed=0, runs_dir=str(tmp_path),
                       threads=1, video_every=0, checkpoint_every=0, curriculum_threshold=0.0)
    # Short rollouts: the window of 100 GoToDoor-5x5 episodes (about 7 steps each, untrained) fills after a few.
    config.ppo.num_steps, config.ppo.batch_size, config.ppo.level_lr_decay = 16, 64, 0.25
    trainer = Trainer(config, progress=False)
    rates = []
    for _ in range(12):
        trainer.collect()
        level = trainer.curriculum.level()  # the level the update runs at
        trainer.update()
        rates.append((level, trainer.ppo.optimizer.param_groups[0]["lr"]))
    trainer.env.close()
    assert {level for level, _ in rates} == {1, 2}, rates  # level 2 opened during the test
    assert all(lr == pytest.approx(1e-3 if level == 1 else 2.5e-4) for level, lr in rates), rates
    # with every task open from the start there is nothing to open, and the rate stays
    config.curriculum, config.run_name = "none", "flat"
    trainer = Trainer(config, progress=False)
    trainer.collect()
    trainer.update()
    trainer.env.close()
    assert trainer.ppo.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    config.ppo.level_lr_decay = 1.5
    with pytest.raises(ValueError, match=r"level_lr_decay=1.5 must be in \(0, 1\]"):
        config.validate()
