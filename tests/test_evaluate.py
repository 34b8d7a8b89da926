"""evaluate.py and training.evaluation: statistics, determinism, splits, JSON, TensorBoard, --env, comparison, errors."""

import json
import math

import gymnasium as gym
import pytest
import torch
from minigrid.envs import EmptyEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import load
from envs import list_tasks, make, make_external
from training.evaluation import JSON_FORMAT, EvalTarget, evaluate_target, resolve_targets, wilson_interval
from training.config import RunConfig
from training.loop import Trainer
from tests.conftest import expect, failure, python


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small trained run (both families) to evaluate."""
    root = tmp_path_factory.mktemp("runs")
    config = RunConfig(tasks="Empty-5x5,GoToDoor-5x5", frames=16384, num_envs=8, seed=0, runs_dir=str(root),
                       run_name="small", threads=1, video_every=0, curriculum="none")
    config.ppo.num_steps, config.ppo.batch_size = 64, 256
    Trainer(config, progress=False).run()
    return root / "small"


def _cli(*args, timeout=300):
    return python("evaluate.py", *args, timeout=timeout)


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (0, 10, 0.0, 0.2775),  # upper = z^2 / (n + z^2)
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), table I
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_known_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=6e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_heldout_split_holds_only_heldout_tasks():
    targets = resolve_targets(split="heldout")
    assert targets and {t.split for t in targets} == {"heldout"}
    assert [t.name for t in targets] == [s.name for s in list_tasks(split="heldout")]
    assert {t.split for t in resolve_targets(split="train")} == {"train"}
    assert len(resolve_targets(split="all")) == len(list_tasks())
    with pytest.raises(ValueError, match="'test' is not a split"):
        resolve_targets(split="test")


def test_evaluation_is_deterministic_given_a_seed(run):
    model = load(run)
    target = EvalTarget.task("GoToDoor-5x5")
    a = evaluate_target(model, target, episodes=24, num_envs=6, seed=3)
    b = evaluate_target(model, target, episodes=24, num_envs=6, seed=3)
    assert a.row() == b.row()
    # Greedy actions: episode e is seed + e whatever slot plays it, so the slot count does not matter.
    g1 = evaluate_target(model, target, episodes=24, num_envs=6, seed=3, deterministic=True)
    g2 = evaluate_target(model, target, episodes=24, num_envs=5, seed=3, deterministic=True)
    assert g1.row() == g2.row()
    others = [evaluate_target(model, target, episodes=24, num_envs=6, seed=s).row() for s in (4, 5)]
    assert any(o != a.row() for o in others)
    assert a.episodes == 24 and 0 <= a.successes <= 24 and a.success_low <= a.success <= a.success_high


def test_the_trained_agent_beats_a_fresh_one(run):
    """The statistics reflect the policy: the small run learnt Empty-5x5, a fresh agent has not."""
    trained = evaluate_target(load(run), EvalTarget.task("Empty-5x5"), episodes=40, seed=0)
    fresh_model = type(load(run))(make("Empty-5x5").observation_space, load(run).config).eval()
    fresh = evaluate_target(fresh_model, EvalTarget.task("Empty-5x5"), episodes=40, seed=0)
    assert trained.success_low > fresh.success_high, (trained.row(), fresh.row())


def test_cli_writes_table_json_tensorboard_and_videos(run, tmp_path):
    out = _cli(run, "--split", "train", "--episodes", "6", "--num-envs", "3", "--video", tmp_path / "videos",
               "--video-episodes", "1")
    expect(out)
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task"))
    rows = {line.split()[0]: line.split() for line in lines[header + 1:]}
    assert set(rows) == {s.name for s in list_tasks(split="train")}
    assert all(r[2] == "train" and 0.0 <= float(r[3]) <= 1.0 for r in rows.values())

    (report,) = (run / "eval").glob("train-*.json")
    doc = json.loads(report.read_text())
    assert doc["format"] == JSON_FORMAT and doc["split"] == "train" and doc["episodes"] == 6 and doc["seed"] == 0
    assert doc["frames"] == 16384 and doc["checkpoint"].endswith("final.pt")
    keys = {"task", "family", "split", "episodes", "successes", "success", "success_low", "success_high",
            "mean_return", "mean_length"}
    assert len(doc["tasks"]) == len(rows) and all(set(t) == keys for t in doc["tasks"])
    for t in doc["tasks"]:
        assert t["successes"] / t["episodes"] == pytest.approx(t["success"])
        assert float(rows[t["task"]][3]) == pytest.approx(t["success"], abs=0.006)

    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    point = events.Scalars("eval/Empty-5x5/success")[-1]
    assert point.step == 16384 and point.value == pytest.approx(next(t for t in doc["tasks"] if t["task"] == "Empty-5x5")["success"])
    assert "eval/train/mean_success" in events.Tags()["scalars"]
    assert "eval_videos/Empty-5x5/0" in events.Tags()["images"]
    gifs = sorted(p.name for p in (tmp_path / "videos" / "small").glob("*.gif"))
    assert "Empty-5x5-0.gif" in gifs and len(gifs) == len(rows)
    assert (tmp_path / "videos" / "small" / "Empty-5x5-0.gif").read_bytes()[:6] == b"GIF89a"


def test_env_outside_the_registry(run, tmp_path):
    """A MiniGrid id and a BabyAI id that are not registry tasks, wrapped into the common format."""
    out = _cli(run, "--env", "MiniGrid-Empty-Random-6x6-v0,BabyAI-GoToRedBallGrey-v0", "--episodes", "4",
               "--json", tmp_path / "ext.json", "--no-tensorboard")
    expect(out)
    doc = json.loads((tmp_path / "ext.json").read_text())
    assert [t["task"] for t in doc["tasks"]] == ["MiniGrid-Empty-Random-6x6-v0", "BabyAI-GoToRedBallGrey-v0"]
    assert {t["split"] for t in doc["tasks"]} == {"external"} and doc["split"] == "custom"
    assert all(t["episodes"] == 4 for t in doc["tasks"])


def test_env_ids_that_do_not_fit_are_refused(run):
    gym.register("OmnigridTest-SmallView-v0", entry_point=EmptyEnv, kwargs={"size": 6, "agent_view_size": 5})
    try:
        with pytest.raises(ValueError, match="has a 5x5 view; agents see the default 7x7 view"):
            make_external("OmnigridTest-SmallView-v0")
    finally:
        del gym.registry["OmnigridTest-SmallView-v0"]
    for args, message in [
        (["--env", "MiniGrid-DorKey-5x5-v0"], "'MiniGrid-DorKey-5x5-v0' is not a registered gymnasium id; did you mean MiniGrid-DoorKey-5x5-v0"),
        (["--env", "CartPole-v1"], "'CartPole-v1' is a CartPoleEnv, not a MiniGrid/BabyAI environment"),
    ]:
        out = _cli(run, *args)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, failure(out)


def test_task_id_agents_cannot_be_evaluated_outside_the_registry(run):
    model = load(run)
    model.config.conditioning = "task-id"
    with pytest.raises(ValueError, match="conditioned on registry task ids"):
        evaluate_target(model, EvalTarget.gym_id("MiniGrid-Empty-Random-6x6-v0"), episodes=1)


def test_comparison_mode_one_column_per_run_same_episodes(run, tmp_path):
    out = _cli(run, run / "checkpoints" / "final.pt", "--tasks", "Empty-5x5,GoToDoor-5x5", "--episodes", "8",
               "--json", tmp_path / "cmp.json", "--no-tensorboard")
    expect(out)
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("task"))
    assert header.split()[-2:] == [str(run), str(run / "checkpoints" / "final.pt")]
    doc = json.loads((tmp_path / "cmp.json").read_text())
    assert len(doc["runs"]) == 2
    # The same agent on the same seeds: the two columns agree exactly.
    assert doc["runs"][0]["tasks"] == doc["runs"][1]["tasks"]


def test_sb3_evaluate_policy_on_a_loaded_agent(run):
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    agent = load(run)
    torch.manual_seed(0)
    mean, std = evaluate_policy(agent, Monitor(make("Empty-5x5", seed=0)), n_eval_episodes=20, deterministic=False)
    assert math.isfinite(mean) and mean > 0.3  # the small run learnt Empty-5x5: success pays about 0.6


def test_bad_paths_and_foreign_architectures_are_clear_errors(run, tmp_path):
    out = _cli(tmp_path / "nowhere")
    assert out.returncode == 2 and "does not exist" in out.stderr, failure(out)
    payload = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    payload["model"]["config"]["hidden_size"] = 64  # declares another architecture than its weights
    torch.save(payload, tmp_path / "other.pt")
    out = _cli(tmp_path / "other.pt")
    assert out.returncode == 2 and "the weights do not fit the architecture" in out.stderr, failure(out)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, failure(out)
    for args, message in [(["--episodes", "0"], "--episodes=0 must be a positive integer"),
                          (["--tasks", "DoorKey-5x6"], "unknown task 'DoorKey-5x6'"),
                          (["--device", "tpu"], "--device 'tpu' is not a device")]:
        out = _cli(run, *args)
        assert out.returncode == 2 and message in out.stderr, failure(out)
