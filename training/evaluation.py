"""Evaluating a trained agent per task: episodes on a vector env, honest statistics, reports.

Used by ``evaluate.py``; usable from code::

    from agents import load
    from training.evaluation import EvalTarget, evaluate_target
    result = evaluate_target(load("runs/<run>"), EvalTarget.task("DoorKey-5x5"), episodes=100)

Episode ``e`` of a target (``0 <= e < episodes``) is always played on the
layout of seed ``seed + e``, whichever slot runs it and however many slots
there are, and the statistics cover exactly those episodes (a slot that
finishes takes the next episode index; nothing stops at the first N episodes
to end, which would favour short ones). So two agents evaluated with the same
seed meet the same layouts, and with ``deterministic=True`` the numbers do not
depend on ``num_envs``. Sampled actions draw from a torch generator seeded
from ``seed`` and the target name.

Progress is counted in environment steps against a budget of ``max_steps``
per episode (:func:`step_budget`): an episode that ends early releases the
rest of its budget (``on_steps``), so a progress bar over the budget moves
with the work done and its estimate errs on the long side.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.conditioning import remember_missions
from agents.model import MultiTaskActorCritic, ObsBatch
from agents.persist import CHECKPOINT_DIR
from training.config import RunConfig
from envs.tasks import get_task, list_tasks, make, make_external
from envs.wrappers import FAMILIES, VOCAB, ObsMode

if TYPE_CHECKING:
    from training.remote import RemotePolicy

JSON_FORMAT = "omnigrid-eval-1"
SPLITS = ("train", "heldout", "all")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (Wilson 1927); ``(0, 1)`` for no episodes."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class EvalTarget:
    """Something to evaluate on: a registered task or any MiniGrid/BabyAI gym id."""

    name: str
    family: str
    split: str  # "train", "heldout", or "external" (a gym id outside the registry)
    max_steps: int  # episode time limit: the progress budget of one episode
    factory: Callable[..., gym.Env] = field(compare=False, repr=False)

    @classmethod
    def task(cls, name: str) -> "EvalTarget":
        spec = get_task(name)

        def factory(*, obs: ObsMode, mission_length: int, render_mode: str | None) -> gym.Env:
            return make(spec.name, obs=obs, mission_length=mission_length, render_mode=render_mode)

        return cls(spec.name, spec.family, spec.split, spec.max_steps, factory)

    @classmethod
    def gym_id(cls, env_id: str, family: str = "navigation") -> "EvalTarget":
        if family not in FAMILIES:
            raise ValueError(f"--family {family!r} is not a task family; use one of {', '.join(FAMILIES)}.")

        def factory(*, obs: ObsMode, mission_length: int, render_mode: str | None) -> gym.Env:
            return make_external(env_id, family=family, obs=obs, mission_length=mission_length, render_mode=render_mode)

        env = factory(obs="symbolic", mission_length=1, render_mode=None)  # fail now on a bad id, not mid-run
        try:
            with warnings.catch_warnings():  # the probe's mission is cut to one word on purpose
                warnings.simplefilter("ignore")
                env.reset(seed=0)  # BabyAI levels set their time limit at reset, from the mission
            max_steps = int(env.unwrapped.max_steps)
        finally:
            env.close()
        return cls(env_id, family, "external", max_steps, factory)


def resolve_targets(
    *, split: str = "heldout", tasks: Sequence[str] = (), env_ids: Sequence[str] = (), family: str = "navigation"
) -> list[EvalTarget]:
    """The targets named by ``tasks`` and ``env_ids`` if any, else the tasks of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"--split {split!r} is not a split; use one of {', '.join(SPLITS)}.")
    targets = [EvalTarget.task(name) for name in tasks] + [EvalTarget.gym_id(i, family) for i in env_ids]
    if targets:
        return targets
    return [EvalTarget.task(spec.name) for spec in list_tasks(split=None if split == "all" else split)]


def check_compatible(model: MultiTaskActorCritic, target: EvalTarget) -> None:
    """A ValueError if ``model`` cannot act on ``target``."""
    if target.split == "external" and (model.config.conditioning == "task-id" or model.config.task_embedding):
        raise ValueError(
            f"--env {target.name!r}: the agent is conditioned on registry task ids "
            f"(conditioning={model.config.conditioning}, task_embedding={model.config.task_embedding}); "
            "an environment outside the registry has none. Use --tasks with registered tasks."
        )
    if model.space_info["vocab_size"] != len(VOCAB):
        raise ValueError(
            f"the agent was trained with a {model.space_info['vocab_size']}-word mission vocabulary, "
            f"this version has {len(VOCAB)} words: its mission embeddings would be misread."
        )


