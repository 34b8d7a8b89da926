"""Saving and loading an agent: weights plus what is needed to rebuild it.

A file holds ``{"format": ..., "model": constructor args, "state_dict": ...}``
and optionally more (the trainer's state). Writes are atomic (temporary file,
fsync, rename), so a crash never leaves a half-written file under the real
name. Loading uses ``weights_only=True``: no arbitrary objects are unpickled.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.model import MultiTaskActorCritic

FORMAT = "omnigrid-agent-1"
CHECKPOINT_DIR = "checkpoints"
FINAL = "final.pt"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def agent_payload(model: MultiTaskActorCritic, **extra: Any) -> dict[str, Any]:
    return {"format": FORMAT, "model": model.constructor_args(), "state_dict": model.state_dict(), **extra}


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """``final.pt`` if the run finished, else its newest periodic checkpoint, else None."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    final = folder / FINAL
    if final.is_file():
        return final
    periodic = sorted(folder.glob("ckpt-*.pt"))  # names hold zero-padded frame counts
    return periodic[-1] if periodic else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's final (else newest) checkpoint."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise ValueError(f"{str(path)!r} is not a run folder with a checkpoint: {path / CHECKPOINT_DIR} holds none.")
        return found
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist; give a run folder (runs/<name>) or a checkpoint file.")
    return path


def read_payload(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's contents (``weights_only=True``); a ValueError if it is not one of ours."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"{str(path)!r} is not a readable checkpoint: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not an omnigrid checkpoint (format {FORMAT}).")
    return payload


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> MultiTaskActorCritic:
    """The agent saved in a run folder or checkpoint file, rebuilt and on ``device``.

    The architecture comes from the file; nothing needs repeating.
    """
    path = resolve_checkpoint(path)
    return agent_from_payload(read_payload(path, device=device), path, device=device)


def agent_from_payload(
    payload: dict[str, Any], path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> MultiTaskActorCritic:
    """The agent in an already-read checkpoint ``payload`` (``path`` names it in errors)."""
    try:
        model = MultiTaskActorCritic.from_constructor_args(payload["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} describes an architecture this version cannot build: {err}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ValueError(
            f"{str(path)!r}: the weights do not fit the architecture the file declares "
            f"({payload['model']['config']}): {first}"
        ) from None
    return model.to(device).eval()
