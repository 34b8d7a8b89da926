"""agents/export.py and export.py: the exported policy computes the agent's logits and values.

Observations come from real episodes (random actions) of five tasks of both
families; ONNX Runtime's and TorchScript's outputs are compared with the
agent's own ``action_logits`` and ``value`` on the whole batch and on single
rows (the batch axis is dynamic), for the default architecture and others.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import envs
from agents import export
from agents.model import AgentConfig, MultiTaskActorCritic, ObsBatch
from agents.persist import agent_payload, atomic_save
from tests.conftest import expect, failure, python

TASKS = ("Empty-5x5", "DoorKey-5x5", "GoToDoor-5x5", "Fetch-5x5-N2", "ColorGoTo-5x5-N2")
STEPS_PER_TASK = 220  # 1,100 observations
TOLERANCE = 1e-4


def _record(tasks, steps: int, *, obs: str = "symbolic", seed: int = 0) -> dict[str, np.ndarray]:
    """Observations of random-action episodes, ``steps`` a task, stacked into one batch."""
    rows = []
    rng = np.random.default_rng(seed)
    for i, task in enumerate(tasks):
        env = envs.make(task, obs=obs)
        o, _ = env.reset(seed=seed + i)
        for _ in range(steps):
            rows.append(o)
            o, _, terminated, truncated, _ = env.step(int(rng.integers(7)))
            if terminated or truncated:
                o, _ = env.reset()
        env.close()
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in export.INPUT_NAMES}


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    data = _record(TASKS, STEPS_PER_TASK)
    assert len(data["image"]) >= 1000 and set(data["family"].tolist()) == {0, 1}
    assert len({row.tobytes() for row in data["mission"]}) > 5, "missions of several lengths and words"
    return data


def _agent(config: AgentConfig, *, obs: str = "symbolic", seed: int = 0) -> MultiTaskActorCritic:
    """A random agent whose logits are O(1): the actor's last layer starts at gain 0.01, which hides errors."""
    torch.manual_seed(seed)
    model = MultiTaskActorCritic(envs.make("Empty-5x5", obs=obs).observation_space, config)
    torch.nn.init.normal_(model.actor.net[-1].weight)
    return model.eval()


def _reference(model, data, state=None, starts=None):
    """The agent's own logits, values and next state on ``data``."""
    obs = ObsBatch.from_numpy(data, "cpu")
    with torch.no_grad():
        logits, next_state = model.action_logits(obs, state, starts)
        value = model.value(obs, state, starts)
    return logits.numpy(), value.numpy(), next_state


def _feeds(model, data, seed: int = 1):
    """The inputs by name, the agent's (h, c) state (random, so memory matters) or None, and episode starts or None."""
    feed = {k: data[k] for k in export.INPUT_NAMES}
    state = starts = None
    if model.memory is not None:
        g = torch.Generator().manual_seed(seed)
        n, hidden = len(data["image"]), model.config.hidden_size
        state = (torch.randn(n, hidden, generator=g), torch.randn(n, hidden, generator=g))
        starts = torch.rand(n, generator=g) < 0.3
        feed.update(state_h=state[0].numpy(), state_c=state[1].numpy(), episode_start=starts.numpy())
    return feed, state, starts


def _check(outputs, reference, rows=None):
    logits, value, next_state = reference
    pick = slice(None) if rows is None else rows
    got_logits, got_value = np.asarray(outputs[0]), np.asarray(outputs[1])
    assert got_logits.dtype == np.float32 and got_value.dtype == np.float32
    assert got_logits.shape == logits[pick].shape and got_value.shape == value[pick].shape
    assert np.abs(got_logits - logits[pick]).max() < TOLERANCE
    assert np.abs(got_value - value[pick]).max() < TOLERANCE
    assert (got_logits.argmax(-1) == logits[pick].argmax(-1)).all(), "greedy actions differ"
    if next_state is not None:
        for got, want in zip(outputs[2:], next_state):
            assert np.abs(np.asarray(got) - want.numpy()[pick]).max() < TOLERANCE
    else:
        assert len(outputs) == 2


