"""Adam on torch's fused kernel, without ``torch.optim.Optimizer``'s machinery.

Every ``torch.optim.Optimizer`` imports ``torch._dynamo`` when it is built
(``add_param_group`` is wrapped to keep the compiler out), which adds about
70 MB to the resident memory of a training process that never compiles
anything: a fifth of the trainer's peak (369 MB with ``torch.optim.Adam``,
303 MB with this class, in ``bench/throughput_vs_sb3.py``).
:class:`FusedAdam` keeps the moments itself and calls torch's functional
Adam (``torch.optim.adam.adam`` with ``fused=True``: one kernel over all
parameters), so the arithmetic is torch's own, step for step. Its
``state_dict`` has the format of ``torch.optim.Adam``'s, so checkpoints load
either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam


class FusedAdam:
    """Adam (Kingma and Ba 2015) over parameter groups, as ``torch.optim.Adam(..., fused=True)``.

    Args:
        groups: dicts with ``params`` and optionally ``lr`` (the group's
            learning rate; default ``lr``).
        lr: default learning rate.
        betas: moment decay rates.
        eps: added to the denominator.

    Parameters without a gradient at a step (frozen ones) are skipped and get
    no state, as in torch.
    """

    def __init__(self, groups: Iterable[dict[str, Any]], *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for group in groups:
            params = list(group["params"])
            if any(id(p) in seen for p in params):
                raise ValueError("a parameter appears in more than one group")
            seen.update(id(p) for p in params)
            self.param_groups.append({
                "params": params, "lr": group.get("lr", lr), "betas": tuple(betas), "eps": eps, "weight_decay": 0.0,
                "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                "differentiable": False, "fused": True, "decoupled_weight_decay": False,
            })
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p not in self.state:
                    self.state[p] = {
                        "step": torch.zeros((), dtype=torch.float32, device=p.device),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            states = [self.state[p] for p in params]
            beta1, beta2 = group["betas"]
            adam(
                params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [], [s["step"] for s in states], fused=True, amsgrad=False, beta1=beta1, beta2=beta2,
                lr=group["lr"], weight_decay=0.0, eps=group["eps"], maximize=False,
            )

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam``'s format: state by parameter index, groups with their indices."""
        index = {id(p): i for i, p in enumerate(self._params())}
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": list(range(start, start + n))})
            start += n
        return {"state": {index[id(p)]: s for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by this class or by ``torch.optim.Adam`` (copies the tensors)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"the saved optimizer state has {len(saved_groups)} parameter groups, this optimizer {len(self.param_groups)}"
            )
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"parameter group {i} of the saved optimizer state has {len(saved['params'])} parameters, "
                    f"this optimizer {len(group['params'])}"
                )
        params = {index: p for saved, group in zip(saved_groups, self.param_groups) for index, p in zip(saved["params"], group["params"])}
        state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for index, values in state_dict["state"].items():
            p = params[int(index)]
            for key in ("exp_avg", "exp_avg_sq"):
                if values[key].shape != p.shape:
                    raise ValueError(f"saved {key} of parameter {index} has shape {tuple(values[key].shape)}, the parameter {tuple(p.shape)}")
            step = torch.as_tensor(values["step"])
            state[p] = {
                "step": step.to(device=p.device, dtype=torch.float32).clone(),
                "exp_avg": values["exp_avg"].to(device=p.device, dtype=p.dtype).clone(),
                "exp_avg_sq": values["exp_avg_sq"].to(device=p.device, dtype=p.dtype).clone(),
            }
        self.state = state
        for saved, group in zip(saved_groups, self.param_groups):
            for key in ("lr", "betas", "eps"):
                if key in saved:
                    group[key] = tuple(saved[key]) if key == "betas" else saved[key]
