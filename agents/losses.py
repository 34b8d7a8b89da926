"""Loss functions. Each returns named terms, ``dict[str, Tensor]``; the caller combines.

PPO terms are reported **per task** (the loss weighting strategy sees one loss
per task), but each is its rows' sum over the minibatch size: added up, the
terms of all tasks are one mean over the minibatch, so a task weighs by its
share of the rows (of the slots the curriculum gives it), and advantages are
scaled over the whole minibatch. Per-task means and per-task z-scores (the
objective before) gave a mastered task's handful of rows the weight of a whole
task and blew its near-zero advantages up to unit size; after the curriculum
opened a level, level-1 tasks eroded (README, "Keeping level 1 once level 2
opens").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


ADVANTAGE_NORMS = ("batch", "none")
"""Advantage normalisation per minibatch: z-scores over all its rows, or raw (torch-ac's objective)."""

RETIRED_ADVANTAGE_NORMS = ("task", "task-floor", "task-rollout")
"""Per-task z-scores (per minibatch, with a floor, or over the rollout): removed, they lost on
``bench/level_transfer.py`` (README). A saved config naming one is refused with this reason."""


def normalize_advantages(advantages: torch.Tensor, how: str) -> torch.Tensor:
    """Advantages z-scored over the batch (``batch``: zero mean, unbiased unit std) or raw (``none``)."""
    if how == "none":
        return advantages
    if how != "batch":
        raise ValueError(f"advantage_norm={how!r} is unknown; known: {', '.join(ADVANTAGE_NORMS)}.")
    # Sums as the per-task z-scores did (index_add_ into one group), so that one-task runs
    # train bit for bit as before; torch.mean/std add in another order and move the learning
    # curve of a seed by a rollout or two.
    group = torch.zeros_like(advantages, dtype=torch.long)

    def total(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, dtype=x.dtype, device=x.device).index_add_(0, group, x)

    count = float(advantages.numel())
    centred = advantages - total(advantages) / count
    var = total(centred.pow(2)) / count
    std = (var * count / max(count - 1.0, 1.0)).sqrt()  # unbiased, as torch.std; one row is only centred
    return centred / (std + 1e-8)


def ppo_task_table(
    logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    task: torch.Tensor,
    *,
    num_tasks: int,
    clip_coef: float = 0.2,
    clip_value: bool = True,
    advantage_norm: str = "batch",
) -> tuple[torch.Tensor, list[int]]:
    """The clipped PPO objective (Schulman et al. 2017) as one table, a row per task.

    Args:
        logprob, old_logprob, advantages, entropy, value, old_value, returns,
            task: ``(B,)`` tensors; ``task`` holds task indices.
        num_tasks: rows of the table (every task index).
        clip_coef: ratio clipping range.
        clip_value: clip the value update around the old value too.
        advantage_norm: ``batch`` or ``none`` (see :func:`normalize_advantages`).

    Returns:
        ``(num_tasks, 3)``: per task the clipped surrogate (to minimise), half the
        squared value error and the entropy (to maximise), each the sum over the
        task's rows divided by ``B`` (rows of absent tasks are zero); and the
        indices of the tasks present in the batch.
    """
    advantages = normalize_advantages(advantages, advantage_norm)
    ratio = (logprob - old_logprob).exp()
    policy = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef))
    value_error = (value - returns).pow(2)
    if clip_value:
        clipped = old_value + (value - old_value).clamp(-clip_coef, clip_coef)
        value_error = torch.max(value_error, (clipped - returns).pow(2))
    value_error = 0.5 * value_error
    present = torch.nonzero(torch.bincount(task, minlength=num_tasks)).flatten().tolist()
    stacked = torch.stack([policy, value_error, entropy], dim=1)  # (B, 3)
    sums = torch.zeros(num_tasks, 3, dtype=stacked.dtype, device=stacked.device).index_add_(0, task, stacked)
    return sums / len(task), present


