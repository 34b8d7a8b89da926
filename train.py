"""Train one multi-task agent on many MiniGrid tasks.

    python train.py                                   # the default preset (configs/default.yaml)
    python train.py --config configs/quick.yaml       # a preset; any field can still be overridden
    python train.py --tasks DoorKey-5x5,GoToObject-6x6-N2 --frames 200000
    python train.py --resume runs/<run> [--frames N]  # continue a run where its last checkpoint left it
    python train.py --list-tasks                      # the task table
    python train.py --help                            # every option
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import tyro  # noqa: E402
import yaml  # noqa: E402

from envs.tasks import format_task_table  # noqa: E402
from training import checkpoint  # noqa: E402
from training.config import RunConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--list-tasks" in argv:
        print(format_task_table())
        return 0
    resume = None
    default = RunConfig()
    try:
        if "--resume" in argv:
            at = argv.index("--resume")
            if at + 1 >= len(argv):
                raise ValueError("--resume needs a run folder: --resume runs/<run>.")
            run = Path(argv[at + 1])
            argv = argv[:at] + argv[at + 2 :]
            if not (run / "config.yaml").is_file():
                raise ValueError(f"{str(run)!r} is not a run folder: it has no config.yaml.")
            resume = checkpoint.latest_checkpoint(run)
            if resume is None:
                raise ValueError(f"{str(run)!r} has no checkpoint to resume from (checkpoints/ is empty).")
            default = RunConfig.from_yaml((run / "config.yaml").read_text())
            default.run_name, default.runs_dir = run.name, str(run.parent)
        if "--config" in argv:
            if resume is not None:
                raise ValueError("--config and --resume cannot be combined: a resumed run keeps its own config.")
            at = argv.index("--config")
            if at + 1 >= len(argv):
                raise ValueError("--config needs a YAML file: --config configs/quick.yaml.")
            preset = Path(argv[at + 1])
            argv = argv[:at] + argv[at + 2 :]
            if not preset.is_file():
                raise ValueError(f"--config {str(preset)!r} does not exist; presets live in configs/.")
            try:
                default = RunConfig.from_yaml(preset.read_text())
            except yaml.YAMLError as err:
                raise ValueError(f"--config {str(preset)!r} is not valid YAML: {str(err).splitlines()[0]}") from None
    except ValueError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    config = tyro.cli(tyro.conf.OmitArgPrefixes[RunConfig], args=argv, default=default, description=__doc__)
    try:
        config.validate()
    except ValueError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    from training.loop import Trainer

    device = config.resolved_device()
    verb = f"resuming {resume}:" if resume else "training on"
    print(f"{verb} {len(config.task_list)} tasks, {config.frames:,} frames, {config.num_envs} envs, device {device}")
    try:
        trainer = Trainer(config, resume=resume)
    except ValueError as err:  # e.g. --init-from a run with another architecture
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    try:
        trainer.run()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck run is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Ctrl-C / `kill -INT` stops with a checkpoint even when started in the background of a
    # script, where the shell hands the process SIGINT already ignored (Python then keeps it so).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
