"""Evaluate trained agents per task: held-out split by default, 95 % Wilson intervals.

    python evaluate.py runs/<run>                              # held-out split, 100 episodes a task
    python evaluate.py runs/<run> --split train --deterministic
    python evaluate.py runs/<run>/checkpoints/final.pt --tasks DoorKey-5x5,LavaGapS6
    python evaluate.py runs/<run> --env BabyAI-GoToRedBallGrey-v0  # any MiniGrid/BabyAI id
    python evaluate.py runs/<run> --video videos/                  # GIFs of a few episodes a task
    python evaluate.py runs/a runs/b runs/c                        # one table, a column per run

The architecture comes from the checkpoint; nothing needs repeating. Results go
to the console, to ``runs/<run>/eval/<split>-<time>.json`` (or ``--json``) and
to the run's TensorBoard under ``eval/``. Episode ``e`` of a task is played on
the layout of seed ``seed + e`` for every run, so runs compared side by side
meet the same episodes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from training import threads  # noqa: E402  (imports no torch)

# Before torch loads libgomp, which reads its environment once: OpenMP threads
# that sleep instead of spinning leave the cores to a training run beside us.
threads.configure_openmp()

import torch  # noqa: E402
import tyro  # noqa: E402
from tqdm import tqdm  # noqa: E402

from agents.persist import agent_from_payload, read_payload, resolve_checkpoint  # noqa: E402
from training import cli  # noqa: E402
from training.evaluation import (  # noqa: E402
    EvalResult,
    check_compatible,
    evaluate_target,
    report,
    resolve_targets,
    run_dir_of,
    write_json,
)
from training.logger import Logger, gif_bytes  # noqa: E402


@dataclass
class EvalArgs:
    """Evaluate trained agents per task."""

    runs: Annotated[tuple[str, ...], tyro.conf.Positional]
    """Run folders (runs/<name>) or checkpoint files; several give a comparison table."""
    split: Literal["train", "heldout", "all"] = "heldout"
    """Tasks of the registry to evaluate (ignored when --tasks or --env is given)."""
    tasks: str = ""
    """Comma-separated registered task names (python train.py --list-tasks)."""
    env: str = ""
    """Comma-separated gymnasium ids of MiniGrid/BabyAI environments outside the registry."""
    family: Literal["navigation", "recognition"] = "navigation"
    """Task family an --env environment counts as (decides PLE's family experts)."""
    episodes: int = 100
    """Episodes per task."""
    num_envs: int = 16
    """Episodes played in parallel (vector env slots)."""
    seed: int = 0
    """Episode e of a task uses layout seed + e; sampled actions are seeded from it too."""
    deterministic: bool = False
    """Argmax actions instead of sampling from the policy."""
    device: str = "auto"
    """auto (cuda if available), cpu or cuda."""
    threads: int = 0
    """CPU threads for torch; 0 = auto (training/threads.py: 1, as evaluation's small batches gain nothing from more)."""
    json: str = ""
    """Where to write the results (default: runs/<run>/eval/<split>-<time>.json per run)."""
    video: str = ""
    """Folder for GIFs of the first --video-episodes episodes of each task (also logged to TensorBoard)."""
    video_episodes: int = 2
    """Episodes recorded per task with --video."""
    tensorboard: bool = True
    """Log the results as eval/ scalars into each run's TensorBoard."""


def _error(message: str) -> int:
    print(f"evaluate.py: error: {message}", file=sys.stderr)
    return 2


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu or cuda.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} but no CUDA device is available here; use cpu or auto.")
    return torch.device(name)


def _label(run: str) -> str:
    path = Path(run)
    folder = run_dir_of(path)
    return folder.name if folder is not None else path.stem


