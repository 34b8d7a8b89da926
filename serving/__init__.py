"""Serving a trained agent over HTTP: ``serve.py`` (FastAPI on uvicorn, or on Ray Serve).

- :mod:`serving.runtime`: the model (torch checkpoint or ONNX) as ``forward(batch) -> (logits, values)``.
- :mod:`serving.app`: request parsing and validation (numpy), security, metrics, the FastAPI app.
- :mod:`serving.batcher`: concurrent requests micro-batched into one forward pass.
- :mod:`serving.ray_app`: the same app as a Ray Serve deployment with autoscaling.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class ServeConfig:
    """How the server answers; ``serve.py``'s options map onto these fields."""

    max_batch: int = 256
    """Most observations in one forward pass, and in one request (more -> 413)."""
    batch_window_ms: float = 2.0
    """How long a forward pass waits for more requests while others are still arriving."""
    batching: bool = True
    """Micro-batch concurrent requests; False = one forward pass per request."""
    max_body_bytes: int = MIB
    """Largest request body accepted (more -> 413, counted as the bytes arrive)."""
    token: str = ""
    """Bearer token every request but /healthz and /docs must carry; empty = open."""
    seed: int | None = None
    """Seed of the sampled (deterministic: false) actions; None = fresh entropy."""

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch={self.max_batch} must be at least 1.")
        if not self.batch_window_ms >= 0:
            raise ValueError(f"batch_window_ms={self.batch_window_ms} must be >= 0 (0 = never wait for more).")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes={self.max_body_bytes} must be at least 1024.")


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (torch, the model, FastAPI) out of the garbage collector's sight.

    Requests allocate many short-lived objects (the JSON image lists), so the
    collector's oldest generation runs every few seconds under load, and each
    pass walked the whole start-up heap: 50-100 ms pauses that were the p99
    latency at 64 connections (``bench/serve_load.py``: p99 120-130 ms without,
    28-38 ms with, and 20 % more requests/s). Nothing frozen is ever freed,
    which suits a server's start-up objects: they live as long as it does.
    """
    gc.collect()
    gc.freeze()
