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

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn


class MissionEncoder(nn.Module):
    """Token ids -> word embeddings -> a mission embedding.

    Kinds (:data:`MISSION_ENCODERS`):

    * ``gru``: a GRU over the words, its state after the last word (BabyAI).
    * ``bow``: an order-aware bag of words: each word's embedding plus its
      position's, through one layer, max-pooled over the words, then a tanh
      layer (bounded like a GRU state, which FiLM needs to stay stable). One pass
      instead of a step per word: ~10x cheaper than the GRU forward and
      backward, which matters on CPU (``bench/ablations.py`` compares them).

    Missions repeat a lot within a batch (a few tasks, a few phrasings), so the
    encoder runs once per *distinct* mission and results are scattered back.

    Shapes:
        tokens: int64 ``(B, L)``, 0-padded at the end -> ``(B, hidden)``.
    """

    def __init__(self, vocab_size: int, *, kind: str = "gru", embed_dim: int = 32, hidden: int = 128, max_length: int = 64) -> None:
        super().__init__()
        if kind not in MISSION_ENCODERS:
            raise ValueError(f"mission_encoder={kind!r} is unknown; known: {', '.join(MISSION_ENCODERS)}.")
        self.kind = kind
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        if kind == "gru":
            self.gru = nn.GRU(embed_dim, hidden, batch_first=True)
        else:
            self.position = nn.Embedding(max_length, embed_dim)
            self.word = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU())
            self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())  # bounded, as a GRU state
        self.hidden = hidden
        self._cache: dict[bytes, torch.Tensor] | None = None  # mission row -> embedding, inside remember_missions

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._cache is None or torch.is_grad_enabled() or tokens.device.type != "cpu":
            return self._encode(tokens)
        return self._remembered(tokens)

    def _remembered(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each distinct mission encoded once while :func:`remember_missions` is open."""
        unique, first, inverse = _row_keys(tokens)
        unique = unique.tolist()
        missing = [i for i, key in enumerate(unique) if key not in self._cache]
        if missing:
            fresh = self._encode(tokens[torch.from_numpy(first[missing])])
            for i, row in zip(missing, fresh):
                self._cache[unique[i]] = row
        table = torch.stack([self._cache[key] for key in unique])
        return table[torch.from_numpy(inverse.reshape(-1))]

    def _encode(self, tokens: torch.Tensor) -> torch.Tensor:
        unique, inverse = _unique_rows(tokens)
        lengths = (unique != 0).sum(dim=1).clamp(min=1)
        unique = unique[:, : int(lengths.max())]  # drop the padding no mission reaches
        words = self.embed(unique)  # (U, L, E)
        if self.kind == "gru":
            # The padded length in one fused GRU call, then each mission's state
            # after its last word (cheaper than packing for these short missions).
            out, _ = self.gru(words)  # (U, L, hidden)
            return out[torch.arange(len(unique), device=tokens.device), lengths - 1][inverse]
        positions = torch.arange(unique.shape[1], device=tokens.device)
        h = self.word(words + self.position(positions))  # (U, L, hidden), >= 0 after the ReLU
        h = h * (positions < lengths.unsqueeze(1)).unsqueeze(-1)  # padding never wins the max
        return self.out(h.amax(dim=1))[inverse]


@contextlib.contextmanager
def remember_missions(model: nn.Module) -> Iterator[None]:
    """Inside, ``model``'s mission encoders encode each distinct mission once (acting on CPU, no gradient).

    A slot's mission changes only when its episode does, so acting would run
    the GRU over the same few missions at every step: a fifth of collection
    time on CPU. The caller promises the parameters do not change inside (a
    rollout's collection, an evaluation); embeddings are dropped on leaving.
    (Torch's version counters cannot tell instead: fused Adam updates the
    parameters without bumping them.)
    """
    encoders = [m for m in model.modules() if isinstance(m, MissionEncoder)]
    for encoder in encoders:
        encoder._cache = {}
    try:
        yield
    finally:
        for encoder in encoders:
            encoder._cache = None


MISSION_ENCODERS: dict[str, str] = {
    "gru": "GRU over the words (BabyAI)",
    "bow": "order-aware bag of words: word + position embeddings, one layer, max-pooled",
}


def _unique_rows(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of ``tokens`` ``(B, L)`` and the index of each row among them.

    On CPU, numpy's unique over the rows seen as byte strings: ~10x faster than
    ``torch.unique(dim=0)`` for the few-hundred-row batches of an update.
    """
    if tokens.device.type != "cpu":
        return torch.unique(tokens, dim=0, return_inverse=True)
    _, first, inverse = _row_keys(tokens)
    return tokens[torch.from_numpy(first)], torch.from_numpy(inverse.reshape(-1))


def _row_keys(tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CPU ``tokens`` ``(B, L)``: the distinct rows as byte strings, the first index of each, each row's index among them."""
    rows = np.ascontiguousarray(tokens.numpy())
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    return np.unique(keys, return_index=True, return_inverse=True)


class FiLM(nn.Module):
    """Feature-wise affine modulation: ``x * (1 + gamma(c)) + beta(c)`` per channel.

    ``1 + gamma`` starts the modulation at the identity, which trains more
    stably than a raw multiplicative gamma.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.affine = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x`` channels-last ``(B, ..., C)``, ``cond`` ``(B, cond_dim)``."""
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
        gamma, beta = self.affine(cond).view(shape).chunk(2, dim=-1)
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
        mission_encoder: ``gru`` or ``bow`` (see :class:`MissionEncoder`).
        mission_length: tokens per mission (positions of ``bow``).

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
        mission_encoder: str = "gru",
        mission_length: int = 64,
    ) -> None:
        super().__init__()
        if kind not in CONDITIONINGS:
            raise ValueError(f"conditioning={kind!r} is unknown; known: {', '.join(CONDITIONINGS)}.")
        self.kind = kind
        self.mission = MissionEncoder(vocab_size, kind=mission_encoder, hidden=hidden, max_length=mission_length) if kind != "task-id" else None
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
        return self.features(encoder, image, direction, ctx), ctx

    def features(self, encoder: nn.Module, image, direction, ctx: torch.Tensor) -> torch.Tensor:
        """The conditioned features ``(B, hidden)`` for a given context (agents.export brings a traceable one)."""
        modulate = None
        if self.film is not None:
            film = self.film

            def modulate(i: int, x: torch.Tensor) -> torch.Tensor:
                return film[str(i)](x, ctx) if str(i) in film else x

        parts = [encoder(image, modulate), self.direction(direction)]
        if self.kind in ("concat", "task-id"):
            parts.append(ctx)
        return self.project(torch.cat(parts, dim=1))


CONDITIONINGS: dict[str, str] = {
    "film": "mission GRU -> FiLM on the encoder's convolutions (BabyAI)",
    "concat": "mission GRU embedding concatenated to the pooled features",
    "task-id": "learned task-id embedding, no mission",
}