CONFIGS = {
    "default": AgentConfig(),  # film, gru, hard sharing (family unused by the graph)
    "ple-bow": AgentConfig(sharing="ple", mission_encoder="bow"),
    "lstm-mmoe-concat": AgentConfig(memory="lstm", sharing="mmoe", conditioning="concat", task_embedding=True),
    "task-id": AgentConfig(conditioning="task-id", aux="none"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnx_and_torchscript_match_the_agent(name, batch, tmp_path):
    model = _agent(CONFIGS[name])
    feed, state, starts = _feeds(model, batch)
    reference = _reference(model, batch, state, starts)
    assert np.abs(reference[0]).max() > 0.5, "logits too small to tell a wrong graph"

    onnx_path = export.export_onnx(model, tmp_path / "p.onnx")
    ts_path = export.export_torchscript(model, tmp_path / "p.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx", "p.pt"], "temporary files left behind"

    session = export.load_onnx_session(onnx_path, threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    recurrent = model.memory is not None
    names_in = export.INPUT_NAMES + (export.STATE_INPUT_NAMES if recurrent else ())
    names_out = export.OUTPUT_NAMES + (export.STATE_OUTPUT_NAMES if recurrent else ())
    assert tuple(i.name for i in session.get_inputs()) == names_in
    assert tuple(o.name for o in session.get_outputs()) == names_out
    assert session.get_inputs()[2].shape[1] == model.space_info["mission_length"]
    assert not isinstance(session.get_inputs()[0].shape[0], int), "the batch axis is dynamic"

    module, ts_meta = export.load_torchscript(ts_path)
    meta = export.onnx_metadata(session)
    assert meta == ts_meta == export.metadata(model)
    assert meta["format"] == export.FORMAT and meta["obs_mode"] == "symbolic"
    assert int(meta["mission_length"]) == model.space_info["mission_length"]
    assert int(meta["vocab_size"]) == model.space_info["vocab_size"]
    assert json.loads(meta["config"])["sharing"] == CONFIGS[name].sharing
    assert json.loads(meta["input_names"]) == list(names_in)
    assert json.loads(meta["needs_family"]) == (CONFIGS[name].sharing == "ple")
    assert json.loads(meta["needs_task"]) == (CONFIGS[name].task_embedding or CONFIGS[name].conditioning == "task-id")

    _check(session.run(list(names_out), feed), reference)
    with torch.no_grad():
        _check(module(*(torch.from_numpy(feed[k]) for k in names_in)), reference)
    if starts is not None:  # both kinds of row are in the batch, and the reset changes the outputs
        assert 0 < int(starts.sum()) < len(starts)
        _, _, kept = _reference(model, batch, state)
        assert not torch.allclose(kept[0][starts], reference[2][0][starts])
    # Batch size 1, a row of each task (the graph was traced on 2 rows).
    for row in range(0, len(batch["image"]), STEPS_PER_TASK):
        one = {k: v[row : row + 1] for k, v in feed.items()}
        _check(session.run(list(names_out), one), reference, slice(row, row + 1))
        with torch.no_grad():
            _check(module(*(torch.from_numpy(one[k]) for k in names_in)), reference, slice(row, row + 1))


def test_rgb_agent_exports(tmp_path):
    model = _agent(AgentConfig(), obs="rgb")
    data = _record(("Empty-5x5", "GoToDoor-5x5"), 60, obs="rgb")
    reference = _reference(model, data)
    session = export.load_onnx_session(export.export_onnx(model, tmp_path / "rgb.onnx"))
    assert tuple(session.get_inputs()[0].shape[1:]) == (56, 56, 3)
    assert export.onnx_metadata(session)["obs_mode"] == "rgb"
    _check(session.run(list(export.OUTPUT_NAMES), data), reference)
    module, _ = export.load_torchscript(export.export_torchscript(model, tmp_path / "rgb.pt"))
    with torch.no_grad():
        _check(module(*(torch.from_numpy(data[k]) for k in export.INPUT_NAMES)), reference)


@pytest.mark.parametrize("writer", ["export_onnx", "export_torchscript"])
def test_an_export_that_departs_from_the_agent_is_not_written(writer, tmp_path, monkeypatch):
    def last_position(self, tokens):  # a plausible bug: the GRU's state after the padding, not the last word
        encoder = self.model.conditioning.mission
        return encoder.gru(encoder.embed(tokens))[0][:, -1]

    monkeypatch.setattr(export.PolicyModule, "_mission", last_position)
    with pytest.raises(export.ExportMismatch, match="departs from the agent"):
        getattr(export, writer)(_agent(AgentConfig()), tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_sample_inputs_cover_every_mission_length():
    model = _agent(AgentConfig(memory="lstm"))
    feed = export.sample_inputs(model, 40)
    lengths = (feed["mission"] != 0).sum(1)
    assert set(lengths.tolist()) == set(range(17))
    assert ((feed["mission"] != 0).cumprod(1).sum(1) == lengths).all(), "padding only at the end"
    assert tuple(feed) == export.INPUT_NAMES + export.STATE_INPUT_NAMES
    assert feed["episode_start"].dtype == np.bool_ and 0 < feed["episode_start"].sum() < 40
    assert feed["image"][..., 0].max() < 11 and feed["image"][..., 1].max() < 6 and feed["image"][..., 2].max() < 3


def test_load_onnx_session_refuses_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        export.load_onnx_session(tmp_path / "none.onnx")
    with pytest.raises(ValueError, match="not a readable TorchScript"):
        (tmp_path / "junk.pt").write_bytes(b"junk")
        export.load_torchscript(tmp_path / "junk.pt")


# ---------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder holding a saved PLE agent (family routing matters)."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    atomic_save(agent_payload(_agent(AgentConfig(sharing="ple"), seed=3)), run / "checkpoints" / "final.pt")
    return run


def test_cli_round_trip(run_dir, batch, tmp_path):
    model = _agent(AgentConfig(sharing="ple"), seed=3)
    reference = _reference(model, batch)

    done = expect(python("export.py", run_dir))
    default = run_dir / "export" / "policy.onnx"
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"wrote {default} (ONNX opset {export.OPSET}"), done.stdout
    assert lines[1].startswith("  inputs:  image uint8 (B, 7, 7, 3), direction int64 (B), mission int64 (B, 16),"), done.stdout
    for name in export.INPUT_NAMES:
        assert f" {name} " in lines[1], done.stdout
    for name in export.OUTPUT_NAMES:
        assert f" {name} " in lines[2], done.stdout
    assert lines[3].startswith("  checked: "), done.stdout
    session = export.load_onnx_session(default)
    _check(session.run(list(export.OUTPUT_NAMES), batch), reference)

    out = tmp_path / "deep" / "policy.pt"
    done = expect(python("export.py", run_dir / "checkpoints" / "final.pt", "--format", "torchscript", "--out", out))
    assert done.stdout.startswith(f"wrote {out} (TorchScript"), done.stdout
    module, meta = export.load_torchscript(out)
    assert meta["format"] == export.FORMAT
    with torch.no_grad():
        _check(module(*(torch.from_numpy(batch[k]) for k in export.INPUT_NAMES)), reference)
    assert sorted(p.name for p in out.parent.iterdir()) == ["policy.pt"]


def test_cli_help_lists_every_option():
    done = expect(python("export.py", "--help"))
    for option in ("RUN", "--format", "onnx", "torchscript", "--out", "--help"):
        assert option in done.stdout, done.stdout


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "case",
    ["missing", "empty-run", "not-a-checkpoint", "format", "out-is-folder", "out-under-a-file", "unknown-option", "no-run"],
)
def test_cli_bad_input_is_one_line(case, run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "afile").write_text("x")
    out = ["--out", tmp_path / "x.onnx"]
    args = {
        "missing": [tmp_path / "nope", *out],
        "empty-run": [tmp_path / "empty", *out],
        "not-a-checkpoint": [tmp_path / "junk.pt", *out],
        "format": [run_dir, "--format", "tflite", *out],
        "out-is-folder": [run_dir, "--out", tmp_path / "empty"],
        "out-under-a-file": [run_dir, "--out", tmp_path / "afile" / "x.onnx"],
        "unknown-option": [run_dir, "--outt", tmp_path / "x.onnx"],
        "no-run": [],
    }[case]
    before, run_before = _tree(tmp_path), _tree(run_dir)
    done = python("export.py", *args)
    assert done.returncode == 2, failure(done)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export.py: error: "), done.stderr
    assert done.stdout == ""
    assert _tree(tmp_path) == before and _tree(run_dir) == run_before, "bad input wrote something"
