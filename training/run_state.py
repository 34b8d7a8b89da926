"""A training run's state between two updates: what a checkpoint holds, and putting it back.

:func:`capture` is called after every update (and at the start), so that a
checkpoint written on Ctrl-C in the middle of a rollout still describes a
consistent point: the last update's end, from which a resumed run repeats
exactly what the uninterrupted one did (Ctrl-C during an update finds the
weights and the optimizer half-way, hence their copies too: a few MB, once per
update). Kept apart from :mod:`training.loop`, whose trainer calls these.
"""

from __future__ import annotations

import copy
import sys
from typing import TYPE_CHECKING

from training import checkpoint
from training.distributed import World, all_gather

if TYPE_CHECKING:
    from training.loop import Trainer

STAT_WINDOWS = ("success", "returns", "lengths")


def capture(trainer: "Trainer") -> dict:
    """The trainer's state now: model, PPO (optimizer, teachers), counters, curriculum, statistics, every rank's slots."""
    stats = trainer.stats
    boundary = {
        "state_dict": {key: value.detach().clone() for key, value in trainer.model.state_dict().items()},
        "ppo": copy.deepcopy(trainer.ppo.state_dict()),
        "frames": trainer.frames,
        "updates": trainer.updates,
        "curriculum": trainer.curriculum.state_dict(),
        "stats": {key: {k: list(v) for k, v in getattr(stats, key).items()} for key in STAT_WINDOWS}
        | {"episodes": dict(stats.episodes)},
    }
    local = {
        "env": trainer.env.get_state(),
        "in_flight": trainer.collector.state_dict(),
        "rng": checkpoint.rng_state(),
    }
    # Rank 0's slots at the top level (what a single process resumes), the other ranks' beside.
    ranks = all_gather(local, trainer.world)
    boundary.update(ranks[0])
    if trainer.world.distributed:
        boundary["ranks"] = ranks[1:]
    return boundary


def local_part(payload: dict, world: World) -> dict | None:
    """This rank's slots, episodes in flight and RNGs in a checkpoint; None to start them afresh."""
    if "env" not in payload:
        return None
    if world.rank == 0:
        return payload
    ranks = payload.get("ranks", [])
    if len(ranks) != world.world_size - 1:
        if world.rank == 1:
            print(
                f"warning: the checkpoint holds the environments of {len(ranks) + 1} ranks, this job has "
                f"{world.world_size}; ranks 1 and up start new episodes.",
                file=sys.stderr,
            )
        return None
    return ranks[world.rank - 1]


def restore(trainer: "Trainer", payload: dict) -> None:
    """Model, PPO, curriculum, statistics and counters; the envs and RNGs follow at the end of the trainer's ``__init__``."""
    trainer.model.load_state_dict(payload["state_dict"])
    trainer.ppo.load_state_dict(payload["ppo"])
    trainer.curriculum.load_state_dict(payload["curriculum"])
    for key in STAT_WINDOWS:
        for name, values in payload["stats"][key].items():
            getattr(trainer.stats, key)[name].extend(values)
    trainer.stats.episodes.update(payload["stats"]["episodes"])
    trainer.frames, trainer.updates = payload["frames"], payload["updates"]
    if "env" not in payload:  # a checkpoint without the episodes in flight
        checkpoint.set_rng_state(payload["rng"])
