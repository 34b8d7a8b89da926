"""Frames and wall time until 90 % rolling success: omnigrid's default agent against Stable-Baselines3 PPO.

One invocation runs both sides on the same task for every seed, alternating
(SB3 seed 1, ours seed 1, SB3 seed 2, ...), each on one torch thread and
in-process envs. A run stops when the success rate of its last 100 finished
episodes first reaches the threshold (or at the frame budget, counted as the
budget in the median). MiniGrid rewards only success, so an episode succeeded
when its return is positive.

SB3 runs PPO with 8 envs, n_steps 128, batch 64, 10 epochs, lr 2.5e-4, gae
0.95, ent_coef 0, either on the 7x7 view with the small 3-conv CNN users write
for MiniGrid (``--sb3 cnn``, the default) or, as in rl-baselines3-zoo's
MiniGrid entries, on FlatObsWrapper observations with an MlpPolicy and
VecNormalize (``--sb3 zoo``; with these settings it did not reach 90 % on
DoorKey-5x5 within 200k frames at seed 1). Ours is the default agent and PPO
config (16 envs).

Run:
    python bench/sample_efficiency.py                              # DoorKey-5x5, seeds 1-3
    python bench/sample_efficiency.py --seeds 1 2 3 4 5 --sb3 cnn --plot bench/out/sample_efficiency.png

Targets: ours' median frames <= 0.7x SB3's, median wall time <= 0.5x SB3's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import deque
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 100


def run_sb3(task: str, seed: int, *, kind: str, threshold: float, max_frames: int):
    """(frames or None, seconds, curve [(frames, rolling success)])."""
    import gymnasium as gym
    from minigrid.wrappers import FlatObsWrapper, ImgObsWrapper
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    sys.path.insert(0, str(ROOT / "bench"))
    from throughput_vs_sb3 import small_cnn_extractor

    from envs import get_task

    env_id = get_task(task).env_id
    wrapper = FlatObsWrapper if kind == "zoo" else ImgObsWrapper
    vec = DummyVecEnv([lambda: Monitor(wrapper(gym.make(env_id))) for _ in range(8)])
    vec.seed(seed)
    policy_kwargs = {}
    if kind == "zoo":
        vec = VecNormalize(vec)
        policy = "MlpPolicy"
    else:
        policy = "CnnPolicy"
        policy_kwargs = {"features_extractor_class": small_cnn_extractor(), "normalize_images": False, "net_arch": [64, 64]}

    class Done(Exception):
        pass

    class Stop(BaseCallback):
        """Rolling success over finished episodes; checked at each rollout's end, as ours is."""

        def __init__(self) -> None:
            super().__init__()
            self.window: deque = deque(maxlen=WINDOW)
            self.curve: list[tuple[int, float]] = []
            self.reached: int | None = None

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.window.append(float(info["episode"]["r"] > 0))
            return True

        def _on_rollout_end(self) -> None:
            if self.window:
                self.curve.append((self.num_timesteps, float(np.mean(self.window))))
            if len(self.window) == WINDOW and np.mean(self.window) >= threshold:
                self.reached = self.num_timesteps
                raise Done  # before this rollout's update, as ours

    model = PPO(
        policy, vec, n_steps=128, batch_size=64, n_epochs=10, learning_rate=2.5e-4, gae_lambda=0.95, gamma=0.99,
        ent_coef=0.0, clip_range=0.2, seed=seed, device="cpu", verbose=0, policy_kwargs=policy_kwargs,
    )
    callback = Stop()
    start = time.perf_counter()
    try:
        model.learn(total_timesteps=max_frames, callback=callback)
    except Done:
        pass
    seconds = time.perf_counter() - start
    vec.close()
    return callback.reached, seconds, callback.curve


def run_ours(task: str, seed: int, *, threshold: float, max_frames: int, overrides: list[str]):
    """(frames or None, seconds, curve): the default agent, one thread, no videos or checkpoints, as SB3 runs."""
    sys.path.insert(0, str(ROOT / "bench"))
    from learning_frames import frames_to_threshold

    curve: list[tuple[int, float]] = []
    fair = ["threads=1", "video_every=0", "checkpoint_every=0"]
    reached, seconds, _ = frames_to_threshold(
        task, seed, threshold=threshold, max_frames=max_frames, overrides=fair + overrides, curve=curve
    )
    return reached, seconds, curve


def _summary(values: list[float | None], budget: float) -> tuple[float, float, float]:
    capped = [v if v is not None else budget for v in values]
    return statistics.median(capped), min(capped), max(capped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="DoorKey-5x5")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--max-frames", type=int, default=200_000)
    parser.add_argument("--sb3", choices=("cnn", "zoo"), default="cnn", help="SB3 observation/network setting")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="overrides of our config")
    parser.add_argument("--plot", default="bench/out/sample_efficiency.png", help="PNG of success vs frames")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"{args.task}: frames until {args.threshold:.0%} of the last {WINDOW} episodes succeed "
          f"(budget {args.max_frames:,}), SB3 {args.sb3} vs ours")
    print(f"{'side':<6}{'seed':>5}{'frames':>13}{'seconds':>9}")
    results: dict[str, list[tuple[int | None, float]]] = {"sb3": [], "ours": []}
    curves: dict[str, list] = {"sb3": [], "ours": []}
    for seed in args.seeds:
        for side in ("sb3", "ours"):
            if side == "sb3":
                reached, seconds, curve = run_sb3(args.task, seed, kind=args.sb3, threshold=args.threshold,
                                                  max_frames=args.max_frames)
            else:
                reached, seconds, curve = run_ours(args.task, seed, threshold=args.threshold,
                                                   max_frames=args.max_frames, overrides=args.set)
            results[side].append((reached, seconds))
            curves[side].append(curve)
            shown = "not reached" if reached is None else f"{reached:,}"
            print(f"{side:<6}{seed:>5}{shown:>13}{seconds:>9.1f}", flush=True)

    print()
    print(f"{'side':<6}{'median frames':>14}{'range':>22}{'median s':>10}{'range':>16}  reached")
    med = {}
    for side, rows in results.items():
        frames = [r for r, _ in rows]
        # A run that never got there counts as the whole budget (frames) and its full time (seconds).
        f_med, f_lo, f_hi = _summary(frames, args.max_frames)
        s_med, s_lo, s_hi = _summary([s for _, s in rows], float("inf"))
        med[side] = (f_med, s_med)
        done = sum(r is not None for r in frames)
        print(f"{side:<6}{f_med:>14,.0f}{f'{f_lo:,.0f} - {f_hi:,.0f}':>22}{s_med:>10.1f}"
              f"{f'{s_lo:.1f} - {s_hi:.1f}':>16}  {done}/{len(frames)}")
    print(f"ratio ours/sb3: median frames {med['ours'][0] / med['sb3'][0]:.2f} (target <= 0.7), "
          f"median wall time {med['ours'][1] / med['sb3'][1]:.2f} (target <= 0.5)")
    if args.plot:
        sys.path.insert(0, str(ROOT / "bench"))
        from plotting import plot_curves

        plot_curves(curves, ROOT / args.plot, threshold=args.threshold,  # an absolute --plot stays as given
                    title=f"{args.task}: ours vs SB3 PPO ({args.sb3}), seeds {', '.join(map(str, args.seeds))}")
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
