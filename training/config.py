"""The typed configuration of a run: one dataclass tree, validated before any work.

Every field has a docstring, which becomes its ``--help`` text (tyro). Nested
configs are flattened on the command line (``--conditioning film``, not
``--agent.conditioning film``), so field names are unique across the tree.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import yaml

from agents.model import AgentConfig
from agents.ppo import RETIRED_FIELDS, PPOConfig
from envs.curriculum import CURRICULA, Curriculum, FamilySchedule, make_curriculum
from envs.tasks import get_task, list_tasks
from envs.vector import backend_problem, resolve_backend
from training.cli import check_writable
from training.threads import available_cores, resolve_threads

DEFAULT_TASKS = ",".join(spec.name for spec in list_tasks(split="train"))

# What ``--resume`` may change: how long, where and how the run is carried out and
# reported. Anything else (tasks, agent, PPO, seed, curriculum...) would make the
# resumed run a different experiment from the checkpoint it continues.
RESUMABLE = (
    "frames", "device", "threads", "backend", "env_threads", "vectorization", "video_every", "video_max_steps", "checkpoint_every",
    "keep_checkpoints", "log_every", "max_env_crashes", "max_bad_updates",
)


def check_types(config: object) -> None:
    """Raise ValueError if a field of a config dataclass holds a value of the wrong type (e.g. from YAML)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            continue
        if not _fits(value, hint):
            raise ValueError(f"{f.name}={value!r} must be {_describe(hint)}.")


def _fits(value: object, hint: object) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: object) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string", type(None): "null"}.get(
        hint, str(hint)
    )


