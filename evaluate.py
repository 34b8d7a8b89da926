"""Evaluate a trained agent, per task, on a split of the task registry.

    python evaluate.py runs/<run>                      # held-out split, 100 episodes a task
    python evaluate.py runs/<run> --split train --episodes 50 --deterministic
    python evaluate.py runs/<run>/checkpoints/final.pt --tasks DoorKey-5x5,LavaGapS6

The architecture comes from the checkpoint; nothing needs repeating.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from agents.model import MultiTaskActorCritic, ObsBatch  # noqa: E402
from agents.persist import load  # noqa: E402
from envs.tasks import get_task, list_tasks  # noqa: E402
from envs.vector import MultiTaskVectorEnv  # noqa: E402


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (Wilson 1927)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_task(
    model: MultiTaskActorCritic, task: str, *, episodes: int, num_envs: int, seed: int, deterministic: bool
) -> dict[str, float]:
    """Run ``episodes`` episodes of one task; each slot runs a fixed quota, so short episodes are not favoured."""
    info_space = model.space_info
    obs_mode = "symbolic" if tuple(info_space["image_shape"]) == (7, 7, 3) else "rgb"
    num_envs = min(num_envs, episodes)
    env = MultiTaskVectorEnv([task], num_envs, obs=obs_mode, vectorization="sync", mission_length=info_space["mission_length"])
    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    done_count = np.zeros(num_envs, dtype=int)
    successes, returns, lengths = [], [], []
    ep_return, ep_length = np.zeros(num_envs), np.zeros(num_envs, dtype=int)
    obs, _ = env.reset(seed=seed)
    state = model.initial_state(num_envs)
    starts = torch.ones(num_envs, dtype=torch.bool, device=model.device)
    try:
        while (done_count < quota).any():
            out = model.act(ObsBatch.from_numpy(obs, model.device), state, starts, deterministic=deterministic)
            obs, rewards, terminated, truncated, info = env.step(out.action.cpu().numpy())
            ended = terminated | truncated
            ep_return += rewards
            ep_length += 1
            for i in np.flatnonzero(ended):
                if done_count[i] < quota[i]:
                    successes.append(bool(info["final_info"]["success"][i]))
                    returns.append(ep_return[i])
                    lengths.append(ep_length[i])
                    done_count[i] += 1
            ep_return[ended], ep_length[ended] = 0.0, 0
            state = out.state
            starts = torch.as_tensor(ended, device=model.device)
    finally:
        env.close()
    n, k = len(successes), int(sum(successes))
    low, high = wilson_interval(k, n)
    return {
        "episodes": n,
        "success": k / n,
        "success_low": low,
        "success_high": high,
        "return": float(np.mean(returns)),
        "length": float(np.mean(lengths)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (runs/<name>) or checkpoint file")
    parser.add_argument("--split", default="heldout", choices=("train", "heldout", "all"), help="tasks to evaluate")
    parser.add_argument("--tasks", default="", help="comma-separated task names (overrides --split)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per task")
    parser.add_argument("--num-envs", type=int, default=8, help="slots stepped in parallel")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    parser.add_argument("--deterministic", action="store_true", help="argmax actions instead of sampling")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    try:
        if args.episodes < 1:
            raise ValueError(f"--episodes={args.episodes} must be a positive integer.")
        if args.num_envs < 1:
            raise ValueError(f"--num-envs={args.num_envs} must be a positive integer.")
        if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
            raise ValueError(f"--device={args.device!r} is not available here; use cpu" + (" or cuda." if torch.cuda.is_available() else "."))
        names = [t.strip() for t in args.tasks.split(",") if t.strip()]
        specs = [get_task(n) for n in names] if names else list_tasks(split=None if args.split == "all" else args.split)
        model = load(args.run, device=args.device)
    except ValueError as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return 2
    width = max(len(s.name) for s in specs)
    mode = "deterministic" if args.deterministic else "sampled"
    print(f"{args.run}: {len(specs)} tasks, {args.episodes} episodes each, {mode} actions, seed {args.seed}")
    print(f"{'task':<{width}}  {'family':<11}  {'split':<7}  {'success':>7}  {'95% interval':>13}  {'return':>6}  {'length':>6}")
    for spec in specs:
        r = evaluate_task(model, spec.name, episodes=args.episodes, num_envs=args.num_envs, seed=args.seed, deterministic=args.deterministic)
        print(
            f"{spec.name:<{width}}  {spec.family:<11}  {spec.split:<7}  {r['success']:>7.2f}  "
            f"[{r['success_low']:.2f}, {r['success_high']:.2f}]  {r['return']:>6.2f}  {r['length']:>6.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
