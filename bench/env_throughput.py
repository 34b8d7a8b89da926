"""Steps/s of the multi-task vector env against a plain gymnasium vector env.

Both sides step the same MiniGrid tasks (slot ``i`` runs task ``i % len(tasks)``)
with the same number of slots, the same vectorization (sync or async) and
gymnasium's same-step auto-reset, under uniformly random actions. The plain
side is what a user would write by hand: ``gym.make(id)`` plus MiniGrid's
``ImgObsWrapper`` (the mission string cannot cross gymnasium's shared memory).
Ours adds mission tokens, task and family ids, the per-cell and target labels
and ``success``. Rounds alternate (plain, ours, plain, ours, ...) so machine
noise hits both alike; the median of the rounds is reported.

Run:
    python bench/env_throughput.py                       # sync and async, 8 slots
    python bench/env_throughput.py --num-envs 4 --steps 3000 --vectorization sync

Target: ours costs at most 15 % (ratio ours/plain >= 0.85).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from minigrid.wrappers import ImgObsWrapper

from envs import MultiTaskVectorEnv, get_task

DEFAULT_TASKS = "DoorKey-5x5,Empty-8x8,LavaGapS5,GoToObject-6x6-N2,Fetch-6x6-N2,GoToDoor-6x6"


def _plain_env(env_id: str):
    return ImgObsWrapper(gym.make(env_id, disable_env_checker=True))


def make_plain(tasks: list[str], num_envs: int, vectorization: str) -> gym.vector.VectorEnv:
    fns = [lambda env_id=get_task(tasks[i % len(tasks)]).env_id: _plain_env(env_id) for i in range(num_envs)]
    cls = AsyncVectorEnv if vectorization == "async" else SyncVectorEnv
    return cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def make_ours(tasks: list[str], num_envs: int, vectorization: str) -> gym.vector.VectorEnv:
    return MultiTaskVectorEnv(tasks, num_envs, vectorization=vectorization)


def steps_per_second(env: gym.vector.VectorEnv, steps: int, seed: int) -> float:
    """Env steps (slots x vector steps) per second under random actions."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 7, size=(steps, env.num_envs))
    env.reset(seed=seed)
    start = time.perf_counter()
    for t in range(steps):
        env.step(actions[t])
    return steps * env.num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated task names")
    parser.add_argument("--num-envs", type=int, default=8, help="slots (= worker processes with async)")
    parser.add_argument("--steps", type=int, default=1000, help="vector steps per round")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds per side")
    parser.add_argument("--vectorization", choices=("sync", "async", "both"), default="both")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    modes = ("sync", "async") if args.vectorization == "both" else (args.vectorization,)

    print(f"tasks: {', '.join(tasks)}; {args.num_envs} slots; {args.steps} vector steps x {args.rounds} rounds")
    print(f"{'vectorization':<14}{'plain steps/s':>15}{'ours steps/s':>15}{'ours/plain':>12}{'overhead':>10}")
    for mode in modes:
        plain, ours = make_plain(tasks, args.num_envs, mode), make_ours(tasks, args.num_envs, mode)
        try:
            steps_per_second(plain, 50, 0), steps_per_second(ours, 50, 0)  # warm-up (imports, caches)
            results: dict[str, list[float]] = {"plain": [], "ours": []}
            for r in range(args.rounds):
                results["plain"].append(steps_per_second(plain, args.steps, seed=r))
                results["ours"].append(steps_per_second(ours, args.steps, seed=r))
        finally:
            plain.close()
            ours.close()
        p, o = statistics.median(results["plain"]), statistics.median(results["ours"])
        print(f"{mode:<14}{p:>15,.0f}{o:>15,.0f}{o / p:>12.3f}{1 - o / p:>10.1%}")


if __name__ == "__main__":
    main()
