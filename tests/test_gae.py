"""GAE against hand-computed values, with truncation and termination kept apart."""

import pytest
import torch

from agents.buffer import RolloutBuffer, compute_gae
from envs.wrappers import observation_space


def _hand_case():
    # T = 3, one slot. Step 1 is truncated (time-out, V(final obs) = 0.7),
    # step 2 terminated. gamma = 0.9, lambda = 0.8.
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [0.4], [0.3]])
    terminated = torch.tensor([[False], [False], [True]])
    truncated = torch.tensor([[False], [True], [False]])
    # delta2 = 2 - 0.3 = 1.7                          A2 = 1.7
    # delta1 = 0 + 0.9 * 0.7 - 0.4 = 0.23             A1 = 0.23 (trace cut at the time-out)
    # delta0 = 1 + 0.9 * 0.4 - 0.5 = 0.86             A0 = 0.86 + 0.9 * 0.8 * 0.23 = 1.0256
    expected_adv = torch.tensor([[1.0256], [0.23], [1.7]])
    return rewards, values, terminated, truncated, expected_adv


def test_gae_hand_computed_with_truncation():
    rewards, values, terminated, truncated, expected = _hand_case()
    next_values = torch.tensor([[0.4], [0.7], [123.0]])  # the last is ignored: terminated
    adv, returns = compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.9, gae_lambda=0.8)
    assert torch.allclose(adv, expected, atol=1e-6)
    assert torch.allclose(returns, expected + values, atol=1e-6)


def test_truncation_bootstraps_but_termination_does_not():
    rewards = torch.zeros(1, 1)
    values = torch.zeros(1, 1)
    next_values = torch.ones(1, 1)
    no = torch.tensor([[False]])
    yes = torch.tensor([[True]])
    adv_trunc, _ = compute_gae(rewards, values, next_values, no, yes, gamma=0.5, gae_lambda=1.0)
    adv_term, _ = compute_gae(rewards, values, next_values, yes, no, gamma=0.5, gae_lambda=1.0)
    assert adv_trunc.item() == pytest.approx(0.5) and adv_term.item() == 0.0


def test_lambda_one_gives_discounted_returns():
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.zeros(3, 1)
    no = torch.zeros(3, 1, dtype=torch.bool)
    next_values = torch.tensor([[0.0], [0.0], [10.0]])
    _, returns = compute_gae(rewards, values, next_values, no, no, gamma=0.5, gae_lambda=1.0)
    assert returns[:, 0].tolist() == pytest.approx([1 + 0.5 + 0.25 + 0.125 * 10, 1 + 0.5 + 0.25 * 10, 1 + 0.5 * 10])


def test_buffer_uses_bootstrap_values_on_truncation():
    rewards, values, terminated, truncated, expected = _hand_case()
    space = observation_space("symbolic", num_tasks=3, mission_length=4)
    buf = RolloutBuffer(space, num_steps=3, num_envs=1, device="cpu")
    buf.rewards, buf.values = rewards, values
    buf.terminated, buf.truncated = terminated, truncated
    buf.bootstrap = torch.tensor([[0.0], [0.7], [0.0]])
    buf.step = 3
    buf.compute_returns(torch.tensor([123.0]), gamma=0.9, gae_lambda=0.8)
    assert torch.allclose(buf.advantages, expected, atol=1e-6)


def test_recurrent_minibatches_are_whole_chunks_with_their_start_state():
    space = observation_space("symbolic", num_tasks=3, mission_length=4)
    buf = RolloutBuffer(space, num_steps=8, num_envs=3, device="cpu", memory_size=2)
    for t in range(8):
        buf.state_h[t] = torch.tensor([[t, n] for n in range(3)], dtype=torch.float32)
        buf.direction[t] = t  # step index, to read back
        buf.task[t] = torch.arange(3)  # slot index
    buf.step = 8
    seen = []
    for mb in buf.minibatches(8, generator=torch.Generator().manual_seed(0), seq_len=4):
        assert mb.steps == 4
        chunks = mb.obs.direction.numel() // 4
        steps = mb.obs.direction.view(4, chunks)
        slots = mb.obs.task.view(4, chunks)
        assert (steps[1:] - steps[:-1] == 1).all() and (slots == slots[0]).all()  # consecutive, one slot each
        assert torch.equal(mb.state[0][:, 0], steps[0].float()) and torch.equal(mb.state[0][:, 1], slots[0].float())
        seen += list(zip(steps[0].tolist(), slots[0].tolist()))
    assert sorted(seen) == sorted((t0, n) for t0 in (0, 4) for n in range(3))  # every chunk once


def test_timeouts_bootstrap_from_the_value_of_the_final_observation(tmp_path):
    from training.config import RunConfig
    from training.loop import Trainer

    config = RunConfig(tasks="Empty-8x8", frames=512, num_envs=4, seed=0, runs_dir=str(tmp_path), threads=1,
                       video_every=0, checkpoint_every=0, backend="minigrid")
    config.ppo.num_steps, config.ppo.batch_size = 300, 300
    trainer = Trainer(config, progress=False)
    trainer.collect()
    buf = trainer.buffer
    assert buf.truncated.any()  # a random policy times out on Empty-8x8 (256 steps)
    cut = buf.truncated.bool()
    assert (buf.bootstrap[cut] != 0).all() and (buf.bootstrap[~cut] == 0).all()
    t, n = map(int, cut.nonzero()[0])
    # the return goes on with gamma * V(final obs) where the episode was cut
    expected = buf.rewards[t, n] + config.ppo.gamma * buf.bootstrap[t, n] - buf.values[t, n]
    assert buf.advantages[t, n].item() == pytest.approx(expected.item(), abs=1e-5)
    trainer.env.close()
