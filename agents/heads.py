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

    Per-cell object and colour come from a 1x1 convolution of the conditioned
    7x7 map (spatially aligned with the view); the target cell is a 50-way
    choice: one logit per cell from the map, plus "not in view" from the
    head's feature vector.

    Shapes:
        fmap ``(B, C, 7, 7)``, h ``(B, H)`` ->
        object ``(B, 11, 7, 7)``, color ``(B, 6, 7, 7)``, target ``(B, 50)``;
        maps are indexed ``[y, x]`` (cell ``y * 7 + x``).
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.cells = nn.Conv2d(channels, NUM_OBJECT_IDS + NUM_COLOR_IDS + 1, 1)
        self.not_in_view = nn.Linear(hidden, 1)

    def forward(self, fmap: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.cells(fmap)
        obj, color, target = out.split([NUM_OBJECT_IDS, NUM_COLOR_IDS, 1], dim=1)
        target = torch.cat([target.flatten(1), self.not_in_view(h)], dim=1)
        return {"object": obj, "color": color, "target": target}


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
