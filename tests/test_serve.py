"""serve.py as a real process on loopback: answers equal the local agent's, security, errors, metrics, restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import httpx  # the serve extra, part of dev: a missing one fails here, never skips

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("Empty-5x5", "GoToDoor-5x5")
TOKEN = "test-token-1234"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python serve.py ...`` on a loopback port; its stderr goes to a file shown on failure."""

    def __init__(self, model: Path, *args: str, port: int | None = None, env: dict | None = None, log: Path) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._err = open(log, "w")
        full_env = {**os.environ, "PYGAME_HIDE_SUPPORT_PROMPT": "1", **(env or {})}
        self.process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), str(model), "--port", str(self.port), *args],
                                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._err, env=full_env)
        self.wait()

    def stderr(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve.py exited with {self.process.returncode}:\n{self.stderr()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"serve.py did not answer /healthz within {timeout:.0f} s:\n{self.stderr()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"serve.py ignored SIGTERM:\n{self.stderr()}")
        self._err.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve-runs")
    command = [sys.executable, str(ROOT / "train.py"), "--tasks", ",".join(TASKS), "--frames", "2048", "--num-envs", "4",
               "--num-steps", "64", "--batch-size", "128", "--threads", "1", "--video-every", "0",
               "--runs-dir", str(folder), "--run-name", "r"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "r"


@pytest.fixture(scope="module")
def recorded(run):
    """Observations of random-action episodes of both families (request bodies), and the local agent's answers."""
    import torch

    from agents.model import ObsBatch
    from agents.persist import load
    from envs.tasks import make

    model = load(run)
    rng = np.random.default_rng(0)
    bodies, arrays = [], []
    for t, task in enumerate(TASKS):
        env = make(task, mission_length=model.space_info["mission_length"])
        obs, _ = env.reset(seed=10 + t)
        for _ in range(40):
            bodies.append({"image": obs["image"].tolist(), "direction": int(obs["direction"]),
                           "mission": env.unwrapped.mission, "task": task})
            arrays.append(obs)
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(7)))
            if terminated or truncated:
                obs, _ = env.reset()
    batch = ObsBatch.from_numpy({k: np.stack([o[k] for o in arrays]) for k in arrays[0]}, "cpu")
    with torch.no_grad():
        logits, _ = model.action_logits(batch)
        values = model.value(batch)
    assert {o["family"] for o in arrays} == {0, 1}
    return bodies, logits.argmax(-1).numpy(), logits.softmax(-1).numpy(), values.numpy()


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    s = Server(run, "--token", TOKEN, "--max-body-bytes", "65536", "--max-batch", "64",
               log=tmp_path_factory.mktemp("serve-log") / "stderr.txt")
    yield s
    assert s.stop() == 0, s.stderr()


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def post(server, body, **kwargs):
    return httpx.post(f"{server.url}/v1/act", json=body, headers=kwargs.pop("headers", auth()), timeout=30, **kwargs)


def test_deterministic_answers_equal_the_local_agent(server, recorded):
    bodies, greedy, probs, values = recorded
    for start in range(0, len(bodies), 32):
        response = post(server, {"observations": bodies[start:start + 32], "deterministic": True})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["actions"] == greedy[start:start + 32].tolist()
        np.testing.assert_allclose(answer["probs"], probs[start:start + 32], atol=1e-5)
        np.testing.assert_allclose(answer["values"], values[start:start + 32], atol=1e-5)


def test_concurrent_requests_are_batched_and_answered_in_order(server, recorded):
    bodies, greedy, _, _ = recorded

    async def main():
        async with httpx.AsyncClient(base_url=server.url, headers=auth(), timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/act", json={"observations": [b], "deterministic": True}) for b in bodies))

    answers = asyncio.run(main())
    assert [r.status_code for r in answers] == [200] * len(bodies)
    assert [r.json()["actions"][0] for r in answers] == greedy.tolist()
    metrics = httpx.get(f"{server.url}/metrics", headers=auth()).text
    sizes = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line.startswith("omnigrid_batch_size_")}
    assert sizes["omnigrid_batch_size_sum"] / sizes["omnigrid_batch_size_count"] > 1, "no two requests shared a forward pass"


def test_sampled_actions_follow_the_probabilities(server, recorded):
    bodies = recorded[0]
    answer = post(server, {"observations": [bodies[0]] * 64}).json()
    assert len(answer["actions"]) == 64 and all(0 <= a < 7 for a in answer["actions"])
    probs = np.asarray(answer["probs"][0])
    assert abs(probs.sum() - 1) < 1e-6
    assert all(probs[a] > 0 for a in answer["actions"])


def test_token_is_required(server, recorded):
    body = {"observations": recorded[0][:1]}
    missing = post(server, body, headers={})
    assert missing.status_code == 401 and "Authorization" in missing.json()["detail"]
    assert post(server, body, headers=auth("wrong")).status_code == 401
    assert post(server, body, headers={"Authorization": TOKEN}).status_code == 401  # not "Bearer ..."
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_too_large(server, recorded):
    obs = recorded[0][0]
    over = post(server, {"observations": [obs] * 65})  # more than --max-batch
    assert over.status_code == 413 and over.json()["field"] == "observations"
    big = json.dumps({"observations": [obs] * 200}).encode()  # ~100 kB > 64 kB
    declared = httpx.post(f"{server.url}/v1/act", content=big, headers={**auth(), "Content-Type": "application/json"})
    assert declared.status_code == 413, declared.text

    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    chunked = httpx.post(f"{server.url}/v1/act", content=chunks(), headers={**auth(), "Content-Type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    assert post(server, {"observations": [obs]}).status_code == 200


def _mutate(obs: dict, key: str, value) -> dict:
    return {"observations": [obs, {**obs, key: value}]}


@pytest.mark.parametrize("make_body, field", [
    (lambda o: b"{not json", "body"),
    (lambda o: [1, 2], "body"),
    (lambda o: {"observations": []}, "observations"),
    (lambda o: {"observation": [o]}, "observation"),
    (lambda o: {"observations": [o], "deterministic": "yes"}, "deterministic"),
    (lambda o: {"observations": [o, 3]}, "observations[1]"),
    (lambda o: {"observations": [{k: v for k, v in o.items() if k != "task"}]}, "observations[0].task"),
    (lambda o: _mutate(o, "image", [[0, 0, 0]] * 7), "observations[1].image"),
    (lambda o: _mutate(o, "image", np.full((7, 7, 3), 1.5).tolist()), "observations[1].image"),
    (lambda o: _mutate(o, "image", np.full((7, 7, 3), 99).tolist()), "observations[1].image"),
    (lambda o: _mutate(o, "image", "pixels"), "observations[1].image"),
    (lambda o: _mutate(o, "direction", 4), "observations[1].direction"),
    (lambda o: _mutate(o, "direction", "north"), "observations[1].direction"),
    (lambda o: _mutate(o, "mission", "go to the purpleish goal"), "observations[1].mission"),
    (lambda o: _mutate(o, "mission", 7), "observations[1].mission"),
    (lambda o: _mutate(o, "task", "Empty-5x6"), "observations[1].task"),
])
def test_malformed_requests_name_the_field(server, recorded, make_body, field):
    body = make_body(recorded[0][0])
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{server.url}/v1/act", content=content, headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["field"] == field and field in answer["detail"]
    if field.endswith("mission") and "purpleish" in json.dumps(body):
        assert "purpleish" in answer["detail"]
    if field.endswith("task"):
        assert "Empty-5x5" in answer["detail"] or "missing" in answer["detail"]


def test_a_client_leaving_mid_request_leaves_the_server_serving(server, recorded):
    body = json.dumps({"observations": recorded[0][:4]}).encode()
    head = (f"POST /v1/act HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:  # half a body, then gone
        s.sendall(head + body[: len(body) // 2])
    with socket.create_connection(("127.0.0.1", server.port)) as s:  # a whole request, gone before the answer
        s.sendall(head + body)
    time.sleep(0.2)
    assert post(server, {"observations": recorded[0][:4], "deterministic": True}).json()["actions"] == recorded[1][:4].tolist()
    assert server.process.poll() is None


def test_metrics_count_requests(server, recorded):
    def counts() -> dict[str, float]:
        text = httpx.get(f"{server.url}/metrics", headers=auth()).text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and line[0] != "#"}

    before = counts()
    post(server, {"observations": recorded[0][:3]})
    post(server, {"observations": recorded[0][:1]}, headers={})
    post(server, {"observations": "none"})
    after = counts()

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert delta('omnigrid_requests_total{path="/v1/act",status="200"}') == 1
    assert delta('omnigrid_requests_total{path="/v1/act",status="401"}') == 1
    assert delta('omnigrid_requests_total{path="/v1/act",status="422"}') == 1
    assert delta('omnigrid_errors_total{reason="422"}') == 1
    assert delta("omnigrid_request_latency_seconds_count") == 3
    assert delta("omnigrid_observations_total") == 3
    assert "omnigrid_batch_size_bucket" in "".join(after)


def test_token_from_env_stop_and_start_again(run, recorded, tmp_path):
    port = free_port()
    body = {"observations": recorded[0][:2], "deterministic": True}
    for attempt in range(2):
        s = Server(run, "--no-batching", port=port, env={"OMNIGRID_TOKEN": "from-env"}, log=tmp_path / f"stderr{attempt}.txt")
        try:
            assert post(s, body, headers={}).status_code == 401
            answer = post(s, body, headers=auth("from-env"))
            assert answer.status_code == 200 and answer.json()["actions"] == recorded[1][:2].tolist()
            if attempt == 0:  # a second server on the same port: one clear line
                clash = subprocess.run([sys.executable, str(ROOT / "serve.py"), str(run), "--port", str(port)],
                                       cwd=ROOT, capture_output=True, text=True, timeout=60)
                assert clash.returncode != 0 and "in use" in clash.stderr and len(clash.stderr.strip().splitlines()) == 1, clash.stderr
        finally:
            assert s.stop() == 0, s.stderr()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{s.url}/healthz", timeout=1)


@pytest.mark.parametrize("args, words", [
    (["/nonexistent/run"], "does not exist"),
    (["{run}", "--port", "70000"], "--port 70000"),
    (["{run}", "--batch-window-ms", "-1"], "--batch-window-ms"),
    (["{run}", "--max-batch", "0"], "--max-batch"),
    (["{run}/README.md"], "README.md"),
])
def test_bad_command_lines_fail_in_one_line(run, args, words):
    args = [a.format(run=run) for a in args]
    (run / "README.md").write_text("not a checkpoint")
    done = subprocess.run([sys.executable, str(ROOT / "serve.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[-1].startswith("serve.py: error: ") and words in lines[-1], done.stderr
    assert "Traceback" not in done.stderr


def test_onnx_export_serves_the_same_answers(run, recorded, tmp_path):
    from agents import export
    from agents.persist import load

    path = export.export_onnx(load(run), tmp_path / "model.onnx")
    bodies, greedy, probs, _ = recorded
    s = Server(path, log=tmp_path / "stderr.txt")
    try:
        answer = httpx.post(f"{s.url}/v1/act", json={"observations": bodies[:64], "deterministic": True}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["actions"] == greedy[:64].tolist()
        np.testing.assert_allclose(answer.json()["probs"], probs[:64], atol=1e-5)
    finally:
        assert s.stop() == 0, s.stderr()
