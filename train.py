"""Train one multi-task agent on many MiniGrid tasks.

    python train.py                                   # the default preset (configs/default.yaml)
    python train.py --config configs/quick.yaml       # a preset; any field can still be overridden
    python train.py --tasks DoorKey-5x5,GoToObject-6x6-N2 --frames 200000
    python train.py --resume runs/<run> [--frames N]  # continue a run where its last checkpoint left it
    python train.py --list-tasks                      # the task table
    torchrun --standalone --nproc-per-node 2 train.py ...   # data-parallel over 2 processes (GPUs if present)
    python train.py --help                            # every option
"""

from __future__ import annotations

import copy
import dataclasses
import faulthandler
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from training import threads  # noqa: E402  (imports no torch)

# Before torch loads libgomp, which reads its environment once: OpenMP threads
# that wait sleep instead of spinning on cores a second process needs.
threads.configure_openmp()

import tyro  # noqa: E402
import yaml  # noqa: E402

from envs.tasks import format_task_table  # noqa: E402
from training import checkpoint, cli, preflight  # noqa: E402
from training.checkpoint import RunStopped  # noqa: E402
from training.config import RESUMABLE, RunConfig  # noqa: E402


@dataclasses.dataclass
class TrainArgs:
    """The command line: the run's config, plus the options train.py reads before it (listed in --help too)."""

    run: Annotated[RunConfig, tyro.conf.arg(name="")] = dataclasses.field(default_factory=RunConfig)
    config: Annotated[str, tyro.conf.arg(metavar="PATH")] = ""
    """A preset (configs/*.yaml) whose values replace the defaults shown here; options given with it still override it."""
    resume: Annotated[str, tyro.conf.arg(metavar="RUN")] = ""
    """Continue runs/<run> from its last checkpoint with its own config; only frames, device, threads and the logging and checkpoint intervals may change."""
    list_tasks: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False
    """Print the task table (name, family, level, split) and exit."""


def _error(message: str) -> int:
    print(f"train.py: error: {message}", file=sys.stderr)
    return 2


def _read_config(path: Path, what: str) -> RunConfig:
    try:
        config = RunConfig.from_yaml(path.read_text())
        config.check_types()
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{what} {str(path)!r} is not valid YAML: {problem}{where}.") from None
    except ValueError as err:
        raise ValueError(f"{what} {str(path)!r}: {err}") from None
    return config


def _take(argv: list[str], flag: str, example: str) -> tuple[list[str], str | None]:
    """Remove ``flag VALUE`` from argv; (rest, VALUE or None)."""
    if flag not in argv:
        return argv, None
    at = argv.index(flag)
    if at + 1 >= len(argv) or argv[at + 1].startswith("--"):
        raise ValueError(f"{flag} needs a value: {flag} {example}.")
    return argv[:at] + argv[at + 2 :], argv[at + 1]


def parse_args(argv: list[str]) -> tuple[RunConfig, Path | None]:
    """The validated config and the checkpoint to resume from; ValueError (one line) on any bad input.

    Nothing is written here: a bad value stops the run before its folder exists.
    """
    argv, run = _take(argv, "--resume", "runs/<run>")
    argv, preset = _take(argv, "--config", "configs/quick.yaml")
    default, saved, resume = RunConfig(), None, None
    if run is not None:
        if preset is not None:
            raise ValueError("--config and --resume cannot be combined: a resumed run keeps its own config.")
        folder = Path(run)
        if not folder.is_dir():
            raise ValueError(f"--resume {run!r} does not exist; give a run folder (runs/<run>).")
        if not (folder / "config.yaml").is_file():
            raise ValueError(f"--resume {run!r} is not a run folder: it has no config.yaml.")
        saved = _read_config(folder / "config.yaml", "--resume")
        written = yaml.safe_load((folder / "config.yaml").read_text()) or {}  # fields the run's config spelt out
        if "task_balance" not in written:
            saved.task_balance = "episodes"  # saved before the option existed: that run drew tasks per episode
        if "mastered_threshold" not in written:
            saved.mastered_threshold = saved.curriculum_threshold  # saved when one threshold did both jobs
        resume = checkpoint.resumable_checkpoint(folder)  # None: killed before its first checkpoint
        default = copy.deepcopy(saved)
        default.run_name, default.runs_dir = folder.name, str(folder.parent)
    elif preset is not None:
        if not Path(preset).is_file():
            raise ValueError(f"--config {preset!r} does not exist; presets live in configs/.")
        default = _read_config(Path(preset), "--config")
    # --config and --resume were taken out above (the preset or the saved config gives the defaults);
    # they stay in the parser so that --help lists them and a misspelling finds them.
    args = cli.parse(tyro.conf.OmitArgPrefixes[TrainArgs], argv, default=TrainArgs(run=default), description=__doc__)
    config = args.run
    if saved is not None:
        conflicts = config.resume_conflicts(saved)
        if conflicts:
            raise ValueError(
                f"--resume {run!r} conflicts with {', '.join(conflicts)}; a resume may change only "
                f"{', '.join(RESUMABLE)} (start a new run, or --init-from this one, to change the rest)."
            )
    config.validate()
    config.check_writable()
    preflight.check_memory(config)
    return config, resume


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--list-tasks" in argv:
        return cli.print_or_quit(format_task_table())
    try:
        config, resume = parse_args(argv)
    except ValueError as err:
        return _error(str(err))
    from training import distributed
    from training.loop import Trainer

    try:
        world, device = distributed.setup(config.device)  # a world of one unless started by torchrun
    except ValueError as err:
        return _error(str(err))
    device = device or config.resolved_device()
    lock = None
    try:
        # Rank 0 writes the run folder, so it alone locks it; every rank learns whether it could.
        problem = None
        if world.is_main:
            try:
                lock = preflight.lock_run_folder(config.run_dir())
            except ValueError as err:
                problem = str(err)
        problem = distributed.all_gather(problem, world)[0]
        if problem is not None:
            return _error(problem) if world.is_main else 2
        if world.is_main:
            if "--resume" in argv:
                where = f"resuming {resume}:" if resume else "no checkpoint yet; starting the run over:"
            else:
                where = "training on"
            ranks = f" on each of {world.world_size} ranks" if world.distributed else ""
            print(f"{where} {len(config.task_list)} tasks, {config.frames:,} frames, {config.num_envs} envs{ranks}, device {device}")
        try:
            trainer = Trainer(config, resume=resume, world=world, device=device)
        except ValueError as err:  # e.g. --init-from a run with another architecture
            if lock is not None:
                lock.release(undo=True)  # a new run that wrote nothing leaves no folder behind
            return _error(str(err))
        try:
            trainer.run()
        except KeyboardInterrupt:
            return 130
        except RunStopped as err:  # repeated env crashes, non-finite losses, a full disk: the last good state is saved
            print(f"train.py: stopped: {err}", file=sys.stderr)
            return 1
        return 0
    finally:
        if lock is not None:  # main() also runs inside other processes (tests): the folder is free once it returns
            lock.release()
        distributed.teardown()


if __name__ == "__main__":
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck run is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Ctrl-C / `kill -INT` stops with a checkpoint even when started in the background of a
    # script, where the shell hands the process SIGINT already ignored (Python then keeps it so).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
