"""Heads on the shared features: actor, critic, object recognition, reward prediction."""

from __future__ import annotations

import torch
from torch import nn

from agents.encoders import NUM_COLOR_IDS, NUM_OBJECT_IDS, VIEW

NUM_ACTIONS = 7
NUM_CELLS = VIEW * VIEW
REWARD_CLASSES = 3  # zero, positive, negative
REWARD_FRAMES = 3  # UNREAL predicts the next reward from the last 3 steps


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.Tanh(), nn.Linear(hidden, out))


class ActorHead(nn.Module):
    """Action logits ``(B, 7)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(hidden, 64, NUM_ACTIONS)
        # Small last layer: a near-uniform initial policy explores (Andrychowicz et al. 2021).
        nn.init.orthogonal_(self.net[-1].weight, gain=0.01)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class CriticHead(nn.Module):
    """State value ``(B,)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(hidden, 64, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(-1)


class RecognitionHead(nn.Module):
    """What is in each view cell, and which cell holds the mission's target.

    Decodes the whole view from the shared feature vector: the features must
    keep what is where, which is the point of the auxiliary task (with pixel
    observations it is object recognition proper).

    Shapes:
        h ``(B, H)`` -> object ``(B, 11, 7, 7)``, color ``(B, 6, 7, 7)`` (maps
        indexed ``[y, x]``, cell ``y * 7 + x``), target ``(B, 50)`` (49 cells
        plus "not in view").
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.cells = nn.Linear(hidden, (NUM_OBJECT_IDS + NUM_COLOR_IDS) * NUM_CELLS)
        self.target = nn.Linear(hidden, NUM_CELLS + 1)

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        cells = self.cells(h).view(-1, NUM_OBJECT_IDS + NUM_COLOR_IDS, VIEW, VIEW)
        obj, color = cells.split([NUM_OBJECT_IDS, NUM_COLOR_IDS], dim=1)
        return {"object": obj, "color": color, "target": self.target(h)}


class RewardHead(nn.Module):
    """UNREAL reward prediction (Jaderberg et al. 2016): zero / positive / negative.

    Shapes:
        h ``(B, 3, H)`` features of three consecutive steps -> logits ``(B, 3)``.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(REWARD_FRAMES * hidden, 128, REWARD_CLASSES)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h.flatten(1))
