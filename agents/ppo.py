"""MultiTaskPPO: one PPO update over a multi-task rollout.

Per minibatch: PPO terms per task (a table, :func:`agents.losses.ppo_task_table`),
one loss per auxiliary head (:data:`AUX_LOSSES`), combined by the loss weighter
(:class:`agents.objective.MinibatchObjective`), one optimizer step. Adding an auxiliary head means adding an entry to
:data:`AUX_LOSSES` (its loss, its coefficient, and optionally extra
observations it needs, which share the minibatch's forward pass), not editing
:meth:`MultiTaskPPO.update`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import torch
import tyro
from torch import nn

from agents.buffer import Minibatch, RewardStore, RolloutBuffer
from agents.diagnostics import rollout_diagnostics
from agents.distill import PolicyKeeper
from agents.losses import ADVANTAGE_NORMS, RETIRED_ADVANTAGE_NORMS, recognition_accuracy, recognition_loss, reward_loss
from agents.model import EvalOutput, MultiTaskActorCritic, ObsBatch
from agents.objective import MinibatchObjective
from agents.optim import FusedAdam
from agents.weighting import WEIGHTERS, LossWeighter, make_weighter


RETIRED_FIELDS = {
    "task_mean": "the PPO terms are now one mean over the minibatch's rows (a per-task mean lost on "
                 "bench/level_transfer.py)",
    "timeouts": "time-outs are bootstrapped (terminal time-outs lost to that on bench/level_transfer.py "
                "and on DoorKey-5x5 alone)",
}
"""PPOConfig fields that were removed, and why: a saved config naming one is refused with the reason."""


@dataclass
class PPOConfig:
    """PPO and loss-weighting hyperparameters."""

    learning_rate: float = 1e-3
    """Adam learning rate (1e-3 as rl-starter-files: GoToObject-6x6-N2 reached 0.9 success in 76k frames, not in 400k with 2.5e-4)."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0 over the run."""
    level_lr_decay: float = 1.0
    """Multiply the learning rate by this each time the curriculum opens a level (1: constant); smaller steps once many tasks share the trunk."""
    num_steps: int = 128
    """Steps per slot per rollout (the rollout is num_steps x num_envs frames)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    batch_size: int = 256
    """Minibatch size in transitions; must divide num_steps * num_envs."""
    update_epochs: int = 4
    """Passes over the rollout per update."""
    clip_coef: float = 0.2
    """PPO ratio clipping range."""
    clip_value: bool = True
    """Clip value updates around the old values."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    distill_coef: float = 1.0
    """Coefficient of KL(teacher || policy) on the rows of each mastered task, its teacher being the policy at its best rolling return so far (agents.distill; 0: off; not with memory=lstm, where a teacher would need a memory of its own over the rollout)."""
    max_grad_norm: float = 0.5
    """Global gradient norm clip."""
    # Plain strings checked in validate() (a removed value gets its reason, not tyro's "invalid choice"); the
    # metavars give --help the choices.
    advantage_norm: Annotated[str, tyro.conf.arg(metavar="{" + ",".join(ADVANTAGE_NORMS) + "}")] = "batch"
    """Advantage normalisation per minibatch: batch (z-scores over all its rows) or none (raw, as torch-ac). The PPO terms are one mean over the minibatch's rows, so a task weighs by its share of the slots."""
    target_kl: Annotated[float | None, tyro.conf.arg(metavar="FLOAT")] = None
    """Stop the epochs of an update early when the approximate KL exceeds this (None: every epoch runs)."""
    bptt: int = 32
    """With memory: length of the sequence chunks for truncated BPTT; must divide num_steps."""
    weighting: Annotated[str, tyro.conf.arg(metavar="{" + ",".join(WEIGHTERS) + "}")] = "static"
    """Loss weighting strategy: static, uncertainty, gradnorm, dwa or pcgrad."""
    recognition_coef: float = 0.1
    """Coefficient of the recognition loss."""
    reward_coef: float = 0.1
    """Coefficient of the reward-prediction loss."""
    recognition_rows: int = 16
    """Rows of each minibatch the recognition head decodes and learns from (0: all); minibatches are reshuffled every epoch."""
    reward_batch: int = 16
    """Windows of 3 steps per reward-prediction minibatch (half rewarding, half not), encoded with the minibatch."""
    reward_focal_gamma: float = 0.0
    """Focal loss gamma of the reward head (0: cross-entropy)."""

    def validate(self, num_envs: int) -> None:
        if not isinstance(self.recognition_rows, int) or self.recognition_rows < 0:
            raise ValueError(f"recognition_rows={self.recognition_rows!r} must be an integer >= 0 (0: every row).")
        for name in ("num_steps", "batch_size", "update_epochs", "bptt", "reward_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        for name in ("learning_rate", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0.")
        if not 0 < self.level_lr_decay <= 1:
            raise ValueError(f"level_lr_decay={self.level_lr_decay!r} must be in (0, 1] (1: the same rate at every level).")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in [0, 1].")
        for name in ("clip_coef", "ent_coef", "vf_coef", "distill_coef", "recognition_coef", "reward_coef", "reward_focal_gamma"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0.")
        rollout = self.num_steps * num_envs
        if rollout % self.batch_size:
            raise ValueError(
                f"batch_size must divide num_steps * num_envs. Currently batch_size={self.batch_size}, "
                f"num_steps={self.num_steps}, num_envs={num_envs} ({rollout} frames per rollout)."
            )
        if self.advantage_norm in RETIRED_ADVANTAGE_NORMS:
            raise ValueError(
                f"advantage_norm={self.advantage_norm!r} was removed: per-task z-scores lost to batch on "
                f"bench/level_transfer.py (README); known: {', '.join(ADVANTAGE_NORMS)}."
            )
        if self.advantage_norm not in ADVANTAGE_NORMS:
            raise ValueError(f"advantage_norm={self.advantage_norm!r} is unknown; known: {', '.join(ADVANTAGE_NORMS)}.")
        if self.weighting not in WEIGHTERS:
            raise ValueError(f"weighting={self.weighting!r} is unknown; known: {', '.join(WEIGHTERS)}.")


class Collectives:
    """How data-parallel ranks agree on what their gradients do not carry; a single process here.

    With several ranks (``training.distributed``), the model's gradients are
    averaged by ``DistributedDataParallel``; these three cover the rest.
    """

    def average_gradients(self, parameters) -> None:
        """Average ``.grad`` of parameters outside the wrapped model (the loss weighter's)."""

    def mean(self, value: float) -> float:
        """The mean of a float over ranks (the approximate KL that may stop an update)."""
        return value

    def broadcast_module_state(self, module: nn.Module) -> None:
        """Make every rank's state of ``module`` equal to rank 0's (the loss weighter after an update)."""


class NonFiniteLoss(FloatingPointError):
    """A minibatch's loss or gradient was NaN or infinite; the optimizer step was not taken."""


# ------------------------------------------------------------ auxiliary losses
class AuxHead(NamedTuple):
    """How one auxiliary head is trained.

    Attributes:
        loss: ``(ppo, minibatch, eval_output, extra_targets, measure) -> (terms, stats)``
            or None to skip this minibatch; ``stats`` (accuracies) only when
            ``measure`` (the first epoch), so that they cost nothing otherwise.
        coef_field: the :class:`PPOConfig` field with the head's coefficient.
        sample: optional ``ppo -> (observations, targets) | None``: extra
            observation rows the head needs (encoded in the same forward pass
            as the minibatch, as ``reward_obs``) and their targets.
    """

    loss: Callable[..., "tuple[dict[str, torch.Tensor], dict[str, float]] | None"]
    coef_field: str
    sample: Callable[["MultiTaskPPO"], "tuple[Any, torch.Tensor] | None"] | None = None


def _recognition(ppo: "MultiTaskPPO", mb: Minibatch, out: EvalOutput, extra: Any, measure: bool):
    rows = len(out.recognition["target"])  # the first rows of the minibatch (PPOConfig.recognition_rows)
    labels, target = mb.view_labels[:rows], mb.target_cell[:rows]
    terms = recognition_loss(out.recognition, labels, target)
    if not measure:
        return terms, {}
    acc = recognition_accuracy(out.recognition, labels, target)
    return terms, {f"train/aux/recognition_{k}_accuracy": v for k, v in acc.items()}


def _reward_sample(ppo: "MultiTaskPPO"):
    return ppo.reward_store.sample(ppo.config.reward_batch, ppo.device)


def _reward(ppo: "MultiTaskPPO", mb: Minibatch, out: EvalOutput, labels: torch.Tensor | None, measure: bool):
    if labels is None:  # no rewarding window seen yet
        return None
    terms = reward_loss(out.reward, labels, focal_gamma=ppo.config.reward_focal_gamma)
    if not measure:
        return terms, {}
    return terms, {"train/aux/reward_accuracy": (out.reward.argmax(-1) == labels).float().mean().item()}


AUX_LOSSES: dict[str, AuxHead] = {
    "recognition": AuxHead(_recognition, "recognition_coef"),
    "reward": AuxHead(_reward, "reward_coef", _reward_sample),
}


class MultiTaskPPO:
    """PPO for :class:`MultiTaskActorCritic` with per-task losses and a loss weighter.

    Args:
        model: the agent.
        config: hyperparameters.
        task_names: the name of every task index (registry order).
        seed: seed of minibatch shuffling and of the reward store.
        train_model: what the update calls for the loss: ``model`` itself (the
            default) or a wrapper of it such as ``DistributedDataParallel``.
        collectives: how ranks agree beyond the model's gradients (see
            :class:`Collectives`); the default is a single process.
        mastered_threshold: rolling success from which a task gets a teacher
            (with ``distill_coef > 0``, see :mod:`agents.distill`).
    """

    def __init__(
        self,
        model: MultiTaskActorCritic,
        config: PPOConfig,
        *,
        task_names: Sequence[str],
        seed: int = 0,
        train_model: nn.Module | None = None,
        collectives: "Collectives | None" = None,
        mastered_threshold: float = 0.9,
    ) -> None:
        self.model = model
        self.train_model = train_model if train_model is not None else model
        self.collectives = collectives or Collectives()
        self.config = config
        self.task_names = list(task_names)
        self.device = model.device
        self.aux = [head for head in AUX_LOSSES if head in model.config.aux_heads]
        loss_names = [f"ppo/{name}" for name in self.task_names] + [f"aux/{head}" for head in self.aux]
        self.weighter: LossWeighter = make_weighter(config.weighting, loss_names=loss_names, seed=seed).to(self.device)
        groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
        weighter_params = list(self.weighter.parameters())
        if weighter_params:
            groups.append({"params": weighter_params, "lr": self.weighter.lr or config.learning_rate})
        # Fused Adam: one kernel for all parameters instead of a loop over tensors
        # (4x faster on CPU for this many small tensors), without torch.optim's
        # import of the compiler (70 MB resident, see agents.optim).
        self.optimizer = FusedAdam(groups, lr=config.learning_rate, eps=1e-5)
        self.generator = torch.Generator().manual_seed(seed)
        self.keeper = (
            PolicyKeeper(model, task_names=self.task_names, threshold=mastered_threshold)
            if config.distill_coef > 0 and model.memory is None
            else None
        )
        self.reward_store = (
            RewardStore(model.space_info["image_shape"], model.space_info["mission_length"], seed=seed)
            if "reward" in self.aux
            else None
        )

    def set_learning_rate(self, lr: float) -> None:
        self.optimizer.param_groups[0]["lr"] = lr

    def update(self, buffer: RolloutBuffer) -> dict[str, float]:
        """One PPO update on a full buffer (advantages already computed).

        Returns:
            Mean statistics over minibatches: ``train/loss/<term>`` (PPO terms per
            task, auxiliary terms), ``weights/<loss>``, ``train/aux/*`` accuracies,
            ``train/approx_kl``, ``train/clipfrac``, ``train/grad_norm``.
        """
        cfg = self.config
        if self.reward_store is not None:
            self.reward_store.add_rollout(buffer)
        seq_len = cfg.bptt if self.model.memory is not None else 0
        teacher = None
        if self.keeper is not None:  # the teachers' view of this rollout, once for all epochs
            shape = buffer.task.shape
            found = self.keeper.teacher_logprobs(ObsBatch(*(x.flatten(0, 1) for x in buffer.obs_at(slice(None)))))
            if found is not None:
                teacher = (found[0].view(*shape, -1), found[1].view(shape))
        diagnostics = rollout_diagnostics(
            buffer.task, buffer.values, buffer.returns, buffer.advantages, self.task_names,
            batch_size=min(cfg.batch_size, buffer.task.numel()),
        )
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)

        def log(name: str, value: float) -> None:
            sums[name] += value
            counts[name] += 1

        params = [p for p in self.model.parameters() if p.requires_grad]
        stop = False
        for epoch in range(cfg.update_epochs):
            for mb in buffer.minibatches(cfg.batch_size, generator=self.generator, seq_len=seq_len, teacher=teacher):
                # Accuracies over one pass, the first: data the heads have not trained on yet,
                # and an epoch that always runs (target_kl may stop the later ones).
                measure = epoch == 0
                extra_obs, targets = None, {}
                for head in self.aux:
                    sampler = AUX_LOSSES[head].sample
                    sample = sampler(self) if sampler is not None else None
                    if sample is not None:
                        assert extra_obs is None, "one auxiliary head at most brings extra observations"
                        extra_obs, targets[head] = sample
                out = self.train_model(  # forward = evaluate; through DDP when distributed
                    mb.obs, mb.actions, state=mb.state, episode_start=mb.episode_start, steps=mb.steps,
                    reward_obs=extra_obs, recognition_rows=cfg.recognition_rows or None,
                )
                objective = MinibatchObjective(self, mb, out, targets, measure)
                for name, value in objective.stats.items():
                    log(name, value)
                loss = objective.loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm, foreach=True)
                finite = bool(torch.isfinite(loss.detach() + grad_norm))  # one sync for both
                # Every rank skips together: the loss is rank-local (GradNorm's terms too), and a
                # rank that skipped alone would miss the weighter's all-reduce the others enter.
                if self.collectives.mean(float(finite)) < 1.0:
                    bad = objective.nonfinite()
                    what = f"loss terms {', '.join(bad)}" if bad else ("loss" if not torch.isfinite(loss) else "gradient")
                    if finite:
                        what = "loss or gradient on another rank"
                    raise NonFiniteLoss(f"non-finite {what} at epoch {epoch + 1}, minibatch {counts['train/loss/total'] + 1}")
                self.collectives.average_gradients(self.weighter.parameters())  # DDP averages the model's
                self.optimizer.step()

                with torch.no_grad():
                    log_ratio = out.logprob - mb.logprobs
                    approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean().item()
                    if cfg.target_kl is not None:  # every rank must stop at the same minibatch
                        approx_kl = self.collectives.mean(approx_kl)
                    clipfrac = ((log_ratio.exp() - 1).abs() > cfg.clip_coef).float().mean().item()
                log("train/approx_kl", approx_kl)
                log("train/clipfrac", clipfrac)
                norm = float(grad_norm)
                log("train/grad_norm", norm)
                log("train/clipped_share", float(norm > cfg.max_grad_norm))
                log("train/loss/total", loss.item())
                for key, value in objective.terms():  # one device sync for all terms
                    log(f"train/loss/{key}", value)
                for key, weight in self.weighter.weights().items():
                    log(f"weights/{key}", weight)
                if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                    stop = True
                    break
            if stop:
                break
        self.weighter.end_update()
        self.collectives.broadcast_module_state(self.weighter)  # rank 0's loss weights for every rank
        stats = {name: sums[name] / counts[name] for name in sums}
        stats["train/early_stop"] = float(stop)
        stats.update(diagnostics)
        return stats

    def state_dict(self) -> dict[str, Any]:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "weighter": self.weighter.state_dict(),
            "generator": self.generator.get_state(),
        }
        if self.reward_store is not None:
            state["reward_store"] = self.reward_store.state_dict()
        if self.keeper is not None:
            state["keeper"] = self.keeper.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.weighter.load_state_dict(state["weighter"])
        self.generator.set_state(state["generator"])
        if self.reward_store is not None and "reward_store" in state:
            self.reward_store.load_state_dict(state["reward_store"])
        if self.keeper is not None and "keeper" in state:
            self.keeper.load_state_dict(state["keeper"])

