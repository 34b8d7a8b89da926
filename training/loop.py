"""The training loop: collect a rollout -> PPO update -> report, until the frame budget.

:class:`Trainer` wires ``envs`` (the multi-task vector env) and ``agents``
(model, buffer, PPO) together. Each step of the loop is its own method
(:meth:`collect`, :meth:`update`, :meth:`log`, :meth:`save`) so that curricula, loggers
and checkpoints hook in without rewriting it.
"""

from __future__ import annotations

import copy
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from agents.buffer import RolloutBuffer
from agents.model import MultiTaskActorCritic
from training.rollout import Collector, Episode
from agents.ppo import MultiTaskPPO, NonFiniteLoss
from envs.curriculum import FamilySchedule
from envs.tasks import TASK_NAMES, TASKS
from envs.wrappers import FAMILIES
from envs.vector import make_vector_env
from agents.persist import remove_leftovers, resolve_checkpoint
from training import checkpoint
from training.checkpoint import RunStopped
from training.config import RunConfig
from training.distributed import SINGLE, RankCollectives, World, all_gather
from training.logger import Logger, NullLogger, hparams_markdown
from training import run_state
from training.console import Console
from training.reporting import SUCCESS_WINDOW, EpisodeStats, Reporter  # noqa: F401  (SUCCESS_WINDOW: benches)

