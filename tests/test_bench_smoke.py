"""Benchmarks keep running: a tiny invocation of each, no timing asserted."""

import subprocess
import sys

from tests.conftest import ROOT


def test_env_throughput_prints_each_backend_against_plain_gymnasium():
    out = subprocess.run(
        [sys.executable, "bench/env_throughput.py", "--steps", "20", "--rounds", "1", "--num-envs", "4"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    ).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("plain ", "minigrid ", "envpool "))}
    assert set(rows) == {"plain", "minigrid", "envpool"}, out
    for median, low, high, ratio in rows.values():
        assert float(ratio) > 0 and float(low.replace(",", "")) <= float(median.replace(",", "")) <= float(high.replace(",", ""))
    assert rows["plain"][3] == "1.00"


def test_throughput_vs_sb3_prints_both_sides_and_ratios():
    out = subprocess.run(
        [sys.executable, "bench/throughput_vs_sb3.py", "--frames", "1024", "--rounds", "1", "--num-envs", "2",
         "--num-steps", "64", "--epochs", "1"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("sb3 ", "ours "))}
    assert set(rows) == {"sb3", "ours"}, out
    assert all(float(fps.replace(",", "")) > 0 and float(mb.replace(",", "")) > 50 for fps, mb in rows.values())
    assert "ratio ours/sb3: frames/s" in out


def test_sample_efficiency_prints_a_table_and_writes_a_plot(tmp_path):
    plot = tmp_path / "curve.png"
    out = subprocess.run(
        [sys.executable, "bench/sample_efficiency.py", "--task", "Empty-5x5", "--seeds", "1", "--max-frames", "2048",
         "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    assert "ratio ours/sb3: median frames" in out and "median wall time" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multitask_transfer_prints_runs_and_a_ratio_and_writes_a_plot(tmp_path):
    plot = tmp_path / "transfer.png"
    out = subprocess.run(
        [sys.executable, "bench/multitask_transfer.py", "--tasks", "Empty-5x5,GoToDoor-5x5", "--seeds", "1",
         "--max-frames", "2048", "--set", "num_envs=4", "num_steps=64", "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    runs = [line.split()[1] for line in out.splitlines() if line.strip().startswith("1  ") and "ratio" not in line]
    assert runs == ["multi-task", "Empty-5x5", "GoToDoor-5x5"], out
    assert "median transfer ratio" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multitask_transfer_refuses_an_unknown_task_before_training():
    proc = subprocess.run(
        [sys.executable, "bench/multitask_transfer.py", "--tasks", "Empty-5x5,GoToDoorr-5x5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2 and "GoToDoorr-5x5" in proc.stderr and "GoToDoor-5x5" in proc.stderr


def test_ablations_prints_one_row_per_variant_and_writes_a_plot(tmp_path):
    plot = tmp_path / "ablations.png"
    out = subprocess.run(
        [sys.executable, "bench/ablations.py", "--tasks", "Empty-5x5,GoToDoor-5x5", "--groups", "aux", "sharing",
         "--seeds", "1", "--frames", "1024", "--set", "num_envs=4", "num_steps=64", "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=900,
    ).stdout
    table = out[out.index("variant"):]
    for label in ("default", "aux: recognition", "aux: reward", "aux: none", "sharing: mmoe", "sharing: ple"):
        assert any(line.startswith(label) for line in table.splitlines()), (label, out)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_distributed_scaling_runs_one_and_two_processes():
    out = subprocess.run(
        [sys.executable, "bench/distributed_scaling.py", "--frames", "1024", "--rounds", "1", "--num-envs", "2",
         "--num-steps", "64", "--batch-size", "64", "--epochs", "1", "--tasks", "Empty-5x5"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if len(line.split()) == 5 and line.split()[0] in "12"}
    assert set(rows) == {"1", "2"}, out
    assert all(float(row[0].replace(",", "")) > 0 for row in rows.values())
    assert "2 processes / 1 process:" in out


def test_speed_vs_revision_checks_out_the_revision_and_prints_a_ratio():
    out = subprocess.run(
        [sys.executable, "bench/speed_vs_revision.py", "--rev", "HEAD", "--tasks", "Empty-5x5", "--rollouts", "1",
         "--rounds", "1", "--set", "num_envs=4", "num_steps=64"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("earlier ", "ours "))}
    assert set(rows) == {"earlier", "ours"}, out
    assert rows["ours"][1] == "HEAD" and "4 x 64" in " ".join(rows["ours"]), out
    assert "ratio ours/earlier, training frames/s:" in out


def test_speed_vs_revision_refuses_an_unknown_revision():
    proc = subprocess.run(
        [sys.executable, "bench/speed_vs_revision.py", "--rev", "no-such-rev"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "--rev 'no-such-rev' is not a commit" in proc.stderr


def test_level_transfer_prints_a_row_per_seed_and_writes_a_plot(tmp_path):
    plot = tmp_path / "levels.png"
    out = subprocess.run(
        [sys.executable, "bench/level_transfer.py", "--seeds", "1", "--max-frames", "2048", "--set", "num_envs=8",
         "num_steps=64", "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    assert out.startswith("level 1: Empty-5x5") and "level 2: DoorKey-5x5" in out, out
    seed_rows = [line for line in out.splitlines() if line.split()[:1] == ["1"]]
    assert len(seed_rows) == 1 and "not reached" in seed_rows[0], out  # 2,048 frames: nothing opens
    assert "lowest level-1 success after level 2 opened" in out and "all tasks at 0.9: 0/1 seeds" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hold_after_mastery_reports_when_a_task_first_held_0_9_and_its_lowest_after():
    out = subprocess.run(
        [sys.executable, "bench/hold_after_mastery.py", "--tasks", "Empty-5x5", "--seeds", "1", "--max-frames", "40960"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    row = next(line.split() for line in out.splitlines() if line.split()[:2] == ["1", "Empty-5x5"])
    first, lowest, final = int(row[2].replace(",", "")), float(row[3]), float(row[5])
    assert first <= 40960 and 0.0 <= lowest <= 1.0 and final >= 0.9, out  # Empty-5x5 is learnt in ~27k frames
