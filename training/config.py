"""The typed configuration of a run: one dataclass tree, validated before any work.

Every field has a docstring, which becomes its ``--help`` text (tyro). Nested
configs are flattened on the command line (``--conditioning film``, not
``--agent.conditioning film``), so field names are unique across the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from agents.model import AgentConfig
from agents.ppo import PPOConfig
from envs.tasks import TASKS, get_task, list_tasks

DEFAULT_TASKS = ",".join(spec.name for spec in list_tasks(split="train"))


@dataclass
class RunConfig:
    """One training run."""

    tasks: str = DEFAULT_TASKS
    """Comma-separated task names to train on, sampled uniformly (python train.py --list-tasks)."""
    frames: int = 5_000_000
    """Total environment frames to train for (all slots together)."""
    num_envs: int = 16
    """Environment slots stepped in parallel."""
    seed: int = 1
    """Seed of environments, network initialisation and minibatch order."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the network runs: auto picks CUDA when present, else CPU."""
    obs: Literal["symbolic", "rgb"] = "symbolic"
    """Observation: MiniGrid's 7x7 symbolic view or the rendered 56x56 egocentric view."""
    vectorization: Literal["sync", "async"] = "sync"
    """Step slots in this process (sync) or one worker process per slot (async)."""
    log_every: int = 10
    """Print per-task success on the console every this many updates."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    @property
    def task_list(self) -> list[str]:
        return [name.strip() for name in self.tasks.split(",") if name.strip()]

    def validate(self) -> None:
        """Raise ValueError naming the first bad value and what is allowed."""
        if not self.task_list:
            raise ValueError("tasks is empty; give at least one task name (python train.py --list-tasks).")
        for name in self.task_list:
            get_task(name)
        for name in ("frames", "num_envs", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        self.agent.validate()
        self.ppo.validate(self.num_envs)
        if self.agent.memory == "lstm" and self.ppo.num_steps % self.ppo.bptt:
            raise ValueError(
                f"bptt must divide num_steps with memory=lstm. Currently bptt={self.ppo.bptt}, num_steps={self.ppo.num_steps}."
            )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA device is available here; use --device cpu or auto.")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


TASK_NAMES: list[str] = list(TASKS)
"""Every registered task name, by task index."""
