"""evaluate.py and training.evaluation: statistics, determinism, splits, JSON, TensorBoard, --env, comparison, errors."""

import dataclasses
import json
import math
import typing

import gymnasium as gym
import pytest
import torch
from minigrid.envs import EmptyEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import load
from envs import list_tasks, make, make_external
from evaluate import EvalArgs
from training import cli
from training.evaluation import (
    JSON_FORMAT,
    EvalTarget,
    evaluate_target,
    resolve_targets,
    step_budget,
    trained_tasks,
    wilson_interval,
)
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


def _parse_table(stdout):
    """The printed table: ({task: its words}, {family or "all": its words}) of the rows above and below the rule."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task"))
    rule = next(i for i in range(header, len(lines)) if set(lines[i]) == {"-"})
    rows = {line.split()[0]: line.split() for line in lines[header + 1:rule]}
    means = {line.split()[1]: line.split() for line in lines[rule + 1:] if line.startswith("mean ")}
    return rows, means


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
    rows, _ = _parse_table(out.stdout)
    assert set(rows) == {s.name for s in list_tasks(split="train")}
    assert all(r[2] == "train" and 0.0 <= float(r[4]) <= 1.0 for r in rows.values())
    assert {name for name, r in rows.items() if r[3] == "yes"} == {"Empty-5x5", "GoToDoor-5x5"}

    (report,) = (run / "eval").glob("train-*.json")
    doc = json.loads(report.read_text())
    assert doc["format"] == JSON_FORMAT and doc["split"] == "train" and doc["episodes"] == 6 and doc["seed"] == 0
    assert doc["frames"] == 16384 and doc["checkpoint"].endswith("final.pt")
    keys = {"task", "family", "split", "episodes", "successes", "success", "success_low", "success_high",
            "mean_return", "mean_length", "trained"}
    assert len(doc["tasks"]) == len(rows) and all(set(t) == keys for t in doc["tasks"])
    for t in doc["tasks"]:
        assert t["successes"] / t["episodes"] == pytest.approx(t["success"])
        assert float(rows[t["task"]][4]) == pytest.approx(t["success"], abs=0.006)

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
    assert doc["runs"][0]["families"] == doc["runs"][1]["families"]


def test_comparison_marks_per_run_the_tasks_it_trained_on(run, tmp_path):
    """One column per run: a * on the cells of tasks that run trained on; one whose file does not say gets none."""
    payload = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    del payload["config"]  # an agent-only file: it does not record its training tasks
    torch.save(payload, tmp_path / "agent.pt")
    out = _cli(run, tmp_path / "agent.pt", "--tasks", "Empty-5x5,DoorKey-5x5,GoToDoor-5x5", "--episodes", "4",
               "--json", tmp_path / "cmp.json", "--no-tensorboard")
    expect(out)
    rows, means = _parse_table(out.stdout)
    # words: task family split | success [low, high] of run 1 | of run 2 (a * glued to the interval when trained)
    assert [rows[t][5].endswith("]*") for t in ("Empty-5x5", "DoorKey-5x5", "GoToDoor-5x5")] == [True, False, True]
    assert not any(r[-1].endswith("*") for r in rows.values())
    assert set(means) == {"navigation", "recognition", "all"} and means["navigation"][2:4] == ["2", "tasks"]
    assert "* the run of that column trained on the task" in out.stdout
    assert "no * possible for agent: the checkpoint does not record" in out.stdout
    first, second = json.loads((tmp_path / "cmp.json").read_text())["runs"]
    assert {t["task"]: t["trained"] for t in first["tasks"]} == {"Empty-5x5": True, "DoorKey-5x5": False, "GoToDoor-5x5": True}
    assert first["trained_tasks"] == ["Empty-5x5", "GoToDoor-5x5"]
    assert second["trained_tasks"] is None and {t["trained"] for t in second["tasks"]} == {None}
    for doc in (first, second):
        for family, words in means.items():
            value = doc["mean_success"] if family == "all" else doc["families"][family]
            assert float(words[4 if doc is first else 5]) == pytest.approx(value, abs=0.006)


def test_sb3_evaluate_policy_on_a_loaded_agent(run):
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    agent = load(run)
    torch.manual_seed(0)
    mean, std = evaluate_policy(agent, Monitor(make("Empty-5x5", seed=0)), n_eval_episodes=20, deterministic=False)
    assert math.isfinite(mean) and mean > 0.3  # the small run learnt Empty-5x5: success pays about 0.6


def test_bad_paths_and_foreign_architectures_are_clear_errors(run, tmp_path):
    out = _cli(tmp_path / "nowhere", "--env", "BabyAI-GoToRedBallGrey-v0")
    assert out.returncode == 2 and out.stdout == "", failure(out)  # refused before building any env
    assert out.stderr == f"evaluate.py: error: {str(tmp_path / 'nowhere')!r} does not exist; give a run folder (runs/<name>) or a checkpoint file.\n"
    payload = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    payload["model"]["config"]["hidden_size"] = 64  # declares another architecture than its weights
    torch.save(payload, tmp_path / "other.pt")
    out = _cli(tmp_path / "other.pt")
    assert out.returncode == 2 and "the weights do not fit the architecture" in out.stderr, failure(out)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, failure(out)
    for args, message in [(["--episodes", "0"], "--episodes=0 must be a positive integer"),
                          (["--tasks", "DoorKey-5x6"], "unknown task 'DoorKey-5x6'"),
                          (["--device", "tpu"], "--device 'tpu' is not a device"),
                          (["--device", "cuda:x"], "--device 'cuda:x' is not a device; use one of {auto,cpu,cuda,cuda:N}")]:
        out = _cli(run, *args)
        assert out.returncode == 2 and message in out.stderr, failure(out)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, failure(out)


def test_family_means_and_trained_marker_in_table_and_json(run, tmp_path):
    out = _cli(run, "--tasks", "Empty-5x5,DoorKey-5x5,GoToDoor-5x5", "--episodes", "6", "--json", tmp_path / "r.json",
               "--no-tensorboard")
    expect(out)
    doc = json.loads((tmp_path / "r.json").read_text())
    success = {t["task"]: t["success"] for t in doc["tasks"]}
    assert doc["families"] == pytest.approx(
        {"navigation": (success["Empty-5x5"] + success["DoorKey-5x5"]) / 2, "recognition": success["GoToDoor-5x5"]})
    assert list(doc["families"]) == ["navigation", "recognition"]
    assert doc["mean_success"] == pytest.approx(sum(success.values()) / 3)
    assert {t["task"]: t["trained"] for t in doc["tasks"]} == {"Empty-5x5": True, "DoorKey-5x5": False, "GoToDoor-5x5": True}
    rows, means = _parse_table(out.stdout)
    assert {name: r[3] for name, r in rows.items()} == {"Empty-5x5": "yes", "DoorKey-5x5": "no", "GoToDoor-5x5": "yes"}
    # "mean navigation 2 tasks 0.55": the family's mean success under the success column
    assert [w[2] for w in means.values()] == ["2", "1", "3"] and list(means) == ["navigation", "recognition", "all"]
    for family, value in {**doc["families"], "all": doc["mean_success"]}.items():
        assert float(means[family][4]) == pytest.approx(value, abs=0.006)


def test_trained_tasks_come_from_the_run_config_in_the_checkpoint(run):
    payload = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert trained_tasks(payload) == ["Empty-5x5", "GoToDoor-5x5"]
    assert trained_tasks({**payload, "config": "tasks: ' A, B,'\nsome_future_field: 1\n"}) == ["A", "B"]
    assert trained_tasks({k: v for k, v in payload.items() if k != "config"}) is None
    assert trained_tasks({**payload, "config": "[not, a, mapping"}) is None


def test_progress_counts_steps_and_releases_the_unused_budget(run):
    """played + released == episodes x max_steps: the bar's total shrinks to the steps really played."""
    model, target = load(run), EvalTarget.task("Empty-5x5")
    calls, episodes_done = [], []
    result = evaluate_target(model, target, episodes=12, num_envs=4, seed=0, on_steps=lambda p, r: calls.append((p, r)),
                             on_episode=lambda: episodes_done.append(1))
    played, released = sum(p for p, _ in calls), sum(r for _, r in calls)
    assert played + released == step_budget(target, 12) == 12 * 100
    assert played == round(result.mean_length * 12) and released > 0  # the trained agent ends episodes early
    assert all(0 <= p <= 4 for p, _ in calls) and len(episodes_done) == 12
    # A budget smaller than the episodes: steps past it are not counted, the totals still add up.
    short = dataclasses.replace(target, max_steps=3)
    calls.clear()
    result = evaluate_target(model, short, episodes=12, num_envs=4, seed=0, on_steps=lambda p, r: calls.append((p, r)))
    assert sum(p for p, _ in calls) + sum(r for _, r in calls) == step_budget(short, 12) == 36
    assert sum(p for p, _ in calls) < result.mean_length * 12
    # Old callers: on_episode alone still works.
    assert evaluate_target(model, target, episodes=3, on_episode=lambda: None).episodes == 3