PPO_COLUMNS = ("policy", "value", "entropy")
"""The columns of :func:`ppo_task_table`."""


def distill_task_sums(
    logp: torch.Tensor, teacher_logp: torch.Tensor, has_teacher: torch.Tensor, task: torch.Tensor, *, num_tasks: int
) -> tuple[torch.Tensor, list[int]]:
    """KL(teacher || policy) on the rows whose task has a teacher (:mod:`agents.distill`), per task.

    Args:
        logp, teacher_logp: ``(B, A)`` action log-probabilities of the policy and of the teacher.
        has_teacher: bool ``(B,)``; rows without a teacher contribute nothing.
        task: ``(B,)`` task indices.
        num_tasks: entries of the result (every task index).

    Returns:
        ``(num_tasks,)``: each task's rows' KL summed and divided by ``B``, like
        :func:`ppo_task_table` (zero for tasks without a teacher); and the
        indices of the tasks with a teacher in the batch.
    """
    kl = (teacher_logp.exp() * (teacher_logp - logp)).sum(-1) * has_teacher
    sums = torch.zeros(num_tasks, dtype=kl.dtype, device=kl.device).index_add_(0, task, kl) / len(task)
    return sums, torch.unique(task[has_teacher]).tolist()


def recognition_loss(
    predictions: dict[str, torch.Tensor], view_labels: torch.Tensor, target_cell: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Cross-entropy of the recognition head against the view labels.

    Args:
        predictions: ``object`` ``(B, 11, 7, 7)``, ``color`` ``(B, 6, 7, 7)``
            (maps indexed ``[y, x]``) and ``target`` ``(B, 50)`` logits.
        view_labels: uint8 ``(B, 7, 7, 2)`` indexed ``[x, y]`` (object, colour ids).
        target_cell: int ``(B,)`` in ``[0, 50)``.

    Returns:
        ``recognition/object``, ``recognition/color``, ``recognition/target``.
    """
    labels = view_labels.long().permute(0, 3, 2, 1)  # (B, 2, y, x)
    return {
        "recognition/object": F.cross_entropy(predictions["object"], labels[:, 0]),
        "recognition/color": F.cross_entropy(predictions["color"], labels[:, 1]),
        "recognition/target": F.cross_entropy(predictions["target"], target_cell.long()),
    }


@torch.no_grad()
def recognition_accuracy(
    predictions: dict[str, torch.Tensor], view_labels: torch.Tensor, target_cell: torch.Tensor
) -> dict[str, float]:
    """Per-cell object/colour accuracy and target-cell accuracy."""
    labels = view_labels.long().permute(0, 3, 2, 1)
    return {
        "object": (predictions["object"].argmax(1) == labels[:, 0]).float().mean().item(),
        "color": (predictions["color"].argmax(1) == labels[:, 1]).float().mean().item(),
        "target": (predictions["target"].argmax(1) == target_cell.long()).float().mean().item(),
    }


def reward_class(rewards: torch.Tensor) -> torch.Tensor:
    """Reward classes of UNREAL's reward prediction: 0 zero, 1 positive, 2 negative."""
    return torch.where(rewards > 0, 1, torch.where(rewards < 0, 2, 0))


def reward_loss(logits: torch.Tensor, labels: torch.Tensor, *, focal_gamma: float = 0.0) -> dict[str, torch.Tensor]:
    """Reward-prediction loss: cross-entropy, or focal loss (Lin et al. 2017) if ``focal_gamma > 0``.

    Focal loss down-weights easy, well-classified windows, which helps when
    even a balanced batch is dominated by trivially "zero" states.

    Returns:
        ``reward/prediction``.
    """
    logp = F.log_softmax(logits, dim=-1).gather(1, labels.long().unsqueeze(1)).squeeze(1)
    if focal_gamma > 0:
        loss = -((1 - logp.exp()) ** focal_gamma) * logp
    else:
        loss = -logp
    return {"reward/prediction": loss.mean()}
