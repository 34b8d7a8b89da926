"""Rollout videos of a training run: episodes played by the current policy, as GIFs in TensorBoard.

:class:`RolloutVideos` keeps one rendering environment per task (built on
first use, outside the training slots, so recording never disturbs the
rollout) and plays it with the agent under training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from agents.model import MultiTaskActorCritic, ObsBatch
from envs.tasks import TASKS, make
from training.config import RunConfig
from training.logger import Logger, NullLogger


class RolloutVideos:
    """One episode per open task family, the families' tasks taking turns.

    Args:
        config: the run's config (observation, seed, ``video_every``, ``video_max_steps``).
        model: the agent the videos show.
    """

    def __init__(self, config: RunConfig, model: MultiTaskActorCritic) -> None:
        self.config = config
        self.model = model
        self._envs: dict[str, object] = {}

    @torch.no_grad()
    def record(self, logger: Logger | NullLogger, open_tasks: Sequence[str], *, updates: int, frames: int) -> None:
        device = self.model.device
        for family in ("navigation", "recognition"):
            tasks = [name for name in open_tasks if TASKS[name].family == family]
            if not tasks:
                continue
            task = tasks[(updates // max(1, self.config.video_every)) % len(tasks)]  # take turns
            env = self._envs.get(task)
            if env is None:
                env = self._envs[task] = make(task, obs=self.config.obs, render_mode="rgb_array")
            obs, _ = env.reset(seed=self.config.seed + updates)
            images, state = [env.render()], self.model.initial_state(1)
            start = torch.ones(1, dtype=torch.bool, device=device)
            for _ in range(self.config.video_max_steps):
                batch = ObsBatch.from_numpy({k: np.asarray(v)[None] for k, v in obs.items()}, device)
                out = self.model.act(batch, state, start)
                obs, _, terminated, truncated, _ = env.step(int(out.action[0]))
                images.append(env.render())
                state, start = out.state, torch.zeros(1, dtype=torch.bool, device=device)
                if terminated or truncated:
                    break
            logger.gif(f"videos/{family}", images, frames)
            logger.text(f"videos/{family}_task", task, frames)
