"""Run train.py and SIGKILL it at a chosen point: the kill tests' harness.

    python tests/kill_at.py POINT N PROGRESS_FILE -- <train.py arguments>

The process kills itself with SIGKILL (no handler, no cleanup, as ``kill -9``
from outside) the N-th time it reaches POINT:

* ``step``: inside a rollout, before the N-th environment step;
* ``minibatch``: inside a PPO update, before the N-th minibatch's forward pass;
* ``fsync``: in the middle of the N-th checkpoint write, its bytes written to
  the temporary file but not yet renamed into place;
* ``rename``: right after the N-th checkpoint file was renamed into place,
  before its SHA-256 file was written;
* ``prune``: before the N-th deletion of an old checkpoint (the newest is complete);
* ``tensorboard``: inside the N-th TensorBoard scalar write.

Before each rollout it writes the trainer's frame counter (frames trained on
so far) to PROGRESS_FILE, so that a test knows how far the killed run got.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _killer(n: int):
    count = {"hits": 0}

    def hit() -> None:
        count["hits"] += 1
        if count["hits"] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    return hit


def _install(point: str, n: int, progress: Path) -> None:
    import torch.utils.tensorboard

    import agents.buffer
    import agents.persist
    import envs.pooled
    import envs.vector
    import training.loop

    hit = _killer(n)
    collect = training.loop.Trainer.collect

    def recording_collect(self):
        progress.write_text(str(self.frames))
        return collect(self)

    training.loop.Trainer.collect = recording_collect

    def before(owner, name, *, when=lambda *a, **k: True):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if when(*args, **kwargs):
                hit()
            return original(*args, **kwargs)

        setattr(owner, name, wrapped)

    if point == "step":
        before(envs.vector.MultiTaskVectorEnv, "step")  # whichever backend the run is on
        before(envs.pooled.PooledVectorEnv, "step")
    elif point == "minibatch":
        minibatches = agents.buffer.RolloutBuffer.minibatches

        def killing_minibatches(self, *args, **kwargs):
            for mb in minibatches(self, *args, **kwargs):
                hit()
                yield mb

        agents.buffer.RolloutBuffer.minibatches = killing_minibatches
    elif point == "fsync":
        # Only the checkpoint file's own fsync (the digest is written after the rename).
        before(agents.persist.os, "fsync", when=lambda fd: stat.S_ISREG(os.fstat(fd).st_mode) and os.fstat(fd).st_size > 4096)
    elif point == "rename":
        replace = agents.persist.os.replace

        def killing_replace(src, dst):
            replace(src, dst)
            if str(dst).endswith(".pt"):
                hit()

        agents.persist.os.replace = killing_replace
    elif point == "prune":
        import training.checkpoint

        before(training.checkpoint, "remove")
    elif point == "tensorboard":
        before(torch.utils.tensorboard.SummaryWriter, "add_scalar")
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> int:
    point, n, progress = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    assert sys.argv[4] == "--", "usage: kill_at.py POINT N PROGRESS_FILE -- <train.py arguments>"
    os.chdir(ROOT)
    _install(point, n, progress)
    import train

    return train.main(sys.argv[5:])


if __name__ == "__main__":
    sys.exit(main())
