"""Steps/s of the multi-task vector env's backends against a plain gymnasium vector env.

Every side steps the same MiniGrid tasks (slot ``i`` runs task ``i % len(tasks)``)
with the same number of slots and gymnasium's same-step auto-reset, under
uniformly random actions:

* ``plain``: what a user would write by hand: gymnasium's ``SyncVectorEnv``
  (or ``AsyncVectorEnv``) over ``gym.make(id)`` plus MiniGrid's ``ImgObsWrapper``;
* ``minigrid``: our python backend (the same envs, plus mission tokens, task
  and family ids, the per-cell and target labels and ``success``);
* ``envpool``: our EnvPool backend, labels included (computed for the batch).

Rounds alternate between the sides so machine noise hits them alike; the
median of the rounds is reported, with each side's ratio to ``plain``.

Run:
    python bench/env_throughput.py                                  # 256 slots, sync
    python bench/env_throughput.py --num-envs 8 --sides plain minigrid --vectorization async

Targets: envpool/plain >= 15 at 256 slots; minigrid/plain >= 0.85 (the common
format, labels and task switching cost at most 15 %).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from minigrid.wrappers import ImgObsWrapper

from envs import get_task
from envs.vector import make_vector_env

DEFAULT_TASKS = "DoorKey-5x5,Empty-8x8,LavaGapS5,GoToObject-6x6-N2,Fetch-6x6-N2,GoToDoor-6x6"


def _plain_env(env_id: str):
    return ImgObsWrapper(gym.make(env_id, disable_env_checker=True))


def make_plain(tasks: list[str], num_envs: int, vectorization: str) -> gym.vector.VectorEnv:
    fns = [lambda env_id=get_task(tasks[i % len(tasks)]).env_id: _plain_env(env_id) for i in range(num_envs)]
    cls = AsyncVectorEnv if vectorization == "async" else SyncVectorEnv
    return cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def make_side(side: str, tasks: list[str], num_envs: int, vectorization: str, env_threads: int):
    if side == "plain":
        return make_plain(tasks, num_envs, vectorization)
    if side == "minigrid":
        return make_vector_env(tasks, num_envs, backend="minigrid", vectorization=vectorization)
    return make_vector_env(tasks, num_envs, backend="envpool", env_threads=env_threads)


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
    parser.add_argument("--num-envs", type=int, default=256, help="slots (= worker processes with async)")
    parser.add_argument("--steps", type=int, default=100, help="vector steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per side")
    parser.add_argument("--vectorization", choices=("sync", "async"), default="sync", help="plain and minigrid sides")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--env-threads", type=int, default=0, help="envpool threads in all, shared among the task pools (0: every core)")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    sides = [side for side in SIDES if side in args.sides]

    print(f"tasks: {', '.join(tasks)}; {args.num_envs} slots; {args.steps} vector steps x {args.rounds} rounds; "
          f"{args.vectorization}")
    envs = {side: make_side(side, tasks, args.num_envs, args.vectorization, args.env_threads) for side in sides}
    results: dict[str, list[float]] = {side: [] for side in sides}
    try:
        for side, env in envs.items():
            steps_per_second(env, 20, 0)  # warm-up (imports, caches, pools)
        for r in range(args.rounds):
            for side, env in envs.items():
                results[side].append(steps_per_second(env, args.steps, seed=r))
    finally:
        for env in envs.values():
            env.close()
    base = statistics.median(results[sides[0]])
    print(f"{'side':<10}{'steps/s (median)':>18}{'min':>12}{'max':>12}{'vs ' + sides[0]:>12}")
    for side in sides:
        values = results[side]
        median = statistics.median(values)
        print(f"{side:<10}{median:>18,.0f}{min(values):>12,.0f}{max(values):>12,.0f}{median / base:>12.2f}")


SIDES = ("plain", "minigrid", "envpool")


if __name__ == "__main__":
    main()