def _table(targets, columns: dict[str, list[EvalResult]]) -> str:
    width = max(len("task"), *(len(t.name) for t in targets))
    head = f"{'task':<{width}}  {'family':<11}  {'split':<8}"
    if len(columns) == 1:
        (results,) = columns.values()
        lines = [head + f"  {'success':>7}  {'95% interval':>12}  {'return':>6}  {'length':>6}"]
        for t, r in zip(targets, results):
            lines.append(
                f"{t.name:<{width}}  {t.family:<11}  {t.split:<8}  {r.success:>7.2f}  "
                f"[{r.success_low:.2f}, {r.success_high:.2f}]  {r.mean_return:>6.2f}  {r.mean_length:>6.1f}"
            )
        return "\n".join(lines)
    cell = max(18, *(len(name) for name in columns))  # "0.55 [0.45, 0.65]" or the run's name
    lines = [head + "".join(f"  {name:>{cell}}" for name in columns)]
    for i, t in enumerate(targets):
        row = f"{t.name:<{width}}  {t.family:<11}  {t.split:<8}"
        for results in columns.values():
            r = results[i]
            row += f"  {f'{r.success:.2f} [{r.success_low:.2f}, {r.success_high:.2f}]':>{cell}}"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = cli.parse(EvalArgs, argv, description=__doc__)
    except cli.CliError as err:
        return _error(str(err))
    try:
        for name in ("episodes", "num_envs"):
            value = getattr(args, name)
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')}={value} must be a positive integer.")
        if args.video_episodes < 0:
            raise ValueError(f"--video-episodes={args.video_episodes} must be >= 0.")
        torch.set_num_threads(threads.resolve_threads(args.threads, role="evaluate"))
        device = _device(args.device)
        if args.json:
            if Path(args.json).is_dir():
                raise ValueError(f"--json {args.json!r} is a folder; give a file name (results.json).")
            cli.check_writable(Path(args.json).parent, f"--json {args.json!r}")
        if args.video:
            cli.check_writable(args.video, f"--video {args.video!r}")
        names = [t.strip() for t in args.tasks.split(",") if t.strip()]
        env_ids = [e.strip() for e in args.env.split(",") if e.strip()]
        targets = resolve_targets(split=args.split, tasks=names, env_ids=env_ids, family=args.family)
        checkpoints = [resolve_checkpoint(run) for run in args.runs]
        payloads = [read_payload(path, device=device) for path in checkpoints]  # each file read once
        models = [agent_from_payload(payload, path, device=device) for payload, path in zip(payloads, checkpoints)]
        for model in models:
            for target in targets:
                check_compatible(model, target)
        labels = [_label(run) for run in args.runs]
        if len(set(labels)) < len(labels):
            labels = [str(run) for run in args.runs]
    except ValueError as err:
        return _error(str(err))

    what = "custom" if names or env_ids else args.split
    mode = "deterministic" if args.deterministic else "sampled"
    print(
        f"{len(targets)} tasks ({what}), {args.episodes} episodes each, {mode} actions, seed {args.seed}, "
        f"device {device}, {torch.get_num_threads()} CPU thread(s): {', '.join(str(c) for c in checkpoints)}"
    )
    settings = {"split": what, "episodes": args.episodes, "seed": args.seed, "deterministic": args.deterministic}
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    columns: dict[str, list[EvalResult]] = {}
    documents = []
    bar = tqdm(total=len(models) * len(targets) * args.episodes, unit="episodes", file=sys.stderr, dynamic_ncols=True)
    for label, run, path, model, payload in zip(labels, args.runs, checkpoints, models, payloads):
        results = []
        for target in targets:
            bar.set_description(f"{label}: {target.name}")
            results.append(
                evaluate_target(
                    model, target, episodes=args.episodes, num_envs=args.num_envs, seed=args.seed,
                    deterministic=args.deterministic, video_episodes=args.video_episodes if args.video else 0,
                    on_episode=lambda: bar.update(1),
                )
            )
        columns[label] = results
        frames = payload.get("frames")
        documents.append(report(results, run=str(run), checkpoint=str(path), frames=frames, settings=settings))
        folder = run_dir_of(run)
        if not args.json:
            out = (folder if folder is not None else Path(path).parent) / "eval" / f"{what}-{stamp}.json"
            write_json(documents[-1], out)
            bar.write(f"{label}: results in {out}")
        if args.video:
            _save_videos(Path(args.video) / label, results)
        if args.tensorboard and folder is not None:
            _log_tensorboard(folder, results, frames or 0, what)
    bar.close()
    if args.json:
        document = documents[0] if len(documents) == 1 else {"format": documents[0]["format"], "runs": documents}
        print(f"results in {write_json(document, args.json)}")
    print(_table(targets, columns))
    return 0


def _save_videos(folder: Path, results: list[EvalResult]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for result in results:
        for k, frames in enumerate(result.videos):
            (folder / f"{result.task}-{k}.gif").write_bytes(gif_bytes(frames))


def _log_tensorboard(run_dir: Path, results: list[EvalResult], frames: int, what: str) -> None:
    """``eval/<task>/success`` (and interval, return, length) at the checkpoint's frame count."""
    logger = Logger(run_dir)
    try:
        for r in results:
            prefix = f"eval/{r.task}"
            logger.scalars(
                {
                    f"{prefix}/success": r.success,
                    f"{prefix}/success_low": r.success_low,
                    f"{prefix}/success_high": r.success_high,
                    f"{prefix}/return": r.mean_return,
                    f"{prefix}/episode_length": r.mean_length,
                },
                frames,
            )
            for k, video in enumerate(r.videos):
                logger.gif(f"eval_videos/{r.task}/{k}", video, frames)
        if results:
            logger.scalars({f"eval/{what}/mean_success": sum(r.success for r in results) / len(results)}, frames)
    finally:
        logger.close()


if __name__ == "__main__":
    sys.exit(main())
