"""Checkpoints of a run: everything to resume it and to rebuild the agent.

``runs/<run>/checkpoints/ckpt-<frames>.pt`` every ``checkpoint_every`` updates
(the last ``keep_checkpoints`` kept) and ``final.pt`` at the end. Each holds the
agent (architecture + weights, readable by :func:`agents.load`), the PPO state
(optimizer, loss weighter, reward store, shuffling generator), the curriculum,
recent episode statistics, counters, RNG states, the episodes in flight (see
:meth:`envs.MultiTaskVectorEnv.get_state`: a resumed run replays them), the
vocabulary and the resolved config. Files are written atomically with a
SHA-256 beside them and read with ``weights_only=True``: only tensors and plain
containers, no arbitrary pickles.

Resuming (:func:`resumable_checkpoint`) takes the newest checkpoint that reads
back whole; a damaged newer one is skipped with a warning naming it and the
frames that costs, never silently, and a run whose checkpoints are all damaged
is an error, not a fresh start.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.persist import CHECKPOINT_DIR, FINAL, agent_payload, atomic_save, read_payload, remove
from agents.persist import latest_checkpoint as latest_checkpoint  # the rule lives with agents.load
from envs.wrappers import VOCAB

_NAME = re.compile(r"ckpt-(\d+)\.pt$")
# What a checkpoint must hold to resume a run (beyond the agent, checked by read_payload).
TRAINER_KEYS = ("config", "ppo", "frames", "updates", "curriculum", "stats", "rng")


class RunStopped(RuntimeError):
    """A run stopped on a fault it cannot train through; its last good state was saved first."""


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Periodic checkpoints of a run, oldest first."""
    found = [(int(m.group(1)), p) for p in checkpoint_dir(run_dir).glob("ckpt-*.pt") if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def save(run_dir: str | Path, state: dict[str, Any], model, *, final: bool = False, keep: int = 3) -> Path:
    """Write one checkpoint atomically; prune periodic ones beyond the newest ``keep``."""
    name = FINAL if final else f"ckpt-{state['frames']:012d}.pt"
    path = checkpoint_dir(run_dir) / name
    if "rng" not in state:  # the trainer brings its own snapshot, taken at the update's end
        state = {**state, "rng": rng_state()}
    atomic_save(agent_payload(model, vocab=list(VOCAB), **state), path)
    if not final:
        for old in list_checkpoints(run_dir)[:-keep]:
            remove(old)
    return path


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint to resume from; a ValueError if it is not one of ours."""
    payload = read_payload(path)
    missing = [key for key in TRAINER_KEYS if key not in payload]
    if missing:
        raise ValueError(f"{str(path)!r} holds an agent but not a run's state ({', '.join(missing)} missing); it cannot be resumed.")
    if "vocab" in payload and tuple(payload["vocab"]) != tuple(VOCAB[: len(payload["vocab"])]):
        raise ValueError(f"{str(path)!r} was saved with a different mission vocabulary; it cannot be resumed here.")
    return payload


def resumable_checkpoint(run_dir: str | Path, *, warn=None) -> Path | None:
    """The newest checkpoint of a run that reads back whole; None if the run has none yet.

    ``final.pt`` first, then periodic ones newest first. Each damaged one that is
    passed over is reported through ``warn`` (default: a line on stderr). If
    every checkpoint is damaged, a ValueError lists them: resuming must not
    quietly become a fresh start.
    """
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    folder = checkpoint_dir(run_dir)
    candidates = ([folder / FINAL] if (folder / FINAL).is_file() else []) + list_checkpoints(run_dir)[::-1]
    problems = []
    for path in candidates:
        try:
            payload = load(path)
        except ValueError as err:
            problems.append(str(err))
            warn(f"{err} Trying the previous checkpoint.")
            continue
        if problems:
            warn(f"resuming from {path} ({payload['frames']:,} frames) instead.")
        return path
    if problems:
        raise ValueError(f"every checkpoint of {str(run_dir)!r} is damaged; nothing to resume ({problems[0]}).")
    return None
