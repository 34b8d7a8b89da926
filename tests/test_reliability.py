"""Reliability: bad input, damaged checkpoints, kill -9, crashing environments, NaN losses, full disks."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import evaluate
import train
from agents import persist
from agents.model import AgentConfig
from agents.ppo import PPOConfig
from training import checkpoint
from training.checkpoint import RunStopped
from training.config import RunConfig
from training.loop import Trainer
from tests.conftest import ROOT, expect, failure, python, run as run_child

ROLLOUT = 4 * 32  # frames per update in the runs below


def _config(tmp_path, name="r", **overrides) -> RunConfig:
    fields = dict(
        tasks="Empty-5x5", frames=1024, num_envs=4, video_every=0, checkpoint_every=2, threads=1, curriculum="none",
        runs_dir=str(tmp_path), run_name=name, device="cpu", backend="minigrid",
    )
    fields.update(overrides)
    return RunConfig(**fields, ppo=PPOConfig(num_steps=32, batch_size=64), agent=AgentConfig())


def _cli(*args):
    # backend minigrid: the faults below are injected into python MiniGrid's classes, which envpool does not run.
    return ["--tasks", "Empty-5x5", "--num-envs", "4", "--num-steps", "32", "--batch-size", "64", "--video-every", "0",
            "--threads", "1", "--device", "cpu", "--backend", "minigrid", *args]


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


# ------------------------------------------------------------------ bad input
def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


BAD_TRAIN_INPUT = [
    (["--tasks", "DoorKy-5x5"], "unknown task 'DoorKy-5x5'. Did you mean DoorKey-5x5"),
    (["--tasks", ""], "tasks is empty"),
    (["--weighting", "magic"], "weighting='magic' is unknown; known: static, uncertainty, gradnorm, dwa, pcgrad"),
    (["--curriculum", "easy-first"], "invalid choice 'easy-first' for argument '--curriculum'. Expected one of"),
    (["--frames", "abc"], "--frames: invalid literal for int() with base 10: 'abc' Expected: --frames INT"),
    (["--frames", "1.5"], "'1.5' Expected: --frames INT"),
    (["--frames", "-4"], "frames=-4 must be a positive integer"),
    (["--num-envs", "0"], "num_envs=0 must be a positive integer"),
    (["--curriculum-threshold", "1.5"], "curriculum_threshold=1.5 must be a probability in [0, 1]"),
    (["--mastered-threshold", "-0.1"], "mastered_threshold=-0.1 must be a probability in [0, 1]"),
    (["--lp-epsilon", "-0.1"], "lp_epsilon=-0.1 must be a probability in [0, 1]"),
    (["--gae-lambda", "2"], "gae_lambda=2.0 must be in [0, 1]"),
    (["--learning-rate", "nan"], "learning_rate=nan must be a finite number"),
    (["--batch-size", "100"], "batch_size must divide num_steps * num_envs. Currently batch_size=100, num_steps=128"),
    (["--learning-rat", "0.1"], "unknown option --learning-rat; did you mean --learning-rate?"),
    (["--bogus", "--seeed", "2"], "unknown options --bogus, --seeed; --seeed: did you mean --seed?"),
    (["--config", "configs/nowhere.yaml"], "--config 'configs/nowhere.yaml' does not exist"),
    (["--resume"], "--resume needs a value"),
    (["--resume", "runs/never-ran"], "--resume 'runs/never-ran' does not exist"),
]


@pytest.mark.parametrize("args,message", BAD_TRAIN_INPUT, ids=[" ".join(a) or "empty" for a, _ in BAD_TRAIN_INPUT])
def test_bad_train_input_is_one_line_exit_2_nothing_written(args, message, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert train.main([*args, "--runs-dir", str(runs)] if "--resume" not in args else args) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not runs.exists()


def test_bad_presets_name_the_field(tmp_path, capsys):
    runs = tmp_path / "runs"
    cases = [
        ("frames: [1, 2\n", "is not valid YAML"),
        ("ppo:\n  lerning_rate: 0.1\n", "unknown field ppo.lerning_rate; did you mean learning_rate?"),
        ("framez: 10\n", "unknown field framez; did you mean frames"),
        ("frames: lots\n", "frames='lots' must be an integer"),
        ("agent:\n  conditioning: telepathy\n", "conditioning='telepathy' must be one of 'film', 'concat', 'task-id'"),
        ("task_balance: steps\n", "task_balance='steps' must be one of 'slots', 'frames', 'episodes'"),
        ("- a list\n", "does not hold a mapping of fields"),
        ("!!python/object/apply:os.system ['touch pwned']\n", "is not valid YAML"),  # safe_load: never executed
    ]
    for i, (text, message) in enumerate(cases):
        preset = _write(tmp_path / f"p{i}.yaml", text)
        assert train.main(["--config", preset, "--runs-dir", str(runs)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (text, err)
    assert not runs.exists() and not (ROOT / "pwned").exists()


def test_unwritable_run_folder_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert train.main(_cli("--runs-dir", str(blocker / "runs"))) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    # /proc takes no folders, not even root's (for whom os.access says yes): one line, not mkdir's traceback.
    assert train.main(_cli("--runs-dir", "/proc/omnigrid-runs")) == 2
    err = capsys.readouterr().err
    assert "runs_dir='/proc/omnigrid-runs'" in err and len(err.strip().splitlines()) == 1, err
    if os.geteuid() != 0:  # root writes anywhere: the permission case only exists for other users
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert train.main(_cli("--runs-dir", str(locked))) == 2
        assert "is not writable" in capsys.readouterr().err


def test_resume_refuses_overrides_that_change_the_experiment(tmp_path, capsys):
    Trainer(_config(tmp_path, frames=256), progress=False).run()
    run = tmp_path / "r"
    before = _files(run)
    assert train.main(["--resume", str(run), "--learning-rate", "0.01", "--seed", "7"]) == 2
    err = capsys.readouterr().err
    assert "conflicts with seed=7 (the run has 1), learning_rate=0.01 (the run has 0.001)" in err, err
    assert "a resume may change only frames, device" in err and len(err.strip().splitlines()) == 1
    assert train.main(["--resume", str(run), "--config", "configs/quick.yaml"]) == 2
    assert "cannot be combined" in capsys.readouterr().err
    assert _files(run) == before  # nothing written
    # What a resume may change is accepted, and a value equal to the run's is no conflict.
    assert train.main(["--resume", str(run), "--frames", "384", "--log-every", "5", "--seed", "1"]) == 0
    assert checkpoint.load(run / "checkpoints" / "final.pt")["frames"] == 384


def test_a_run_saved_before_task_balance_resumes_drawing_per_episode(tmp_path):
    Trainer(_config(tmp_path, frames=256), progress=False).run()
    saved = tmp_path / "r" / "config.yaml"
    saved.write_text("".join(line for line in saved.read_text().splitlines(True) if not line.startswith("task_balance:")))
    config, _ = train.parse_args(["--resume", str(tmp_path / "r"), "--frames", "384"])
    assert config.task_balance == "episodes"  # as it was trained, not the new default
    (tmp_path / "r" / "config.yaml").write_text(config.to_yaml())
    config, _ = train.parse_args(["--resume", str(tmp_path / "r")])
    assert config.task_balance == "episodes"


def test_a_run_saved_before_mastered_threshold_resumes_with_its_one_threshold(tmp_path):
    Trainer(_config(tmp_path, frames=256, curriculum="threshold", curriculum_threshold=0.7), progress=False).run()
    saved = tmp_path / "r" / "config.yaml"
    saved.write_text("".join(line for line in saved.read_text().splitlines(True) if not line.startswith("mastered_threshold:")))
    config, _ = train.parse_args(["--resume", str(tmp_path / "r"), "--frames", "384"])
    assert config.mastered_threshold == 0.7  # its curriculum_threshold did both jobs then, not the new default 0.9
    with pytest.raises(ValueError, match=r"mastered_threshold=0.9 \(the run has 0.7\)"):  # it changes the experiment
        train.parse_args(["--resume", str(tmp_path / "r"), "--mastered-threshold", "0.9"])
    (tmp_path / "r" / "config.yaml").write_text(config.to_yaml())  # as the resumed run rewrites it
    config, _ = train.parse_args(["--resume", str(tmp_path / "r")])
    assert config.mastered_threshold == 0.7


def test_bad_evaluate_input(tmp_path, capsys):
    Trainer(_config(tmp_path, frames=128), progress=False).run()
    run = tmp_path / "r"
    (tmp_path / "empty").mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        ([str(tmp_path / "nowhere")], "does not exist; give a run folder"),
        ([str(tmp_path / "empty")], "is not a run folder with a checkpoint"),
        ([str(run), "--episodes", "0"], "--episodes=0 must be a positive integer"),
        ([str(run), "--episodes", "many"], "Error parsing --episodes"),
        ([str(run), "--split", "test"], "invalid choice 'test' for argument '--split'"),
        ([str(run), "--tasks", "Fetch-5x5-N9"], "unknown task 'Fetch-5x5-N9'"),
        ([str(run), "--device", "cuda:9"] if not torch.cuda.is_available() else [str(run), "--device", "tpu"], "--device"),
        ([str(run), "--json", str(blocker / "out.json")], "is a file, not a folder"),
        ([str(run), "--video", str(blocker / "videos")], "is a file, not a folder"),
    ]
    before = _files(run)
    for args, message in cases:
        assert evaluate.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
    assert _files(run) == before


# ------------------------------------------------------------ checkpoint integrity
def _periodic(tmp_path, name="r", frames=768):
    trainer = Trainer(_config(tmp_path, name, frames=frames), progress=False)
    trainer.run()
    return tmp_path / name, checkpoint.list_checkpoints(tmp_path / name)


def test_each_checkpoint_has_a_sha256_that_sha256sum_accepts(tmp_path):
    run, periodic = _periodic(tmp_path)
    assert [p.name for p in periodic] == [f"ckpt-{f:012d}.pt" for f in (256, 512, 768)]
    for path in [*periodic, run / "checkpoints" / "final.pt"]:
        digest = persist.digest_path(path).read_text().split()
        assert digest == [hashlib.sha256(path.read_bytes()).hexdigest(), path.name]
    check = expect(run_child(["sha256sum", "-c", *[p.name + ".sha256" for p in periodic]], cwd=run / "checkpoints"))
    assert check.stdout.count(": OK") == 3, check.stdout
    assert not list((run / "checkpoints").glob(".*"))  # no temporary files left


@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte", "empty", "digest-only"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    run, periodic = _periodic(tmp_path, frames=768)
    (run / "checkpoints" / "final.pt").unlink()  # as if killed before the end: periodic ones only
    latest = periodic[-1]
    data = bytearray(latest.read_bytes())
    if damage == "truncate":
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "flip-a-byte":  # same size; the zip structure still reads, only the digest tells
        data[len(data) // 2] ^= 0xFF
        latest.write_bytes(data)
    elif damage == "empty":
        latest.write_bytes(b"")
    else:  # the file is whole but its digest says otherwise
        persist.digest_path(latest).write_text("0" * 64 + f"  {latest.name}\n")
    warnings = []
    chosen = checkpoint.resumable_checkpoint(run, warn=warnings.append)
    assert chosen == periodic[-2]
    assert str(latest) in warnings[0] and "resuming from" in warnings[-1] and "512 frames" in warnings[-1]
    out = expect(python("train.py", "--resume", run, "--frames", "1024"))
    assert f"warning: {str(latest)!r} " in out.stderr and f"resuming {periodic[-2]}" in out.stdout
    assert checkpoint.load(run / "checkpoints" / "final.pt")["frames"] == 1024


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path, capsys):
    run, periodic = _periodic(tmp_path, frames=512)
    for path in [*periodic, run / "checkpoints" / "final.pt"]:
        path.write_bytes(path.read_bytes()[:1000])
    before = _files(run)
    assert train.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"error: every checkpoint of {str(run)!r} is damaged; nothing to resume" in err
    assert _files(run) == before


def test_evaluate_on_a_damaged_checkpoint_is_a_clear_error(tmp_path, capsys):
    run, _ = _periodic(tmp_path, frames=256)
    final = run / "checkpoints" / "final.pt"
    data = bytearray(final.read_bytes())
    data[-5000] ^= 0x01
    final.write_bytes(data)
    assert evaluate.main([str(final), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "is damaged: its SHA-256 does not match final.pt.sha256" in err and len(err.strip().splitlines()) == 1


class _Payload:  # any object that is not plain data
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": persist.FORMAT, "model": {"config": {}}, "state_dict": {}, "x": _Payload()}, path)
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        persist.read_payload(path)
    assert not (tmp_path / "pwned").exists() and not (ROOT / "pwned").exists()


# ------------------------------------------------------------------ kill -9
KILL_POINTS = [
    # (point, nth hit, what it interrupts)
    ("step", 20, "the first rollout, before any checkpoint"),
    ("step", 32 * 5 + 7, "a rollout"),
    ("minibatch", 8 * 6 + 3, "a PPO update"),
    ("fsync", 3, "a checkpoint write, bytes written but not renamed"),
    ("rename", 2, "between a checkpoint's rename and its digest"),
    ("prune", 1, "after a checkpoint, before older ones are pruned"),
    ("tensorboard", 250, "a TensorBoard write"),
]


@pytest.mark.parametrize("point,n,what", KILL_POINTS, ids=[f"{p}-{n}" for p, n, _ in KILL_POINTS])
def test_kill_9_anywhere_then_resume_loses_at_most_one_interval(tmp_path, point, n, what):
    run, progress = tmp_path / "k", tmp_path / "progress"
    args = _cli("--frames", "2048", "--checkpoint-every", "2", "--runs-dir", str(tmp_path), "--run-name", "k")
    expect(python("tests/kill_at.py", point, n, progress, "--", *args), -signal.SIGKILL)
    reached = int(progress.read_text())
    resumed = expect(python("train.py", "--resume", run))
    found = re.search(r"resuming \S*ckpt-(\d+)\.pt", resumed.stdout)
    start = int(found.group(1)) if found else 0
    if not found:
        assert "no checkpoint yet; starting the run over" in resumed.stdout
    assert reached - start <= 2 * ROLLOUT, (what, reached, start)  # at most one checkpoint interval lost
    assert checkpoint.load(run / "checkpoints" / "final.pt")["frames"] == 2048
    assert not list((run / "checkpoints").glob(".*.tmp"))
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("train/fps")]
    assert steps == list(range(ROLLOUT, 2049, ROLLOUT)), (what, steps)  # every update once: no duplicate, no gap
    for tag in events.Tags()["scalars"]:
        tag_steps = [e.step for e in events.Scalars(tag)]
        assert len(tag_steps) == len(set(tag_steps)), tag


# ------------------------------------------------------------ crashing environments
@pytest.fixture
def crashing_empty(monkeypatch):
    """Make Empty-5x5's env raise on every ``every``-th step of an instance (set ``every`` on the returned dict)."""
    from minigrid.envs import EmptyEnv

    setting = {"every": 50}
    original = EmptyEnv.step

    def step(self, action):
        self._steps_taken = getattr(self, "_steps_taken", 0) + 1
        if self._steps_taken % setting["every"] == 0:
            raise RuntimeError(f"simulated crash at step {self._steps_taken}")
        return original(self, action)

    monkeypatch.setattr(EmptyEnv, "step", step)
    return setting


