"""Train one multi-task agent on many MiniGrid tasks.

    python train.py --list-tasks      # the task table
"""

from __future__ import annotations

import sys

from envs.tasks import format_task_table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--list-tasks" in argv:
        print(format_task_table())
        return 0
    print("train.py: training is not available yet; see --list-tasks.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