@dataclass
class EvalResult:
    """One target's outcome over its episodes."""

    task: str
    family: str
    split: str
    episodes: int
    successes: int
    success: float
    success_low: float
    success_high: float
    mean_return: float
    mean_length: float
    videos: list[list[np.ndarray]] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, Any]:
        """The JSON record (no video frames)."""
        record = asdict(self)
        record.pop("videos")
        return record


def _obs_mode(model: MultiTaskActorCritic) -> ObsMode:
    return "symbolic" if tuple(model.space_info["image_shape"]) == (7, 7, 3) else "rgb"


def _target_seed(seed: int, name: str) -> int:
    """A per-target torch seed: stable across runs and Python processes (unlike ``hash``)."""
    return (seed * 1_000_003 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)) % 2**63


@torch.no_grad()
def evaluate_target(
    model: MultiTaskActorCritic,
    target: EvalTarget,
    *,
    episodes: int = 100,
    num_envs: int = 16,
    seed: int = 0,
    deterministic: bool = False,
    video_episodes: int = 0,
    on_episode: Callable[[], None] | None = None,
    on_steps: Callable[[int, int], None] | None = None,
    remote: "RemotePolicy | None" = None,
) -> EvalResult:
    """Play ``episodes`` episodes of ``target`` with ``model`` (see the module doc for seeding).

    Args:
        video_episodes: record the rendered frames of the first this many episodes.
        on_episode: called after each finished episode.
        on_steps: called after each vector step as ``on_steps(played, released)``:
            ``played`` steps of counted episodes were just played, and episodes
            that ended used ``released`` steps fewer than their budget of
            ``target.max_steps``. Steps past an episode's budget (a BabyAI level
            whose limit grows with its mission) are not counted, so over the
            call ``played + released`` sums to :func:`step_budget` exactly: a
            progress bar's ``update(played)`` and ``total -= released``.
        remote: take the actions from a served agent instead (``evaluate.py
            --server``): the same episodes and seeds; greedy actions are the
            server's, sampled ones are drawn here from its probabilities with
            this target's generator, as the local agent's would be.
    """
    check_compatible(model, target)
    num_envs = min(num_envs, episodes)
    render_mode = "rgb_array" if video_episodes else None
    kwargs = {"obs": _obs_mode(model), "mission_length": model.space_info["mission_length"], "render_mode": render_mode}
    env = SyncVectorEnv([lambda: target.factory(**kwargs) for _ in range(num_envs)], autoreset_mode=AutoresetMode.DISABLED)
    generator = torch.Generator(device=model.device).manual_seed(_target_seed(seed, target.name))
    successes = np.zeros(episodes, dtype=bool)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    videos: dict[int, list[np.ndarray]] = {}
    episode_of = np.arange(num_envs)  # episode index each slot plays; -1: idle
    next_episode = num_envs
    finished = 0
    budget = target.max_steps
    with remember_missions(model):  # parameters are fixed while evaluating
        try:
            obs, _ = env.reset(seed=[seed + int(e) for e in episode_of])
            for i in range(min(video_episodes, num_envs)):
                videos[i] = [env.envs[i].render()]
            state = model.initial_state(num_envs)
            starts = torch.ones(num_envs, dtype=torch.bool, device=model.device)
            while finished < episodes:
                if remote is not None:
                    missions = [slot.unwrapped.mission for slot in env.envs]
                    served, probs = remote.act(obs["image"], obs["direction"], missions, target.name, deterministic=deterministic)
                    probs = torch.as_tensor(probs, dtype=torch.float32, device=model.device)
                    action = torch.as_tensor(served) if deterministic else torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                else:
                    logits, state = model.action_logits(ObsBatch.from_numpy(obs, model.device), state, starts)
                    if deterministic:
                        action = logits.argmax(-1)
                    else:
                        action = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
                obs, rewards, terminated, truncated, info = env.step(action.cpu().numpy())
                active = episode_of >= 0
                returns[episode_of[active]] += rewards[active]
                lengths[episode_of[active]] += 1
                played = int((lengths[episode_of[active]] <= budget).sum())
                # Render only the slots playing a recorded episode (0 .. video_episodes - 1).
                for i in np.flatnonzero((episode_of >= 0) & (episode_of < video_episodes)):
                    videos[int(episode_of[i])].append(env.envs[i].render())
                done = terminated | truncated
                starts = torch.as_tensor(done, device=model.device)
                if not done.any():
                    if on_steps is not None:
                        on_steps(played, 0)
                    continue
                seeds: list[int | None] = [None] * num_envs
                ended = episode_of[done & active]
                if on_steps is not None:
                    on_steps(played, int((budget - np.minimum(lengths[ended], budget)).sum()))
                for i in np.flatnonzero(done & active):
                    successes[episode_of[i]] = bool(info["success"][i])
                    finished += 1
                    if on_episode is not None:
                        on_episode()
                    if next_episode < episodes:
                        episode_of[i], seeds[i] = next_episode, seed + next_episode
                        if next_episode < video_episodes:
                            videos[next_episode] = []
                        next_episode += 1
                    else:
                        episode_of[i] = -1  # idle: stepped on (a batch is a batch) but not counted
                # Every ended env restarts (idle ones too: none is stepped past its end).
                obs, _ = env.reset(seed=seeds, options={"reset_mask": done.copy()})
                for i in np.flatnonzero(done):
                    if episode_of[i] in videos:
                        videos[episode_of[i]].append(env.envs[i].render())
        finally:
            env.close()
    k = int(successes.sum())
    low, high = wilson_interval(k, episodes)
    return EvalResult(
        task=target.name,
        family=target.family,
        split=target.split,
        episodes=episodes,
        successes=k,
        success=k / episodes,
        success_low=low,
        success_high=high,
        mean_return=float(returns.mean()),
        mean_length=float(lengths.mean()),
        videos=[videos[e] for e in sorted(videos)],
    )