def test_an_env_that_raises_is_restarted_and_its_episode_counted_failed(tmp_path, crashing_empty, capsys):
    trainer = Trainer(_config(tmp_path, tasks="Empty-5x5,GoToDoor-5x5", frames=1024, max_env_crashes=1000), progress=False)
    stats = trainer.run()
    crashes = trainer.env_crashes["Empty-5x5"]
    assert crashes >= 5 and "GoToDoor-5x5" not in trainer.env_crashes
    assert stats.episodes["Empty-5x5"] >= crashes  # the crashed episodes are counted (as failures)
    assert "environment crash 1/1000 of Empty-5x5: RuntimeError: simulated crash at step 50" in capsys.readouterr().err
    events = EventAccumulator(str(tmp_path / "r"))
    events.Reload()
    assert events.Scalars("train/env_crashes")[-1].value == crashes


def test_a_task_that_keeps_crashing_stops_the_run_with_a_checkpoint(tmp_path, crashing_empty):
    crashing_empty["every"] = 3
    trainer = Trainer(_config(tmp_path, frames=4096, max_env_crashes=4), progress=False)
    with pytest.raises(RunStopped, match=r"task Empty-5x5 crashed 5 times \(max_env_crashes=4\); last: .*simulated crash"):
        trainer.run()
    saved = checkpoint.list_checkpoints(tmp_path / "r")
    assert saved and checkpoint.load(saved[-1])["frames"] == trainer._boundary["frames"]


