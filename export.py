"""Export a trained agent's policy as one self-contained file: ONNX (onnxruntime) or TorchScript.

    python export.py runs/<run>                       # runs/<run>/export/policy.onnx
    python export.py runs/<run> --format torchscript  # runs/<run>/export/policy.pt (torch.jit.load)
    python export.py runs/<run>/checkpoints/final.pt --out policy.onnx
    python serve.py runs/<run>/export/policy.onnx     # serve it without the checkpoint

The file needs neither the checkpoint nor this code. ONNX opset 17; B, the
batch size, is free; L is the agent's mission_length (16 by default):

    inputs   image          uint8   (B, 7, 7, 3)   symbolic view; (B, 56, 56, 3) for an obs=rgb agent
             direction      int64   (B,)
             mission        int64   (B, L)         token ids, envs.wrappers.tokenize
             task           int64   (B,)           task index (envs.TASKS order)
             family         int64   (B,)           0 navigation, 1 recognition
    outputs  logits         float32 (B, 7)         action logits
             value          float32 (B,)
    memory=lstm agents also:
    inputs   state_h, state_c  float32 (B, hidden)  the previous step's next_state_*, zeros at first
             episode_start     bool    (B,)         True where an episode begins (its state is reset)
    outputs  next_state_h, next_state_c  float32 (B, hidden)

Every input is fed, even one the architecture ignores. The ONNX file's
metadata_props, and the TorchScript file's extra file omnigrid.json, hold what
a server needs: format omnigrid-policy-1, mission_length, vocab_size,
obs_mode, image_shape, num_tasks, num_actions, needs_task, needs_family,
memory, hidden_size, the input and output names, and the architecture as
JSON (agents/export.py).

Bad input (a path that is neither a run folder nor a checkpoint, an unknown
format, an --out that cannot be written) stops with one line on stderr and
exit status 2 before any work. The file is written to a temporary file and
renamed, so a failed export leaves nothing under the --out name.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from training import threads  # noqa: E402  (imports no torch)

threads.configure_openmp()

import tyro  # noqa: E402

from training import cli  # noqa: E402

FORMATS = {"onnx": "policy.onnx", "torchscript": "policy.pt"}
"""Each format and the file name it gets under runs/<run>/export/ by default."""


@dataclass
class ExportArgs:
    """Export a trained agent's policy (logits and value) as one ONNX or TorchScript file."""

    run: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN", help_behavior_hint="(required)")]
    """A run folder (runs/<name>: its final.pt, else its newest checkpoint) or a checkpoint file (.pt)."""
    format: Literal["onnx", "torchscript"] = "onnx"
    """onnx: an .onnx file for onnxruntime (opset 17); torchscript: a traced module for torch.jit.load."""
    out: Annotated[str, tyro.conf.arg(metavar="FILE")] = ""
    """File to write ('' = runs/<run>/export/policy.onnx, or policy.pt with --format torchscript); replaced atomically."""


def _error(message: str) -> int:
    print(f"export.py: error: {message}", file=sys.stderr)
    return 2


def _run_dir(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (runs/<run>/checkpoints/x.pt -> runs/<run>), else its folder."""
    from agents.persist import CHECKPOINT_DIR

    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent


def _destination(args: ExportArgs, checkpoint: Path) -> Path:
    """Where to write; a ValueError (one line) if it cannot be written, before any work."""
    out = Path(args.out) if args.out else _run_dir(checkpoint) / "export" / FORMATS[args.format]
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a folder; give a file name ({FORMATS[args.format]}).")
    if out.exists() and not os.access(out, os.W_OK):
        raise ValueError(f"--out {str(out)!r} exists and is not writable; give a file you can write to.")
    cli.check_writable(out.parent, f"--out {str(out)!r}")
    return out


def _describe(shape: tuple, dtype: str) -> str:
    return f"{dtype} ({', '.join(str(s) for s in shape)})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = cli.parse(ExportArgs, argv, description=__doc__, prog="export.py")
    except cli.CliError as err:
        return _error(str(err))
    import torch

    from agents import export
    from agents.persist import agent_from_payload, read_payload, resolve_checkpoint

    torch.set_num_threads(1)  # a small graph traced once: more threads only contend
    try:
        checkpoint = resolve_checkpoint(args.run)
        out = _destination(args, checkpoint)
        model = agent_from_payload(read_payload(checkpoint), checkpoint)
    except ValueError as err:
        return _error(str(err))
    writer = export.export_onnx if args.format == "onnx" else export.export_torchscript
    try:
        path = writer(model, out)
    except OSError as err:
        return _error(f"cannot write {str(out)!r}: {err.strerror or err}.")
    except export.ExportMismatch as err:
        print(f"export.py: export failed, nothing written: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # the exporter's own failure: not the user's input
        first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        print(f"export.py: export failed, nothing written ({type(err).__name__}): {first}", file=sys.stderr)
        return 1

    policy = export.PolicyModule(model)
    shapes = {name: tuple(["B", *t.shape[1:]]) for name, t in zip(policy.input_names(), policy.example_inputs(1))}
    dtypes = {name: str(t.dtype).replace("torch.", "") for name, t in zip(policy.input_names(), policy.example_inputs(1))}
    hidden = model.config.hidden_size
    outputs = {"logits": ("B", 7), "value": ("B",), "next_state_h": ("B", hidden), "next_state_c": ("B", hidden)}
    what = f"ONNX opset {export.OPSET}" if args.format == "onnx" else "TorchScript"
    lines = [
        f"wrote {path} ({what}, {path.stat().st_size / 1024:,.0f} KiB, {export.FORMAT}) from {checkpoint}",
        "  inputs:  " + ", ".join(f"{n} {_describe(shapes[n], dtypes[n])}" for n in policy.input_names()),
        "  outputs: " + ", ".join(f"{n} {_describe(outputs[n], 'float32')}" for n in policy.output_names()),
        f"  checked: the file gives the agent's outputs (within {export.CHECK_TOLERANCE:g}) on {export.CHECK_ROWS} random"
        " observations and on one (any batch size works)",
    ]
    if policy.recurrent:
        lines.append("  memory: feed the previous step's next_state_* as state_h/state_c (zeros at first) and "
                     "episode_start True where an episode begins.")
    return cli.print_or_quit("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
