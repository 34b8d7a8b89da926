"""The multi-task actor-critic: shapes for every architecture, predict, aux heads, save/rebuild."""

import itertools

import numpy as np
import pytest
import torch

from agents.buffer import RewardStore, RolloutBuffer
from agents.losses import normalize_advantages, ppo_task_table, recognition_accuracy, recognition_loss, reward_loss
from agents.model import AgentConfig, MultiTaskActorCritic, ObsBatch
from agents.ppo import PPOConfig
from envs import MultiTaskVectorEnv, make
from envs.wrappers import observation_space


def _batch(obs_mode="symbolic", n=6, seed=0):
    env = MultiTaskVectorEnv(["DoorKey-5x5", "GoToObject-6x6-N2", "ColorPickup-6x6-N3"], n, obs=obs_mode, vectorization="sync")
    obs, info = env.reset(seed=seed)
    env.close()
    return env.single_observation_space, obs, info


@pytest.mark.parametrize(
    "obs_mode,conditioning,sharing",
    list(itertools.product(["symbolic", "rgb"], ["film", "concat", "task-id"], ["hard", "mmoe", "ple"])),
)
def test_shapes_for_every_architecture(obs_mode, conditioning, sharing):
    space, obs, info = _batch(obs_mode)
    model = MultiTaskActorCritic(space, AgentConfig(conditioning=conditioning, sharing=sharing, num_experts=2))
    batch = ObsBatch.from_numpy(obs, "cpu")
    out = model.act(batch)
    assert out.action.shape == (6,) and out.logprob.shape == (6,) and out.value.shape == (6,)
    assert out.state is None
    ev = model.evaluate(batch, out.action)
    assert torch.allclose(ev.logprob, out.logprob, atol=1e-5)
    assert ev.entropy.shape == (6,)
    assert ev.recognition["object"].shape == (6, 11, 7, 7)
    assert ev.recognition["color"].shape == (6, 6, 7, 7)
    assert ev.recognition["target"].shape == (6, 50)
    three = ObsBatch(*(t.repeat_interleave(3, dim=0) for t in batch))
    assert model.reward_logits(three).shape == (6, 3)
    # every parameter that should learn gets a gradient from the losses
    loss = ev.value.sum() + ev.logprob.sum() + sum(v.sum() for v in ev.recognition.values()) + model.reward_logits(three).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.shared_parameters())


def test_lstm_memory_resets_at_episode_start_and_matches_stepwise():
    space, obs, _ = _batch(n=2)
    torch.manual_seed(0)
    model = MultiTaskActorCritic(space, AgentConfig(memory="lstm"))
    batch = ObsBatch.from_numpy(obs, "cpu")
    state = model.initial_state(2)
    starts = torch.tensor([True, True])
    steps = []
    for t in range(3):
        out = model.act(batch, state, starts)
        steps.append(out)
        state = out.state
        starts = torch.tensor([False, t == 1])  # slot 1 starts a new episode at step 2
    # The same three steps evaluated as one sequence give the same log-probs.
    seq_obs = ObsBatch(*(torch.cat([t] * 3) for t in batch))
    actions = torch.cat([s.action for s in steps])
    episode_start = torch.tensor([True, True, False, False, False, True])
    ev = model.evaluate(seq_obs, actions, state=model.initial_state(2), episode_start=episode_start, steps=3)
    assert torch.allclose(ev.logprob, torch.cat([s.logprob for s in steps]), atol=1e-5)
    # Slot 1 restarted at step 2: its value there equals its value at step 0.
    assert ev.value[5].item() == pytest.approx(ev.value[1].item(), abs=1e-5)
    assert ev.value[4].item() != pytest.approx(ev.value[0].item(), abs=1e-5)


