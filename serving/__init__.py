"""Serving a trained agent over HTTP: ``serve.py`` (FastAPI on uvicorn, or on Ray Serve).

- :mod:`serving.runtime`: the model (torch checkpoint or ONNX) as ``forward(batch) -> (logits, values)``.
- :mod:`serving.app`: request parsing and validation (numpy), security, metrics, the FastAPI app.
- :mod:`serving.batcher`: concurrent requests micro-batched into one forward pass.
- :mod:`serving.ray_app`: the same app as a Ray Serve deployment with autoscaling.
"""

from __future__ import annotations

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
