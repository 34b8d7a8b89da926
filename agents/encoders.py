"""Shared encoders: MiniGrid's egocentric view -> a 7x7 feature map.

Both encoders keep the 7x7 spatial layout of the view, so that FiLM
conditioning and the per-cell recognition head work the same on either.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_OBJECT_IDS = 11  # MiniGrid's OBJECT_TO_IDX: unseen .. agent
NUM_COLOR_IDS = 6
NUM_STATE_IDS = 3
VIEW = 7


class SymbolicEncoder(nn.Module):
    """Embeds the (object, colour, state) ids of each cell, then convolves.

    Each cell's three ids index three embedding tables whose vectors are summed
    (BabyAI's "bag of words" cell embedding), which beats feeding raw ids to a
    convolution: id 5 (key) is not "between" 4 (door) and 6 (ball).

    Args:
        channels: width of the feature map.
        embed_dim: size of the per-id embeddings.

    Shapes:
        image: uint8/int ``(B, 7, 7, 3)`` indexed ``[x, y]`` -> ``(B, channels, 7, 7)``.
    """

    def __init__(self, channels: int = 64, embed_dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(NUM_OBJECT_IDS + NUM_COLOR_IDS + NUM_STATE_IDS, embed_dim)
        self.register_buffer(
            "offsets", torch.tensor([0, NUM_OBJECT_IDS, NUM_OBJECT_IDS + NUM_COLOR_IDS]), persistent=False
        )
        self.conv = nn.Sequential(
            nn.Conv2d(embed_dim, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, channels, 3, padding=1),
            nn.ReLU(),
        )
        self.channels = channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        ids = image.long() + self.offsets  # (B, 7, 7, 3)
        x = self.embed(ids).sum(dim=3)  # (B, 7, 7, E), indexed [x, y]
        return self.conv(x.permute(0, 3, 2, 1))  # (B, E, y, x): rows are view rows


class PixelEncoder(nn.Module):
    """A small strided CNN over the rendered 56x56 egocentric view.

    Shapes:
        image: uint8 ``(B, 56, 56, 3)`` -> ``(B, channels, 7, 7)``.
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1),  # 28
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),  # 14
            nn.ReLU(),
            nn.Conv2d(64, channels, 4, stride=2, padding=1),  # 7
            nn.ReLU(),
        )
        self.channels = channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # MiniGrid renders images as (height, width, 3): already row-major.
        return self.conv(image.permute(0, 3, 1, 2).float() / 255.0)


ENCODERS = {"symbolic": SymbolicEncoder, "pixels": PixelEncoder}
