"""Benchmarks keep running: a tiny invocation of each, no timing asserted."""

import subprocess
import sys

from tests.conftest import ROOT


def test_env_throughput_prints_a_ratio_per_vectorization():
    out = subprocess.run(
        [sys.executable, "bench/env_throughput.py", "--steps", "20", "--rounds", "1", "--num-envs", "2"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    ).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("sync", "async"))}
    assert set(rows) == {"sync", "async"}, out
    for plain, ours, ratio, _ in rows.values():
        assert float(ratio) > 0 and float(plain.replace(",", "")) > 0 and float(ours.replace(",", "")) > 0