def test_a_killed_worker_process_is_restarted(tmp_path, monkeypatch):
    from minigrid.envs import EmptyEnv

    marker = tmp_path / "killed-once"
    original = EmptyEnv.step

    def step(self, action):  # in a worker process: the 40th step of its env kills the process, once in all
        self._steps_taken = getattr(self, "_steps_taken", 0) + 1
        if self._steps_taken == 40:
            try:  # O_EXCL: of workers reaching step 40 together, one alone creates the marker
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return original(self, action)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, action)

    monkeypatch.setattr(EmptyEnv, "step", step)
    trainer = Trainer(_config(tmp_path, frames=512, vectorization="async", max_env_crashes=3), progress=False)
    stats = trainer.run()
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died, not the trainer
    assert trainer.env_crashes == {"Empty-5x5": 1}
    assert trainer.env.env.restarts == 1
    assert checkpoint.load(tmp_path / "r" / "checkpoints" / "final.pt")["frames"] == 512
    assert stats.episodes["Empty-5x5"] > 1


def test_a_worker_killed_from_outside_between_steps_is_restarted(tmp_path):
    from envs.vector import MultiTaskVectorEnv

    env = MultiTaskVectorEnv(["Empty-5x5", "GoToDoor-5x5"], 3, vectorization="async")
    try:
        env.reset(seed=1)
        env.set_task_probs({"Empty-5x5": 1, "GoToDoor-5x5": 3})
        victim = env.env.processes[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(5)
        obs, reward, terminated, truncated, info = env.step(np.zeros(3, dtype=np.int64))
        assert truncated.tolist() == [False, True, False] and not terminated.any()
        assert info["final_info"]["crashed"][1] == "worker process died (exit code -9)"
        assert not info["final_info"]["success"][1] and info["final_obs"][1] is not None
        assert env.env.processes[1].pid != victim.pid
        np.testing.assert_allclose(env.env.get_attr("task_probs")[1], env.task_probs[1])  # the slot's curriculum is back
        for _ in range(5):
            env.step(np.zeros(3, dtype=np.int64))
        assert len(env.get_state()) == 3
    finally:
        env.close()


# ------------------------------------------------------------------ NaN / Inf
def _nan_after(monkeypatch, bad_updates: set[int]):
    """Make the policy loss of the first task in each minibatch NaN in the listed updates (1-based)."""
    import agents.objective
    import agents.ppo

    original = agents.objective.ppo_task_table
    calls = {"update": 0}
    update = agents.ppo.MultiTaskPPO.update

    def counting_update(self, buffer):
        calls["update"] += 1
        return update(self, buffer)

    def table(*args, **kwargs):
        means, present = original(*args, **kwargs)
        if calls["update"] in bad_updates:
            nan = torch.zeros_like(means)
            nan[present[0], 0] = float("nan")
            means = means + nan
        return means, present

    monkeypatch.setattr(agents.ppo.MultiTaskPPO, "update", counting_update)
    monkeypatch.setattr(agents.objective, "ppo_task_table", table)


def test_a_nan_loss_skips_the_update_and_training_goes_on(tmp_path, monkeypatch, capsys):
    _nan_after(monkeypatch, {3, 4})
    trainer = Trainer(_config(tmp_path, frames=768, checkpoint_every=0), progress=False)
    snapshots = {}
    update = trainer.update

    def recording_update():
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        stats = update()
        snapshots[trainer.updates] = (before, {k: v.clone() for k, v in trainer.model.state_dict().items()})
        return stats

    trainer.update = recording_update
    trainer.run()
    assert trainer.skipped_updates == 2
    for n in (3, 4):  # skipped: the parameters are exactly those before the update
        before, after = snapshots[n]
        assert all(torch.equal(before[k], after[k]) for k in before)
    before, after = snapshots[5]
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the next update trains again
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values() if v.is_floating_point())
    err = capsys.readouterr().err
    assert "update skipped: non-finite loss terms policy/Empty-5x5 at epoch 1, minibatch 1" in err
    assert "(2/3 in a row)" in err


