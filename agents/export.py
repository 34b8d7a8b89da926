"""A trained agent as one self-contained policy file: ONNX (onnxruntime) or TorchScript.

    from agents.export import PolicyModule, export_onnx, load_onnx_session
    path = export_onnx(agents.persist.load("runs/<run>"), "policy.onnx")
    session = load_onnx_session(path)
    logits, value = session.run(list(OUTPUT_NAMES), {"image": ..., "direction": ..., ...})

Inputs (:data:`INPUT_NAMES`), every one with a dynamic batch axis ``B``:

* ``image``: uint8 ``(B, 7, 7, 3)`` symbolic view (``(B, 56, 56, 3)`` for an
  ``obs=rgb`` agent), as :class:`envs.wrappers.CommonObs` gives it;
* ``direction``: int64 ``(B,)``;
* ``mission``: int64 ``(B, L)`` token ids (:func:`envs.wrappers.tokenize`),
  ``L = model.space_info["mission_length"]`` fixed;
* ``task``: int64 ``(B,)`` task index; ``family``: int64 ``(B,)`` 0 navigation,
  1 recognition.

Outputs (:data:`OUTPUT_NAMES`): ``logits`` float32 ``(B, 7)`` and ``value``
float32 ``(B,)``. An agent with ``memory=lstm`` takes three more inputs
(:data:`STATE_INPUT_NAMES`): ``state_h`` and ``state_c`` float32 ``(B, hidden)``
(the previous step's ``next_state_*``; zeros at the first step) and
``episode_start`` bool ``(B,)`` (True where an episode begins: that row's state
is zeroed first, as ``model.act(obs, state, episode_start)`` does), and gives
two more outputs, ``next_state_h`` and ``next_state_c``
(:data:`STATE_OUTPUT_NAMES`).

ONNX opset :data:`OPSET` (17), written by torch's TorchScript-based exporter
(``dynamo=False``). The file's ``metadata_props`` (TorchScript: the extra file
``omnigrid.json``) hold :func:`metadata`: ``format`` (:data:`FORMAT`),
``mission_length``, ``vocab_size``, ``obs_mode``, ``image_shape``,
``num_tasks``, ``num_actions``, ``needs_task`` and ``needs_family`` (``true``
when the ``task`` / ``family`` input changes the output; every input must be
fed all the same), ``memory``, ``hidden_size``, the input and output names,
and the architecture (``config``, JSON).

The agent's own forward cannot be traced: its mission encoder deduplicates
rows with numpy and caches embeddings. :class:`PolicyModule` computes the same
function from the agent's submodules with traceable torch ops (the GRU over
every row at the padded length, each row's state after its last word), and
PLE's family routing with a gather instead of Python indexing.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.encoders import NUM_COLOR_IDS, NUM_OBJECT_IDS, NUM_STATE_IDS
from agents.heads import NUM_ACTIONS
from agents.model import MultiTaskActorCritic, ObsBatch
from agents.sharing import NUM_FAMILIES, PLE

INPUT_NAMES: tuple[str, ...] = ("image", "direction", "mission", "task", "family")
OUTPUT_NAMES: tuple[str, ...] = ("logits", "value")
STATE_INPUT_NAMES: tuple[str, ...] = ("state_h", "state_c", "episode_start")
STATE_OUTPUT_NAMES: tuple[str, ...] = ("next_state_h", "next_state_c")
OPSET = 17
FORMAT = "omnigrid-policy-1"
"""Version of the exported interface (names, shapes, metadata); bumped when any of them changes meaning."""
METADATA_FILE = "omnigrid.json"
"""The TorchScript extra file holding :func:`metadata`."""


class PolicyModule(nn.Module):
    """``MultiTaskActorCritic`` as a traceable ``forward(image, direction, mission, task, family) -> (logits, value)``.

    Same function as ``model.action_logits(obs)[0]`` and ``model.value(obs)``
    (with memory: ``action_logits(obs, (state_h, state_c), episode_start)``), written with
    ops that ``torch.jit.trace`` and the ONNX exporter follow for any batch size.

    Args:
        model: the agent; it is shared, not copied (put it in eval mode).
    """

    def __init__(self, model: MultiTaskActorCritic) -> None:
        super().__init__()
        self.model = model
        self.recurrent = model.memory is not None
        sharing = model.sharing
        # PLE's expert owners as Python ints: a traced `if owner[k] == -1` would be a tensor read.
        self._owner = [int(o) for o in sharing.owner.tolist()] if isinstance(sharing, PLE) else None

    # ------------------------------------------------------------- mission
    def _mission(self, tokens: torch.Tensor) -> torch.Tensor:
        """``MissionEncoder._encode`` without the numpy row deduplication: ``(B, L) -> (B, hidden)``."""
        encoder = self.model.conditioning.mission
        lengths = (tokens != 0).sum(dim=1).clamp(min=1)  # (B,)
        words = encoder.embed(tokens)  # (B, L, E)
        if encoder.kind == "gru":
            # A GRU's output at step t reads steps <= t only: the padded length gives the same states.
            out, _ = encoder.gru(words)  # (B, L, hidden)
            index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
            return out.gather(1, index).squeeze(1)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = encoder.word(words + encoder.position(positions))  # (B, L, hidden), >= 0
        # Padding masked to 0 never beats a word (>= 0), so the max equals the trimmed one.
        h = h * (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1).to(h.dtype)
        return encoder.out(h.amax(dim=1))

    def _context(self, mission: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        cond = self.model.conditioning
        ctx = self._mission(mission) if cond.mission is not None else None
        if cond.task is not None:
            ctx = cond.task(task) if ctx is None else ctx + cond.task(task)
        assert ctx is not None, "a conditioning has a mission encoder or a task embedding"
        return ctx

    # ------------------------------------------------------------- sharing
    def _ple(self, x: torch.Tensor, ctx: torch.Tensor, family: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`agents.sharing.PLE.forward` with the family path picked by a gather."""
        ple = self.model.sharing
        own = ple._mask(family)
        everything = torch.ones_like(own)
        shared_in, family_in = x, x
        gates = iter(ple.inner_gates)
        for i, experts in enumerate(ple.levels):
            outs = torch.stack(
                [e(shared_in if self._owner[k] == -1 else family_in) for k, e in enumerate(experts)], dim=1
            )
            if i == len(ple.levels) - 1:
                return {head: ple._mix(gate(ctx), own, outs) for head, gate in ple.head_gates.items()}
            paths = torch.stack([ple._mix(next(gates)(ctx), own, outs) for _ in range(NUM_FAMILIES)], dim=1)
            index = family.view(-1, 1, 1).expand(-1, 1, paths.shape[-1])
            family_in = paths.gather(1, index).squeeze(1)
            shared_in = ple._mix(next(gates)(ctx), everything, outs)
        raise AssertionError("PLE has no levels")

    def _lstm(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``nn.LSTMCell`` written out (its fused op exports as a chunk of unknown size). Gates in torch's order i, f, g, o."""
        cell = self.model.memory
        gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
        n = cell.hidden_size
        i, f, g, o = (gates[:, k * n : (k + 1) * n] for k in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    # ------------------------------------------------------------- forward
    def forward(
        self,
        image: torch.Tensor,
        direction: torch.Tensor,
        mission: torch.Tensor,
        task: torch.Tensor,
        family: torch.Tensor,
        state_h: torch.Tensor | None = None,
        state_c: torch.Tensor | None = None,
        episode_start: torch.Tensor | None = None,
    ):
        """Logits ``(B, 7)`` and values ``(B,)``; with memory also the next ``(h, c)``, each ``(B, hidden)``.

        ``episode_start`` bool ``(B,)`` (memory only; None: no row starts an episode).
        """
        model = self.model
        ctx = self._context(mission, task)
        z = model.conditioning.features(model.encoder, image, direction, ctx)
        if self.recurrent:
            assert state_h is not None and state_c is not None, "an agent with memory needs state_h and state_c"
            if episode_start is not None:  # a new episode forgets the previous one (MultiTaskActorCritic._remember)
                keep = 1 - episode_start.to(z.dtype).unsqueeze(1)
                state_h, state_c = state_h * keep, state_c * keep
            state_h, state_c = self._lstm(z, state_h, state_c)
            z = state_h
        towers = self._ple(z, ctx, family) if self._owner is not None else model.sharing(z, ctx, family)
        logits, value = model.actor(towers["policy"]), model.critic(towers["value"])
        if self.recurrent:
            return logits, value, state_h, state_c
        return logits, value

    # ------------------------------------------------------------- helpers
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES + (STATE_INPUT_NAMES if self.recurrent else ())

    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES + (STATE_OUTPUT_NAMES if self.recurrent else ())

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the right dtypes and shapes (what tracing runs on)."""
        info = self.model.space_info
        device = self.model.device
        inputs = [
            torch.zeros((batch, *info["image_shape"]), dtype=torch.uint8, device=device),
            torch.zeros(batch, dtype=torch.int64, device=device),
            torch.zeros((batch, info["mission_length"]), dtype=torch.int64, device=device),
            torch.zeros(batch, dtype=torch.int64, device=device),
            torch.zeros(batch, dtype=torch.int64, device=device),
        ]
        if self.recurrent:
            h, c = self.model.initial_state(batch)
            inputs += [h, c, torch.zeros(batch, dtype=torch.bool, device=device)]
        # Distinct missions of distinct lengths, so no branch is specialised on one row.
        inputs[2][:, 0] = 2
        inputs[2][1:, 1] = 3
        if self.recurrent:
            inputs[-1][0] = True
        return tuple(inputs)


CHECK_ROWS = 64
CHECK_TOLERANCE = 1e-4
"""Largest absolute difference an export may show against the agent on :func:`sample_inputs`."""


class ExportMismatch(RuntimeError):
    """An exported file computes something other than the agent (a bug of the export, not of the input)."""


def sample_inputs(model: MultiTaskActorCritic, batch: int = CHECK_ROWS, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random valid inputs by name (numpy): cell ids in MiniGrid's ranges, missions of every length 0..L.

    With memory, random ``state_h``/``state_c`` too (zeros would hide the recurrent weights)
    and ``episode_start`` True on every third row.
    """
    info = model.space_info
    rng = np.random.default_rng(seed)
    shape = tuple(info["image_shape"])
    if shape == (7, 7, 3):
        highs = np.array([NUM_OBJECT_IDS, NUM_COLOR_IDS, NUM_STATE_IDS])
        image = (rng.random((batch, *shape)) * highs).astype(np.uint8)
    else:
        image = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
    length = int(info["mission_length"])
    mission = rng.integers(1, int(info["vocab_size"]), (batch, length), dtype=np.int64)
    mission[np.arange(length)[None, :] >= (np.arange(batch) % (length + 1))[:, None]] = 0  # 0-padded at the end
    feed = {
        "image": image,
        "direction": rng.integers(0, 4, batch, dtype=np.int64),
        "mission": mission,
        "task": rng.integers(0, int(info["num_tasks"]), batch, dtype=np.int64),
        "family": rng.integers(0, NUM_FAMILIES, batch, dtype=np.int64),
    }
    if model.memory is not None:
        hidden = model.config.hidden_size
        feed["state_h"] = rng.standard_normal((batch, hidden), dtype=np.float32)
        feed["state_c"] = rng.standard_normal((batch, hidden), dtype=np.float32)
        feed["episode_start"] = np.arange(batch) % 3 == 0  # row 0 starts an episode: the batch of 1 checks the reset
    return feed


def reference_outputs(model: MultiTaskActorCritic, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """What the agent itself answers on ``feed``: logits, values (and the next state), as an export's outputs."""
    obs = ObsBatch.from_numpy({k: feed[k] for k in INPUT_NAMES}, model.device)
    state = (torch.from_numpy(feed["state_h"]), torch.from_numpy(feed["state_c"])) if "state_h" in feed else None
    starts = torch.from_numpy(feed["episode_start"]) if "episode_start" in feed else None
    with torch.no_grad():
        logits, next_state = model.action_logits(obs, state, starts)
        value = model.value(obs, state, starts)
    return [logits.cpu().numpy(), value.cpu().numpy(), *(s.cpu().numpy() for s in next_state or ())]


def check_outputs(model: MultiTaskActorCritic, run: Any, *, batch: int = CHECK_ROWS) -> float:
    """Run an export (``run(feed) -> outputs``) on :func:`sample_inputs`, at ``batch`` rows and at 1; the largest difference.

    Raises:
        ExportMismatch: a difference above :data:`CHECK_TOLERANCE`, or other shapes than the agent's.
    """
    feed = sample_inputs(model, batch)
    worst = 0.0
    for rows in (slice(None), slice(0, 1)):
        part = {k: v[rows] for k, v in feed.items()}
        got, want = run(part), reference_outputs(model, part)
        for name, g, w in zip(PolicyModule(model).output_names(), got, want):
            g = np.asarray(g)
            if g.shape != w.shape or g.dtype != np.float32:
                raise ExportMismatch(f"output {name} is {g.dtype} {g.shape}; the agent gives float32 {w.shape}.")
            worst = max(worst, float(np.abs(g - w).max()))
    if worst > CHECK_TOLERANCE:
        raise ExportMismatch(f"the export departs from the agent by {worst:.2e} (> {CHECK_TOLERANCE:g}) on random inputs.")
    return worst


def metadata(model: MultiTaskActorCritic) -> dict[str, str]:
    """What a server needs without the checkpoint, as strings (ONNX ``metadata_props``)."""
    info = model.space_info
    shape = tuple(int(s) for s in info["image_shape"])
    policy = PolicyModule(model)
    return {
        "format": FORMAT,
        "mission_length": str(int(info["mission_length"])),
        "vocab_size": str(int(info["vocab_size"])),
        "obs_mode": "symbolic" if shape == (7, 7, 3) else "rgb",
        "image_shape": json.dumps(list(shape)),
        "num_tasks": str(int(info["num_tasks"])),
        "num_actions": str(NUM_ACTIONS),
        "needs_task": json.dumps(model.conditioning.task is not None),
        "needs_family": json.dumps(isinstance(model.sharing, PLE)),
        "memory": model.config.memory,
        "hidden_size": str(model.config.hidden_size),
        "input_names": json.dumps(list(policy.input_names())),
        "output_names": json.dumps(list(policy.output_names())),
        "config": json.dumps(model.constructor_args()["config"], sort_keys=True),
    }


def _temp_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, path: Path) -> None:
    """Give the finished temporary file its real name (atomic) and the permissions open() would give."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _cpu_eval(model: MultiTaskActorCritic) -> PolicyModule:
    return PolicyModule(model.to("cpu").eval()).eval()


def _keep_inputs(proto: Any, policy: PolicyModule, names: tuple[str, ...]) -> None:
    """Put back the inputs the exporter dropped as unused (``family`` under hard sharing), in :data:`INPUT_NAMES` order.

    A caller feeds every input whatever the architecture; onnxruntime refuses
    a feed naming an input the graph lacks.
    """
    from onnx import TensorProto, helper

    kinds = {torch.uint8: TensorProto.UINT8, torch.int64: TensorProto.INT64, torch.float32: TensorProto.FLOAT,
             torch.bool: TensorProto.BOOL}
    present = {value.name: value for value in proto.graph.input}
    ordered = []
    for name, example in zip(names, policy.example_inputs()):
        if name in present:
            ordered.append(present.pop(name))
        else:
            shape = ["batch", *example.shape[1:]]
            ordered.append(helper.make_tensor_value_info(name, kinds[example.dtype], shape))
    assert not present, f"the exporter added inputs {sorted(present)}"
    del proto.graph.input[:]
    proto.graph.input.extend(ordered)


def export_onnx(model: MultiTaskActorCritic, path: str | os.PathLike, *, check: bool = True) -> Path:
    """Write ``model``'s policy to ``path`` as ONNX (opset :data:`OPSET`), atomically; returns the path.

    The model is moved to the CPU and put in eval mode. With ``check``, the
    written file is run (onnxruntime) on :func:`sample_inputs` before it gets
    its name, and an :class:`ExportMismatch` is raised, nothing published, if
    it departs from the agent by more than :data:`CHECK_TOLERANCE`.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    policy = _cpu_eval(model)
    names_in, names_out = policy.input_names(), policy.output_names()
    dynamic = {name: {0: "batch"} for name in names_in + names_out}
    tmp = _temp_beside(path)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            torch.onnx.export(
                policy, policy.example_inputs(), str(tmp), input_names=list(names_in), output_names=list(names_out),
                dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        _keep_inputs(proto, policy, names_in)
        for key, value in metadata(model).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "omnigrid"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        if check:
            session = load_onnx_session(tmp)
            check_outputs(model, lambda feed: session.run(list(names_out), feed))
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def export_torchscript(model: MultiTaskActorCritic, path: str | os.PathLike, *, check: bool = True) -> Path:
    """Write ``model``'s policy to ``path`` as traced TorchScript (``torch.jit.load``), atomically; returns the path.

    :func:`metadata` travels as the extra file ``omnigrid.json``. ``check``: as
    :func:`export_onnx`, on the reloaded file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    policy = _cpu_eval(model)
    tmp = _temp_beside(path)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(policy, policy.example_inputs(), check_trace=False)
            extra = {METADATA_FILE: json.dumps(metadata(model), sort_keys=True)}
            torch.jit.save(traced, str(tmp), _extra_files=extra)
        if check:
            module, _ = load_torchscript(tmp)
            names = policy.input_names()

            def run(feed: dict[str, Any]) -> list[Any]:
                with torch.no_grad():
                    return [t.numpy() for t in module(*(torch.from_numpy(feed[k]) for k in names))]

            check_outputs(model, run)
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """A TorchScript export and its :func:`metadata` (a ValueError if the file is not one)."""
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 points at torch.export
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:  # torch's own errors
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{str(path)!r} is not a readable TorchScript file: {first}") from None
    if not extra[METADATA_FILE]:
        raise ValueError(f"{str(path)!r} lacks {METADATA_FILE}; export it with agents.export.")
    return module.eval(), json.loads(extra[METADATA_FILE])


def load_onnx_session(path: str | os.PathLike, threads: int = 1):
    """An onnxruntime ``InferenceSession`` on the CPU provider, ``threads`` intra-op threads.

    Raises:
        ValueError: ``path`` is not a file, or ``threads`` < 1.
    """
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ValueError(f"{str(path)!r} does not exist; give an .onnx file written by export.py.")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive integer.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_metadata(session: Any) -> dict[str, str]:
    """The :func:`metadata` of a session from :func:`load_onnx_session`."""
    return dict(session.get_modelmeta().custom_metadata_map)