def test_external_targets_know_their_step_budget():
    assert EvalTarget.gym_id("MiniGrid-Empty-Random-6x6-v0").max_steps == 4 * 6 * 6
    assert EvalTarget.gym_id("BabyAI-GoToRedBallGrey-v0").max_steps > 0  # BabyAI sets it at reset, from the mission


def test_no_run_is_a_one_line_error_before_any_work():
    out = _cli()
    assert out.returncode == 2, failure(out)
    assert out.stdout == "" and "Traceback" not in out.stderr, failure(out)
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("evaluate.py: error: no run to evaluate") and "python evaluate.py runs/<run>" in line


def test_help_shows_every_option_with_its_choices():
    out = python("evaluate.py", "--help", env={"COLUMNS": "200"})
    expect(out)
    text = out.stdout
    assert "RUN [RUN ...]" in text and "(default: )" not in text and "[STR [STR ...]]" not in text
    assert "usage: evaluate.py [-h] [OPTIONS] RUN [RUN ...]" in text
    for f in dataclasses.fields(EvalArgs):
        if f.name == "runs":
            continue
        option = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            assert f"{option}, --no-{f.name.replace('_', '-')}" in text, option
            continue
        line = next((line for line in text.splitlines() if line.lstrip("│ ").startswith(option + " ")), None)
        assert line is not None, f"{option} missing from --help"
        choices = typing.get_args(typing.get_type_hints(EvalArgs, include_extras=True)[f.name])
        if choices and all(isinstance(c, str) for c in choices):  # a Literal
            assert "{" + ",".join(choices) + "}" in line, line
    device = next(line for line in text.splitlines() if "--device" in line)
    assert "{auto,cpu,cuda,cuda:N}" in device
    # cuda:N stays a value the parser takes (the device itself is checked later, with a one-line error)
    assert cli.parse(EvalArgs, ["r", "--device", "cuda:1"]).device == "cuda:1"
