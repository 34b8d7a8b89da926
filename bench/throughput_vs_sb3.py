"""Training frames/s and peak memory: omnigrid's PPO against Stable-Baselines3's PPO.

Two modes:

* ``--mode equal`` (the default): both train on the same MiniGrid task with the
  same number of envs (our ``sync`` slots on python MiniGrid, SB3's
  ``DummyVecEnv``), rollout length, minibatch size, epochs, learning rate and
  torch threads. SB3's network is the small 3-conv CNN users write for
  MiniGrid's 7x7 view (the features extractor of the MiniGrid docs, 16/32/64
  channels, 2x2 kernels) with 64-unit policy and value layers; ours is our
  default agent (mission-conditioned, with its auxiliary heads) unless
  ``--ours-set`` changes it.
* ``--mode defaults``: each side at its own defaults: SB3 at rl-baselines3-zoo's
  ``MiniGrid-DoorKey-5x5-v0`` entry (FlatObsWrapper, VecNormalize, MlpPolicy,
  8 envs, n_steps 128, batch 64, 10 epochs, lr 2.5e-4, ent_coef 0) and
  torch's default threads; ours at the default preset's settings (backend,
  envs, rollout, minibatch, epochs, threads) on the same task.

Each measurement runs in its own process; runs alternate (SB3, ours, SB3,
ours, ...) so that machine noise hits both alike, and the median is reported.
Peak memory is the largest resident set of the process tree, sampled every 50 ms.

Run:
    python bench/throughput_vs_sb3.py                         # equal: DoorKey-5x5, 8 envs, 128 steps, batch 64, 10 epochs
    python bench/throughput_vs_sb3.py --mode defaults --frames 102400 --rounds 3

Targets: ours >= 5x SB3's frames/s at each side's defaults; peak memory of a
256-env run <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def small_cnn_extractor():
    """SB3 features extractor: the small 3-conv CNN users write for MiniGrid's 7x7 view."""
    import gymnasium as gym
    import torch
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class SmallCNN(BaseFeaturesExtractor):
        def __init__(self, space: gym.spaces.Box, features_dim: int = 64) -> None:
            super().__init__(space, features_dim)
            c = space.shape[0]  # SB3 has transposed the 7x7x3 view to channels-first (VecTransposeImage)
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(c, 16, 2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(16, 32, 2), torch.nn.ReLU(),
                torch.nn.Conv2d(32, 64, 2), torch.nn.ReLU(), torch.nn.Flatten(),
            )
            with torch.no_grad():
                n = self.net(torch.zeros(1, *space.shape)).shape[1]
            self.linear = torch.nn.Sequential(torch.nn.Linear(n, features_dim), torch.nn.ReLU())

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.linear(self.net(obs))

    return SmallCNN


def _sb3_worker(args: argparse.Namespace) -> dict:
    import gymnasium as gym
    from minigrid.wrappers import ImgObsWrapper
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from envs import get_task

    env_id = get_task(args.task).env_id
    if args.mode == "defaults":  # rl-baselines3-zoo's hyperparams/ppo.yml entry for MiniGrid-DoorKey-5x5-v0
        from minigrid.wrappers import FlatObsWrapper
        from stable_baselines3.common.vec_env import VecNormalize

        vec = VecNormalize(DummyVecEnv([lambda: FlatObsWrapper(gym.make(env_id)) for _ in range(8)]))
        vec.seed(args.seed)
        model = PPO(
            "MlpPolicy", vec, n_steps=128, batch_size=64, n_epochs=10, learning_rate=2.5e-4, gae_lambda=0.95,
            gamma=0.99, ent_coef=0.0, clip_range=0.2, seed=args.seed, device="cpu", verbose=0,
        )
    else:
        vec = DummyVecEnv([lambda: ImgObsWrapper(gym.make(env_id)) for _ in range(args.num_envs)])
        vec.seed(args.seed)
        model = PPO(
            "CnnPolicy", vec, n_steps=args.num_steps, batch_size=args.batch_size, n_epochs=args.epochs,
            learning_rate=args.learning_rate, seed=args.seed, device="cpu", verbose=0,
            policy_kwargs={"features_extractor_class": small_cnn_extractor(), "normalize_images": False, "net_arch": [64, 64]},
        )
    start = time.perf_counter()
    model.learn(total_timesteps=args.frames)
    return {"frames": int(model.num_timesteps), "seconds": time.perf_counter() - start}


