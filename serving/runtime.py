"""The model behind the server: a forward pass over validated numpy arrays.

Two backends answer the same call, ``forward(batch) -> (logits (B, 7), values (B,))``
with ``batch`` the five observation arrays of :class:`agents.model.ObsBatch`:

- :class:`TorchBackend`: a run folder or checkpoint, rebuilt with
  :mod:`agents.persist`; each forward pass remembers the missions it encodes
  (:func:`agents.conditioning.remember_missions`), so a batch of slots playing
  the same few missions runs the mission encoder once per distinct mission.
- :class:`OnnxBackend`: a ``.onnx`` file written by ``agents.export``, run by
  onnxruntime.

Both are built by :func:`load_backend`, which raises a one-line ValueError for
anything it cannot serve (not a checkpoint, an agent with LSTM memory, pixel
observations), before the server binds its port.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from envs.wrappers import DEFAULT_MISSION_LENGTH, VIEW_SIZE

IMAGE_SHAPE = (VIEW_SIZE, VIEW_SIZE, 3)
FIELDS = ("image", "direction", "mission", "task", "family")


@dataclass(frozen=True)
class Batch:
    """Validated observations, ready for a forward pass (the fields of ``ObsBatch``, as numpy)."""

    image: np.ndarray  # uint8 (B, 7, 7, 3)
    direction: np.ndarray  # int64 (B,)
    mission: np.ndarray  # int64 (B, L)
    task: np.ndarray  # int64 (B,)
    family: np.ndarray  # int64 (B,)

    def __len__(self) -> int:
        return len(self.direction)

    @staticmethod
    def concat(batches: list["Batch"]) -> "Batch":
        if len(batches) == 1:
            return batches[0]
        return Batch(*(np.concatenate([getattr(b, f) for b in batches]) for f in FIELDS))


class Backend(Protocol):
    kind: str
    mission_length: int
    description: str

    def forward(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]: ...


class TorchBackend:
    """A checkpoint's agent on CPU, one intra-op thread (the server's other core does the HTTP work)."""

    kind = "torch"

    def __init__(self, path: str | os.PathLike) -> None:
        import torch

        from agents.persist import agent_from_payload, read_payload, resolve_checkpoint

        checkpoint = resolve_checkpoint(path)
        model = agent_from_payload(read_payload(checkpoint), checkpoint)
        if model.config.memory != "none":
            raise ValueError(
                f"{str(path)!r} holds an agent with memory={model.config.memory}; serve.py answers each observation "
                "on its own, so it serves only memory=none agents (train one with --memory none)."
            )
        shape = tuple(model.space_info["image_shape"])
        if shape != IMAGE_SHAPE:
            raise ValueError(
                f"{str(path)!r} holds an agent of {shape} images (pixels); serve.py takes MiniGrid's symbolic "
                f"{IMAGE_SHAPE} view, so it serves only agents trained on symbolic observations."
            )
        torch.set_num_threads(1)
        self._torch = torch
        self.model = model
        self.mission_length = int(model.space_info["mission_length"])
        self.description = str(checkpoint)

    def forward(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        from agents.conditioning import remember_missions
        from agents.model import ObsBatch

        torch = self._torch
        obs = ObsBatch(*(torch.from_numpy(getattr(batch, f)) for f in FIELDS))
        with torch.inference_mode(), remember_missions(self.model):
            logits, values = self.model.logits_and_value(obs)  # one trunk pass (two cost 1.4x at batch 1)
        return logits.numpy(), values.numpy()


class OnnxBackend:
    """An ONNX export (``agents.export``) on onnxruntime, one thread."""

    kind = "onnx"

    def __init__(self, path: str | os.PathLike) -> None:
        if importlib.util.find_spec("agents.export") is None:
            raise ValueError(f"{str(path)!r}: serving .onnx files needs agents/export.py, which this checkout lacks.")
        from agents.export import load_onnx_session

        try:
            self.session = load_onnx_session(str(path), threads=1)
        except ValueError:
            raise
        except Exception as err:  # onnxruntime's own errors
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{str(path)!r} is not a readable ONNX model: {first}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        other = [name for name in inputs if name not in FIELDS]
        if other or "mission" not in inputs:
            raise ValueError(f"{str(path)!r} takes the inputs {list(inputs)}; serve.py serves memory=none exports "
                             f"fed {list(FIELDS)} (export one with python export.py).")
        self.inputs = [f for f in FIELDS if f in inputs]  # an export may leave out what its agent ignores (task, family)
        length = inputs["mission"].shape[-1]
        self.mission_length = int(length) if isinstance(length, int) else DEFAULT_MISSION_LENGTH
        self.description = str(path)

    def forward(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        logits, values = self.session.run(["logits", "value"], {f: getattr(batch, f) for f in self.inputs})
        return np.asarray(logits), np.asarray(values).reshape(-1)


def load_backend(path: str | os.PathLike) -> Backend:
    """The backend for ``path`` (run folder, checkpoint, or ``.onnx``); a one-line ValueError if it cannot be served."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        if not p.is_file():
            raise ValueError(f"{str(path)!r} does not exist; give a run folder (runs/<name>), a checkpoint or a .onnx file.")
        return OnnxBackend(p)
    return TorchBackend(p)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def choose(logits: np.ndarray, probs: np.ndarray, deterministic: bool, rng: np.random.Generator) -> np.ndarray:
    """Greedy (argmax of the logits, as the local agent) or sampled actions ``(B,)``."""
    if deterministic:
        return logits.argmax(-1)
    u = rng.random((len(probs), 1))
    cdf = probs.cumsum(-1)
    return np.minimum((u > cdf).sum(-1), probs.shape[-1] - 1)
