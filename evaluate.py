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

The table marks the tasks the run trained on (the ``tasks`` of the run config
saved in its checkpoint: a ``trained`` column, or a ``*`` per cell with
several runs) and ends with the mean success of each family and of all tasks;
the JSON has the same as ``trained`` per task and ``families``. The progress
bar counts environment steps against ``max_steps`` per episode, a total that
shrinks as episodes end early, so its estimate is an upper bound.
"""

from __future__ import annotations

import os
import re
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
    step_budget,
    trained_tasks,
    write_json,
)
from envs.wrappers import FAMILIES  # noqa: E402
from training.logger import Logger, gif_bytes  # noqa: E402
from training.remote import RemotePolicy  # noqa: E402


DEVICES = "{auto,cpu,cuda,cuda:N}"


@dataclass
class EvalArgs:
    """Evaluate trained agents per task."""

    runs: Annotated[
        tuple[str, ...],
        tyro.conf.Positional,
        tyro.conf.arg(metavar="RUN [RUN ...]", help_behavior_hint="(required)"),
    ]
    """A run folder (runs/<name>: its final.pt, else its newest checkpoint) or a checkpoint file (.pt); several give one table, a column per run."""
    split: Literal["train", "heldout", "all"] = "heldout"
    """Tasks of the registry to evaluate (ignored when --tasks or --env is given)."""
    tasks: Annotated[str, tyro.conf.arg(metavar="NAME[,NAME...]")] = ""
    """Comma-separated registered task names (python train.py --list-tasks); '' = the --split tasks."""
    env: Annotated[str, tyro.conf.arg(metavar="ID[,ID...]")] = ""
    """Comma-separated gymnasium ids of MiniGrid/BabyAI environments outside the registry (MiniGrid-DoorKey-5x5-v0)."""
    family: Literal["navigation", "recognition"] = "navigation"
    """Task family an --env environment counts as (decides PLE's family experts and its family mean)."""
    episodes: int = 100
    """Episodes per task (episode e on layout seed + e), >= 1."""
    num_envs: int = 16
    """Episodes played in parallel (vector env slots), >= 1."""
    seed: int = 0
    """Episode e of a task uses layout seed + e; sampled actions are seeded from it too."""
    deterministic: bool = False
    """Argmax actions instead of sampling from the policy."""
    device: Annotated[str, tyro.conf.arg(metavar=DEVICES)] = "auto"
    """Where the network runs: auto (cuda when present, else cpu), cpu, cuda, or cuda:N for GPU number N."""
    threads: int = 0
    """CPU threads for torch, >= 0; 0 = auto (training/threads.py: 1, as evaluation's small batches gain nothing from more)."""
    json: Annotated[str, tyro.conf.arg(metavar="FILE")] = ""
    """File to write the results to, e.g. results.json ('' = runs/<run>/eval/<split>-<time>.json per run)."""
    video: Annotated[str, tyro.conf.arg(metavar="FOLDER")] = ""
    """Folder for GIFs of the first --video-episodes episodes of each task (also logged to TensorBoard); '' = none."""
    video_episodes: int = 2
    """Episodes recorded per task with --video, >= 0."""
    tensorboard: bool = True
    """Log the results as eval/ scalars into each run's TensorBoard."""
    server: Annotated[str, tyro.conf.arg(metavar="URL")] = ""
    """Take the actions from this run's agent served by serve.py at URL (http://127.0.0.1:8000) instead of running it here; same episodes and seeds, so --deterministic gives the local results exactly. '' = evaluate locally."""
    token: Annotated[str, tyro.conf.arg(metavar="TOKEN")] = ""
    """Bearer token for --server ('' = the OMNIGRID_TOKEN environment variable, if set)."""


def _error(message: str) -> int:
    print(f"evaluate.py: error: {message}", file=sys.stderr)
    return 2


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", name):
        raise ValueError(f"--device {name!r} is not a device; use one of {DEVICES} (cuda:1 for the second GPU).")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} but no CUDA device is available here; use cpu or auto.")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ValueError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1}.")
    return torch.device(name)


def _label(run: str) -> str:
    path = Path(run)
    folder = run_dir_of(path)
    return folder.name if folder is not None else path.stem


@dataclass
class Column:
    """One run's results in the table: a column of the comparison, or the whole single-run table."""

    results: list[EvalResult]
    trained_on: list[str] | None  # None: the checkpoint does not record its training tasks