def _ours_worker(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from learning_frames import _apply  # the --set parser shared by the benches

    from training.config import RunConfig
    from training.loop import Trainer

    if args.mode == "defaults":  # the default preset's settings, on one task
        config = RunConfig.from_yaml((ROOT / "configs" / "default.yaml").read_text())
        config.tasks, config.frames, config.seed, config.curriculum = args.task, args.frames, args.seed, "none"
        config.video_every, config.checkpoint_every = 0, 0
        config.runs_dir, config.run_name = tempfile.mkdtemp(prefix="omnigrid-bench-"), "throughput"
    else:
        config = RunConfig(
            tasks=args.task, frames=args.frames, num_envs=args.num_envs, seed=args.seed, backend="minigrid",
            vectorization="sync", curriculum="none", video_every=0, checkpoint_every=0, threads=args.threads,
            runs_dir=tempfile.mkdtemp(prefix="omnigrid-bench-"), run_name="throughput",
        )
        config.ppo.num_steps, config.ppo.batch_size, config.ppo.update_epochs = args.num_steps, args.batch_size, args.epochs
        config.ppo.learning_rate = args.learning_rate
    _apply(config, args.ours_set)
    trainer = Trainer(config, progress=False)
    start = time.perf_counter()
    trainer.run()
    return {"frames": trainer.frames, "seconds": time.perf_counter() - start}


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(children.get(p, []))
    return total


def measure(side: str, args: argparse.Namespace) -> dict:
    """Run one side in a fresh process; its frames/s and peak tree memory."""
    cmd = [sys.executable, __file__, "--worker", side, *sys.argv[1:]]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(side=side, fps=result["frames"] / result["seconds"], peak_mb=peak / 2**20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("equal", "defaults"), default="equal", help="same settings, or each side's own")
    parser.add_argument("--task", default="DoorKey-5x5")
    parser.add_argument("--frames", type=int, default=20480, help="frames per measurement")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=128, help="rollout length per env")
    parser.add_argument("--batch-size", type=int, default=64, help="minibatch size")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=2.5e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides")
    parser.add_argument("--sb3-threads", type=int, default=0,
                        help="--mode defaults: SB3's torch threads (0: torch's default, i.e. every core)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (SB3, ours) per side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ours-set", nargs="*", default=[], metavar="FIELD=VALUE", help="overrides of our config")
    parser.add_argument("--worker", choices=("sb3", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        if args.mode == "equal":
            torch.set_num_threads(args.threads)  # at its defaults each side chooses its own threads
        elif args.worker == "sb3" and args.sb3_threads:
            torch.set_num_threads(args.sb3_threads)
        result = _sb3_worker(args) if args.worker == "sb3" else _ours_worker(args)
        print(json.dumps(result))
        return

    if args.mode == "defaults":
        sb3_threads = f"{args.sb3_threads} torch thread(s)" if args.sb3_threads else "torch's default threads"
        print(f"{args.task}: each side at its defaults (SB3: rl-zoo's entry, {sb3_threads}; ours: configs/default.yaml), "
              f"{args.frames:,} frames a run, {args.rounds} rounds")
    else:
        print(
            f"{args.task}: {args.num_envs} envs x {args.num_steps} steps, minibatch {args.batch_size}, "
            f"{args.epochs} epochs, {args.frames:,} frames a run, {args.threads} torch thread(s), {args.rounds} rounds"
        )
    runs: dict[str, list[dict]] = {"sb3": [], "ours": []}
    for r in range(args.rounds):
        for side in ("sb3", "ours"):
            result = measure(side, args)
            runs[side].append(result)
            print(f"  round {r + 1} {side:<4} {result['fps']:>8,.0f} frames/s  peak {result['peak_mb']:>6,.0f} MB", flush=True)
    fps = {side: statistics.median(r["fps"] for r in results) for side, results in runs.items()}
    peak = {side: max(r["peak_mb"] for r in results) for side, results in runs.items()}
    print(f"{'side':<6} {'frames/s':>10} {'peak MB':>9}")
    for side in ("sb3", "ours"):
        print(f"{side:<6} {fps[side]:>10,.0f} {peak[side]:>9,.0f}")
    target = "5.0 at each side's defaults" if args.mode == "defaults" else "none at equal settings"
    print(f"ratio ours/sb3: frames/s {fps['ours'] / fps['sb3']:.2f} (target: {target}), "
          f"peak memory {peak['ours'] / peak['sb3']:.2f}")


if __name__ == "__main__":
    main()
