"""The same FastAPI app on Ray Serve: replicas autoscaled between ``--min-replicas`` and ``--max-replicas``.

Each replica loads the model once and answers ``/v1/act``, ``/healthz`` and
``/metrics`` (its own counters) through the very routes and :class:`~serving.app.Guard`
of :func:`serving.app.create_app`; Ray Serve's ``@serve.batch`` takes the
micro-batcher's place, gathering concurrent requests of a replica into one
forward pass (run in a worker thread, so the replica keeps accepting).

    python serve.py runs/<run> --ray --min-replicas 1 --max-replicas 2

starts a local Ray (2 CPUs, no dashboard), Ray Serve's HTTP proxy on
``--host``/``--port``, and blocks until SIGTERM or Ctrl-C, which shut Serve
and Ray down.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading

import numpy as np

from serving import ServeConfig
from serving.runtime import Batch

_CURRENT: dict[str, object] = {}  # this process's replica Service (filled by the deployment's __init__)


class _Lazy:
    """Stands for the replica's ``Service`` (or its metrics) inside the app's Guard, which is built before the replica is."""

    def __init__(self, attr: str | None) -> None:
        self._attr = attr

    def _target(self):
        service = _CURRENT["service"]
        return getattr(service, self._attr) if self._attr else service

    def __getattr__(self, name: str):
        if name.startswith("__") or "service" not in _CURRENT:  # pickling probes, before the replica exists
            raise AttributeError(name)
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value) -> None:
        if name == "_attr":
            object.__setattr__(self, name, value)
        else:
            setattr(self._target(), name, value)


class _RayBatcher:
    """The Service's batcher on a replica: ``submit`` goes through the deployment's ``@serve.batch`` method."""

    def __init__(self, batched) -> None:
        self.batched = batched
        self.arriving = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, batch: Batch):
        return await self.batched(batch)


class _Shell:
    """What create_app needs of a Service at build time; routes and Guard call through to the replica's own.

    At module level so that it travels to the replicas by reference and reads the replicas' ``_CURRENT``.
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.backend = _Lazy("backend")
        self.metrics = _Lazy("metrics")
        self.batcher = _Lazy("batcher")

    @property
    def arriving(self) -> int:
        return _CURRENT["service"].arriving

    @arriving.setter
    def arriving(self, value: int) -> None:
        _CURRENT["service"].arriving = value

    async def act(self, body: bytes):
        return await _CURRENT["service"].act(body)


def build(model: str, config: ServeConfig, *, min_replicas: int, max_replicas: int):
    """The Ray Serve application (a bound deployment) serving ``model``."""
    from fastapi import FastAPI
    from ray import serve

    from serving.app import Guard, Service, create_app

    shell = _Shell(config)
    api: FastAPI = create_app(shell, lifespan=False)
    assert any(m.cls is Guard for m in api.user_middleware)

    @serve.deployment(
        name="omnigrid-policy",
        autoscaling_config={"min_replicas": min_replicas, "max_replicas": max_replicas, "target_ongoing_requests": 32},
        max_ongoing_requests=1024,
        ray_actor_options={"num_cpus": 0.5},
    )
    @serve.ingress(api)
    class Policy:
        def __init__(self, model_path: str, serve_config: ServeConfig) -> None:
            import serving.ray_app as here  # this class travels by value: reach the module's own _CURRENT, not a copy
            from serving import freeze_startup_heap
            from serving.runtime import load_backend

            service = Service(load_backend(model_path), serve_config)
            service.batcher = _RayBatcher(self.forward)
            here._CURRENT["service"] = service
            self.service = service
            freeze_startup_heap()  # see serving.freeze_startup_heap: the collector's pauses were the p99

        @serve.batch(max_batch_size=config.max_batch, batch_wait_timeout_s=config.batch_window_ms / 1e3)
        async def forward(self, batches: list[Batch]) -> list[tuple[np.ndarray, np.ndarray]]:
            batch = Batch.concat(batches)
            self.service.metrics.batch.observe(len(batch))
            logits, values = await asyncio.to_thread(self.service.backend.forward, batch)
            out, start = [], 0
            for b in batches:
                out.append((logits[start:start + len(b)], values[start:start + len(b)]))
                start += len(b)
            return out

    return Policy.bind(model, config)


def serve_on_ray(model: str, config: ServeConfig, *, host: str, port: int, min_replicas: int, max_replicas: int) -> None:
    """Run ``model`` on a local Ray Serve at ``host:port`` until SIGTERM or Ctrl-C."""
    import ray
    from ray import serve

    stop = threading.Event()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, whose own SIGTERM handler aborts the process
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port}, detached=False)
        serve.run(build(model, config, min_replicas=min_replicas, max_replicas=max_replicas), name="omnigrid", route_prefix="/")
        print(f"serve.py: {model} on Ray Serve at http://{host}:{port} - {min_replicas}..{max_replicas} replicas, "
              f"@serve.batch (max {config.max_batch}, wait {config.batch_window_ms:g} ms); /docs, /healthz, /metrics",
              file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
