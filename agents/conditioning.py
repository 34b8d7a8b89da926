"""Task conditioning: the mission text (and optionally the task id) shapes the features.

Registry :data:`CONDITIONINGS`:

* ``film``: mission tokens -> word embedding -> GRU -> FiLM (feature-wise
  affine modulation, Perez et al. 2018) of the convolutional map, in two
  blocks, as in BabyAI's best agents (Chevalier-Boisvert et al. 2019).
* ``concat``: the mission embedding is concatenated to the pooled features.
* ``task-id``: a learned embedding of the task index replaces the mission.

With ``task_embedding=True``, ``film`` and ``concat`` add a learned task-id
embedding to the mission embedding.
"""

from __future__ import annotations

import torch
from torch import nn


class MissionEncoder(nn.Module):
    """Token ids -> word embeddings -> GRU -> last hidden state.

    Missions repeat a lot within a batch (a few tasks, a few phrasings), so the
    GRU runs once per *distinct* mission and results are scattered back.

    Shapes:
        tokens: int64 ``(B, L)``, 0-padded -> ``(B, hidden)``.
    """

    def __init__(self, vocab_size: int, *, embed_dim: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.gru = nn.GRU(embed_dim, hidden, batch_first=True)
        self.hidden = hidden

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
        lengths = (unique != 0).sum(dim=1).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(unique), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, h = self.gru(packed)  # (1, U, hidden): state after each mission's last word
        return h[0][inverse]


class FiLM(nn.Module):
    """``x * (1 + gamma(c)) + beta(c)`` per channel, then a conv and ReLU.

    ``1 + gamma`` starts the block near the identity, which trains more
    stably than a raw multiplicative gamma.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.affine = nn.Linear(cond_dim, 2 * channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(cond).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return torch.relu(self.conv(x * (1 + gamma) + beta)) + x


class Conditioning(nn.Module):
    """Combines the encoder's map, the mission and the task id into features.

    Args:
        kind: ``film``, ``concat`` or ``task-id``.
        channels: channels of the encoder's 7x7 map.
        vocab_size: mission vocabulary size.
        num_tasks: number of task ids.
        task_embedding: add a task-id embedding to the mission embedding.
        hidden: size of the mission/task embedding and of the output features.

    Returns from ``forward``:
        map: ``(B, channels, 7, 7)`` conditioned map (for per-cell heads),
        features: ``(B, hidden)``,
        context: ``(B, hidden)`` the mission/task embedding (gates of MMoE/PLE).
    """

    def __init__(
        self,
        kind: str,
        *,
        channels: int,
        vocab_size: int,
        num_tasks: int,
        task_embedding: bool,
        hidden: int,
    ) -> None:
        super().__init__()
        if kind not in CONDITIONINGS:
            raise ValueError(f"conditioning={kind!r} is unknown; known: {', '.join(CONDITIONINGS)}.")
        self.kind = kind
        self.mission = MissionEncoder(vocab_size, hidden=hidden) if kind != "task-id" else None
        self.task = nn.Embedding(num_tasks, hidden) if (task_embedding or kind == "task-id") else None
        self.film = nn.ModuleList([FiLM(hidden, channels), FiLM(hidden, channels)]) if kind == "film" else None
        self.pool = nn.MaxPool2d(2)  # 7x7 -> 3x3: keeps coarse layout, cheap to flatten
        pooled = channels * 9
        extra = hidden if kind in ("concat", "task-id") else 0
        self.direction = nn.Embedding(4, 16)
        self.project = nn.Sequential(nn.Linear(pooled + extra + 16, hidden), nn.ReLU())

    def context(self, mission: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The mission and/or task embedding, ``(B, hidden)``."""
        ctx = self.mission(mission) if self.mission is not None else None
        if self.task is not None:
            ctx = self.task(task) if ctx is None else ctx + self.task(task)
        return ctx

    def forward(self, fmap: torch.Tensor, direction: torch.Tensor, mission: torch.Tensor, task: torch.Tensor):
        ctx = self.context(mission, task)
        if self.film is not None:
            for block in self.film:
                fmap = block(fmap, ctx)
        parts = [self.pool(fmap).flatten(1), self.direction(direction)]
        if self.kind in ("concat", "task-id"):
            parts.append(ctx)
        return fmap, self.project(torch.cat(parts, dim=1)), ctx


CONDITIONINGS: dict[str, str] = {
    "film": "mission GRU -> FiLM on the conv map (BabyAI)",
    "concat": "mission GRU embedding concatenated to the pooled features",
    "task-id": "learned task-id embedding, no mission",
}
