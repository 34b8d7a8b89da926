"""Per-task numbers that tell why a multi-task update helps or hurts a task.

Logged with every update (``tasks/<task>/...`` in TensorBoard), cheap enough to
stay on: one pass over the rollout's ``(T, N)`` tensors, no forward pass.

* ``explained_variance``: ``1 - Var(returns - values) / Var(returns)`` over the
  task's rows (1: the value head predicts the returns; 0: no better than their
  mean; negative: worse). Undefined (not logged) for fewer than two rows or
  constant returns.
* ``advantage_std``: the spread of the task's raw GAE advantages before any
  normalisation: how loud its policy gradient would be without it.
* ``rows_per_minibatch``: the task's rows in an average minibatch (its rows
  in the rollout times ``batch_size`` over the rollout's size): a task with a
  handful of rows weighs little in the minibatch's mean (by design: its share
  of the slots).

The policy entropy per task is ``train/loss/entropy/<task>`` (the loss term), and
the share of minibatch steps whose gradient norm was clipped is
``train/clipped_share``, both from :meth:`agents.ppo.MultiTaskPPO.update`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def rollout_diagnostics(
    task: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    advantages: torch.Tensor,
    task_names: Sequence[str],
    *,
    batch_size: int,
) -> dict[str, float]:
    """``tasks/<name>/{rows_per_minibatch, explained_variance, advantage_std}`` for each task in the rollout."""
    task, values, returns, advantages = task.flatten(), values.flatten(), returns.flatten(), advantages.flatten()
    num_tasks = len(task_names)
    counts = torch.bincount(task, minlength=num_tasks)

    def per_task_var(x: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(num_tasks, dtype=x.dtype, device=x.device).index_add_(0, task, x)
        mean = sums / counts.clamp(min=1)
        centred = x - mean[task]
        squares = torch.zeros(num_tasks, dtype=x.dtype, device=x.device).index_add_(0, task, centred * centred)
        return squares / (counts - 1).clamp(min=1)

    var_returns = per_task_var(returns)
    var_error = per_task_var(returns - values)
    adv_std = per_task_var(advantages).sqrt()
    stats: dict[str, float] = {}
    rows = counts.tolist()
    for t, (n, vr, ve, a) in enumerate(zip(rows, var_returns.tolist(), var_error.tolist(), adv_std.tolist())):
        if n == 0:
            continue
        name = task_names[t]
        stats[f"tasks/{name}/rows_per_minibatch"] = n * batch_size / len(task)
        stats[f"tasks/{name}/advantage_std"] = a if n > 1 else 0.0
        if n > 1 and vr > 1e-12:
            stats[f"tasks/{name}/explained_variance"] = 1.0 - ve / vr
    return stats
