"""Rollout collection: step every slot ``num_steps`` times, fill the buffer, compute GAE.

One batched step for all slots: the observations go to the device once per
step, the agent acts on all slots in one forward pass, and the episode
bookkeeping (returns, lengths, the episodes that ended) is done with array
operations over the slots, not a Python loop over them. Works with both
backends of :mod:`envs.vector` (their same-step auto-reset: the step that ends
an episode returns the next episode's first observation, the final one in
``info["final_obs_batch"]``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from agents.buffer import RolloutBuffer
from agents.conditioning import remember_missions
from agents.model import MultiTaskActorCritic, ObsBatch
from envs.tasks import TASK_NAMES


class Episode(NamedTuple):
    """One finished episode: its task, whether it succeeded, its return and length."""

    task: str
    success: bool
    ret: float
    length: int


class Collector:
    """Owns the slots' episodes in flight between rollouts.

    Args:
        env: the multi-task vector env (either backend).
        model: the agent (acts with ``act``, bootstraps with ``value``).
        buffer: rollout storage on the model's device.
        device: the model's device.
        gamma, gae_lambda: GAE's discount and lambda.
    """

    def __init__(
        self, env: Any, model: MultiTaskActorCritic, buffer: RolloutBuffer, *, device: torch.device,
        gamma: float, gae_lambda: float,
    ) -> None:
        self.env, self.model, self.buffer, self.device = env, model, buffer, device
        self.gamma, self.gae_lambda = gamma, gae_lambda
        n = env.num_envs
        self.ep_return = np.zeros(n)
        self.ep_length = np.zeros(n, dtype=np.int64)
        self.state = model.initial_state(n)
        self.episode_start = np.ones(n, dtype=bool)
        self.obs: dict[str, np.ndarray] = {}
        self.labels: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))

    def start(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        """The slots' current observations (after ``reset`` or ``set_state``)."""
        self.obs, self.labels = obs, (info["view_labels"], info["target_cell"])

    def restart(self, mask: np.ndarray, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        """Slots in ``mask`` begin new episodes (their episodes in flight are dropped, not counted)."""
        self.start(obs, info)
        self.ep_return[mask], self.ep_length[mask] = 0.0, 0
        self.episode_start = self.episode_start | mask

    def _tensor(self, array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.as_tensor(array, device=self.device, dtype=dtype)

    def collect(self, num_steps: int) -> tuple[list[Episode], list[tuple[str, str]]]:
        """Fill the buffer with ``num_steps`` steps of every slot and compute returns.

        Returns:
            The episodes that ended, in step then slot order, and the
            environment crashes among them as ``(task, reason)``.
        """
        with torch.no_grad(), remember_missions(self.model):  # parameters are fixed until the update
            return self._collect(num_steps)

    def _collect(self, num_steps: int) -> tuple[list[Episode], list[tuple[str, str]]]:
        self.buffer.reset()
        self.model.eval()
        episodes: list[Episode] = []
        crashes: list[tuple[str, str]] = []
        for _ in range(num_steps):
            obs = ObsBatch.from_numpy(self.obs, self.device)
            episode_start = self._tensor(self.episode_start)
            state_before = self.state
            out = self.model.act(obs, self.state, episode_start)
            actions = out.action.cpu().numpy()
            next_obs, rewards, terminated, truncated, info = self.env.step(actions)
            done = terminated | truncated
            bootstrap = torch.zeros(len(actions), device=self.device)
            if truncated.any():
                # A time-out is not a terminal state: its return continues with V(final obs).
                idx = np.flatnonzero(truncated)
                final = ObsBatch.from_numpy({k: v[idx] for k, v in info["final_obs_batch"].items()}, self.device)
                state = tuple(s[idx] for s in out.state) if out.state is not None else None
                bootstrap[idx] = self.model.value(final, state)
            self.buffer.add(
                obs,
                action=out.action,
                logprob=out.logprob,
                value=out.value,
                reward=self._tensor(rewards, torch.float32),
                terminated=self._tensor(terminated),
                truncated=self._tensor(truncated),
                episode_start=episode_start,
                view_labels=self._tensor(self.labels[0]),
                target_cell=self._tensor(self.labels[1]),
                bootstrap=bootstrap,
                state=state_before,
            )
            self.ep_return += rewards
            self.ep_length += 1
            if done.any():
                episodes.extend(self._ended(done, info, crashes))
            self.obs, self.labels = next_obs, (info["view_labels"], info["target_cell"])
            self.state = out.state
            self.episode_start = done
        last_value = self.model.value(ObsBatch.from_numpy(self.obs, self.device), self.state, self._tensor(self.episode_start))
        self.buffer.compute_returns(last_value, gamma=self.gamma, gae_lambda=self.gae_lambda)
        return episodes, crashes

    def _ended(self, done: np.ndarray, info: dict[str, Any], crashes: list[tuple[str, str]]) -> list[Episode]:
        """The episodes that ``done`` ends, built from slot arrays in one go; their counters restart."""
        ended = np.flatnonzero(done)
        final = info["final_info"]
        tasks = [TASK_NAMES[t] for t in self.obs["task"][ended].tolist()]
        if "_crashed" in final:
            crashes.extend((TASK_NAMES[int(self.obs["task"][i])], str(final["crashed"][i])) for i in np.flatnonzero(final["_crashed"]))
        episodes = [
            Episode(*fields)
            for fields in zip(tasks, final["success"][ended].tolist(), self.ep_return[ended].tolist(), self.ep_length[ended].tolist())
        ]
        self.ep_return[ended], self.ep_length[ended] = 0.0, 0
        return episodes

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """The episodes in flight: what an exact resume needs besides the envs."""
        return {
            "episode_start": torch.as_tensor(self.episode_start).clone(),
            "return": torch.as_tensor(self.ep_return).clone(),
            "length": torch.as_tensor(self.ep_length).clone(),
            "recurrent": [s.detach().cpu().clone() for s in self.state] if self.state is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episode_start = state["episode_start"].numpy().copy()
        self.ep_return = state["return"].numpy().copy()
        self.ep_length = state["length"].numpy().copy()
        if state["recurrent"] is not None:
            self.state = tuple(s.to(self.device) for s in state["recurrent"])
