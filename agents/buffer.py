"""Rollout storage, GAE, and the reward-prediction store.

Storage is preallocated ``(num_steps, num_envs, ...)`` tensors on the model's
device (as CleanRL). ``terminated`` and ``truncated`` are kept apart: a
time-out is not a terminal state, so its return bootstraps from the value of
the final observation (``next_values``) instead of being cut to zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from agents.losses import reward_class
from agents.model import ObsBatch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    *,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016).

    Args:
        rewards, values: ``(T, N)``: reward after step ``t`` and ``V(s_t)``.
        next_values: ``(T, N)``: ``V`` of the state that followed step ``t``:
            ``values[t + 1]`` inside an episode, the final observation's value
            when the episode was truncated at ``t`` (ignored if terminated).
        terminated: ``(T, N)``: the episode reached a terminal state at ``t``.
        truncated: ``(T, N)``: the episode was cut by a time limit at ``t``.
        gamma: discount; gae_lambda: GAE's lambda.

    Returns:
        ``(advantages, returns)``, each ``(T, N)``; ``returns = advantages + values``.
    """
    terminated = terminated.to(values.dtype)
    ended = torch.maximum(terminated, truncated.to(values.dtype))
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t]) - values[t]
        last = delta + gamma * gae_lambda * (1 - ended[t]) * last
        advantages[t] = last
    return advantages, advantages + values


class Minibatch(NamedTuple):
    """One minibatch for the PPO update; flat ``(B, ...)`` tensors.

    With memory, rows are ``steps`` time-major steps of ``B / steps`` sequences,
    ``state`` their initial LSTM state and ``episode_start`` where it resets.
    """

    obs: ObsBatch
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    view_labels: torch.Tensor
    target_cell: torch.Tensor
    episode_start: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor] | None
    steps: int
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None
    """``(logp (B, 7), has_teacher (B,))`` of :class:`agents.distill.PolicyKeeper`, or None."""


