"""Run one training job under torchrun and report each rank's state: the distributed tests' harness.

    torchrun --standalone --nproc-per-node 2 tests/dist_probe.py OUT_DIR -- <train.py arguments>

Each rank parses the arguments as ``train.py`` does, trains with the real
:class:`training.loop.Trainer`, and writes ``OUT_DIR/rank<r>.json``: its frame
counter, a SHA-256 of its parameters, optimizer and loss-weighter state, its
curriculum state and the tasks open after every update. With
``PROBE_FAIL_RANK=r PROBE_FAIL_UPDATE=u`` in the environment, rank r raises
an error at its u-th update instead (a rank that crashes).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _digest(obj) -> str:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def main() -> int:
    out = Path(sys.argv[1])
    assert sys.argv[2] == "--", "usage: dist_probe.py OUT_DIR -- <train.py arguments>"
    os.chdir(ROOT)
    import train
    from training import distributed
    from training.loop import Trainer

    config, resume = train.parse_args(sys.argv[3:])
    world, device = distributed.setup(config.device)
    trainer = Trainer(config, resume=resume, world=world, device=device or config.resolved_device(), progress=False)
    opened: list[list[str]] = []
    update = trainer.update
    fail_rank, fail_update = int(os.environ.get("PROBE_FAIL_RANK", -1)), int(os.environ.get("PROBE_FAIL_UPDATE", -1))

    def recording_update():
        if world.rank == fail_rank and trainer.updates + 1 == fail_update:
            raise RuntimeError(f"simulated failure of rank {world.rank} at update {fail_update}")
        stats = update()
        opened.append(sorted(trainer.curriculum.unlocked()))
        return stats

    trainer.update = recording_update
    trainer.run()
    report = {
        "rank": world.rank,
        "world_size": world.world_size,
        "frames": trainer.frames,
        "updates": trainer.updates,
        "params": _digest({k: v.cpu() for k, v in trainer.model.state_dict().items()}),
        "optimizer": _digest(trainer.ppo.optimizer.state_dict()),
        "weighter": _digest(trainer.ppo.weighter.state_dict()),
        "weights": trainer.ppo.weighter.weights(),
        "curriculum": json.loads(json.dumps(trainer.curriculum.state_dict(), default=str)),
        "opened": opened,
        "episodes": dict(trainer.stats.episodes),
        "first_obs_seed_check": int(trainer.collector.obs["image"].sum()),
    }
    (out / f"rank{world.rank}.json").write_text(json.dumps(report))
    distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
