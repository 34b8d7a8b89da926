"""Serve a trained agent over HTTP: ``POST /v1/act`` answers actions for MiniGrid observations.

    python serve.py runs/<run>                       # FastAPI on uvicorn, http://127.0.0.1:8000
    python serve.py model.onnx --port 9000 --token s3cret
    python serve.py runs/<run> --ray --max-replicas 2   # the same app on Ray Serve, autoscaled

Concurrent requests are micro-batched into one forward pass (--batch-window-ms,
--max-batch); --no-batching runs one per request. /healthz is open, /metrics is
Prometheus text, /docs is the API. With --token (or OMNIGRID_TOKEN) every
other request needs 'Authorization: Bearer <token>'.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

TOKEN_ENV = "OMNIGRID_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    from serving import MIB, ServeConfig

    d = ServeConfig()
    p = argparse.ArgumentParser(prog="serve.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run folder (runs/<name>), checkpoint file, or .onnx export (agents.export)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--token", default=None, help=f"bearer token requests must carry (default: ${TOKEN_ENV}; unset = open)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help=f"largest request body (default {MIB:,} = 1 MiB; more -> 413)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help=f"most observations a request and a forward pass (default {d.max_batch})")
    p.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                   help=f"how long a forward pass waits for requests still arriving (default {d.batch_window_ms:g})")
    p.add_argument("--no-batching", action="store_true", help="one forward pass per request (the baseline)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampled actions (default: fresh entropy)")
    p.add_argument("--ray", action="store_true", help="serve on Ray Serve (local Ray, 2 CPUs) with autoscaled replicas")
    p.add_argument("--min-replicas", type=int, default=1, help="with --ray: fewest replicas (default 1)")
    p.add_argument("--max-replicas", type=int, default=2, help="with --ray: most replicas (default 2)")
    return p


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; SystemExit with one line if it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise SystemExit(f"serve.py: error: --host {host!r} does not resolve ({err.strerror}).") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise SystemExit(f"serve.py: error: port {port} on {host} is in use (another server?); stop it or pick another --port.") from None
        raise SystemExit(f"serve.py: error: cannot bind {host}:{port}: {err.strerror}.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    from serving import ServeConfig

    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is outside 1..65535.")
    if args.ray and not 1 <= args.min_replicas <= args.max_replicas:
        parser.error(f"--min-replicas {args.min_replicas} and --max-replicas {args.max_replicas} need 1 <= min <= max.")
    token = os.environ.get(TOKEN_ENV, "") if args.token is None else args.token
    try:
        config = ServeConfig(max_batch=args.max_batch, batch_window_ms=args.batch_window_ms, batching=not args.no_batching,
                             max_body_bytes=args.max_body_bytes, token=token, seed=args.seed)
    except ValueError as err:
        flag = {"max_batch": "--max-batch", "batch_window_ms": "--batch-window-ms", "max_body_bytes": "--max-body-bytes"}
        message = str(err)
        for field, option in flag.items():
            message = message.replace(f"{field}=", f"{option} ")
        parser.error(message)

    from serving.runtime import load_backend

    try:
        backend = load_backend(args.model)
    except ValueError as err:
        parser.error(str(err))

    if args.ray:
        from serving.ray_app import serve_on_ray

        _bind(args.host, args.port).close()  # a port in use fails here, in one line, before Ray starts

        serve_on_ray(args.model, config, host=args.host, port=args.port, min_replicas=args.min_replicas, max_replicas=args.max_replicas)
        return

    sock = _bind(args.host, args.port)
    import uvicorn

    from serving import freeze_startup_heap
    from serving.app import Service, create_app

    app = create_app(Service(backend, config))
    extra = {}
    try:
        import uvloop  # noqa: F401

        extra["loop"] = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401

        extra["http"] = "httptools"
    except ImportError:
        pass
    server = uvicorn.Server(uvicorn.Config(app, access_log=False, log_level="warning", backlog=2048, timeout_graceful_shutdown=5, **extra))
    host = f"[{args.host}]" if ":" in args.host else args.host
    batching = f"micro-batching (window {config.batch_window_ms:g} ms, max {config.max_batch})" if config.batching else "no batching"
    print(f"serve.py: {backend.description} ({backend.kind}) on http://{host}:{args.port} - {batching}, "
          f"{'token required' if config.token else 'no token'}; /docs, /healthz, /metrics", file=sys.stderr, flush=True)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler found before it:
    # a quiet one for SIGTERM (exit 0), KeyboardInterrupt for Ctrl-C (caught below)
    signal.signal(signal.SIGTERM, lambda *_: None)
    freeze_startup_heap()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    main()