def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains one :class:`MultiTaskActorCritic` on the config's tasks.

    Args:
        config: a validated :class:`RunConfig`.
        progress: show a progress bar and per-task lines on the console.
        resume: checkpoint to continue from.
        world: this process's rank under torchrun (:func:`training.distributed.setup`);
            every rank runs a Trainer, rank 0 alone writes the run folder.
        device: the rank's device (from the same setup); default: the config's.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        progress: bool = True,
        resume: Path | None = None,
        world: World = SINGLE,
        device: torch.device | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.world = world
        self.device = device or config.resolved_device()
        torch.set_num_threads(config.resolved_threads())
        set_seed(config.seed + world.rank)  # ranks sample their own actions; DDP copies rank 0's initial weights
        self.env = make_vector_env(
            config.task_list, config.num_envs, backend=config.resolved_backend(), obs=config.obs,
            vectorization=config.vectorization, env_threads=config.env_threads,
        )
        self.curriculum = config.make_curriculum()
        # Levels above the one open at the start (all of them for curricula that open every task).
        self._levels = sorted({TASKS[name].level for name in config.task_list})
        self._first_level = self._levels.index(self.curriculum.level())
        self.schedule = FamilySchedule(config.schedule)
        self._applied_probs = None
        self.model = MultiTaskActorCritic(self.env.single_observation_space, config.agent).to(self.device)
        if config.init_from and resume is None:
            self._init_from(Path(config.init_from))
        if config.freeze == "shared":
            self.model.freeze_shared()
        train_model, collectives = self.model, None
        if world.distributed:
            # Gradients averaged across ranks in backward. Parts unused by a minibatch
            # (the reward head without rewarding windows, gates of absent tasks) need
            # find_unused_parameters.
            train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
            collectives = RankCollectives(world, self.device)
        self.ppo = MultiTaskPPO(
            self.model, config.ppo, task_names=TASK_NAMES, seed=config.seed, train_model=train_model,
            collectives=collectives, mastered_threshold=config.mastered_threshold,
        )
        memory = config.agent.hidden_size if config.agent.memory == "lstm" else 0
        self.buffer = RolloutBuffer(
            self.env.single_observation_space, config.ppo.num_steps, config.num_envs, device=self.device, memory_size=memory
        )
        self.stats = EpisodeStats()
        self.progress = progress and world.is_main
        self.frames = 0
        self.updates = 0
        self.env_crashes: dict[str, int] = defaultdict(int)  # per task, over the run (this rank's slots)
        self.skipped_updates = 0  # over the run (non-finite loss or gradient)
        self._bad_in_a_row = 0
        payload = checkpoint.load(resume) if resume is not None else None
        if payload is not None:
            self.load_state_dict(payload)
        self.apply_curriculum()
        self.run_dir = config.run_dir()
        self.logger: Logger | NullLogger = NullLogger()
        if world.is_main:
            remove_leftovers(checkpoint.checkpoint_dir(self.run_dir))  # half-written files of a killed run
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(config.to_yaml())
            # On resume, TensorBoard drops events logged after the checkpoint: no duplicated steps.
            # A run started over in its folder (killed before its first checkpoint) drops them all.
            purge = self.frames + 1 if payload is not None else None
            if payload is None and any(self.run_dir.glob("events.out.tfevents.*")):
                purge = 0
            self.logger = Logger(self.run_dir, purge_step=purge)
            if payload is None:
                self.logger.text("hparams", hparams_markdown(config.flat()))
        self.reporter = Reporter(config, self.stats, self.model)
        self.collector = Collector(
            self.env, self.model, self.buffer, device=self.device, gamma=config.ppo.gamma, gae_lambda=config.ppo.gae_lambda,
        )
        local = self._local_state(payload) if payload is not None else None
        if local is not None and isinstance(local["env"], dict) == self.env.exact_resume:
            # Saved by the other backend (a pooled state is a dict, the python one a list per slot).
            print("notice: the checkpoint's episodes in flight were saved by the other environment backend; "
                  "the slots start new episodes.", file=sys.stderr)
            checkpoint.set_rng_state(local["rng"])
            local = None
        if local is not None:
            # Exact resume (python backend): the slots replay their episodes in flight, and
            # the learner's per-slot state and RNGs are those of the checkpoint. The envpool
            # backend restarts the episodes in flight instead, seeded from the checkpoint.
            self.collector.start(*self.env.set_state(local["env"]))
            if self.env.exact_resume:
                self.collector.load_state_dict(local["in_flight"])
            checkpoint.set_rng_state(local["rng"])
        else:
            # Ranks' slots are seeded apart, as one process with num_envs x world_size slots would be.
            self.collector.start(*self.env.reset(seed=config.seed + self.frames + world.rank * config.num_envs))
        self._boundary: dict = {}
        self._snapshot()

    # ------------------------------------------------------------ collecting
    def collect(self) -> None:
        """Fill the buffer with ``num_steps`` steps of every slot (:class:`training.rollout.Collector`)."""
        episodes, crashes = self.collector.collect(self.config.ppo.num_steps)
        for task, reason in crashes:
            self._count_crash(task, reason)
        self._share_episodes(episodes)
        self.frames += self.config.ppo.num_steps * self.config.num_envs * self.world.world_size

    def _share_episodes(self, episodes: list[Episode]) -> None:
        """Feed the episodes every rank finished this rollout, in rank order, to statistics and curriculum.

        Every rank sees the same outcomes in the same order, so every rank's
        curriculum opens the same tasks at the same update.
        """
        for finished in all_gather([tuple(e) for e in episodes], self.world):
            for task, success, ret, length in finished:
                self.stats.add(task, success, ret, length)
                self.curriculum.record(task, success)

    def _count_crash(self, task: str, reason: str) -> None:
        """An episode ended by an environment crash: counted as failed (by the caller), logged, limited."""
        self.env_crashes[task] += 1
        count, limit = self.env_crashes[task], self.config.max_env_crashes
        tqdm.write(f"[{self.frames:,} frames] environment crash {count}/{limit} of {task}: {reason}", file=sys.stderr)
        if count > limit:
            raise RunStopped(
                f"task {task} crashed {count} times (max_env_crashes={limit}); last: {reason}"
            )

    # -------------------------------------------------------------- updating
    def update(self) -> dict[str, float]:
        """One PPO update on the collected rollout.

        A NaN or infinite loss or gradient skips the update: the parameters and
        optimizer go back to the last update's end and the rollout is dropped.
        ``max_bad_updates`` skips in a row stop the run (:class:`RunStopped`).
        """
        cfg = self.config.ppo
        lr = cfg.learning_rate * cfg.level_lr_decay ** self._levels_opened
        if cfg.anneal_lr:
            lr *= max(0.0, 1.0 - self.frames / self.config.frames)
        self.ppo.set_learning_rate(lr)
        if self.ppo.keeper is not None:  # the parameters that produced this rollout may become a task's teacher
            self.ppo.keeper.observe({
                name: (float(np.mean(window)), float(np.mean(self.stats.returns[name])))
                for name, window in self.stats.success.items() if len(window) == SUCCESS_WINDOW
            })
        self.model.train()
        try:
            stats = self.ppo.update(self.buffer)
            self._bad_in_a_row = 0
        except NonFiniteLoss as err:
            self.model.load_state_dict(self._boundary["state_dict"])
            self.ppo.load_state_dict(copy.deepcopy(self._boundary["ppo"]))
            self.skipped_updates += 1
            self._bad_in_a_row += 1
            tqdm.write(
                f"[{self.frames:,} frames] update skipped: {err}; parameters kept from the previous update "
                f"({self._bad_in_a_row}/{self.config.max_bad_updates} in a row)",
                file=sys.stderr,
            )
            if self._bad_in_a_row >= self.config.max_bad_updates:
                raise RunStopped(
                    f"{self._bad_in_a_row} updates in a row had a NaN/Inf loss or gradient (last: {err}); "
                    "lower learning_rate or max_grad_norm, or check the reward scale"
                ) from None
            stats = {}
        stats["train/skipped_updates"] = float(self.skipped_updates)
        stats["train/env_crashes"] = float(sum(self.env_crashes.values()))
        self.updates += 1
        self.apply_curriculum()
        return stats

    @property
    def _levels_opened(self) -> int:
        """Levels the curriculum has opened since the run started (``level_lr_decay``)."""
        return self._levels.index(self.curriculum.level()) - self._first_level

    def apply_curriculum(self) -> None:
        """Tell the slots what the next rollout runs (each from its next episode on)."""
        if self.config.task_balance == "slots":
            # Whole slots per task; a slot keeps its task while the task keeps its quota.
            # The slots' current tasks are read back from the env (restored with it on resume).
            rows = self.env.task_probs
            current = [TASK_NAMES[row.argmax()] if row.max() == 1.0 else None for row in rows]
            tasks = self.schedule.slots(self.curriculum, self.updates, self.config.num_envs, current)
            if tasks != current:
                self.env.set_tasks(tasks)
            running = set(tasks)
        else:
            lengths = None
            if self.config.task_balance == "frames":
                lengths = {name: float(np.mean(window)) for name, window in self.stats.lengths.items() if window}
            probs = self.schedule.assign(self.curriculum, self.updates, self.config.num_envs, lengths)
            if probs != self._applied_probs:
                self.env.set_task_probs(probs)
                self._applied_probs = probs
            running = set(probs) if isinstance(probs, dict) else {name for row in probs for name in row}
        if self.schedule.kind == "alternate" and hasattr(self, "collector"):
            # A rollout collects from one family: slots still in an episode of the
            # other family restart now. The abandoned episodes are not counted, and
            # the previous rollout already bootstrapped from their value, so no bias.
            families = {FAMILIES.index(TASKS[name].family) for name in running}
            stale = ~np.isin(self.collector.obs["family"], list(families))
            if stale.any():
                self.collector.restart(stale, *self.env.reset(options={"reset_mask": stale}))

    def _init_from(self, path: Path) -> None:
        """Copy a trained agent's weights; its architecture must be this run's."""
        payload = checkpoint.load(resolve_checkpoint(path))
        mine, theirs = self.model.constructor_args(), payload["model"]
        if mine != theirs:
            diff = sorted(
                f"{key}: {theirs['config'].get(key)!r} there, {value!r} here"
                for key, value in mine["config"].items()
                if theirs["config"].get(key) != value
            ) or [f"observation space {theirs['space_info']} there, {mine['space_info']} here"]
            raise ValueError(f"init_from={str(path)!r} has another architecture ({'; '.join(diff)}).")
        self.model.load_state_dict(payload["state_dict"])

    def _snapshot(self) -> None:
        """Remember the state between two updates: what a checkpoint saves (:func:`training.run_state.capture`)."""
        self._boundary = run_state.capture(self)

    def _local_state(self, payload: dict) -> dict | None:
        """This rank's slots, episodes in flight and RNGs in a checkpoint; None to start them afresh."""
        return run_state.local_part(payload, self.world)

    def state_dict(self) -> dict:
        """The learner's state at the last update's end (the agent is saved beside it by :mod:`training.checkpoint`)."""
        return {"config": self.config.to_yaml(), **self._boundary}

    def load_state_dict(self, payload: dict) -> None:
        """Model, PPO, curriculum, statistics and counters; the envs and RNGs follow at the end of ``__init__``."""
        run_state.restore(self, payload)

    def save(self, *, final: bool = False) -> Path | None:
        """Checkpoint the run atomically: periodic (``ckpt-<frames>.pt``) or ``final.pt``.

        TensorBoard's queue is flushed first: after a kill, every curve point up to
        the checkpoint is on disk, so a resumed run's curves have no gap.
        """
        if not self.world.is_main:
            return None  # rank 0 writes the run's checkpoints
        self.logger.flush()
        return checkpoint.save(self.run_dir, self.state_dict(), self.model, final=final, keep=self.config.keep_checkpoints)

    def _save_or_stop(self, *, final: bool = False) -> Path | None:
        """:meth:`save`; a full disk or an unwritable folder stops the run, older checkpoints untouched."""
        try:
            return self.save(final=final)
        except OSError as err:
            previous = checkpoint.list_checkpoints(self.run_dir)
            kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
            stop = RunStopped(
                f"could not write a checkpoint in {checkpoint.checkpoint_dir(self.run_dir)}: "
                f"{err.strerror or err}; {kept}"
            )
            stop.saved = True  # nothing more to try
            raise stop from None

    # ------------------------------------------------------------- reporting
    def log(self, ppo_stats: dict[str, float], fps: float) -> None:
        """Write this update's curves to TensorBoard (x-axis: frames)."""
        values = self.reporter.scalars(
            ppo_stats, self.curriculum, fps=fps, learning_rate=self.ppo.optimizer.param_groups[0]["lr"],
            updates=self.updates,
        )
        self.logger.scalars(values, self.frames)

    def record_videos(self) -> None:
        """One episode per task family, played by the current policy, as GIFs in TensorBoard."""
        self.reporter.record_videos(self.logger, self.curriculum, updates=self.updates, frames=self.frames)

    def run(self) -> EpisodeStats:
        """Train until ``config.frames``, then save the agent; returns the episode statistics."""
        per_update = self.config.ppo.num_steps * self.config.num_envs * self.world.world_size
        console = Console(self.config, self.stats, enabled=self.progress, frames=self.frames, frames_per_update=per_update)
        first = True  # the first update of this process records a video too: GIFs from the first minute
        try:
            while self.frames < self.config.frames:
                self.collect()
                ppo_stats = self.update()
                self.log(ppo_stats, console.fps(self.frames))
                every = self.config.video_every
                if self.world.is_main and every and (first or self.updates % every == 0):
                    self.record_videos()
                first = False
                self._snapshot()
                if self.config.checkpoint_every and self.updates % self.config.checkpoint_every == 0:
                    self._save_or_stop()
                console.after_update(
                    frames=self.frames, updates=self.updates, open_tasks=self.curriculum.unlocked(),
                    level=self.curriculum.level(),
                )
        except BaseException as err:
            # Stopped mid-step, the workers' pipes may hold half a message:
            # terminate them rather than wait for replies that will not come.
            console.close()
            self.env.close(terminate=True)
            if isinstance(err, KeyboardInterrupt):
                # Ctrl-C: keep what was learnt; `--resume` continues from this checkpoint.
                path = self.save()  # the state at the last update's end; the partial rollout is dropped
                if path is not None:
                    print(
                        f"\ninterrupted; saved {path} at {self._boundary['frames']:,} frames; "
                        f"continue with --resume {self.run_dir}"
                    )
            elif isinstance(err, RunStopped) and not getattr(err, "saved", False):
                # The last good state (the last update's end) is what a fixed run resumes from.
                path = self._save_or_stop()
                if path is None:  # another rank than 0: the job ends, rank 0's last checkpoint stays
                    raise RunStopped(f"rank {self.world.rank}: {err}") from None
                raise RunStopped(
                    f"{err}. Saved the last good state ({self._boundary['frames']:,} frames) to {path}; "
                    f"resume with --resume {self.run_dir}"
                ) from None
            raise
        finally:
            console.close()
            if not self.env.closed:
                self.env.close()
            self.logger.close()
        path = self._save_or_stop(final=True)
        if path is not None:
            console.finish(frames=self.frames, open_tasks=self.curriculum.unlocked(), level=self.curriculum.level(),
                           saved=path, run_dir=self.run_dir)
        return self.stats
