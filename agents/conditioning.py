"""Task conditioning: the mission text (and optionally the task id) shapes the features.

Registry :data:`CONDITIONINGS`:

* ``film``: mission tokens -> word embedding -> GRU -> FiLM (feature-wise
  affine modulation, Perez et al. 2018) of the last two convolutions of the
  encoder, as in BabyAI's best agents (Chevalier-Boisvert et al. 2019).
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
    """Feature-wise affine modulation: ``x * (1 + gamma(c)) + beta(c)`` per channel.

    ``1 + gamma`` starts the modulation at the identity, which trains more
    stably than a raw multiplicative gamma.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.affine = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(cond).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + gamma) + beta


class Conditioning(nn.Module):
    """Runs the encoder under the mission / task-id conditioning.

    Args:
        kind: ``film``, ``concat`` or ``task-id``.
        encoder: the shared :class:`agents.encoders.Encoder`.
        vocab_size: mission vocabulary size.
        num_tasks: number of task ids.
        task_embedding: add a task-id embedding to the mission embedding.
        hidden: size of the mission/task embedding and of the output features.

    Returns from ``forward``:
        features ``(B, hidden)`` and context ``(B, hidden)`` (the mission/task
        embedding, which also drives the MMoE/PLE gates).
    """

    def __init__(
        self,
        kind: str,
        *,
        encoder: nn.Module,
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
        # FiLM on the last two convolutions (the first sees single cells only).
        self.film = (
            nn.ModuleDict({str(i): FiLM(hidden, encoder.channels[i]) for i in (1, 2)}) if kind == "film" else None
        )
        extra = hidden if kind in ("concat", "task-id") else 0
        self.direction = nn.Embedding(4, 16)
        self.project = nn.Sequential(nn.Linear(encoder.out_dim + extra + 16, hidden), nn.ReLU())

    def context(self, mission: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The mission and/or task embedding, ``(B, hidden)``."""
        ctx = self.mission(mission) if self.mission is not None else None
        if self.task is not None:
            ctx = self.task(task) if ctx is None else ctx + self.task(task)
        return ctx

    def forward(self, encoder: nn.Module, image, direction, mission, task):
        ctx = self.context(mission, task)
        modulate = None
        if self.film is not None:
            film = self.film

            def modulate(i: int, x: torch.Tensor) -> torch.Tensor:
                return film[str(i)](x, ctx) if str(i) in film else x

        parts = [encoder(image, modulate), self.direction(direction)]
        if self.kind in ("concat", "task-id"):
            parts.append(ctx)
        return self.project(torch.cat(parts, dim=1)), ctx


CONDITIONINGS: dict[str, str] = {
    "film": "mission GRU -> FiLM on the encoder's convolutions (BabyAI)",
    "concat": "mission GRU embedding concatenated to the pooled features",
    "task-id": "learned task-id embedding, no mission",
}
