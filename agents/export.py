"""A trained agent as one self-contained policy file: ONNX (onnxruntime) or TorchScript.

    from agents.export import PolicyModule, export_onnx, load_onnx_session
    path = export_onnx(agents.persist.load("runs/<run>"), "policy.onnx")
    session = load_onnx_session(path)
    logits, value = session.run(list(OUTPUT_NAMES), {"image": ..., "direction": ..., ...})

Inputs, outputs and the traceable module: :mod:`agents.traceable`.

ONNX opset :data:`OPSET` (17), written by torch's TorchScript-based exporter
(``dynamo=False``). The file's ``metadata_props`` (TorchScript: the extra file
``omnigrid.json``) hold :func:`metadata`: ``format`` (:data:`FORMAT`),
``mission_length``, ``vocab_size``, ``obs_mode``, ``image_shape``,
``num_tasks``, ``num_actions``, ``needs_task`` and ``needs_family`` (``true``
when the ``task`` / ``family`` input changes the output; every input must be
fed all the same), ``memory``, ``hidden_size``, the input and output names,
and the architecture (``config``, JSON).
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

from agents.encoders import NUM_COLOR_IDS, NUM_OBJECT_IDS, NUM_STATE_IDS
from agents.heads import NUM_ACTIONS
from agents.model import MultiTaskActorCritic, ObsBatch
from agents.sharing import NUM_FAMILIES, PLE
from agents.traceable import (  # noqa: F401  (the export's interface, re-exported)
    FORMAT, INPUT_NAMES, METADATA_FILE, OPSET, OUTPUT_NAMES, STATE_INPUT_NAMES, STATE_OUTPUT_NAMES, PolicyModule,
)

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
