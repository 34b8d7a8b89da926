"""serve.py --ray: the same API on a real local Ray Serve over loopback; greedy answers equal the local agent's."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

import httpx  # the serve extra, part of dev: a missing one fails here, never skips

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import ROOT, Server, free_port, recorded, run  # noqa: E402,F401  (the fixtures)


def test_ray_serve_round_trip(run, recorded, tmp_path):
    bodies, greedy, probs, _ = recorded
    started = time.monotonic()
    s = Server(run, "--ray", "--min-replicas", "1", "--max-replicas", "2", "--token", "ray-token",
               port=free_port(), log=tmp_path / "stderr.txt")
    headers = {"Authorization": "Bearer ray-token"}
    try:
        answer = httpx.post(f"{s.url}/v1/act", json={"observations": bodies, "deterministic": True}, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["actions"] == greedy.tolist()
        np.testing.assert_allclose(answer.json()["probs"], probs, atol=1e-5)
        assert httpx.post(f"{s.url}/v1/act", json={"observations": bodies[:1]}, timeout=60).status_code == 401
        bad = httpx.post(f"{s.url}/v1/act", json={"observations": [{**bodies[0], "direction": 9}]}, headers=headers, timeout=60)
        assert bad.status_code == 422 and bad.json()["field"] == "observations[0].direction"
        metrics = httpx.get(f"{s.url}/metrics", headers=headers, timeout=60).text
        assert 'omnigrid_requests_total{path="/v1/act",status="200"}' in metrics
    finally:
        code = s.stop()
    assert code == 0, s.stderr()
    assert time.monotonic() - started < 90, "Ray Serve took over 90 s to start, answer and stop"
