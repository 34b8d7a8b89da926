"""What a run shows while it trains: success windows, console lines, TensorBoard curves and videos.

:class:`EpisodeStats` keeps the recent outcomes per task; :class:`Reporter`
turns them (with the curriculum's and the learner's numbers) into the console's
success line, the scalars the trainer logs after every update, and one
rendered episode per task family as a GIF.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from agents.model import MultiTaskActorCritic
from envs.curriculum import Curriculum
from envs.tasks import TASKS
from training.config import RunConfig
from training.logger import Logger, NullLogger
from training.videos import RolloutVideos

SUCCESS_WINDOW = 100  # console and benchmark windows; the curriculum has its own (curriculum_window)


@dataclass
class EpisodeStats:
    """Outcomes of recent episodes per task (moving windows of ``SUCCESS_WINDOW``)."""

    success: dict[str, deque] = field(default_factory=lambda: defaultdict(lambda: deque(maxlen=SUCCESS_WINDOW)))
    returns: dict[str, deque] = field(default_factory=lambda: defaultdict(lambda: deque(maxlen=SUCCESS_WINDOW)))
    lengths: dict[str, deque] = field(default_factory=lambda: defaultdict(lambda: deque(maxlen=SUCCESS_WINDOW)))
    episodes: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, task: str, success: bool, ret: float, length: int) -> None:
        self.success[task].append(float(success))
        self.returns[task].append(ret)
        self.lengths[task].append(length)
        self.episodes[task] += 1

    def success_rate(self, task: str) -> float | None:
        window = self.success.get(task)
        return float(np.mean(window)) if window else None


FAMILIES = ("navigation", "recognition")


def family_means(stats: EpisodeStats, tasks: Sequence[str]) -> dict[str, float]:
    """Mean success of the given tasks that have episodes, per family (in :data:`FAMILIES` order)."""
    means = {}
    for family in FAMILIES:
        rates = [stats.success_rate(t) for t in tasks if TASKS[t].family == family]
        rates = [r for r in rates if r is not None]
        if rates:
            means[family] = sum(rates) / len(rates)
    return means


class Reporter:
    """The console's, TensorBoard's and the videos' view of one run.

    Args:
        config: the run's config (its task list, video settings).
        stats: the trainer's episode statistics (read, never written).
        model: the agent the videos show.
    """

    def __init__(self, config: RunConfig, stats: EpisodeStats, model: MultiTaskActorCritic) -> None:
        self.config = config
        self.stats = stats
        self.model = model
        self.videos = RolloutVideos(config, model)

    def family_success(self) -> dict[str, float]:
        """Mean of the task success rates in each family (tasks with episodes only)."""
        return family_means(self.stats, self.config.task_list)

    def scalars(self, ppo_stats: dict[str, float], curriculum: Curriculum, **charts: float) -> dict[str, float]:
        """This update's curves: the learner's, each task's and family's, the curriculum's, and ``train/*``.

        Tag groups sort (as TensorBoard's Time Series lists them) ``curriculum``, ``families``,
        ``tasks``, then the learner's ``train`` and ``weights``: the success curves come first.
        """
        values: dict[str, float] = dict(ppo_stats)
        for name in self.config.task_list:
            if self.stats.success.get(name):
                values[f"tasks/{name}/success"] = self.stats.success_rate(name)
                values[f"tasks/{name}/return"] = float(np.mean(self.stats.returns[name]))
                values[f"tasks/{name}/episode_length"] = float(np.mean(self.stats.lengths[name]))
        values.update({f"families/{family}/success": rate for family, rate in self.family_success().items()})
        values["curriculum/level"] = curriculum.level()
        values["curriculum/unlocked"] = len(curriculum.unlocked())
        for name, p in curriculum.probs().items():
            values[f"tasks/{name}/curriculum_prob"] = p  # beside the task's own curves
        values.update({f"train/{key}": value for key, value in charts.items()})
        return values

    def record_videos(self, logger: Logger | NullLogger, curriculum: Curriculum, *, updates: int, frames: int) -> None:
        """One rollout GIF per open task family in TensorBoard (:mod:`training.videos`)."""
        self.videos.record(logger, curriculum.unlocked(), updates=updates, frames=frames)
