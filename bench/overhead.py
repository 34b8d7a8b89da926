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
    parser.add_argument("--baseline", nargs="*", default=None, metavar="FIELD=VALUE",
                        help="also time a second trainer with these overrides (e.g. backend=minigrid), alternating")
    args = parser.parse_args()

    from training.loop import Trainer

    with tempfile.TemporaryDirectory() as runs_dir:
        sides = {"ours": _config(args, runs_dir)}
        if args.baseline is not None:
            sides["baseline"] = _config(argparse.Namespace(**{**vars(args), "set": args.set + args.baseline}), runs_dir)
        trainers = {name: Trainer(config, progress=False) for name, config in sides.items()}
        ceiling = {name: [] for name in trainers}
        training = {name: [] for name in trainers}
        for trainer in trainers.values():
            trainer.collect()
            trainer.update()  # warm-up: allocations, pools, kernels
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                frames = trainer.config.ppo.num_steps * trainer.config.num_envs
                start = time.perf_counter()
                trainer.ppo.update(trainer.buffer)  # the same rollout again: the learner alone
                ceiling[name].append(frames / (time.perf_counter() - start))
                start = time.perf_counter()
                trainer.collect()
                trainer.update()
                training[name].append(frames / (time.perf_counter() - start))
        for trainer in trainers.values():
            trainer.env.close()
    print(f"{'side':<9}{'backend':<10}{'envs x steps':>13}{'minibatch':>10}{'epochs':>7}{'threads':>8}"
          f"{'ceiling f/s':>13}{'training f/s':>14}{'min':>8}{'max':>8}{'training/ceiling':>18}")
    for name, config in sides.items():
        c, t = statistics.median(ceiling[name]), statistics.median(training[name])
        print(f"{name:<9}{config.resolved_backend():<10}{f'{config.num_envs} x {config.ppo.num_steps}':>13}"
              f"{config.ppo.batch_size:>10}{config.ppo.update_epochs:>7}{config.resolved_threads():>8}"
              f"{c:>13,.0f}{t:>14,.0f}{min(training[name]):>8,.0f}{max(training[name]):>8,.0f}{t / c:>18.2f}")
    if "baseline" in sides:
        ratio = statistics.median(training["ours"]) / statistics.median(training["baseline"])
        print(f"ratio ours/baseline, training frames/s: {ratio:.2f}")
    print(f"tasks: {args.tasks}")


if __name__ == "__main__":
    main()
