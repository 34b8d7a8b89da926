"""Train one multi-task agent on many MiniGrid tasks.

    python train.py                                   # every train-split task
    python train.py --tasks DoorKey-5x5,GoToObject-6x6-N2 --frames 200000
    python train.py --list-tasks                      # the task table
    python train.py --help                            # every option
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import tyro  # noqa: E402

from envs.tasks import format_task_table  # noqa: E402
from training.config import RunConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--list-tasks" in argv:
        print(format_task_table())
        return 0
    config = tyro.cli(tyro.conf.OmitArgPrefixes[RunConfig], args=argv, description=__doc__)
    try:
        config.validate()
    except ValueError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    from training.loop import Trainer

    device = config.resolved_device()
    print(f"training on {len(config.task_list)} tasks, {config.frames:,} frames, {config.num_envs} envs, device {device}")
    Trainer(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