def test_predict_follows_stable_baselines3():
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = make("Empty-5x5")
    model = MultiTaskActorCritic(env.observation_space)
    obs, _ = env.reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert isinstance(action, np.ndarray) and action.shape == () and state is None
    assert env.action_space.contains(int(action))
    vec = DummyVecEnv([lambda: Monitor(make("Empty-5x5")), lambda: Monitor(make("Empty-5x5"))])
    batch_obs = vec.reset()
    actions, _ = model.predict(batch_obs, state=None, episode_start=np.ones(2, dtype=bool))
    assert actions.shape == (2,)
    mean, std = evaluate_policy(model, vec, n_eval_episodes=4)
    assert 0.0 <= mean <= 1.0 and std >= 0.0
    lstm = MultiTaskActorCritic(env.observation_space, AgentConfig(memory="lstm"))
    actions, state = lstm.predict(batch_obs, state=None, episode_start=np.ones(2, dtype=bool))
    assert len(state) == 2 and state[0].shape == (2, 128)


def test_model_rebuilds_from_its_constructor_args():
    space, obs, _ = _batch()
    model = MultiTaskActorCritic(space, AgentConfig(conditioning="concat", sharing="mmoe", aux="recognition"))
    clone = MultiTaskActorCritic.from_constructor_args(model.constructor_args())
    clone.load_state_dict(model.state_dict())
    batch = ObsBatch.from_numpy(obs, "cpu")
    assert torch.equal(model.value(batch), clone.value(batch))
    assert clone.reward is None and clone.recognition is not None


def test_bad_agent_config_names_the_value():
    space, _, _ = _batch()
    with pytest.raises(ValueError, match="sharing='tower' is unknown; known: hard, mmoe, ple"):
        MultiTaskActorCritic(space, AgentConfig(sharing="tower"))
    with pytest.raises(ValueError, match="aux='recognition,vision'"):
        MultiTaskActorCritic(space, AgentConfig(aux="recognition,vision"))
    with pytest.raises(ValueError, match="not the common task format"):
        MultiTaskActorCritic(make("Empty-5x5").unwrapped.observation_space)


def test_recognition_head_learns_the_view_labels_on_a_fixed_batch():
    torch.manual_seed(0)
    space, obs, info = _batch(n=32, seed=3)
    model = MultiTaskActorCritic(space, AgentConfig(aux="recognition"))
    batch = ObsBatch.from_numpy(obs, "cpu")
    labels = torch.as_tensor(info["view_labels"])
    target = torch.as_tensor(info["target_cell"])
    actions = torch.zeros(32, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(120):
        pred = model.evaluate(batch, actions).recognition
        loss = sum(recognition_loss(pred, labels, target).values())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = recognition_accuracy(model.evaluate(batch, actions).recognition, labels, target)
    assert loss.item() < 0.1 * first
    assert acc["object"] > 0.98 and acc["color"] > 0.98 and acc["target"] > 0.95, acc


def _filled_buffer(rewards):
    space = observation_space("symbolic", num_tasks=3, mission_length=4)
    T, N = rewards.shape
    buf = RolloutBuffer(space, num_steps=T, num_envs=N, device="cpu")
    buf.rewards = rewards
    buf.image[..., 0] = torch.arange(T).view(T, 1, 1, 1).to(torch.uint8)  # step index in the image
    buf.step = T
    return space, buf


def test_reward_store_keeps_windows_inside_episodes_and_samples_half_rewarding():
    rewards = torch.zeros(10, 2)
    rewards[5, 0] = 0.8  # slot 0 succeeds at step 5 ...
    rewards[1, 1] = 0.5  # ... slot 1 at step 1: too early for a 3-step window
    space, buf = _filled_buffer(rewards)
    buf.episode_start[0] = True
    buf.episode_start[6, 0] = True  # slot 0's next episode starts after the reward
    store = RewardStore(space["image"].shape, space["mission"].shape[0], capacity=64, seed=0)
    store.add_rollout(buf)
    assert store.num_rewarding() == 1
    # windows crossing slot 0's episode start at step 6 (t = 6, 7) are excluded
    zero = store.sides["zero"]
    frames = zero["image"][: zero["size"], :, 0, 0, 0]
    assert all((f[1] == f[0] + 1) and (f[2] == f[1] + 1) for f in frames.tolist())
    # Windows end at t = 2..9. Slot 0: t = 6, 7 cross its episode start, t = 5 is
    # the rewarding one -> 5 zero windows; slot 1: all 8 (its reward at t = 1 ends no window).
    assert zero["size"] == 5 + 8
    obs, labels = store.sample(20, "cpu")
    assert labels.tolist().count(1) == 10 and labels.tolist().count(0) == 10
    assert obs.image.shape == (60, 7, 7, 3)
    rewarding_frames = obs.image[:30:3, 0, 0, 0]
    assert set(rewarding_frames.tolist()) == {3}  # the window (3, 4, 5) ending on the reward


def test_reward_loss_focal_downweights_easy_examples():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1])
    ce = reward_loss(logits, labels)["reward/prediction"]
    focal = reward_loss(logits, labels, focal_gamma=2.0)["reward/prediction"]
    assert focal < ce


