"""Whole slots per task: the curriculum's shares as numbers of environment slots.

A slot runs one task until its quota changes, so a task's share of frames is
exactly its share of slots, whatever its episode lengths. Used by
:meth:`envs.curriculum.FamilySchedule.slots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def slot_quotas(shares: Mapping[str, float], num_envs: int, *, rollout: int = 0) -> dict[str, int]:
    """Whole slots per task: a task's share of frames is its share of slots.

    Largest remainder (Hamilton) on the shares, ties to the task listed first;
    every task with a positive share gets at least one slot (an open task is
    practised): one whose apportionment comes to zero gets one, and the others
    share the rest by the same rule. With more open tasks than slots, the
    tasks take turns, one slot each: rollout ``r`` runs the ``num_envs`` open
    tasks from position ``r * num_envs`` on, cyclically, so every open task
    gets the same number of turns (all are at their one-slot minimum anyway).

    Args:
        shares: non-negative weight per task, in task order; need not sum to 1.
        num_envs: slots to share out.
        rollout: rollout index; matters only with more open tasks than slots.

    Returns:
        Slots per task running this rollout, in task order, summing to ``num_envs``.
    """
    open_ = [name for name, share in shares.items() if share > 0]
    if num_envs < 1 or not open_ or any(share < 0 for share in shares.values()):
        raise ValueError(f"slot_quotas needs num_envs >= 1 (got {num_envs!r}) and non-negative shares with one "
                         f"positive (got {dict(shares)!r}).")
    if len(open_) > num_envs:
        start = rollout * num_envs % len(open_)
        running = {open_[(start + i) % len(open_)] for i in range(num_envs)}
        return {name: 1 for name in open_ if name in running}
    at_one: set[str] = set()
    while True:  # each pass moves at least one task to its minimum, so at most len(open_) passes
        rest = [name for name in open_ if name not in at_one]
        quotas = _largest_remainder({name: shares[name] for name in rest}, num_envs - len(at_one))
        starved = [name for name in rest if quotas[name] == 0]
        if not starved:
            return {name: quotas.get(name, 1) for name in open_}
        at_one.update(starved)


def _largest_remainder(shares: Mapping[str, float], seats: int) -> dict[str, int]:
    """Hamilton's apportionment of ``seats`` on positive ``shares``; ties to the earlier task."""
    total = sum(shares.values())
    # Rounded so that shares equal on paper (1/6 and 1/6) tie in floating point too.
    ideal = {name: round(seats * share / total, 9) for name, share in shares.items()}
    quotas = {name: int(value) for name, value in ideal.items()}
    order = sorted(ideal, key=lambda name: quotas[name] - ideal[name])  # stable: ties keep task order
    for name in order[: seats - sum(quotas.values())]:
        quotas[name] += 1
    return quotas


def assign_slots(quotas: Mapping[str, int], current: Sequence[str | None]) -> list[str]:
    """A task per slot meeting ``quotas``, moving as few slots as possible off their current task.

    A slot keeps its task while that task's quota has room (earlier slots
    first); the freed slots, in slot order, go to the tasks short of their
    quota, in task order. So only as many slots move as the tasks gain.

    Args:
        quotas: slots per task (as from :func:`slot_quotas`), summing to ``len(current)``.
        current: each slot's task now; ``None`` for a slot without one (the first rollout).

    Returns:
        The task of each slot, ``len(current)`` long.
    """
    if any(count < 0 for count in quotas.values()) or sum(quotas.values()) != len(current):
        raise ValueError(f"quotas={dict(quotas)!r} must be non-negative and sum to the {len(current)} slots.")
    left = dict(quotas)
    tasks: list[str | None] = []
    for task in current:
        keep = task is not None and left.get(task, 0) > 0
        tasks.append(task if keep else None)
        if keep:
            left[task] -= 1
    gaining = iter([name for name, count in left.items() for _ in range(count)])
    return [task if task is not None else next(gaining) for task in tasks]
