"""Saving and loading an agent: weights plus what is needed to rebuild it.

A file holds ``{"format": ..., "model": constructor args, "state_dict": ...}``
and optionally more (the trainer's state). Writes are atomic (temporary file,
fsync, rename, fsync of the folder), so a crash never leaves a half-written
file under the real name; beside each file, ``<file>.sha256`` holds the
SHA-256 of its bytes (the ``sha256sum`` format, so ``sha256sum -c`` checks it
too), and reading verifies it: a file damaged after it was written (a bad
disk, a copy cut short) is refused rather than loaded. Loading uses
``weights_only=True``: no arbitrary objects are unpickled.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.model import MultiTaskActorCritic

FORMAT = "omnigrid-agent-1"
CHECKPOINT_DIR = "checkpoints"
FINAL = "final.pt"
DIGEST_SUFFIX = ".sha256"
TMP_SUFFIX = ".tmp"  # a write in progress; one left behind by a killed process is garbage
_UMASK = os.umask(0)
os.umask(_UMASK)


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files that a killed writer left in ``folder``; returns them."""
    found = [p for p in Path(folder).glob(f".*{TMP_SUFFIX}") if p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def digest_path(path: str | os.PathLike) -> Path:
    """Where the SHA-256 of ``path`` is kept: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def _write_atomically(data: bytes, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would create it (mkstemp makes it private)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder, then its ``.sha256``.

    A crash (or a full disk) at any point leaves the previous file under ``path``
    untouched or the new one complete. Between the two renames, the new file has
    an old digest or none: an old digest fails verification (the file is then
    treated as damaged), a missing one only skips the checksum.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    digest = hashlib.sha256(data).hexdigest()
    digest_path(path).unlink(missing_ok=True)  # never leave a stale digest beside a new file
    _write_atomically(data, path)
    _write_atomically(f"{digest}  {path.name}\n".encode(), digest_path(path))
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a power cut after return keeps them)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(path: str | os.PathLike) -> None:
    """Delete a saved file and its digest."""
    Path(path).unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)


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
    """A checkpoint's contents (``weights_only=True``); a ValueError if it is damaged or not one of ours.

    The file's SHA-256 is checked against ``<path>.sha256`` when that exists,
    then the structure: the format tag, the constructor arguments, the weights.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"{str(path)!r} cannot be read: {err.strerror}.") from None
    expected = _expected_digest(path)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(
            f"{str(path)!r} is damaged: its SHA-256 does not match {digest_path(path).name} "
            f"({len(data):,} bytes; truncated or altered after it was written)."
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        first = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0].rstrip(".")
        raise ValueError(f"{str(path)!r} is not a readable checkpoint ({first}): truncated, damaged or not a torch file.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not an omnigrid checkpoint (format {FORMAT}).")
    model, state = payload.get("model"), payload.get("state_dict")
    if not isinstance(model, dict) or "config" not in model or not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} is damaged: it lacks the agent's architecture or weights.")
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise ValueError(f"{str(path)!r} is damaged: weights {bad[:3]} are not tensors.")
    return payload


def _expected_digest(path: str | os.PathLike) -> str | None:
    """The hex digest recorded beside ``path``; None if there is no record (e.g. a copied file)."""
    try:
        text = digest_path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    head = text.split()[0] if text.split() else ""
    return head.lower() if len(head) == 64 else None


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