def test_ppo_loss_is_per_task_and_matches_hand_values():
    task = torch.tensor([0, 0, 2])
    logprob = torch.log(torch.tensor([0.5, 0.2, 0.4]))
    old = torch.log(torch.tensor([0.25, 0.2, 0.4]))  # ratio 2.0 for the first sample
    adv = torch.tensor([1.0, -1.0, 3.0])
    table, present = ppo_task_table(logprob, old, adv, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3), torch.zeros(3),
                                    torch.ones(3), task, num_tasks=3, clip_coef=0.2, clip_value=False, advantage_norm="none")
    assert present == [0, 2] and table.shape == (3, 3)  # columns: policy, value, entropy
    assert table[1].tolist() == [0.0, 0.0, 0.0]  # task b has no rows
    # task a: sample 0 clipped at 1.2 -> -1.2; sample 1 ratio 1 -> +1.0; their sum over the 3 rows
    assert table[0, 0].item() == pytest.approx(-0.2 / 3)
    assert table[2, 0].item() == pytest.approx(-1.0)
    assert table[0, 2].item() == pytest.approx(1.0) and table[2, 1].item() == pytest.approx(0.5 / 3)


def test_ppo_loss_terms_add_up_to_the_minibatch_means():
    g = torch.Generator().manual_seed(0)
    n = 64
    logprob, old, adv, entropy, value, old_value, returns = (torch.randn(n, generator=g) for _ in range(7))
    task = torch.arange(n) % 3
    table, _ = ppo_task_table(logprob, old, adv, entropy, value, old_value, returns, task, num_tasks=3,
                              clip_coef=0.2, clip_value=False)
    z = (adv - adv.mean()) / adv.std()
    ratio = (logprob - old).exp()
    policy = torch.max(-z * ratio, -z * ratio.clamp(0.8, 1.2)).mean()
    assert table[:, 0].sum().item() == pytest.approx(policy.item(), abs=1e-5)
    assert table[:, 2].sum().item() == pytest.approx(entropy.mean().item(), abs=1e-6)
    assert table[:, 1].sum().item() == pytest.approx((0.5 * (value - returns) ** 2).mean().item(), abs=1e-6)
    # a task with a third of the rows weighs a third: its entropy term is its rows' sum over n
    assert table[1, 2].item() == pytest.approx(entropy[task == 1].sum().item() / n, abs=1e-6)


def test_advantages_are_z_scored_over_the_batch_or_left_raw():
    adv = torch.tensor([1.0, 3.0, 100.0, 300.0, 7.0])
    assert normalize_advantages(adv, "batch").tolist() == pytest.approx(((adv - adv.mean()) / adv.std()).tolist(), abs=1e-6)
    assert normalize_advantages(adv[:1], "batch").tolist() == [0.0]  # one row is only centred
    assert torch.equal(normalize_advantages(adv, "none"), adv)


