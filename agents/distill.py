"""Keeping mastered tasks: each task's best policy so far, and a pull of the agent towards it.

Once a task is mastered, the other tasks' gradients move the shared trunk it
depends on, and nothing in PPO's objective resists: a mastered task's
advantages are near zero, so its rows carry no signal until it has already
failed (README, "Keeping level 1 once level 2 opens"). :class:`PolicyKeeper`
remembers, for every task whose rolling success holds the mastered threshold,
the parameters under which its rolling return was the best so far (a
*teacher*), and the update adds ``distill_coef * KL(teacher || policy)`` on
that task's rows (:func:`agents.losses.distill_task_sums`), the behaviour-cloning
half of CLEAR (Rolnick et al. 2019) and Distral's pull (Teh et al. 2017),
with the agent's own past as the teacher instead of a replay or a second
network.

A teacher is a copy of the parameters taken at an update's start (one copy
shared by the tasks that reached a new best together), so it costs memory
(about 1.2 MB for the default agent, at most one per task) and, per update,
one forward pass without gradient over the rows of the tasks that have one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from agents.conditioning import remember_missions
from agents.model import MultiTaskActorCritic, ObsBatch


class PolicyKeeper:
    """Per task, the parameters of its best policy once mastered; their action log-probabilities on a rollout.

    Args:
        model: the agent (its parameters are copied; the copy is never trained).
        task_names: the name of every task index (registry order).
        threshold: rolling success a task needs before it gets a teacher.
    """

    def __init__(self, model: MultiTaskActorCritic, *, task_names: Sequence[str], threshold: float) -> None:
        if model.memory is not None:  # MultiTaskPPO builds no keeper then (PPOConfig.distill_coef)
            raise ValueError("a PolicyKeeper needs an agent without memory: a teacher's own memory over the rollout is not kept.")
        self.model = model
        self.task_names = list(task_names)
        self.threshold = threshold
        self._teacher_model: MultiTaskActorCritic | None = None  # built on first use
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}  # id -> parameters (never changed in place)
        self.teacher_of: dict[str, int] = {}  # task -> snapshot id
        self.best: dict[str, float] = {}  # task -> rolling return of its teacher
        self._next_id = 0

    def observe(self, windows: Mapping[str, tuple[float, float]]) -> list[str]:
        """Give a task a new teacher (the current parameters) where its rolling return is a new best.

        Args:
            windows: task -> (rolling success, rolling mean return) over full
                windows; tasks below ``threshold`` are ignored.

        Returns:
            The tasks whose teacher is now the current parameters.
        """
        improved = [
            name for name, (success, ret) in windows.items()
            if success >= self.threshold and ret > self.best.get(name, float("-inf"))
        ]
        if improved:
            snapshot = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
            self.snapshots[self._next_id] = snapshot
            for name in improved:
                self.teacher_of[name] = self._next_id
                self.best[name] = windows[name][1]
            self._next_id += 1
            used = set(self.teacher_of.values())
            self.snapshots = {sid: params for sid, params in self.snapshots.items() if sid in used}
        return improved

    @torch.no_grad()
    def teacher_logprobs(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The teachers' action log-probabilities on a flat batch of observations.

        Args:
            obs: ``(B, ...)`` observations (a rollout, flattened).

        Returns:
            ``(logp, has_teacher)``: float ``(B, 7)`` (zeros where no teacher)
            and bool ``(B,)``; None when no row's task has a teacher.
        """
        if not self.teacher_of:
            return None
        index = {name: i for i, name in enumerate(self.task_names)}
        by_snapshot: dict[int, list[int]] = {}
        for name, sid in self.teacher_of.items():
            by_snapshot.setdefault(sid, []).append(index[name])
        has_teacher = torch.zeros_like(obs.task, dtype=torch.bool)
        logp: torch.Tensor | None = None
        for sid, tasks in by_snapshot.items():
            rows = torch.isin(obs.task, torch.tensor(tasks, device=obs.task.device))
            if not rows.any():
                continue
            teacher = self._teacher()
            teacher.load_state_dict(self.snapshots[sid])
            with remember_missions(teacher):  # one snapshot's parameters inside
                logits, _ = teacher.action_logits(obs.index(rows))
            if logp is None:
                logp = torch.zeros(len(obs.task), logits.shape[-1], device=logits.device)
            logp[rows] = torch.log_softmax(logits, dim=-1)
            has_teacher |= rows
        return None if logp is None else (logp, has_teacher)

    def _teacher(self) -> MultiTaskActorCritic:
        if self._teacher_model is None:
            self._teacher_model = copy.deepcopy(self.model).eval()
            for p in self._teacher_model.parameters():
                p.requires_grad_(False)
        return self._teacher_model

    def state_dict(self) -> dict[str, Any]:
        return {
            "snapshots": dict(self.snapshots), "teacher_of": dict(self.teacher_of), "best": dict(self.best),
            "next_id": self._next_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = sorted(set(state["teacher_of"]) - set(self.task_names))
        if unknown:
            raise ValueError(f"the saved teachers are of tasks this run does not know: {', '.join(unknown)}.")
        self.snapshots = dict(state["snapshots"])
        self.teacher_of = dict(state["teacher_of"])
        self.best = dict(state["best"])
        self._next_id = state["next_id"]
