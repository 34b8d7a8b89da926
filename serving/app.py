"""The HTTP API: ``POST /v1/act``, ``GET /healthz``, ``GET /metrics``, FastAPI's ``/docs``.

Requests are parsed and validated by :mod:`serving.parsing` (by hand, with
numpy: the request path must stay cheap); errors answer 422 with the field
they concern (``observations[3].mission``) in ``field`` and ``detail``.

:class:`Guard` is a pure ASGI middleware in front of everything: the bearer
token (401, compared with :func:`hmac.compare_digest`), then the body size
(413), counted over the bytes as they arrive, so a client that sends no
Content-Length (chunked) cannot make the server buffer more than the limit.
It also times every request for ``/metrics``.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest

from serving import ServeConfig
from serving.batcher import MicroBatcher, Unbatched
from serving.parsing import OBS_KEYS, Parser, RequestError, dump_json
from serving.runtime import Backend, choose, softmax

OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (several apps may share a process)."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created samples only double the text
        self.registry = CollectorRegistry()
        self.requests = Counter("omnigrid_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry)
        self.errors = Counter("omnigrid_errors", "refused or failed /v1/act requests by reason", ["reason"], registry=self.registry)
        self.latency = Histogram("omnigrid_request_latency_seconds", "time from a request's start to its answer", registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
        self.batch = Histogram("omnigrid_batch_size", "observations per forward pass", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.observations = Counter("omnigrid_observations", "observations answered", registry=self.registry)
        self._children: dict[tuple[str, int], Any] = {}

    def count(self, path: str, status: int) -> None:
        key = (path, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(path, str(status))
        child.inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


async def _answer(send, status: int, body: bytes, content_type: bytes = b"application/json", headers=()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Pure ASGI middleware: token (401), body size (413, as the bytes arrive), metrics; then the app with the body read."""

    def __init__(self, app, *, token: str, max_body_bytes: int, metrics: Metrics, state) -> None:
        self.app = app
        self.token = f"Bearer {token}".encode() if token else b""
        self.max_body = max_body_bytes
        self.metrics = metrics
        self.state = state  # has .arriving (the batcher's count of requests on their way)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        start = time.perf_counter()
        status = [500]

        async def send_counted(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        act = path == "/v1/act"
        if act:
            self.state.arriving += 1
        try:
            await self._guarded(scope, receive, send_counted, path)
        finally:
            if act:
                self.state.arriving -= 1
            self.metrics.count(path if path in ("/v1/act", "/healthz", "/metrics") else "other", status[0])
            if act:
                self.metrics.latency.observe(time.perf_counter() - start)
                if status[0] != 200:
                    self.metrics.errors.labels(str(status[0])).inc()

    async def _guarded(self, scope, receive, send, path: str) -> None:
        if self.token and path not in OPEN_PATHS:
            given = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = value
                    break
            if not hmac.compare_digest(given, self.token):
                detail = "missing Authorization header" if not given else "wrong bearer token"
                body = dump_json({"detail": f"{detail}: send 'Authorization: Bearer <token>' (serve.py --token / OMNIGRID_TOKEN).",
                               "field": "Authorization"})
                return await _answer(send, 401, body, headers=[(b"www-authenticate", b"Bearer")])
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                return await self._too_large(send, int(value))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left mid-body: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await self._too_large(send, size)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send, size: int) -> None:
        body = dump_json({"detail": f"body: {'at least ' if size <= self.max_body else ''}{size:,} bytes is over this server's "
                                 f"{self.max_body:,}-byte limit (--max-body-bytes); send fewer observations a request.",
                       "field": "body"})
        await _answer(send, 413, body, headers=[(b"connection", b"close")])


