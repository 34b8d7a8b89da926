"""Loss weighting: how the per-task and auxiliary losses become one loss.

One small class per strategy behind :class:`LossWeighter`; the registry
:data:`WEIGHTERS` maps names to classes.

* ``static``: fixed coefficients.
* ``uncertainty``: homoscedastic uncertainty (Kendall et al. 2018).
* ``gradnorm``: gradient normalisation (Chen et al. 2018).
* ``dwa``: dynamic weight average (Liu et al. 2019).
* ``pcgrad``: projecting conflicting gradients (Yu et al. 2020).

RL losses can be negative (the PPO surrogate is), which the original methods
never met: where a method needs a loss *magnitude* (uncertainty, GradNorm's
training rates, DWA's ratios) it uses ``|L|``, which equals ``L`` for the
positive losses they were designed for.

A weighter owns its parameters and state; the trainer puts
``weighter.parameters()`` in its optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


class LossWeighter(nn.Module):
    """Combines named losses into one scalar to minimise.

    Subclasses implement :meth:`combine`; :meth:`weights` reports the weights
    in force for logging; :meth:`end_update` is called once per PPO update.
    ``state_dict()``/``load_state_dict()`` carry everything a resume needs.
    """

    lr: float | None = None
    """Learning rate of the weighter's own parameters (None: the model's)."""

    def __init__(self) -> None:
        super().__init__()
        self._weights: dict[str, float] = {}

    def combine(self, losses: Mapping[str, torch.Tensor], shared_params: Sequence[nn.Parameter]) -> torch.Tensor:
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        """The weight each named loss got in the last :meth:`combine`."""
        return dict(self._weights)

    def end_update(self) -> None:
        """Hook called after each PPO update (all epochs)."""

    # Names of losses are data, not parameters: keep them in the state dict.
    def get_extra_state(self) -> dict:
        return {"weights": dict(self._weights)}

    def set_extra_state(self, state: dict) -> None:
        self._weights = dict(state.get("weights", {}))


class StaticWeighting(LossWeighter):
    """``sum_i c_i L_i`` with fixed coefficients (default 1).

    Args:
        coefs: coefficient per loss name, or per prefix (``"aux/"``); the
            longest matching key wins.
    """

    def __init__(self, coefs: Mapping[str, float] | None = None, **_: object) -> None:
        super().__init__()
        self.coefs = dict(coefs or {})
        self._task_key: tuple[str, ...] | None = None  # the task list whose coefficients are cached below

    def coef(self, name: str) -> float:
        matches = [k for k in self.coefs if name == k or name.startswith(k)]
        return self.coefs[max(matches, key=len)] if matches else 1.0

    def combine(self, losses, shared_params):
        self._weights = {name: self.coef(name) for name in losses}
        return sum(self._weights[name] * loss for name, loss in losses.items())

    def combine_tasks(
        self, task_losses: torch.Tensor, task_names: Sequence[str], present: Sequence[int], extra: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """:meth:`combine` of ``ppo/<task>`` losses given as one vector over task indices, then ``extra``.

        Args:
            task_losses: ``(num_tasks,)``, zero for tasks absent from the minibatch.
            task_names: the name of every task index.
            present: the task indices in the minibatch (whose weights are reported).
            extra: further named losses (the auxiliary heads'), added in order.
        """
        key = tuple(task_names)
        if self._task_key != key:  # the coefficients of a task list, computed once
            self._task_key, self._task_coefs = key, [self.coef(f"ppo/{name}") for name in task_names]
            self._task_vector = torch.tensor(self._task_coefs, dtype=task_losses.dtype, device=task_losses.device)
        loss = (self._task_vector * task_losses).sum()
        for name, value in extra.items():
            loss = loss + self.coef(name) * value
        self._weights = {f"ppo/{task_names[t]}": self._task_coefs[t] for t in present}
        self._weights.update({name: self.coef(name) for name in extra})
        return loss


class _PerLossParameters(LossWeighter):
    """Weighters that learn one parameter per loss name, created on first sight.

    The names are fixed up front (``names``) so that the parameters exist
    before the optimizer is built and after a checkpoint is loaded.
    """

    def __init__(self, names: Sequence[str], init: float) -> None:
        super().__init__()
        self.names = list(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.param = nn.Parameter(torch.full((len(self.names),), float(init)))

    def _idx(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        unknown = [n for n in losses if n not in self.index]
        assert not unknown, f"losses {unknown} were not declared to the weighter (declared: {self.names})"
        return torch.tensor([self.index[n] for n in losses], device=self.param.device)


class UncertaintyWeighting(_PerLossParameters):
    """Kendall et al. 2018: ``sum_i exp(-s_i) L_i + s_i`` with learned ``s_i = log sigma_i^2``.

    Positive-safe: the network's gradient is ``exp(-s_i) dL_i`` as in the
    paper, while ``s_i`` is fitted to ``|L_i|`` (optimum ``s_i = log |L_i|``),
    so a negative loss cannot drive its weight to infinity. ``s_i`` is also
    clamped to ``[-max_log_var, max_log_var]``.
    """

    def __init__(self, names: Sequence[str], max_log_var: float = 6.0, **_: object) -> None:
        super().__init__(names, init=0.0)
        self.max_log_var = max_log_var

    def combine(self, losses, shared_params):
        values = torch.stack(list(losses.values()))
        s = self.param[self._idx(losses)].clamp(-self.max_log_var, self.max_log_var)
        precision = torch.exp(-s)
        total = (precision.detach() * values).sum() + (precision * values.detach().abs() + s).sum()
        self._weights = dict(zip(losses, precision.detach().tolist()))
        return total


class GradNormWeighting(_PerLossParameters):
    """Chen et al. 2018: learn weights that equalise gradient norms on the last shared layer.

    For each loss, ``G_i = w_i ||d L_i / d W||`` on the last shared weight
    ``W``; the target is ``mean(G) * r_i^alpha`` with ``r_i`` the loss's
    training rate ``|L_i| / |L_i(0)|`` relative to the mean rate. The weights
    get the gradient of ``sum_i |G_i - target_i|`` and are renormalised to sum
    to the number of losses.

    Args:
        names: every loss name that will be combined.
        alpha: strength of the pull toward equal training rates.
        lr: learning rate of the weights (the paper uses a separate one).
    """

    def __init__(self, names: Sequence[str], alpha: float = 1.5, lr: float = 0.01, **_: object) -> None:
        super().__init__(names, init=1.0)
        self.alpha = alpha
        self.lr = lr
        self.register_buffer("initial", torch.full((len(names),), float("nan")))

    def combine(self, losses, shared_params):
        idx = self._idx(losses)
        with torch.no_grad():  # renormalise: weights stay positive and sum to the number of losses
            self.param.clamp_(min=1e-3)
            self.param.mul_(len(self.names) / self.param.sum())
        values = torch.stack(list(losses.values()))
        # The last shared layer's weight: by convention the last shared parameter
        # of two or more dimensions (MultiTaskActorCritic.shared_parameters keeps it last).
        candidates = [p for p in shared_params if p.requires_grad]
        matrices = [p for p in candidates if p.dim() >= 2]
        assert candidates, "GradNorm needs the shared parameters to measure gradient norms on"
        layer = (matrices or candidates)[-1]
        norms = torch.stack(
            [
                torch.autograd.grad(loss, layer, retain_graph=True, allow_unused=True)[0].norm()
                if loss.requires_grad
                else torch.zeros((), device=layer.device)
                for loss in losses.values()
            ]
        ).nan_to_num()
        with torch.no_grad():
            first = torch.isnan(self.initial[idx])
            self.initial[idx[first]] = values.detach().abs()[first].clamp(min=1e-8)
            rate = values.detach().abs() / self.initial[idx]
            rate = rate / rate.mean().clamp(min=1e-8)
        w = self.param[idx]
        grad_norms = w * norms.detach()
        target = (grad_norms.mean() * rate.pow(self.alpha)).detach()
        gradnorm_loss = (grad_norms - target).abs().sum()
        self._weights = dict(zip(losses, w.detach().tolist()))
        return (w.detach() * values).sum() + gradnorm_loss


class DWAWeighting(LossWeighter):
    """Liu et al. 2019: weights from how fast each loss fell over the last two updates.

    ``w_i = K exp(r_i / T) / sum_j exp(r_j / T)`` with ``r_i = L_i(t-1) / L_i(t-2)``
    (mean ``|L_i|`` per update); weights are 1 until two updates are seen.

    Args:
        names: every loss name that will be combined.
        temperature: ``T``; higher is more uniform.
    """

    def __init__(self, names: Sequence[str], temperature: float = 2.0, **_: object) -> None:
        super().__init__()
        self.names = list(names)
        self.temperature = temperature
        k = len(self.names)
        self.register_buffer("history", torch.full((2, k), float("nan")))  # [t-2, t-1]
        self.register_buffer("running", torch.zeros(k))
        self.register_buffer("counts", torch.zeros(k))
        self.register_buffer("current", torch.ones(k))

    def combine(self, losses, shared_params):
        idx = torch.tensor([self.names.index(n) for n in losses], device=self.current.device)
        values = torch.stack(list(losses.values()))
        with torch.no_grad():
            self.running.index_add_(0, idx, values.detach().abs())
            self.counts.index_add_(0, idx, torch.ones_like(values))
        w = self.current[idx]
        self._weights = dict(zip(losses, w.tolist()))
        return (w * values).sum()

    @torch.no_grad()
    def end_update(self) -> None:
        seen = self.counts > 0
        mean = torch.where(seen, self.running / self.counts.clamp(min=1), self.history[1])
        self.history = torch.stack([self.history[1], mean])
        ratio = self.history[1] / self.history[0].clamp(min=1e-8)
        if torch.isnan(ratio).any():
            ratio = torch.where(torch.isnan(ratio), torch.ones_like(ratio), ratio)
        self.current = len(self.names) * torch.softmax(ratio / self.temperature, dim=0)
        self.running.zero_()
        self.counts.zero_()


class PCGradWeighting(LossWeighter):
    """Yu et al. 2020: project each loss's gradient off the others it conflicts with.

    On the shared parameters, each gradient ``g_i`` is projected onto the
    normal plane of every ``g_j`` (random order) with ``g_i . g_j < 0``; the
    projected gradients are summed. Parameters used by one loss only get their
    ordinary gradient. Implemented as a surrogate whose gradient is exactly
    that: ``sum_i L_i + sum_p (g_p^pc - sum_i g_{i,p}) . p`` (detached terms).

    Args:
        seed: seed of the projection order.
    """

    def __init__(self, seed: int = 0, **_: object) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def project(grads: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """PCGrad on flat gradients ``(K, P)`` -> projected ``(K, P)``."""
        projected = grads.clone()
        for i in range(grads.shape[0]):
            for j in order.tolist():
                if j == i:
                    continue
                dot = projected[i] @ grads[j]
                if dot < 0:
                    projected[i] = projected[i] - dot / grads[j].pow(2).sum().clamp(min=1e-12) * grads[j]
        return projected

    def combine(self, losses, shared_params):
        params = [p for p in shared_params if p.requires_grad]
        names = list(losses)
        total = sum(losses.values())
        self._weights = {name: 1.0 for name in names}
        if len(names) < 2:
            return total
        flat = []
        for loss in losses.values():
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)]))
        grads = torch.stack(flat)
        order = torch.randperm(len(names), generator=self.generator)
        correction = self.project(grads, order).sum(0) - grads.sum(0)
        offset, surrogate = 0, torch.zeros((), device=total.device)
        for p in params:
            n = p.numel()
            surrogate = surrogate + (correction[offset : offset + n].view_as(p).detach() * p).sum()
            offset += n
        return total + surrogate

    def get_extra_state(self) -> dict:
        return {"weights": dict(self._weights), "generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self._weights = dict(state.get("weights", {}))
        if "generator" in state:
            self.generator.set_state(state["generator"])


WEIGHTERS: dict[str, type[LossWeighter]] = {
    "static": StaticWeighting,
    "uncertainty": UncertaintyWeighting,
    "gradnorm": GradNormWeighting,
    "dwa": DWAWeighting,
    "pcgrad": PCGradWeighting,
}


def make_weighter(name: str, *, loss_names: Sequence[str], coefs: Mapping[str, float] | None = None, **kwargs) -> LossWeighter:
    """Build the weighter ``name`` for the given loss names."""
    if name not in WEIGHTERS:
        raise ValueError(f"weighting={name!r} is unknown; known: {', '.join(WEIGHTERS)}.")
    if name == "static":
        return StaticWeighting(coefs)
    if name == "pcgrad":
        return PCGradWeighting(**kwargs)
    return WEIGHTERS[name](loss_names, **kwargs)
