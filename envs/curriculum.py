"""Curricula: which tasks the environment slots run, as success rates climb.

Registry :data:`CURRICULA`:

* ``none``: every listed task, uniformly, from the start.
* ``threshold``: tasks open level by level. Level ``L`` opens once every task
  of the lower levels has a moving success rate (last ``window`` episodes, a
  full window) of at least ``threshold``. Mastered tasks (a full window at
  ``mastered_threshold`` or more) stay in the mix at ``mastered_weight``
  times the weight of the others, so they are not forgotten.
* ``learning-progress``: Teacher-Student curriculum (Matiisen et al. 2017):
  every task is open; each is sampled in proportion to the absolute slope of
  its success rate (a fast minus a slow moving average), mixed with a uniform
  exploration floor ``epsilon``.

A curriculum sees episode outcomes (:meth:`Curriculum.record`) and answers
with sampling probabilities over tasks (:meth:`Curriculum.probs`), which the
trainer hands to :meth:`envs.vector.MultiTaskVectorEnv.set_task_probs`. Its
whole state round-trips through ``state_dict``/``load_state_dict``.
:class:`FamilySchedule` spreads the open tasks over rollouts and slots: as
probabilities, or as whole slots per task (:func:`envs.quotas.slot_quotas`,
:func:`envs.quotas.assign_slots`), where a task's share of frames is its share of slots.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from envs.quotas import assign_slots, slot_quotas
from envs.tasks import TaskSpec, get_task
from envs.wrappers import FAMILIES


class Curriculum:
    """Base: outcome windows per task and the task list, ordered by level.

    Args:
        tasks: task names (registered).
        window: episodes in each task's moving success rate.
    """

    def __init__(self, tasks: Sequence[str], *, window: int = 100) -> None:
        if not tasks:
            raise ValueError("a curriculum needs at least one task.")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window={window!r} must be a positive integer.")
        self.specs: list[TaskSpec] = [get_task(name) for name in tasks]
        self.names = [spec.name for spec in self.specs]
        self.window = window
        self.outcomes: dict[str, deque] = {name: deque(maxlen=window) for name in self.names}

    def record(self, task: str, success: bool) -> None:
        """One finished episode of ``task``; tasks outside the curriculum are ignored."""
        if task in self.outcomes:
            self.outcomes[task].append(1.0 if success else 0.0)
            self._after_record(task)

    def _after_record(self, task: str) -> None:
        """Hook for strategies that track more than the windows."""

    def success_rate(self, task: str) -> float | None:
        window = self.outcomes[task]
        return sum(window) / len(window) if window else None

    def unlocked(self) -> list[str]:
        """Tasks that may be sampled now."""
        return list(self.names)

    def probs(self) -> dict[str, float]:
        """Sampling probability of each unlocked task (sums to 1)."""
        open_ = self.unlocked()
        return {name: 1.0 / len(open_) for name in open_}

    def level(self) -> int:
        """Highest level among unlocked tasks."""
        unlocked = set(self.unlocked())
        return max(spec.level for spec in self.specs if spec.name in unlocked)

    def state_dict(self) -> dict[str, Any]:
        return {"outcomes": {name: list(window) for name, window in self.outcomes.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["outcomes"]
        if set(saved) != set(self.outcomes):
            raise ValueError(
                f"the saved curriculum has tasks {sorted(saved)}, this one {sorted(self.outcomes)}: they must match."
            )
        for name, values in saved.items():
            self.outcomes[name] = deque(values, maxlen=self.window)


class NoCurriculum(Curriculum):
    """Every task, uniformly, from the start."""


class ThresholdCurriculum(Curriculum):
    """Open level by level as the lower levels pass a success threshold.

    A level, once open, stays open: a dip of a lower task below the
    thresholds (common while a new level's tasks pull on the shared weights)
    gives that task its full weight again instead of withdrawing the harder tasks, so
    the set of open tasks only grows and "when was level N opened" is one frame.

    Opening a level and lowering a task's weight are separate thresholds: a
    task at 0.8 is good enough to build on, but still short of the 0.9 that
    counts as solved, and keeps its full share of the frames until it gets
    there (with one threshold of 0.8 for both, the last task of the
    four-task transfer benchmark spent its 0.8-0.9 stretch at a quarter of
    the frames; README, Results).

    Args:
        threshold: moving success rate every task of the lower levels needs before a level opens.
        mastered_weight: sampling weight of mastered tasks relative to the others.
        mastered_threshold: moving success rate from which a task counts as
            mastered (weight ``mastered_weight``); equal to ``threshold``,
            one threshold does both jobs.
    """

    def __init__(
        self, tasks: Sequence[str], *, window: int = 100, threshold: float = 0.8, mastered_weight: float = 0.25,
        mastered_threshold: float = 0.9,
    ) -> None:
        super().__init__(tasks, window=window)
        for name, value in (("threshold", threshold), ("mastered_threshold", mastered_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} must be a probability in [0, 1].")
        if not 0.0 <= mastered_weight <= 1.0:
            raise ValueError(f"mastered_weight={mastered_weight!r} must be in [0, 1].")
        self.threshold = threshold
        self.mastered_threshold = mastered_threshold
        self.mastered_weight = mastered_weight
        self.levels = sorted({spec.level for spec in self.specs})
        self.opened = 0  # index in self.levels of the highest open level

    def _holds(self, task: str, threshold: float) -> bool:
        window = self.outcomes[task]
        return len(window) == self.window and sum(window) / self.window >= threshold

    def mastered(self, task: str) -> bool:
        """A full window at ``mastered_threshold`` or more: the task drops to ``mastered_weight``."""
        return self._holds(task, self.mastered_threshold)

    def _after_record(self, task: str) -> None:
        while self.opened + 1 < len(self.levels):
            below = [s.name for s in self.specs if s.level <= self.levels[self.opened]]
            if not all(self._holds(name, self.threshold) for name in below):
                break
            self.opened += 1

    def unlocked(self) -> list[str]:
        top = self.levels[self.opened]
        return [spec.name for spec in self.specs if spec.level <= top]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "opened": self.opened}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.opened = int(state.get("opened", 0))
        self._after_record("")  # a checkpoint from before levels were sticky

    def probs(self) -> dict[str, float]:
        open_ = self.unlocked()
        weights = {name: (self.mastered_weight if self.mastered(name) else 1.0) for name in open_}
        if sum(weights.values()) == 0:  # everything mastered and weight 0: keep practising uniformly
            weights = {name: 1.0 for name in open_}
        total = sum(weights.values())
        return {name: w / total for name, w in weights.items()}


class LearningProgressCurriculum(Curriculum):
    """Sample tasks by the absolute slope of their success rate (Matiisen et al. 2017).

    The slope is estimated per task as the gap between a fast and a slow
    exponential moving average of its outcomes.

    Args:
        epsilon: share of uniform exploration.
        fast, slow: smoothing factors of the two moving averages.
    """

    def __init__(self, tasks: Sequence[str], *, window: int = 100, epsilon: float = 0.1, fast: float = 0.1, slow: float = 0.01) -> None:
        super().__init__(tasks, window=window)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon={epsilon!r} must be a probability in [0, 1].")
        if not 0.0 < slow < fast <= 1.0:
            raise ValueError(f"need 0 < slow < fast <= 1; got slow={slow!r}, fast={fast!r}.")
        self.epsilon, self.fast, self.slow = epsilon, fast, slow
        self.ema_fast = {name: None for name in self.names}
        self.ema_slow = {name: None for name in self.names}

    def _after_record(self, task: str) -> None:
        x = self.outcomes[task][-1]
        for ema, rate in ((self.ema_fast, self.fast), (self.ema_slow, self.slow)):
            ema[task] = x if ema[task] is None else (1 - rate) * ema[task] + rate * x

    def progress(self, task: str) -> float:
        if self.ema_fast[task] is None:
            return 0.0
        return abs(self.ema_fast[task] - self.ema_slow[task])

    def probs(self) -> dict[str, float]:
        k = len(self.names)
        lp = {name: self.progress(name) for name in self.names}
        total = sum(lp.values())
        if total <= 0:
            return {name: 1.0 / k for name in self.names}
        return {name: (1 - self.epsilon) * lp[name] / total + self.epsilon / k for name in self.names}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ema_fast": dict(self.ema_fast), "ema_slow": dict(self.ema_slow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ema_fast, self.ema_slow = dict(state["ema_fast"]), dict(state["ema_slow"])


class FamilySchedule:
    """How the curriculum's open tasks are spread over rollouts and slots.

    * ``mixed``: every slot samples from every open task (the curriculum's
      probabilities as they are).
    * ``alternate``: rollouts take turns between the families (navigation on
      even rollouts, recognition on odd ones): the curriculum's probabilities
      restricted to that family's open tasks. A family with no open task
      yields to the other.
    * ``round-robin``: each slot runs one open task, the assignment rotating
      by one task every rollout.

    :meth:`assign` answers with probabilities each slot draws from at its
    resets, :meth:`slots` with a task per slot (see :func:`slot_quotas`).
    Slots switch at their next reset. With ``alternate`` the trainer restarts,
    at each rollout boundary, the slots still in an episode of the other family
    (so episodes longer than a rollout never finish: give ``num_steps`` room);
    with ``round-robin`` an episode in flight finishes first.
    """

    KINDS = ("mixed", "alternate", "round-robin")

    def __init__(self, kind: str = "mixed") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"schedule={kind!r} is unknown; known: {', '.join(self.KINDS)}.")
        self.kind = kind

    def assign(
        self,
        curriculum: Curriculum,
        rollout: int,
        num_envs: int,
        episode_lengths: Mapping[str, float] | None = None,
    ) -> dict[str, float] | list[dict[str, float]]:
        """Task probabilities for rollout ``rollout``: one mapping for all slots, or one per slot.

        Args:
            episode_lengths: recent mean episode length per task. Given, the
                curriculum's probabilities are read as shares of *frames*: a
                slot draws task ``i`` of the next episode with probability
                proportional to ``p_i / length_i``, so a task whose episodes
                end early (a wrong ``done``, a step into lava) is not starved
                of frames by one whose failed episodes run to the time limit.
                Tasks without a finished episode yet count at the mean length
                of the others. ``round-robin`` balances frames by itself.
        """
        probs = curriculum.probs()
        if episode_lengths:
            probs = per_episode(probs, episode_lengths)
        if self.kind == "mixed":
            return probs
        if self.kind == "alternate":
            return _of_family(curriculum, probs, rollout)
        return [{task: 1.0} for task in _round_robin(probs, rollout, num_envs)]

    def slots(
        self, curriculum: Curriculum, rollout: int, num_envs: int, current: Sequence[str | None] | None = None
    ) -> list[str]:
        """The task of each of the ``num_envs`` slots for rollout ``rollout``: whole slots, not draws.

        ``mixed`` apportions the slots over all open tasks by the curriculum's
        probabilities, ``alternate`` over this rollout's family, both keeping
        slots on their ``current`` task (``None``: none yet, the default) where
        the quotas allow. ``round-robin`` is :meth:`assign`'s rotation, which
        moves every slot each rollout by design. A task's share of frames is
        its share of slots: no episode-length correction is needed.
        """
        current = [None] * num_envs if current is None else list(current)
        if len(current) != num_envs:
            raise ValueError(f"current has {len(current)} slots, num_envs={num_envs}: give one task per slot.")
        probs, turn = curriculum.probs(), rollout
        if self.kind == "round-robin":
            return _round_robin(probs, rollout, num_envs)
        if self.kind == "alternate":  # a family's own turns, so that its tasks rotate when they outnumber the slots
            probs, turn = _of_family(curriculum, probs, rollout), rollout // len(FAMILIES)
        return assign_slots(slot_quotas(probs, num_envs, rollout=turn), current)


def _of_family(curriculum: Curriculum, probs: dict[str, float], rollout: int) -> dict[str, float]:
    """``probs`` renormalised within rollout ``rollout``'s family; a family with no open task yields."""
    family = {spec.name: spec.family for spec in curriculum.specs}
    for offset in range(len(FAMILIES)):
        wanted = FAMILIES[(rollout + offset) % len(FAMILIES)]
        chosen = {name: p for name, p in probs.items() if family[name] == wanted and p > 0}
        if chosen:
            total = sum(chosen.values())
            return {name: p / total for name, p in chosen.items()}
    return probs


def _round_robin(probs: Mapping[str, float], rollout: int, num_envs: int) -> list[str]:
    """Slot ``i`` runs open task ``i + rollout`` (cyclically)."""
    open_ = [name for name, p in probs.items() if p > 0]
    return [open_[(slot + rollout) % len(open_)] for slot in range(num_envs)]


def per_episode(frame_shares: Mapping[str, float], episode_lengths: Mapping[str, float]) -> dict[str, float]:
    """Per-episode sampling probabilities that give each task its share of frames.

    A task drawn with probability ``q_i`` whose episodes last ``length_i``
    steps gets ``q_i length_i / sum_j q_j length_j`` of the frames, so
    ``q_i`` proportional to ``share_i / length_i`` gives it ``share_i``.
    Tasks missing from ``episode_lengths`` count at the mean of the known lengths.
    """
    known = [episode_lengths[name] for name in frame_shares if episode_lengths.get(name, 0) > 0]
    if not known:
        return dict(frame_shares)
    default = sum(known) / len(known)
    weights = {
        name: share / (episode_lengths[name] if episode_lengths.get(name, 0) > 0 else default)
        for name, share in frame_shares.items()
    }
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items()} if total > 0 else dict(frame_shares)


CURRICULA: dict[str, type[Curriculum]] = {
    "none": NoCurriculum,
    "threshold": ThresholdCurriculum,
    "learning-progress": LearningProgressCurriculum,
}


def make_curriculum(name: str, tasks: Sequence[str], **kwargs: Any) -> Curriculum:
    """Build curriculum ``name`` over ``tasks``; an unknown name lists the known ones."""
    if name not in CURRICULA:
        raise ValueError(f"curriculum={name!r} is unknown; known: {', '.join(CURRICULA)}.")
    return CURRICULA[name](tasks, **kwargs)
