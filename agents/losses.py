"""Loss functions. Each returns named terms, ``dict[str, Tensor]``; the caller combines.

PPO terms are computed **per task**: the batch is split by task index, so a
task with a large advantage scale cannot drown the others, and the loss
weighting strategy sees one loss per task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _per_task_mean(values: torch.Tensor, task: torch.Tensor, num_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of ``values`` ``(B,)`` grouped by ``task`` ``(B,)`` -> (means ``(num_tasks,)``, counts)."""
    counts = torch.bincount(task, minlength=num_tasks).to(values.dtype)
    sums = torch.zeros(num_tasks, dtype=values.dtype, device=values.device).index_add_(0, task, values)
    return sums / counts.clamp(min=1), counts


ADVANTAGE_NORMS = ("task", "task-floor", "task-rollout", "batch", "none")
"""Per minibatch: ``task``, ``task-floor``, ``batch``; once over the whole
rollout, per task: ``task-rollout`` (done by :meth:`agents.ppo.MultiTaskPPO.update`
before minibatching, so a task's statistics come from all its rows, not the
few it has in one minibatch); ``none``."""


def normalize_per_task(advantages: torch.Tensor, task: torch.Tensor, num_tasks: int, *, floor: float = 0.0) -> torch.Tensor:
    """Zero-mean, unit-std advantages within each task of the batch.

    Args:
        floor: a task's std is taken as at least ``floor`` times the whole
            batch's std, so that a task whose advantages are all near zero (no
            reward seen) is not blown up into unit-size noise.
    """
    mean, counts = _per_task_mean(advantages, task, num_tasks)
    centred = advantages - mean[task]
    var, _ = _per_task_mean(centred.pow(2), task, num_tasks)
    # Unbiased std, as torch.std; a task with one sample is only centred.
    std = (var * counts / (counts - 1).clamp(min=1)).sqrt()
    if floor > 0 and advantages.numel() > 1:
        std = torch.maximum(std, floor * advantages.std())
    return centred / (std[task] + 1e-8)


def normalize_advantages(advantages: torch.Tensor, task: torch.Tensor, num_tasks: int, how: str) -> torch.Tensor:
    """Advantages normalised per task (``task``, ``task-floor``), over the batch (``batch``), or not (``none``)."""
    if how == "task":
        return normalize_per_task(advantages, task, num_tasks)
    if how == "task-floor":
        return normalize_per_task(advantages, task, num_tasks, floor=0.1)
    if how == "batch":
        # The per-task formulas with every row in one group: with a single task the
        # objective is then bit-for-bit that of ``task`` (torch.mean/std sum in another order).
        return normalize_per_task(advantages, torch.zeros_like(task), 1)
    if how == "none":
        return advantages
    if how == "task-rollout":
        raise ValueError("advantage_norm='task-rollout' is applied over the rollout by MultiTaskPPO.update; minibatches then take 'none'.")
    raise ValueError(f"advantage_norm={how!r} is unknown; known: {', '.join(ADVANTAGE_NORMS)}.")


TASK_MEANS = ("task", "rows")
"""How :func:`ppo_loss` averages a task's rows (PPOConfig.task_mean)."""


def ppo_loss(
    logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    task: torch.Tensor,
    *,
    task_names: Sequence[str],
    clip_coef: float = 0.2,
    clip_value: bool = True,
    advantage_norm: str = "task",
    task_mean: str = "task",
) -> dict[str, torch.Tensor]:
    """The clipped PPO objective (Schulman et al. 2017), per task.

    Args:
        logprob, old_logprob, advantages, entropy, value, old_value, returns,
            task: ``(B,)`` tensors; ``task`` holds task indices.
        task_names: name of every task index (registry order).
        clip_coef: ratio clipping range.
        clip_value: clip the value update around the old value too.
        advantage_norm: how advantages are normalised (see :func:`normalize_advantages`).
        task_mean: ``task``: each term is the mean over the task's rows; ``rows``:
            the sum over the task's rows divided by the batch size, so the terms of
            all tasks add up to one mean over the batch.

    Returns:
        For each task present in the batch: ``policy/<task>`` (the clipped
        surrogate, to minimise), ``value/<task>`` (squared error) and
        ``entropy/<task>`` (to maximise).
    """
    num_tasks = len(task_names)
    advantages = normalize_advantages(advantages, task, num_tasks, advantage_norm)
    ratio = (logprob - old_logprob).exp()
    policy = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef))
    value_error = (value - returns).pow(2)
    if clip_value:
        clipped = old_value + (value - old_value).clamp(-clip_coef, clip_coef)
        value_error = torch.max(value_error, (clipped - returns).pow(2))
    value_error = 0.5 * value_error
    terms: dict[str, torch.Tensor] = {}
    counts = torch.bincount(task, minlength=num_tasks)
    present = torch.nonzero(counts).flatten().tolist()
    stacked = torch.stack([policy, value_error, entropy], dim=1)  # (B, 3)
    sums = torch.zeros(num_tasks, 3, dtype=stacked.dtype, device=stacked.device).index_add_(0, task, stacked)
    if task_mean == "rows":
        means = sums / len(task)
    else:
        means = sums / counts.clamp(min=1).unsqueeze(1).to(stacked.dtype)
    for t in present:
        name = task_names[t]
        terms[f"policy/{name}"] = means[t, 0]
        terms[f"value/{name}"] = means[t, 1]
        terms[f"entropy/{name}"] = means[t, 2]
    return terms


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