def _family_rows(targets) -> list[tuple[str, str, list[int]]]:
    """(family label, "N tasks", row indices) of each family present, then of all tasks."""
    groups = [(f, [i for i, t in enumerate(targets) if t.family == f]) for f in FAMILIES]
    groups = [(f, rows) for f, rows in groups if rows] + [("all", list(range(len(targets))))]
    return [(f, f"{len(rows)} task{'s' if len(rows) != 1 else ''}", rows) for f, rows in groups]


def _table(targets, columns: dict[str, Column]) -> str:
    """Per task: family, split, trained or not, success; then the mean success of each family and of all."""
    width = max(len("task"), *(len(t.name) for t in targets))
    head = f"{'task':<{width}}  {'family':<11}  {'split':<8}"
    means = _family_rows(targets)
    if len(columns) == 1:
        ((_, column),) = columns.items()
        mark = {None: "?", True: "yes", False: "no"}
        lines = [head + f"  {'trained':<7}  {'success':>7}  {'95% interval':>12}  {'return':>6}  {'length':>6}"]
        for t, r in zip(targets, column.results):
            trained = None if column.trained_on is None else t.name in column.trained_on
            lines.append(
                f"{t.name:<{width}}  {t.family:<11}  {t.split:<8}  {mark[trained]:<7}  {r.success:>7.2f}  "
                f"[{r.success_low:.2f}, {r.success_high:.2f}]  {r.mean_return:>6.2f}  {r.mean_length:>6.1f}"
            )
        lines.append("-" * len(lines[0]))
        for family, count, rows in means:
            mean = sum(column.results[i].success for i in rows) / len(rows)
            lines.append(f"{'mean':<{width}}  {family:<11}  {count:<8}  {'':<7}  {mean:>7.2f}")
        if column.trained_on is None:
            lines.append("trained ?: the checkpoint does not record the tasks its run trained on.")
        return "\n".join(lines)
    cell = max(19, *(len(name) for name in columns))  # "0.55 [0.45, 0.65]*" or the run's name
    lines = [head + "".join(f"  {name:>{cell}}" for name in columns)]
    for i, t in enumerate(targets):
        row = f"{t.name:<{width}}  {t.family:<11}  {t.split:<8}"
        for column in columns.values():
            r = column.results[i]
            star = "*" if column.trained_on is not None and t.name in column.trained_on else " "
            row += f"  {f'{r.success:.2f} [{r.success_low:.2f}, {r.success_high:.2f}]{star}':>{cell}}"
        lines.append(row)
    lines.append("-" * len(lines[0]))
    for family, count, rows in means:
        row = f"{'mean':<{width}}  {family:<11}  {count:<8}"
        for column in columns.values():
            row += f"  {f'{sum(column.results[i].success for i in rows) / len(rows):.2f}':<18}".rjust(cell + 2)
        lines.append(row)
    lines.append("* the run of that column trained on the task (success and its 95% interval in each cell).")
    unknown = [name for name, column in columns.items() if column.trained_on is None]
    if unknown:
        lines.append(f"no * possible for {', '.join(unknown)}: the checkpoint does not record the tasks its run trained on.")
    return "\n".join(line.rstrip() for line in lines)


