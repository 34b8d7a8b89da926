"""Training frames/s of this checkout against an earlier revision of the project, same settings.

"Today's speed" in an issue means the code as it was when the issue was filed:
an in-process baseline (``bench/overhead.py --baseline backend=minigrid``)
also carries every later speed-up of the model and the learner, so it
understates the gain. This bench checks the earlier revision out into a git
worktree (``git worktree add --detach``, once, under the system's temp
folder) and times a trainer of each side in fresh processes, alternating
(earlier, ours, earlier, ours, ...), each on the same tasks with its own
defaults for everything not set here: one warm-up rollout and update, then
``--rollouts`` rollouts of collect + update, timed.

Run:
    python bench/speed_vs_revision.py                          # against a4a3b12 (before the EnvPool backend)
    python bench/speed_vs_revision.py --rev a4a3b12 --rounds 3 --tasks DoorKey-5x5
    python bench/speed_vs_revision.py --set num_envs=64 num_steps=32   # ours with other settings

Target (issue: fast by default): ours >= 3x the earlier revision's training
frames/s with each side's default preset settings.
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
BEFORE_ENVPOOL = "a4a3b12"  # the last commit before the EnvPool backend and batched collection
DEFAULT_TASKS = "DoorKey-5x5,GoToObject-6x6-N2,LavaGapS5,Fetch-5x5-N2"


def _worktree(rev: str) -> Path:
    """A checkout of ``rev`` (made once; reused while it is at that commit)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        print(f"--rev {rev!r} is not a commit of this repository (a shallow clone lacks history: git fetch --unshallow).",
              file=sys.stderr)
        raise SystemExit(2)
    sha = commit.stdout.strip()
    path = Path(tempfile.gettempdir()) / f"omnigrid-rev-{sha[:12]}"
    if not (path / "train.py").is_file():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha],
                       check=True, capture_output=True)
    return path


def _worker(args: argparse.Namespace) -> dict:
    """Runs inside the side's checkout (``sys.path[0]`` is it): build a trainer, time rollouts."""
    sys.path.insert(0, args.root)
    os.chdir(args.root)
    from training.config import RunConfig
    from training.loop import Trainer

    config = RunConfig.from_yaml(Path("configs/default.yaml").read_text())
    config.tasks, config.curriculum, config.seed = args.tasks, "none", 1
    config.video_every, config.checkpoint_every = 0, 0
    config.runs_dir = tempfile.mkdtemp()
    # Its own small --set parser, not bench/learning_frames.py's: importing that from this
    # checkout would import this checkout's training package into the other side's process.
    for item in args.set:
        key, _, raw = item.partition("=")
        for target in (config, config.agent, config.ppo):
            if hasattr(target, key):
                current = getattr(target, key)
                setattr(target, key, type(current)(raw) if current is not None else raw)
                break
        else:
            raise SystemExit(f"--set {key}: no such setting in {args.root}")
    config.validate()
    trainer = Trainer(config, progress=False)
    trainer.collect()
    trainer.update()
    start, frames = time.perf_counter(), trainer.frames
    for _ in range(args.rollouts):
        trainer.collect()
        trainer.update()
    seconds = time.perf_counter() - start
    trainer.env.close()
    import torch

    return {"frames": trainer.frames - frames, "seconds": seconds, "threads": torch.get_num_threads(),
            "envs": config.num_envs, "steps": config.ppo.num_steps, "minibatch": config.ppo.batch_size,
            "epochs": config.ppo.update_epochs, "backend": getattr(config, "backend", "minigrid (no choice)")}


def _measure(root: Path, args: argparse.Namespace, overrides: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--root", str(root), "--tasks", args.tasks,
               "--rollouts", str(args.rollouts), "--set", *overrides]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    if proc.returncode != 0:
        raise SystemExit(f"the run in {root} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["fps"] = result["frames"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default=BEFORE_ENVPOOL, help="the earlier revision (any git commit-ish)")
    parser.add_argument("--tasks", default=DEFAULT_TASKS)
    parser.add_argument("--rollouts", type=int, default=6, help="timed rollouts (collect + update) per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (earlier, ours)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="overrides of ours only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    sides = {"earlier": (_worktree(args.rev), []), "ours": (ROOT, args.set)}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(args.rounds):
        for side, (root, overrides) in sides.items():
            result = _measure(root, args, overrides)
            runs[side].append(result)
            print(f"  round {r + 1} {side:<8}{result['fps']:>8,.0f} frames/s", flush=True)
    print(f"{'side':<9}{'revision':<10}{'backend':<22}{'envs x steps':>13}{'minibatch':>10}{'epochs':>7}{'threads':>8}"
          f"{'frames/s':>10}{'min':>8}{'max':>8}")
    for side, results in runs.items():
        first, fps = results[0], [r["fps"] for r in results]
        rev = args.rev if side == "earlier" else "HEAD"
        shape = f"{first['envs']} x {first['steps']}"
        print(f"{side:<9}{rev:<10}{first['backend']:<22}{shape:>13}{first['minibatch']:>10}"
              f"{first['epochs']:>7}{first['threads']:>8}{statistics.median(fps):>10,.0f}{min(fps):>8,.0f}{max(fps):>8,.0f}")
    ratio = statistics.median(r["fps"] for r in runs["ours"]) / statistics.median(r["fps"] for r in runs["earlier"])
    print(f"ratio ours/earlier, training frames/s: {ratio:.2f} (tasks: {args.tasks})")


if __name__ == "__main__":
    main()
