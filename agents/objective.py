"""One minibatch's loss: every task's PPO terms, distillation and the auxiliary heads, combined.

The PPO and distillation terms stay one table a minibatch, a row per task
(:func:`agents.losses.ppo_task_table`), instead of a scalar tensor per task and
term: with 16-24 tasks open, selecting, scaling and summing scalars was a few
hundred tiny operations forward and backward, about 2 ms of a 16 ms minibatch
step at 16 tasks on CPU. The static weighting (the default) weighs the table's
task objectives in one product; the learnt weightings get the named per-task
losses they need. A task's objective is the same sum, in the same order, on
both paths, so a one-task run trains bit for bit as with named terms.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from agents.losses import PPO_COLUMNS, distill_task_sums, ppo_task_table
from agents.weighting import StaticWeighting

if TYPE_CHECKING:
    from agents.buffer import Minibatch
    from agents.model import EvalOutput
    from agents.ppo import MultiTaskPPO


class MinibatchObjective:
    """The loss of one minibatch and its terms, logged with one device sync.

    Attributes:
        loss: the scalar to minimise.
        stats: accuracies of the auxiliary heads (first epoch only).
    """

    def __init__(self, ppo: "MultiTaskPPO", mb: "Minibatch", out: "EvalOutput", targets: dict, measure: bool) -> None:
        cfg, names = ppo.config, ppo.task_names
        self._names = names
        self.table, self.present = ppo_task_table(
            out.logprob, mb.logprobs, mb.advantages, out.entropy, out.value, mb.values, mb.returns, mb.obs.task,
            num_tasks=len(names), clip_coef=cfg.clip_coef, clip_value=cfg.clip_value, advantage_norm=cfg.advantage_norm,
        )
        # Each task's objective, summed in the order the named terms were: policy, value, entropy, distill.
        task_objective = self.table[:, 0] + self.table[:, 1] * cfg.vf_coef + self.table[:, 2] * -cfg.ent_coef
        self.distill, self.taught = None, []
        if mb.teacher is not None:
            self.distill, self.taught = distill_task_sums(out.log_probs, *mb.teacher, mb.obs.task, num_tasks=len(names))
            task_objective = task_objective + self.distill * cfg.distill_coef  # zero where a task has no teacher
        self.aux_terms: dict[str, torch.Tensor] = {}
        aux_objectives: dict[str, torch.Tensor] = {}
        self.stats: dict[str, float] = {}
        from agents.ppo import AUX_LOSSES  # the registry lives beside the update that trains it

        for head in ppo.aux:
            spec = AUX_LOSSES[head]
            result = spec.loss(ppo, mb, out, targets.get(head), measure)
            if result is None:
                continue
            terms, stats = result
            self.aux_terms.update(terms)
            aux_objectives[f"aux/{head}"] = getattr(cfg, spec.coef_field) * sum(terms.values())
            self.stats.update(stats)
        if isinstance(ppo.weighter, StaticWeighting):
            self.loss = ppo.weighter.combine_tasks(task_objective, names, self.present, aux_objectives)
        else:
            objectives = {f"ppo/{names[t]}": task_objective[t] for t in self.present}
            self.loss = ppo.weighter.combine({**objectives, **aux_objectives}, ppo.model.shared_parameters())

    def _named(self) -> tuple[list[str], list[torch.Tensor]]:
        names, parts = [], []
        for t in self.present:
            names += [f"{column}/{self._names[t]}" for column in PPO_COLUMNS]
        parts.append(self.table[self.present].flatten())
        if self.distill is not None:
            names += [f"distill/{self._names[t]}" for t in self.taught]
            parts.append(self.distill[self.taught])
        names += list(self.aux_terms)
        parts += [term.reshape(1) for term in self.aux_terms.values()]
        return names, parts

    def terms(self) -> list[tuple[str, float]]:
        """Every term's value: ``policy/<task>``, ``value/<task>``, ``entropy/<task>``, ``distill/<task>``, aux terms."""
        names, parts = self._named()
        return list(zip(names, torch.cat([p.detach() for p in parts]).tolist()))

    def nonfinite(self) -> list[str]:
        """Names of the terms that are not finite."""
        return [name for name, value in self.terms() if not math.isfinite(value)]

