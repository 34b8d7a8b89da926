"""evaluate.py --server: a served agent evaluated over HTTP gives the local evaluation's results exactly."""

from __future__ import annotations

import json

from tests.conftest import expect, failure, python
from tests.test_serve import ROOT, TOKEN, Server, run  # noqa: F401  (run: the module's trained checkpoint fixture)

TASKS = "Empty-5x5,GoToDoor-5x5,GoToObject-6x6-N2"  # both families; GoToObject-6x6-N2 was not trained on


def _rates(path) -> dict[str, float]:
    return {row["task"]: row["success"] for row in json.loads(path.read_text())["tasks"]}


def test_served_agent_evaluates_exactly_as_the_local_one(run, tmp_path):
    common = ["--tasks", TASKS, "--episodes", "12", "--num-envs", "4", "--deterministic", "--no-tensorboard", "--seed", "3"]
    local = expect(python("evaluate.py", run, *common, "--json", tmp_path / "local.json"))
    server = Server(run, "--token", TOKEN, log=tmp_path / "serve.log")
    try:
        served = python("evaluate.py", run, *common, "--json", tmp_path / "served.json", "--server", server.url,
                        env={"OMNIGRID_TOKEN": TOKEN})
        expect(served)
        assert _rates(tmp_path / "served.json") == _rates(tmp_path / "local.json"), (local.stdout, served.stdout)
        assert json.loads((tmp_path / "served.json").read_text())["server"] == server.url
        # Without the token the server answers 401 to the first step: one line naming it, exit 1.
        refused = python("evaluate.py", run, *common, "--server", server.url, env={"OMNIGRID_TOKEN": ""})
        assert refused.returncode == 1, failure(refused)
        assert "401" in refused.stderr and "Traceback" not in refused.stderr, failure(refused)
    finally:
        server.stop()


def test_server_not_running_is_one_line_and_exit_2(run):
    out = expect(python("evaluate.py", run, "--tasks", "Empty-5x5", "--server", "http://127.0.0.1:9"), 2)
    assert "no answer" in out.stderr and len(out.stderr.strip().splitlines()) == 1, failure(out)
    bad = expect(python("evaluate.py", run, "--server", "ftp://x"), 2)
    assert "is not an http(s) URL" in bad.stderr, failure(bad)


def test_serve_load_bench_runs_and_checks_every_answer(run, tmp_path):
    out = python(ROOT / "bench" / "serve_load.py", "--run", run, "--seconds", "0.5", "--rounds", "1",
                 "--connections", "1", "4", "--observations", "60", timeout=300)
    expect(out)
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("torch ", "onnx "))]
    assert {tuple(r[:3]) for r in rows} == {(runtime, server, conns) for runtime in ("torch", "onnx")
                                            for server in ("batched", "unbatched") for conns in ("1", "4")}, out.stdout
    assert all(r[-1] == "0" and r[-2] == "0" and int(r[-3].replace(",", "")) > 0 for r in rows), out.stdout  # answered, none wrong
    for runtime in ("torch", "onnx"):
        assert f"{runtime}: micro-batching at 4 connections" in out.stdout


def test_serve_load_bench_with_the_httpx_client(run):
    out = expect(python(ROOT / "bench" / "serve_load.py", "--run", run, "--seconds", "0.3", "--rounds", "1", "--runtimes", "torch",
                        "--client", "httpx", "--connections", "2", "--observations", "20", timeout=300))
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("torch ")]
    assert len(rows) == 2 and all(r[-1] == "0" and r[-2] == "0" for r in rows), out.stdout
    assert "client: httpx" in out.stdout