def test_one_task_trains_bit_for_bit_as_under_the_per_task_objective():
    """The per-task z-score the objective had before, as it was written; with one task ``batch`` must equal it exactly."""

    def per_task(adv, task, num_tasks):
        counts = torch.bincount(task, minlength=num_tasks).to(adv.dtype)
        mean = torch.zeros(num_tasks).index_add_(0, task, adv) / counts.clamp(min=1)
        centred = adv - mean[task]
        var = torch.zeros(num_tasks).index_add_(0, task, centred.pow(2)) / counts.clamp(min=1)
        std = (var * counts / (counts - 1).clamp(min=1)).sqrt()
        return centred / (std[task] + 1e-8)

    for n in (1, 2, 7, 256, 304):
        for seed in range(5):
            adv = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * (seed + 0.5)
            assert torch.equal(normalize_advantages(adv, "batch"), per_task(adv, torch.full((n,), 3), 24))


def test_removed_objectives_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="advantage_norm='task' was removed: per-task z-scores lost"):
        PPOConfig(advantage_norm="task").validate(16)
    with pytest.raises(ValueError, match="advantage_norm='per-row' is unknown; known: batch, none"):
        PPOConfig(advantage_norm="per-row").validate(16)
    from training.config import RunConfig

    for field in ("task_mean: task", "timeouts: terminal"):
        with pytest.raises(ValueError, match=f"ppo.{field.split(':')[0]} was removed: .* start a new run"):
            RunConfig.from_yaml(f"ppo:\n  {field}\n")


def test_patch_matmul_convolutions_compute_what_conv2d_computes():
    """The encoder's 2x2 convolutions are matrix products over patches: same numbers as nn.Conv2d."""
    from agents.encoders import NUM_CELL_IDS, SymbolicCells, patches2x2

    torch.manual_seed(0)
    x = torch.randn(5, 4, 6, 7)  # (B, C, H, W)
    conv = torch.nn.Conv2d(4, 3, 2)
    # The patch layout (top-left, top-right, bottom-left, bottom-right) x channels.
    weight = conv.weight.permute(0, 2, 3, 1).reshape(3, 4 * 4)  # (out, dy, dx, in)
    ours = patches2x2(x.permute(0, 2, 3, 1)) @ weight.T + conv.bias
    assert torch.allclose(ours, conv(x).permute(0, 2, 3, 1), atol=1e-5)

    # The symbolic first layer: one-hot cells, so conv(one_hot(ids)) is what it reads.
    image = torch.randint(0, 3, (2, 7, 7, 3), dtype=torch.uint8)  # ids valid for every attribute
    hot = SymbolicCells()(image)
    one_hot = torch.zeros(2, 7, 7, NUM_CELL_IDS).scatter_(-1, image.transpose(1, 2).long() + torch.tensor([0, 11, 17]), 1.0)
    assert torch.equal(hot, patches2x2(one_hot)) and hot.sum(-1).eq(12).all()


def test_mission_rows_are_deduplicated_exactly():
    from agents.conditioning import _unique_rows

    tokens = torch.tensor([[3, 4, 0], [5, 0, 0], [3, 4, 0], [3, 4, 7], [5, 0, 0]])
    unique, inverse = _unique_rows(tokens)
    assert len(unique) == 3 and torch.equal(unique[inverse], tokens)


@pytest.mark.parametrize("mission_encoder", ["gru", "bow"])
def test_mission_embedding_ignores_padding_and_tells_missions_apart(mission_encoder):
    from agents.conditioning import MissionEncoder

    torch.manual_seed(0)
    enc = MissionEncoder(10, kind=mission_encoder, hidden=16, max_length=6)
    short = enc(torch.tensor([[3, 4, 0, 0], [4, 3, 0, 0]]))
    padded = enc(torch.tensor([[3, 4, 0, 0, 0, 0]]))
    assert torch.allclose(short[0], padded[0], atol=1e-6)  # more padding, same mission
    assert not torch.allclose(short[0], short[1])  # the same words in another order differ


