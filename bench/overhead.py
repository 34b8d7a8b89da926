"""Training frames/s against the learner's own ceiling: how much collection and bookkeeping cost.

The ceiling is what the PPO update alone allows: forward, backward and Adam
over a collected rollout (``update_epochs`` passes of minibatches of
``batch_size``), timed by itself, as frames of rollout per second of update.
Training frames/s is the whole loop (collect with the agent acting, the env
backend stepping, labels, episode bookkeeping; then the same update). Both are
measured in one process on the same trainer, alternating, so the machine's
noise hits them alike; the ratio is training / ceiling.

Run:
    python bench/overhead.py                                   # the default preset's settings on 4 tasks
    python bench/overhead.py --set num_envs=64 batch_size=1024 --rounds 3

Target: training frames/s >= 60 % of the ceiling (collection and bookkeeping
cost at most 40 %).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from learning_frames import _apply
from training.config import RunConfig

DEFAULT_TASKS = "DoorKey-5x5,GoToObject-6x6-N2,LavaGapS5,Fetch-5x5-N2"


def _config(args: argparse.Namespace, runs_dir: str) -> RunConfig:
    config = RunConfig.from_yaml(open(args.config).read())
    config.tasks, config.curriculum = args.tasks, "none"
    config.video_every, config.checkpoint_every, config.runs_dir = 0, 0, runs_dir
    _apply(config, args.set)
    config.validate()
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.yaml", help="preset whose settings are measured")
    parser.add_argument("--tasks", default=DEFAULT_TASKS)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (update alone, whole loop)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override config fields")
    args = parser.parse_args()

    from training.loop import Trainer

    with tempfile.TemporaryDirectory() as runs_dir:
        config = _config(args, runs_dir)
        trainer = Trainer(config, progress=False)
        frames = config.ppo.num_steps * config.num_envs
        trainer.collect()
        trainer.update()  # warm-up: allocations, pools, kernels
        ceiling, training = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            trainer.ppo.update(trainer.buffer)  # the same rollout again: the learner alone
            ceiling.append(frames / (time.perf_counter() - start))
            start = time.perf_counter()
            trainer.collect()
            trainer.update()
            training.append(frames / (time.perf_counter() - start))
        trainer.env.close()
    c, t = statistics.median(ceiling), statistics.median(training)
    print(f"tasks: {config.tasks}; backend {config.resolved_backend()}; {config.num_envs} envs x {config.ppo.num_steps} steps; "
          f"minibatch {config.ppo.batch_size}; {config.ppo.update_epochs} epochs; {config.resolved_threads()} torch threads")
    print(f"{'measure':<22}{'frames/s (median)':>19}{'min':>10}{'max':>10}")
    print(f"{'ceiling (update only)':<22}{c:>19,.0f}{min(ceiling):>10,.0f}{max(ceiling):>10,.0f}")
    print(f"{'training (whole loop)':<22}{t:>19,.0f}{min(training):>10,.0f}{max(training):>10,.0f}")
    print(f"ratio training/ceiling: {t / c:.2f} (collection and bookkeeping: {1 - t / c:.0%} of the time)")


if __name__ == "__main__":
    main()
