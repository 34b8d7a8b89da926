"""The policy server under load: requests/s and latency, micro-batched against one forward pass per request.

Starts ``serve.py`` as a real process on a free loopback port, once with its
micro-batching and once with ``--no-batching``, and drives each with an
asyncio HTTP client (httpx) holding 1, 16 and 64 connections open for a fixed
time, one observation per request (``deterministic: true``). The two servers
take turns round by round (batched, unbatched, batched, ...), so the machine's
noise hits both alike; figures are medians over rounds. Every answer is
checked against the local agent's greedy action for the same observation (the
observations are recorded from real episodes of tasks of both families with
random actions): a wrong or missing answer is counted, never dropped.

The client runs on the same machine as the server (2 cores here): what it
costs is part of every figure, as it would be for a client on the same host.

Run:
    python bench/serve_load.py                                  # trains a tiny agent first (about 15 s)
    python bench/serve_load.py --run runs/<run> --seconds 10 --rounds 3
    python bench/serve_load.py --model model.onnx --connections 64

Targets (issue: deploy a trained agent): >= 1,500 actions/s at 64 connections
with p99 <= 50 ms; micro-batching >= 3x the requests/s of one forward pass
per request at 64 connections; one client p50 <= 3 ms; no request lost or
answered wrongly.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def load(url: str, bodies: list[dict], expected: np.ndarray, connections: int, seconds: float) -> dict:
    """``connections`` clients posting one observation each, back to back, for ``seconds``."""
    import httpx

    latencies: list[float] = []
    errors = wrong = 0
    stop = time.perf_counter() + seconds
    # One client (and connection) per simulated caller: a single shared httpx pool serialises on its own
    # bookkeeping and capped at ~135 req/s at 64 connections here, measuring the client instead of the server.
    clients = [httpx.AsyncClient(base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=1)) for _ in range(connections)]

    async def worker(k: int) -> None:
        nonlocal errors, wrong
        client, i = clients[k], k
        while time.perf_counter() < stop:
            body = {"observations": [bodies[i % len(bodies)]], "deterministic": True}
            start = time.perf_counter()
            try:
                response = await client.post("/v1/act", json=body)
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                errors += 1
            elif response.json()["actions"] != [int(expected[i % len(bodies)])]:
                wrong += 1
            i += connections

    try:
        began = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(connections)))
        elapsed = time.perf_counter() - began
    finally:
        for client in clients:
            await client.aclose()
    ms = np.asarray(latencies) * 1e3 if latencies else np.asarray([np.nan])
    return {"rps": len(latencies) / elapsed, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "requests": len(latencies), "errors": errors, "wrong": wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="", help="run folder or checkpoint to serve (default: train a tiny one first)")
    parser.add_argument("--model", default="", help="serve this file instead (a .onnx export); greedy answers are still "
                                                    "checked against --run's agent (or the tiny one)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="load per round and connection count")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--observations", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or str(tiny_run(Path(tmp)))
        bodies, expected = record(run, args.observations, args.seed)
        model = args.model or run
        sides = {"batched": Server(model, []), "unbatched": Server(model, ["--no-batching"])}
        try:
            for server in sides.values():
                server.wait()
            results: dict[tuple[str, int], list[dict]] = {}
            for r in range(args.rounds):
                for connections in args.connections:
                    for name, server in sides.items():
                        asyncio.run(load(server.url, bodies[:8], expected[:8], connections, 0.5))  # warm the path
                        out = asyncio.run(load(server.url, bodies, expected, connections, args.seconds))
                        results.setdefault((name, connections), []).append(out)
                        print(f"  round {r + 1} {name:<9} {connections:>3} connections: {out['rps']:>7,.0f} req/s, "
                              f"p50 {out['p50']:.1f} ms, p99 {out['p99']:.1f} ms, errors {out['errors']}, wrong {out['wrong']}",
                              flush=True)
        finally:
            for server in sides.values():
                server.stop()
    print(f"\n{'server':<10}{'connections':>12}{'req/s (median)':>16}{'min':>8}{'max':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'requests':>10}{'errors':>8}{'wrong':>7}")
    for (name, connections), outs in results.items():
        rps = [o["rps"] for o in outs]
        print(f"{name:<10}{connections:>12}{statistics.median(rps):>16,.0f}{min(rps):>8,.0f}{max(rps):>8,.0f}"
              f"{statistics.median(o['p50'] for o in outs):>8.1f}{statistics.median(o['p99'] for o in outs):>8.1f}"
              f"{sum(o['requests'] for o in outs):>10,}{sum(o['errors'] for o in outs):>8}{sum(o['wrong'] for o in outs):>7}")
    top = max(args.connections)
    batched = statistics.median(o["rps"] for o in results[("batched", top)])
    unbatched = statistics.median(o["rps"] for o in results[("unbatched", top)])
    print(f"micro-batching at {top} connections: {batched / unbatched:.2f}x the requests/s of one forward pass per request")


if __name__ == "__main__":
    main()