@pytest.mark.parametrize("mission_encoder", ["gru", "bow"])
def test_remembered_missions_are_encoded_once_and_forgotten_on_leaving(mission_encoder, monkeypatch):
    from agents.conditioning import MissionEncoder, remember_missions
    from agents.optim import FusedAdam

    torch.manual_seed(0)
    enc = MissionEncoder(10, kind=mission_encoder, hidden=16, max_length=6)
    tokens = torch.tensor([[3, 4, 0], [5, 0, 0], [3, 4, 0], [3, 4, 7], [5, 0, 0]])
    encoded = []
    encode = enc._encode
    monkeypatch.setattr(enc, "_encode", lambda rows: encoded.append(len(rows)) or encode(rows))
    with torch.no_grad():
        plain = enc(tokens)
        with remember_missions(enc):
            first, again = enc(tokens), enc(tokens[[1, 0]])
    assert encoded == [5, 3]  # outside: every row's distinct missions; inside: three, once
    assert torch.allclose(first, plain, atol=1e-6) and torch.allclose(again, plain[[1, 0]], atol=1e-6)
    # After leaving, a parameter change (fused Adam bumps no version counter) is seen.
    optimizer = FusedAdam([{"params": list(enc.parameters())}], lr=0.1)
    enc(tokens).sum().backward()
    optimizer.step()
    with torch.no_grad():
        with remember_missions(enc):
            after = enc(tokens)
        assert torch.allclose(after, enc(tokens), atol=1e-6) and not torch.allclose(after, plain)
        assert enc._cache is None


def test_reward_windows_in_the_minibatch_pass_match_a_separate_pass():
    space, obs, _ = _batch(n=6)
    model = MultiTaskActorCritic(space, AgentConfig())
    batch = ObsBatch.from_numpy(obs, "cpu")
    windows = batch.index(torch.tensor([0, 1, 2, 3, 4, 5]))  # two windows of three steps
    actions = torch.zeros(6, dtype=torch.long)
    merged = model.evaluate(batch, actions, reward_obs=windows)
    alone = model.evaluate(batch, actions)
    assert torch.allclose(merged.reward, model.reward_logits(windows), atol=1e-5)
    assert torch.allclose(merged.logprob, alone.logprob, atol=1e-5) and torch.allclose(merged.value, alone.value, atol=1e-5)
    assert model.evaluate(batch, actions, recognition_rows=2).recognition["target"].shape == (2, 50)


def test_rollout_diagnostics_per_task():
    from agents.diagnostics import rollout_diagnostics

    task = torch.tensor([[0, 1], [0, 1], [0, 2], [0, 1]])  # (T, N): task 0 x4, task 1 x3, task 2 x1
    returns = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 5.0], [4.0, 6.0]])
    values = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])  # exact for task 0, zero for task 1
    advantages = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 7.0], [-1.0, 0.0]])
    stats = rollout_diagnostics(task, values, returns, advantages, ["a", "b", "c", "d"], batch_size=4)
    assert stats["tasks/a/explained_variance"] == pytest.approx(1.0)
    # returns 2, 4, 6 predicted by 0: Var(error) = Var(returns), nothing explained
    assert stats["tasks/b/explained_variance"] == pytest.approx(0.0)
    assert "tasks/c/explained_variance" not in stats and "tasks/d/rows_per_minibatch" not in stats
    assert stats["tasks/a/advantage_std"] == pytest.approx(torch.tensor([1.0, -1, 1, -1]).std().item())
    assert stats["tasks/a/rows_per_minibatch"] == 2.0 and stats["tasks/c/rows_per_minibatch"] == 0.5