def _progress(total: int) -> tqdm:
    """A bar over environment steps: ``total`` is an upper bound that shrinks as episodes end early."""
    return tqdm(total=total, unit="steps", unit_scale=True, file=sys.stderr, dynamic_ncols=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = cli.parse(EvalArgs, argv, description=__doc__)
    except cli.CliError as err:
        return _error(str(err))
    if not args.runs:
        return _error("no run to evaluate; give a run folder or a checkpoint file: python evaluate.py runs/<run> "
                      "(python evaluate.py --help for the options).")
    try:
        for name in ("episodes", "num_envs"):
            value = getattr(args, name)
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')}={value} must be a positive integer.")
        if args.video_episodes < 0:
            raise ValueError(f"--video-episodes={args.video_episodes} must be >= 0.")
        torch_threads = threads.resolve_threads(args.threads, role="evaluate")  # bad numbers first, then paths
        checkpoints = [resolve_checkpoint(run) for run in args.runs]  # a mistyped path fails before any work
        torch.set_num_threads(torch_threads)
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
        payloads = [read_payload(path, device=device) for path in checkpoints]  # each file read once
        models = [agent_from_payload(payload, path, device=device) for payload, path in zip(payloads, checkpoints)]
        for model in models:
            for target in targets:
                check_compatible(model, target)
        labels = [_label(run) for run in args.runs]
        if len(set(labels)) < len(labels):
            labels = [str(run) for run in args.runs]
        remote = _remote(args, models, env_ids) if args.server else None
    except ValueError as err:
        return _error(str(err))

    what = "custom" if names or env_ids else args.split
    mode = "deterministic" if args.deterministic else "sampled"
    print(
        f"{len(targets)} tasks ({what}), {args.episodes} episodes each, {mode} actions, seed {args.seed}, "
        f"device {device}, {torch.get_num_threads()} CPU thread(s): {', '.join(str(c) for c in checkpoints)}"
    )
    settings = {"split": what, "episodes": args.episodes, "seed": args.seed, "deterministic": args.deterministic}
    if remote is not None:
        settings["server"] = remote.url
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    columns: dict[str, Column] = {}
    documents = []
    bar = _progress(len(models) * sum(step_budget(t, args.episodes) for t in targets))

    episodes_done = 0

    def on_steps(played: int, released: int) -> None:
        bar.total -= released
        bar.update(played)

    def on_episode() -> None:
        nonlocal episodes_done
        episodes_done += 1
        bar.set_postfix_str(f"{episodes_done}/{args.episodes} episodes", refresh=False)

    try:
        for label, run, path, model, payload in zip(labels, args.runs, checkpoints, models, payloads):
            results = []
            for target in targets:
                episodes_done = 0
                bar.set_postfix_str(f"0/{args.episodes} episodes", refresh=False)
                bar.set_description(f"{label}: {target.name}")
                results.append(
                    evaluate_target(
                        model, target, episodes=args.episodes, num_envs=args.num_envs, seed=args.seed,
                        deterministic=args.deterministic, video_episodes=args.video_episodes if args.video else 0,
                        on_episode=on_episode, on_steps=on_steps, remote=remote,
                    )
                )
            columns[label] = Column(results, trained_tasks(payload))
            frames = payload.get("frames")
            documents.append(report(results, run=str(run), checkpoint=str(path), frames=frames, settings=settings,
                                    trained_on=columns[label].trained_on))
            folder = run_dir_of(run)
            if not args.json:
                out = (folder if folder is not None else Path(path).parent) / "eval" / f"{what}-{stamp}.json"
                write_json(documents[-1], out)
                bar.write(f"{label}: results in {out}")
            if args.video:
                _save_videos(Path(args.video) / label, results)
            if args.tensorboard and folder is not None:
                _log_tensorboard(folder, results, frames or 0, what)
    except KeyboardInterrupt:
        bar.close()
        print("evaluate.py: interrupted; results written so far are kept.", file=sys.stderr)
        return 130
    except RuntimeError as err:  # the server went away or refused mid-run
        bar.close()
        print(f"evaluate.py: stopped: {err}; results written so far are kept.", file=sys.stderr)
        return 1
    finally:
        if remote is not None:
            remote.close()
    bar.close()
    if args.json:
        document = documents[0] if len(documents) == 1 else {"format": documents[0]["format"], "runs": documents}
        print(f"results in {write_json(document, args.json)}")
    return cli.print_or_quit(_table(targets, columns))


def _remote(args: EvalArgs, models: list, env_ids: list[str]) -> RemotePolicy:
    """The served agent of ``--server``, checked to answer; ValueError (one line) when it cannot stand in for the run."""
    if len(models) != 1:
        raise ValueError(f"--server evaluates one run (the agent it serves); {len(models)} were given.")
    if env_ids:
        raise ValueError("--server takes registered tasks only (the server names tasks by registry name); drop --env.")
    model = models[0]
    if model.memory is not None:
        raise ValueError("--server: agents with memory (memory=lstm) are not served; evaluate them locally.")
    if tuple(model.space_info["image_shape"]) != (7, 7, 3):
        raise ValueError("--server: the server takes MiniGrid's symbolic 7x7x3 view; this agent sees pixels (obs=rgb).")
    remote = RemotePolicy(args.server, token=args.token or None)
    remote.check()
    return remote


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