class RolloutBuffer:
    """``num_steps x num_envs`` transitions, then advantages and minibatches.

    Args:
        observation_space: the common observation space (shapes of the fields).
        num_steps: steps per slot per rollout.
        num_envs: slots.
        device: where the tensors live (the model's device).
        memory_size: LSTM hidden size to store states for, or 0 without memory.
    """

    def __init__(self, observation_space, num_steps: int, num_envs: int, *, device, memory_size: int = 0) -> None:
        self.num_steps, self.num_envs, self.device = num_steps, num_envs, torch.device(device)
        shape = (num_steps, num_envs)

        def zeros(*tail, dtype=torch.float32):
            return torch.zeros(shape + tuple(tail), dtype=dtype, device=self.device)

        image_shape = observation_space["image"].shape
        mission_length = observation_space["mission"].shape[0]
        self.image = zeros(*image_shape, dtype=torch.uint8)
        self.direction = zeros(dtype=torch.long)
        self.mission = zeros(mission_length, dtype=torch.long)
        self.task = zeros(dtype=torch.long)
        self.family = zeros(dtype=torch.long)
        self.actions = zeros(dtype=torch.long)
        self.logprobs = zeros()
        self.values = zeros()
        self.rewards = zeros()
        self.terminated = zeros(dtype=torch.bool)
        self.truncated = zeros(dtype=torch.bool)
        self.episode_start = zeros(dtype=torch.bool)
        self.bootstrap = zeros()  # V(final obs) where truncated
        self.view_labels = zeros(7, 7, 2, dtype=torch.uint8)
        self.target_cell = zeros(dtype=torch.long)
        self.memory_size = memory_size
        self.state_h = zeros(memory_size) if memory_size else None
        self.state_c = zeros(memory_size) if memory_size else None
        self.advantages = zeros()
        self.returns = zeros()
        self.step = 0

    def obs_at(self, t: int | slice) -> ObsBatch:
        return ObsBatch(self.image[t], self.direction[t], self.mission[t], self.task[t], self.family[t])

    def add(
        self,
        obs: ObsBatch,
        *,
        action: torch.Tensor,
        logprob: torch.Tensor,
        value: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        episode_start: torch.Tensor,
        view_labels: torch.Tensor,
        target_cell: torch.Tensor,
        bootstrap: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Store step ``t``: the observation, what was done, what came of it.

        ``state`` is the memory *before* the step (the input of ``act``).
        """
        t = self.step
        assert t < self.num_steps, f"buffer is full ({self.num_steps} steps); call reset() after the update"
        for field, value_ in zip(ObsBatch._fields, obs):
            getattr(self, field)[t] = value_
        self.actions[t], self.logprobs[t], self.values[t] = action, logprob, value
        self.rewards[t], self.terminated[t], self.truncated[t] = reward, terminated, truncated
        self.episode_start[t], self.bootstrap[t] = episode_start, bootstrap
        self.view_labels[t], self.target_cell[t] = view_labels, target_cell
        if self.state_h is not None and state is not None:
            self.state_h[t], self.state_c[t] = state
        self.step += 1

    def reset(self) -> None:
        self.step = 0

    def compute_returns(self, last_value: torch.Tensor, *, gamma: float, gae_lambda: float) -> None:
        """GAE over the full buffer; ``last_value`` is ``V`` of the observation after the last step."""
        assert self.step == self.num_steps, f"buffer holds {self.step} of {self.num_steps} steps"
        next_values = torch.cat([self.values[1:], last_value.unsqueeze(0)])
        next_values = torch.where(self.truncated, self.bootstrap, next_values)
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, next_values, self.terminated, self.truncated, gamma=gamma, gae_lambda=gae_lambda
        )

    def minibatches(
        self,
        batch_size: int,
        *,
        generator: torch.Generator,
        seq_len: int = 0,
        teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Iterator[Minibatch]:
        """Shuffled minibatches covering the buffer once.

        Without memory (``seq_len=0``): ``batch_size`` random transitions each.
        With memory: chunks of ``seq_len`` consecutive steps of one slot, as
        many chunks as make ``batch_size`` transitions, each chunk starting
        from the LSTM state stored at its first step.
        ``teacher``: ``(logp (T, N, 7), has_teacher (T, N))`` over the rollout
        (:class:`agents.distill.PolicyKeeper`), gathered into each minibatch.
        """
        T, N = self.num_steps, self.num_envs
        if not seq_len:
            perm = torch.randperm(T * N, generator=generator).to(self.device)
            for start in range(0, T * N, batch_size):
                idx = perm[start : start + batch_size]
                t, n = idx // N, idx % N
                yield self._gather(t, n, state=None, steps=1, teacher=teacher)
            return
        chunks_per_slot = T // seq_len
        per_batch = max(1, batch_size // seq_len)
        perm = torch.randperm(chunks_per_slot * N, generator=generator).to(self.device)
        offsets = torch.arange(seq_len, device=self.device)
        for start in range(0, len(perm), per_batch):
            chunk = perm[start : start + per_batch]
            t0, n = (chunk // N) * seq_len, chunk % N
            t = (t0.unsqueeze(0) + offsets.unsqueeze(1)).flatten()  # time-major (seq_len, chunks)
            nn_ = n.repeat(seq_len)
            state = (self.state_h[t0, n], self.state_c[t0, n])
            yield self._gather(t, nn_, state=state, steps=seq_len, teacher=teacher)

    def _gather(self, t: torch.Tensor, n: torch.Tensor, *, state, steps: int, teacher=None) -> Minibatch:
        return Minibatch(
            obs=ObsBatch(self.image[t, n], self.direction[t, n], self.mission[t, n], self.task[t, n], self.family[t, n]),
            actions=self.actions[t, n],
            logprobs=self.logprobs[t, n],
            values=self.values[t, n],
            advantages=self.advantages[t, n],
            returns=self.returns[t, n],
            view_labels=self.view_labels[t, n],
            target_cell=self.target_cell[t, n],
            episode_start=self.episode_start[t, n],
            state=state,
            steps=steps,
            teacher=None if teacher is None else (teacher[0][t, n], teacher[1][t, n]),
        )


class RewardStore:
    """Recent 3-step windows for UNREAL's reward prediction, by reward class.

    Rewarding windows are rare (MiniGrid rewards only success), so they are
    kept apart from the zero-reward ones and sampled 50/50 (Jaderberg et al.
    2016, "skewed sampling").

    Args:
        image_shape: shape of one observation image.
        mission_length: tokens per mission.
        capacity: windows kept per side (rewarding, zero); oldest go first.
        seed: seed of the sampling generator.
    """

    def __init__(self, image_shape: tuple[int, ...], mission_length: int, *, capacity: int = 1024, seed: int = 0) -> None:
        self.capacity = capacity
        image, length = tuple(image_shape), mission_length
        self.rng = np.random.default_rng(seed)
        self.sides = {}
        for side in ("rewarding", "zero"):
            self.sides[side] = {
                "image": torch.zeros((capacity, 3, *image), dtype=torch.uint8),
                "direction": torch.zeros((capacity, 3), dtype=torch.long),
                "mission": torch.zeros((capacity, length), dtype=torch.long),
                "task": torch.zeros(capacity, dtype=torch.long),
                "family": torch.zeros(capacity, dtype=torch.long),
                "label": torch.zeros(capacity, dtype=torch.long),
                "size": 0,
                "next": 0,
            }

    def __len__(self) -> int:
        return sum(side["size"] for side in self.sides.values())

    def num_rewarding(self) -> int:
        return self.sides["rewarding"]["size"]

    def add_rollout(self, buffer: RolloutBuffer, *, max_zero: int = 256) -> None:
        """Add the rollout's valid windows: steps ``t-2, t-1, t`` of one episode.

        All rewarding windows are kept; at most ``max_zero`` zero-reward ones,
        chosen at random, so the zero side stays fresh without flooding.
        """
        starts = buffer.episode_start.cpu()
        valid = torch.zeros_like(starts)
        valid[2:] = ~starts[1:-1] & ~starts[2:]
        labels = reward_class(buffer.rewards.cpu())
        t_idx, n_idx = torch.nonzero(valid, as_tuple=True)
        cls = labels[t_idx, n_idx]
        rewarding = cls != 0
        zero = torch.nonzero(~rewarding).flatten().numpy()
        if len(zero) > max_zero:
            zero = self.rng.choice(zero, size=max_zero, replace=False)
        for side, pick in (("rewarding", torch.nonzero(rewarding).flatten()), ("zero", torch.as_tensor(zero, dtype=torch.long))):
            if len(pick):
                self._push(side, buffer, t_idx[pick], n_idx[pick], cls[pick])

    def _push(self, side: str, buffer: RolloutBuffer, t: torch.Tensor, n: torch.Tensor, label: torch.Tensor) -> None:
        store = self.sides[side]
        window = torch.stack([t - 2, t - 1, t], dim=1)  # (W, 3)
        nn_ = n.unsqueeze(1).expand_as(window)
        values = {
            "image": buffer.image[window, nn_].cpu(),
            "direction": buffer.direction[window, nn_].cpu(),
            "mission": buffer.mission[t, n].cpu(),
            "task": buffer.task[t, n].cpu(),
            "family": buffer.family[t, n].cpu(),
            "label": label.cpu(),
        }
        count = min(len(t), self.capacity)
        slots = (store["next"] + torch.arange(count)) % self.capacity
        for key, value in values.items():
            store[key][slots] = value[-count:]
        store["next"] = int((store["next"] + count) % self.capacity)
        store["size"] = min(store["size"] + count, self.capacity)

    def sample(self, batch_size: int, device) -> tuple[ObsBatch, torch.Tensor] | None:
        """``batch_size`` windows, half rewarding and half zero; None until both sides have some.

        Returns:
            observations of ``batch_size * 3`` rows (window-major) and labels ``(batch_size,)``.
        """
        rew, zero = self.sides["rewarding"], self.sides["zero"]
        if rew["size"] == 0 or zero["size"] == 0:
            return None
        half = batch_size // 2
        parts = [(rew, self.rng.integers(0, rew["size"], half)), (zero, self.rng.integers(0, zero["size"], batch_size - half))]
        image = torch.cat([s["image"][i] for s, i in parts]).flatten(0, 1)
        direction = torch.cat([s["direction"][i] for s, i in parts]).flatten()
        repeat = lambda key: torch.cat([s[key][i] for s, i in parts]).repeat_interleave(3, dim=0)  # noqa: E731
        obs = ObsBatch(image, direction, repeat("mission"), repeat("task"), repeat("family"))
        labels = torch.cat([s["label"][i] for s, i in parts])
        return ObsBatch(*(x.to(device) for x in obs)), labels.to(device)

    def state_dict(self) -> dict:
        return {"sides": self.sides, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.sides = state["sides"]
        self.rng.bit_generator.state = state["rng"]