def step_budget(target: EvalTarget, episodes: int) -> int:
    """Environment steps ``episodes`` episodes of ``target`` take at most: the total of a progress bar."""
    return target.max_steps * episodes


def family_means(results: Sequence[EvalResult]) -> dict[str, float]:
    """Mean success rate per task family (in :data:`FAMILIES` order), over the families present."""
    means = {}
    for family in FAMILIES:
        rates = [r.success for r in results if r.family == family]
        if rates:
            means[family] = sum(rates) / len(rates)
    return means


def trained_tasks(payload: dict[str, Any]) -> list[str] | None:
    """The tasks the run behind a checkpoint ``payload`` trained on; None if the file does not say.

    The trainer saves the run's config (YAML) in every checkpoint; only its
    ``tasks`` field is read, so a config from another version still answers.
    """
    try:
        data = yaml.safe_load(payload.get("config") or "")
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), str):
        return None
    return RunConfig(tasks=data["tasks"]).task_list


def run_dir_of(path: str | Path) -> Path | None:
    """The run folder a run path or checkpoint file belongs to, or None for a loose file."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.parent.name == CHECKPOINT_DIR and (path.parent.parent / "config.yaml").is_file():
        return path.parent.parent
    return None


def report(
    results: Sequence[EvalResult],
    *,
    run: str,
    checkpoint: str,
    frames: int | None,
    settings: dict[str, Any],
    trained_on: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The JSON document of one run's evaluation.

    Args:
        trained_on: the run's training tasks (:func:`trained_tasks`); each task
            row gets ``trained`` (a bool, or None when this is None).

    Returns:
        The settings, ``families`` (mean success per family), ``mean_success``
        (over all tasks), ``trained_tasks`` and one row per task.
    """
    return {
        "format": JSON_FORMAT,
        "run": run,
        "checkpoint": checkpoint,
        "frames": frames,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **settings,
        "families": family_means(results),
        "mean_success": sum(r.success for r in results) / len(results) if results else None,
        "trained_tasks": None if trained_on is None else list(trained_on),
        "tasks": [{**r.row(), "trained": None if trained_on is None else r.task in trained_on} for r in results],
    }


def write_json(document: dict[str, Any], path: str | Path) -> Path:
    """Write ``document`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
    return path
