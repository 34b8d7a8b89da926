"""The policy server under load: actions/s and latency, micro-batched against one forward pass per request.

Starts ``serve.py`` as a real process on a free loopback port, once with its
micro-batching and once with ``--no-batching``, for each runtime asked for
(``torch``: the run folder; ``onnx``: the same agent exported by ``export.py``
into a temporary folder first), and drives each with an asyncio HTTP client
holding 1, 16 and 64 connections open for a fixed time, one observation per
request (``deterministic: true``), so actions/s = requests/s. The servers take
turns round by round (batched, unbatched, batched, ...), so the machine's noise
hits both alike; figures are medians over rounds. Every answer is checked
against the local torch agent's greedy action for the same observation (the
observations are recorded from real episodes of tasks of both families with
random actions): a wrong or missing answer is counted, never dropped.

The client runs on the same machine as the server (2 cores here): what it
costs is part of every figure, as it would be for a client on the same host.
``--client aiohttp`` (default) costs about 0.15 ms of CPU a request here;
``--client httpx`` (pure-Python HTTP parsing) about 1.3 ms, which at 64
connections leaves the server idle half the time: it measures the client.
The table's ``srv ms`` column is the server process's CPU time per request
(from /proc), the part a faster client cannot change.

Run:
    python bench/serve_load.py                                  # trains a tiny agent first (about 15 s)
    python bench/serve_load.py --run runs/<run> --seconds 8 --rounds 3
    python bench/serve_load.py --runtimes onnx --connections 64 --client httpx

Targets (issue: deploy a trained agent): >= 1,500 actions/s at 64 connections
with p99 <= 50 ms; micro-batching >= 3x the requests/s of one forward pass
per request at 64 connections; one client p50 <= 3 ms; no request lost or
answered wrongly.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

TASKS = ("Empty-5x5", "DoorKey-5x5", "LavaGapS5", "GoToDoor-5x5", "Fetch-5x5-N2", "ColorGoTo-5x5-N2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_run(folder: Path) -> Path:
    """A real trained checkpoint, quickly: a few updates of the default agent on the bench's tasks."""
    command = [sys.executable, str(ROOT / "train.py"), "--tasks", ",".join(TASKS), "--curriculum", "none", "--frames", "8192",
               "--runs-dir", str(folder), "--run-name", "serve-load", "--threads", "1", "--video-every", "0"]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder / "serve-load"


def record(run: str, count: int, seed: int) -> tuple[list[dict], np.ndarray]:
    """``count`` observations from random-action episodes of :data:`TASKS`, and the local agent's greedy actions."""
    import torch

    from agents.model import ObsBatch
    from agents.persist import agent_from_payload, read_payload, resolve_checkpoint
    from envs.tasks import make

    path = resolve_checkpoint(run)
    model = agent_from_payload(read_payload(path), path)
    rng = np.random.default_rng(seed)
    bodies, arrays = [], []
    per_task = -(-count // len(TASKS))
    for t, task in enumerate(TASKS):
        env = make(task, obs="symbolic", mission_length=model.space_info["mission_length"])
        obs, _ = env.reset(seed=seed + t)
        for _ in range(per_task):
            bodies.append({"image": obs["image"].tolist(), "direction": int(obs["direction"]),
                           "mission": env.unwrapped.mission, "task": task})
            arrays.append(obs)
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(7)))
            if terminated or truncated:
                obs, _ = env.reset()
        env.close()
    batch = {key: np.stack([o[key] for o in arrays]) for key in arrays[0]}
    with torch.no_grad():
        logits, _ = model.action_logits(ObsBatch.from_numpy(batch, "cpu"))
    return bodies[:count], logits.argmax(-1).numpy()[:count]


class Server:
    """``serve.py`` in a process of its own on a free loopback port."""

    def __init__(self, model: str, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, str(ROOT / "serve.py"), model, "--port", str(self.port), *extra]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"serve.py exited with {self.process.returncode}: {self.process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"serve.py did not answer /healthz within {timeout:.0f} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Aiohttp:
    """One aiohttp session (one connection) per simulated caller."""

    def __init__(self, url: str) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=1),
                                             timeout=aiohttp.ClientTimeout(total=30))
        self.errors = (aiohttp.ClientError, asyncio.TimeoutError)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        async with self.session.post("/v1/act", data=body, headers=JSON) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        await self.session.close()


class Httpx:
    """One httpx client (one connection) per simulated caller: a single shared pool serialises on its own
    bookkeeping (about 135 req/s at 64 connections here), measuring the client instead of the server."""

    def __init__(self, url: str) -> None:
        import httpx

        self.client = httpx.AsyncClient(base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=1))
        self.errors = (httpx.HTTPError,)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        response = await self.client.post("/v1/act", content=body, headers=JSON)
        return response.status_code, response.content

    async def close(self) -> None:
        await self.client.aclose()


JSON = {"content-type": "application/json"}
CLIENTS = {"aiohttp": Aiohttp, "httpx": Httpx}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc); nan elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