@dataclass
class RunConfig:
    """One training run."""

    tasks: str = DEFAULT_TASKS
    """Comma-separated task names to train on (python train.py --list-tasks)."""
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
    backend: Literal["auto", "envpool", "minigrid"] = "auto"
    """Environment backend: envpool (C++ MiniGrid, fast; symbolic obs), minigrid (python MiniGrid, the reference), or auto: envpool wherever it imports and serves the settings, else minigrid with a notice."""
    env_threads: int = 0
    """envpool backend: worker threads per task pool (0 = every core of the machine)."""
    vectorization: Literal["sync", "async"] = "sync"
    """minigrid backend: step slots in this process (sync) or one worker process per slot (async)."""
    curriculum: Literal["none", "threshold", "learning-progress"] = "threshold"
    """Which tasks the slots run: all uniformly, unlocked level by level, or by learning progress."""
    schedule: Literal["mixed", "alternate", "round-robin"] = "mixed"
    """Spread of open tasks: every slot samples all (mixed), families take turns per rollout (alternate), or one task per slot rotating (round-robin)."""
    task_balance: Literal["slots", "frames", "episodes"] = "slots"
    """How the curriculum's task probabilities are carried out: slots (whole slots per open task, at least one each: a task's share of frames is its share of slots), frames (each episode's task drawn, scaled by 1 / the task's recent mean episode length) or episodes (drawn as they are)."""
    curriculum_window: int = 100
    """Episodes in each task's moving success rate (curriculum and console)."""
    curriculum_threshold: float = 0.8
    """threshold curriculum: success rate that opens the next level."""
    mastered_threshold: float = 0.9
    """threshold curriculum: success rate from which a task counts as mastered and drops to mastered_weight."""
    mastered_weight: float = 0.25
    """threshold curriculum: sampling weight of mastered tasks relative to the others."""
    lp_epsilon: float = 0.1
    """learning-progress curriculum: share of uniform exploration."""
    threads: int = 0
    """CPU threads for torch; 0 = auto (training/threads.py): half the cores, so that a second process fits beside the run; 1 with async (the workers need the cores)."""
    video_every: int = 50
    """Record rollout GIFs (one per open task family) at the first update, then every this many updates (0: never). One update is num_envs x num_steps frames (2,048 with the defaults)."""
    video_max_steps: int = 200
    """Frames of a rollout GIF at most (environment steps; short episodes follow one another up to it)."""
    init_from: str = ""
    """Start from the weights of a trained run (run folder or checkpoint file); the architecture must match."""
    freeze: Literal["none", "shared"] = "none"
    """shared: train only the task-specific parts (heads, gates, task embedding), keep encoder, mission encoder and shared trunk/experts fixed."""
    checkpoint_every: int = 50
    """Write a checkpoint every this many updates (0: only at the end). One update is num_envs x num_steps frames (2,048 with the defaults)."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept (oldest deleted first); final.pt is always kept."""
    run_name: str = ""
    """Output folder runs/<run_name>; default: <tasks>-s<seed>-<date-time>."""
    runs_dir: str = "runs"
    """Parent folder of all runs."""
    log_every: int = 10
    """Print the open tasks' success on the console every this many updates. One update is num_envs x num_steps frames (2,048 with the defaults)."""
    max_env_crashes: int = 10
    """Environment crashes (exceptions, dead workers) of one task tolerated; one more stops the run with a checkpoint."""
    max_bad_updates: int = 3
    """Consecutive updates skipped for a NaN/Inf loss or gradient before the run stops with the last good parameters."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    @property
    def task_list(self) -> list[str]:
        return [name.strip() for name in self.tasks.split(",") if name.strip()]

    def validate(self) -> None:
        """Raise ValueError naming the first bad value and what is allowed.

        Types (and the choices of Literal fields) are checked first, by
        :meth:`check_types`; the checks below are about values.
        """
        self.check_types()
        if not self.task_list:
            raise ValueError("tasks is empty; give at least one task name (python train.py --list-tasks).")
        for name in self.task_list:
            get_task(name)
        if self.threads < 0:
            raise ValueError(f"threads={self.threads!r} must be an integer >= 0 (0 = auto).")
        cores = available_cores()
        if not 0 <= self.env_threads <= cores:
            raise ValueError(f"env_threads={self.env_threads!r} must be in [0, {cores}] on this machine ({cores} cores; 0 = all).")
        problem = backend_problem(self.backend, obs=self.obs, vectorization=self.vectorization)
        if problem:
            raise ValueError(f"{problem}; use --backend minigrid (or auto).")
        for name in ("curriculum_threshold", "mastered_threshold", "mastered_weight", "lp_epsilon"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} must be a probability in [0, 1].")
        if self.freeze == "shared" and self.ppo.weighting in ("gradnorm", "pcgrad"):
            raise ValueError(f"weighting={self.ppo.weighting!r} works on the shared parameters, which freeze=shared fixes; use static, uncertainty or dwa.")
        if self.init_from and not Path(self.init_from).exists():
            raise ValueError(f"init_from={self.init_from!r} does not exist; give a run folder or a checkpoint file.")
        if self.schedule not in FamilySchedule.KINDS:
            raise ValueError(f"schedule={self.schedule!r} is unknown; known: {', '.join(FamilySchedule.KINDS)}.")
        if self.curriculum not in CURRICULA:
            raise ValueError(f"curriculum={self.curriculum!r} is unknown; known: {', '.join(CURRICULA)}.")
        for name in ("video_every", "checkpoint_every"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name}={value!r} must be an integer >= 0 (0 = never).")
        for name in (
            "frames", "num_envs", "log_every", "curriculum_window", "video_max_steps", "keep_checkpoints",
            "max_env_crashes", "max_bad_updates",
        ):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        self.agent.validate()
        self.ppo.validate(self.num_envs)
        if self.agent.memory == "lstm" and self.ppo.num_steps % self.ppo.bptt:
            raise ValueError(
                f"bptt must divide num_steps with memory=lstm. Currently bptt={self.ppo.bptt}, num_steps={self.ppo.num_steps}."
            )
        if self.run_name and (Path(self.run_name).name != self.run_name or self.run_name in (".", "..")):
            raise ValueError(f"run_name={self.run_name!r} must be a plain folder name (no '/').")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA device is available here; use --device cpu or auto.")

    def check_types(self) -> None:
        """Raise ValueError if any field (nested ones too) holds a value of the wrong type."""
        for part in (self, self.agent, self.ppo):
            check_types(part)

    def make_curriculum(self) -> Curriculum:
        kwargs: dict = {"window": self.curriculum_window}
        if self.curriculum == "threshold":
            kwargs.update(
                threshold=self.curriculum_threshold, mastered_threshold=self.mastered_threshold,
                mastered_weight=self.mastered_weight,
            )
        elif self.curriculum == "learning-progress":
            kwargs.update(epsilon=self.lp_epsilon)
        return make_curriculum(self.curriculum, self.task_list, **kwargs)

    def run_dir(self) -> Path:
        """``runs_dir/run_name``, naming the run on first use if no name was given."""
        if not self.run_name:
            tasks = self.task_list
            label = tasks[0] if len(tasks) == 1 else f"{len(tasks)}tasks"
            self.run_name = f"{label}-s{self.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        return Path(self.runs_dir) / self.run_name

    def flat(self) -> dict[str, object]:
        """Every field as ``name: value``, nested configs flattened (their fields are unique)."""
        out: dict[str, object] = {}
        for key, value in asdict(self).items():
            out.update(value if isinstance(value, dict) else {key: value})
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "RunConfig":
        """The config saved by :meth:`to_yaml` (``yaml.safe_load``); unknown keys are an error."""
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError("the config file does not hold a mapping of fields.")
        agent, ppo = data.pop("agent", {}) or {}, data.pop("ppo", {}) or {}
        for where, part, kind in (("", data, cls), ("agent.", agent, AgentConfig), ("ppo.", ppo, PPOConfig)):
            if not isinstance(part, dict):
                raise ValueError(f"{where.rstrip('.') or 'the file'} must be a mapping of fields; got {part!r}.")
            known = [f.name for f in dataclasses.fields(kind) if f.name not in ("agent", "ppo")]
            for key in part:
                if kind is PPOConfig and key in RETIRED_FIELDS:
                    raise ValueError(f"ppo.{key} was removed: {RETIRED_FIELDS[key]}. A run saved with it cannot be "
                                     "resumed by this version; start a new run (--init-from <run> keeps its weights).")
                if key not in known:
                    close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.6)
                    hint = f"did you mean {', '.join(close)}?" if close else f"known fields: {', '.join(known)}."
                    raise ValueError(f"unknown field {where}{key}; {hint}")
        return cls(**data, agent=AgentConfig(**agent), ppo=PPOConfig(**ppo))

    def resume_conflicts(self, saved: "RunConfig") -> list[str]:
        """Fields set differently from the run being resumed, beyond what a resume may change (:data:`RESUMABLE`)."""
        mine, theirs = self.flat(), saved.flat()
        return [
            f"{key}={mine[key]!r} (the run has {theirs[key]!r})"
            for key in mine
            if key not in RESUMABLE + ("run_name", "runs_dir") and mine[key] != theirs[key]
        ]

    def check_writable(self) -> None:
        """Raise ValueError unless the run folder can be created and written (before any work starts)."""
        check_writable(Path(self.runs_dir) / (self.run_name or ""), f"runs_dir={self.runs_dir!r}")

    def resolved_threads(self) -> int:
        """Torch CPU threads to use (the rule lives in :mod:`training.threads`)."""
        return resolve_threads(self.threads, role="train", vectorization=self.vectorization)

    def resolved_backend(self) -> str:
        """The backend this run uses; ``auto`` falling back to minigrid prints why, once, on stderr."""
        backend, notice = resolve_backend(self.backend, obs=self.obs, vectorization=self.vectorization)
        if notice and not getattr(self, "_noticed", False):
            print(f"notice: backend minigrid (python MiniGrid): {notice}.", file=sys.stderr)
            self._noticed = True
        return backend

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