def test_nan_losses_in_a_row_stop_the_run_with_the_last_good_parameters(tmp_path, monkeypatch):
    _nan_after(monkeypatch, {4, 5, 6, 7})
    trainer = Trainer(_config(tmp_path, frames=2048, checkpoint_every=0), progress=False)
    good = {}
    update = trainer.update

    def recording_update():
        stats = update()
        if trainer.updates == 3:
            good.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return stats

    trainer.update = recording_update
    with pytest.raises(RunStopped, match="3 updates in a row had a NaN/Inf loss or gradient") as stopped:
        trainer.run()
    assert "Saved the last good state" in str(stopped.value) and "--resume" in str(stopped.value)
    saved = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "r")[-1])
    assert saved["frames"] == 5 * ROLLOUT  # the frames of the skipped updates were spent, not trained on
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in good.items())  # the parameters of update 3
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


# ------------------------------------------------------------------ full disk
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    trainer = Trainer(_config(tmp_path, frames=1024, checkpoint_every=2), progress=False)
    writes = {"n": 0}
    real = persist._write_atomically

    def filling(data, path):
        if path.suffix == ".pt":
            writes["n"] += 1
            if writes["n"] == 2:  # the second checkpoint finds the disk full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(data, path)

    monkeypatch.setattr(persist, "_write_atomically", filling)
    with pytest.raises(RunStopped, match="No space left on device; the previous checkpoint .*ckpt-000000000256.pt is intact"):
        trainer.run()
    kept = checkpoint.list_checkpoints(tmp_path / "r")
    assert [p.name for p in kept] == ["ckpt-000000000256.pt"]
    assert checkpoint.load(kept[0])["frames"] == 256  # whole and verified


def test_file_size_limit_in_a_real_process_is_a_clear_stop(tmp_path):
    """The OS refuses the write (RLIMIT_FSIZE: EFBIG, as a quota would): exit 1, one clear line, no traceback."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # checkpoints are ~5 MB

    out = expect(python("train.py", *_cli("--frames", "512", "--runs-dir", str(tmp_path), "--run-name", "f"), preexec_fn=limit), 1)
    assert "train.py: stopped: could not write a checkpoint in" in out.stderr and "File too large" in out.stderr, failure(out)
    assert "Traceback" not in out.stderr, failure(out)
    assert not list((tmp_path / "f" / "checkpoints").glob("*"))  # no partial file left behind
