"""Parameter sharing between the heads: hard sharing, MMoE, PLE.

Every strategy maps the shared features ``(B, D)`` to one feature vector per
head (``policy``, ``value``, ``recognition``, ``reward``), each ``(B, H)``.

* ``hard``: one shared trunk; every head reads its output (Caruana 1997).
* ``mmoe``: Multi-gate Mixture-of-Experts (Ma et al. 2018): ``E`` experts, one
  softmax gate per head over them, gated by the mission/task embedding.
* ``ple``: Progressive Layered Extraction (Tang et al. 2020): shared experts
  plus experts owned by each task family (navigation, recognition), stacked in
  two extraction levels; a sample's gates see the shared experts and its own
  family's experts only.
"""

from __future__ import annotations

import torch
from torch import nn

HEADS: tuple[str, ...] = ("policy", "value", "recognition", "reward")
NUM_FAMILIES = 2


def _expert(inp: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inp, out), nn.ReLU())


class HardSharing(nn.Module):
    """One trunk shared by every head."""

    def __init__(self, inp: int, hidden: int, *, context_dim: int, **_: int) -> None:
        super().__init__()
        self.trunk = _expert(inp, hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor, family: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {head: h for head in HEADS}

    def last_shared_layer(self) -> nn.Linear:
        return self.trunk[0]


class MMoE(nn.Module):
    """Experts mixed by one softmax gate per head, gated by the context."""

    def __init__(self, inp: int, hidden: int, *, context_dim: int, num_experts: int = 4, **_: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList([_expert(inp, hidden) for _ in range(num_experts)])
        self.gates = nn.ModuleDict({head: nn.Linear(context_dim, num_experts) for head in HEADS})

    def forward(self, x: torch.Tensor, context: torch.Tensor, family: torch.Tensor) -> dict[str, torch.Tensor]:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, H)
        out = {}
        for head, gate in self.gates.items():
            weights = torch.softmax(gate(context), dim=-1).unsqueeze(-1)  # (B, E, 1)
            out[head] = (weights * experts).sum(dim=1)
        return out

    def last_shared_layer(self) -> nn.Linear:
        return self.experts[-1][0]


class PLE(nn.Module):
    """Shared and family-specific experts over two progressive extraction levels."""

    def __init__(
        self,
        inp: int,
        hidden: int,
        *,
        context_dim: int,
        num_experts: int = 2,
        num_levels: int = 2,
        **_: int,
    ) -> None:
        super().__init__()
        # Expert k belongs to group owner[k]: -1 shared, 0..F-1 a family.
        owner = [-1] * num_experts + [f for f in range(NUM_FAMILIES) for _ in range(num_experts)]
        self.register_buffer("owner", torch.tensor(owner), persistent=False)
        # The same as Python bools: an `if` on a tensor element is a device read per expert, and tracing
        # (agents.traceable, the ONNX export) would freeze it.
        self._shared = [o == -1 for o in owner]
        total = len(owner)
        self.levels = nn.ModuleList()
        for level in range(num_levels):
            width = inp if level == 0 else hidden
            self.levels.append(nn.ModuleList([_expert(width, hidden) for _ in range(total)]))
        # Gates of the inner levels: one per family plus one for the shared path.
        self.inner_gates = nn.ModuleList(
            [nn.Linear(context_dim, total) for _ in range((num_levels - 1) * (NUM_FAMILIES + 1))]
        )
        self.head_gates = nn.ModuleDict({head: nn.Linear(context_dim, total) for head in HEADS})

    def _mask(self, family: torch.Tensor) -> torch.Tensor:
        """``(B, E)``: True where the sample may use the expert (shared or own family)."""
        return (self.owner == -1) | (self.owner == family.unsqueeze(1))

    @staticmethod
    def _mix(logits: torch.Tensor, mask: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1).unsqueeze(-1)
        return (weights * experts).sum(dim=1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, family: torch.Tensor) -> dict[str, torch.Tensor]:
        own = self._mask(family)
        everything = torch.ones_like(own)
        shared_in, family_in = x, x
        gates = iter(self.inner_gates)
        for i, experts in enumerate(self.levels):
            # A family's experts read that family's path; shared experts read the shared path.
            outs = torch.stack(
                [e(shared_in if self._shared[k] else family_in) for k, e in enumerate(experts)], dim=1
            )
            if i == len(self.levels) - 1:
                return {head: self._mix(gate(context), own, outs) for head, gate in self.head_gates.items()}
            # Next level: each sample's family path mixes shared + own experts;
            # the shared path mixes every expert. (One gate per family, picked per sample.)
            family_paths = torch.stack(
                [self._mix(next(gates)(context), own, outs) for _ in range(NUM_FAMILIES)], dim=1
            )
            # Each sample's own family path, by a gather (what tracing follows for any batch size).
            index = family.view(-1, 1, 1).expand(-1, 1, family_paths.shape[-1])
            family_in = family_paths.gather(1, index).squeeze(1)
            shared_in = self._mix(next(gates)(context), everything, outs)
        raise AssertionError("PLE has no levels")

    def last_shared_layer(self) -> nn.Linear:
        return self.levels[-1][0][0]


SHARINGS: dict[str, type[nn.Module]] = {"hard": HardSharing, "mmoe": MMoE, "ple": PLE}