async def load(url: str, bodies: list[bytes], expected: list[int], connections: int, seconds: float, client: str = "aiohttp",
               pid: int | None = None) -> dict:
    """``connections`` callers posting one observation each, back to back, for ``seconds``."""
    latencies: list[float] = []
    errors = wrong = 0
    callers = [CLIENTS[client](url) for _ in range(connections)]
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal errors, wrong
        caller, i = callers[k], k
        while time.perf_counter() < stop:
            j = i % len(bodies)
            i += connections
            start = time.perf_counter()
            try:
                status, data = await caller.post(bodies[j])
            except caller.errors:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors += 1
            elif json.loads(data)["actions"] != [expected[j]]:
                wrong += 1

    cpu_before = cpu_seconds(pid) if pid else float("nan")
    try:
        began = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(connections)))
        elapsed = time.perf_counter() - began
    finally:
        for caller in callers:
            await caller.close()
    server_cpu = (cpu_seconds(pid) if pid else float("nan")) - cpu_before
    ms = np.asarray(latencies) * 1e3 if latencies else np.asarray([np.nan])
    return {"rps": len(latencies) / elapsed, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "server_ms": server_cpu / max(len(latencies), 1) * 1e3, "requests": len(latencies), "errors": errors, "wrong": wrong}


def export_onnx(run: str, folder: Path) -> str:
    out = folder / "model.onnx"
    subprocess.run([sys.executable, str(ROOT / "export.py"), run, "--format", "onnx", "--out", str(out)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return str(out)


def summary(results: dict, connections: list[int], runtimes: list[str]) -> None:
    print(f"\n{'runtime':<8}{'server':<10}{'conns':>6}{'actions/s (median)':>20}{'min':>8}{'max':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'srv ms':>8}{'requests':>10}{'errors':>8}{'wrong':>7}")
    for (runtime, name, conns), outs in results.items():
        rps = [o["rps"] for o in outs]
        print(f"{runtime:<8}{name:<10}{conns:>6}{statistics.median(rps):>20,.0f}{min(rps):>8,.0f}{max(rps):>8,.0f}"
              f"{statistics.median(o['p50'] for o in outs):>8.1f}{statistics.median(o['p99'] for o in outs):>8.1f}"
              f"{statistics.median(o['server_ms'] for o in outs):>8.2f}"
              f"{sum(o['requests'] for o in outs):>10,}{sum(o['errors'] for o in outs):>8}{sum(o['wrong'] for o in outs):>7}")
    top, one = max(connections), min(connections)
    for runtime in runtimes:
        rps = {name: statistics.median(o["rps"] for o in results[(runtime, name, top)]) for name in ("batched", "unbatched")}
        p99 = statistics.median(o["p99"] for o in results[(runtime, "batched", top)])
        p50 = statistics.median(o["p50"] for o in results[(runtime, "batched", one)])
        print(f"{runtime}: micro-batching at {top} connections: {rps['batched'] / rps['unbatched']:.2f}x "
              f"the requests/s of one forward pass per request; batched {rps['batched']:,.0f} actions/s at "
              f"{top} connections, p99 {p99:.1f} ms; {one} connection{'s' if one > 1 else ''} p50 {p50:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="", help="run folder or checkpoint to serve (default: train a tiny one first)")
    parser.add_argument("--runtimes", nargs="+", choices=("torch", "onnx"), default=["torch", "onnx"],
                        help="torch: serve the run folder; onnx: export it with export.py and serve the .onnx")
    parser.add_argument("--client", choices=tuple(CLIENTS), default="aiohttp", help="the load generator's HTTP client")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="load per round and connection count")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--observations", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.connections) < 1 or args.seconds <= 0 or args.rounds < 1 or args.observations < 1:
        parser.error("--connections, --seconds, --rounds and --observations must be positive.")

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or str(tiny_run(Path(tmp)))
        observations, greedy = record(run, args.observations, args.seed)
        bodies = [json.dumps({"observations": [o], "deterministic": True}, separators=(",", ":")).encode() for o in observations]
        expected = [int(a) for a in greedy]
        models = {runtime: run if runtime == "torch" else export_onnx(run, Path(tmp)) for runtime in args.runtimes}
        # The client's own collector pauses (torch and the agent are in this process) would be counted as latency.
        gc.collect()
        gc.freeze()
        results: dict[tuple[str, str, int], list[dict]] = {}
        for runtime, model in models.items():
            sides = {"batched": Server(model, []), "unbatched": Server(model, ["--no-batching"])}
            try:
                for server in sides.values():
                    server.wait()
                for r in range(args.rounds):
                    for connections in args.connections:
                        for name, server in sides.items():
                            asyncio.run(load(server.url, bodies[:8], expected[:8], connections, 0.5, args.client))  # warm
                            out = asyncio.run(load(server.url, bodies, expected, connections, args.seconds, args.client,
                                                   server.process.pid))
                            results.setdefault((runtime, name, connections), []).append(out)
                            print(f"  {runtime} round {r + 1} {name:<9} {connections:>3} connections: {out['rps']:>7,.0f} "
                                  f"actions/s, p50 {out['p50']:.1f} ms, p99 {out['p99']:.1f} ms, server {out['server_ms']:.2f} "
                                  f"ms CPU a request, errors {out['errors']}, wrong {out['wrong']}", flush=True)
            finally:
                for server in sides.values():
                    server.stop()
    print(f"\nclient: {args.client}, one observation a request, {args.seconds:g} s a round, {args.rounds} round(s)")
    summary(results, args.connections, args.runtimes)


if __name__ == "__main__":
    main()