class Service:
    """The server's state: backend, parser, batcher, metrics, sampler. One per process (or Ray replica)."""

    def __init__(self, backend: Backend, config: ServeConfig) -> None:
        self.backend = backend
        self.config = config
        self.parser = Parser(mission_length=backend.mission_length, max_batch=config.max_batch)
        self.metrics = Metrics()
        self.rng = np.random.default_rng(config.seed)
        observe = self.metrics.batch.observe
        if config.batching:
            self.batcher = MicroBatcher(backend.forward, window=config.batch_window_ms / 1e3, max_batch=config.max_batch, on_batch=observe)
        else:
            self.batcher = Unbatched(backend.forward, on_batch=observe)

    @property
    def arriving(self) -> int:
        return self.batcher.arriving

    @arriving.setter
    def arriving(self, value: int) -> None:
        self.batcher.arriving = value

    def answer(self, logits: np.ndarray, values: np.ndarray, deterministic: bool) -> bytes:
        probs = softmax(logits)
        actions = choose(logits, probs, deterministic, self.rng)
        self.metrics.observations.inc(len(actions))
        return dump_json({"actions": actions.tolist(), "probs": probs.tolist(), "values": values.astype(np.float64).tolist()})

    async def act(self, body: bytes) -> tuple[int, bytes]:
        """Status and JSON body for one ``/v1/act`` request."""
        self.arriving -= 1  # parsed now: no more a request on its way (Guard raised it)
        try:
            try:
                batch, deterministic = self.parser.parse(body)
            except RequestError as err:
                return err.status, err.body()
            logits, values = await self.batcher.submit(batch)
            return 200, self.answer(logits, values, deterministic)
        finally:
            self.arriving += 1  # Guard lowers it again


ACT_SCHEMA = {
    "type": "object",
    "required": ["observations"],
    "properties": {
        "observations": {
            "type": "array", "minItems": 1, "description": "1 .. --max-batch observations, answered in order",
            "items": {
                "type": "object", "required": list(OBS_KEYS),
                "properties": {
                    "image": {"type": "array", "description": "MiniGrid's obs['image']: 7x7x3 nested integers (object, colour, state)",
                              "items": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}},
                    "direction": {"type": "integer", "minimum": 0, "maximum": 3},
                    "mission": {"type": "string", "example": "get to the green goal square"},
                    "task": {"type": "string", "example": "Empty-5x5", "description": "a registered task (train.py --list-tasks)"},
                },
            },
        },
        "deterministic": {"type": "boolean", "default": False, "description": "true: argmax; false: sampled"},
    },
}
ACT_RESPONSES = {
    200: {"description": "actions, probabilities (7 a row) and values, in request order",
          "content": {"application/json": {"example": {"actions": [2], "probs": [[0.1, 0.1, 0.4, 0.1, 0.1, 0.1, 0.1]], "values": [0.5]}}}},
    401: {"description": "missing or wrong bearer token"},
    413: {"description": "body over --max-body-bytes, or more observations than --max-batch"},
    422: {"description": "a malformed request; `field` names the culprit, e.g. observations[0].mission"},
}


def create_app(service: Service, *, lifespan: bool = True):
    """The FastAPI app over ``service`` (wrapped in :class:`Guard`); ``lifespan=False`` when a host (Ray) runs start/stop."""
    @contextlib.asynccontextmanager
    async def run(_app):
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    app = FastAPI(title="omnigrid policy server", version="1",
                  description="A trained omnigrid agent's actions for MiniGrid observations.",
                  lifespan=run if lifespan else None)

    @app.post("/v1/act", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": ACT_SCHEMA}}}},
              responses=ACT_RESPONSES, response_class=Response)
    async def act(request: Request) -> Response:
        status, body = await service.act(await request.body())
        return Response(body, status_code=status, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "model": service.backend.kind, "mission_length": service.backend.mission_length,
                "max_batch": service.config.max_batch, "batching": service.config.batching}

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Guard, token=service.config.token, max_body_bytes=service.config.max_body_bytes,
                       metrics=service.metrics, state=service)
    return app
