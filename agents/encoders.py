"""Shared encoders: MiniGrid's egocentric view -> a feature vector.

Two steps:

1. a **cell embedding** turns the view into a 7x7 map, one vector per view
   cell: for the symbolic view, the sum of learned embeddings of the cell's
   object, colour and state ids (BabyAI's "bag of words" cell embedding: id 5,
   key, is not "between" 4, door, and 6, ball); for pixels, a convolution
   whose 8x8 stride-8 kernel covers exactly one rendered cell;
2. a **small conv trunk** (the rl-starter-files shape: 2x2 convs and one
   max-pool, 7x7 -> 1x1), whose layers a conditioning module may modulate
   (FiLM) between convolution and activation.

The trunk is deliberately small: MiniGrid's view is 7x7 and a 3x3-conv,
64-channel stack costs ~30x more compute for no gain in these tasks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NUM_OBJECT_IDS = 11  # MiniGrid's OBJECT_TO_IDX: unseen .. agent
NUM_COLOR_IDS = 6
NUM_STATE_IDS = 3
VIEW = 7
RGB_TILE = 8

Modulate = Callable[[int, torch.Tensor], torch.Tensor]
"""``modulate(layer_index, pre_activation_map) -> map``: a conditioning hook."""


class SymbolicCells(nn.Module):
    """uint8 ``(B, 7, 7, 3)`` ids indexed ``[x, y]`` -> ``(B, embed_dim, 7, 7)`` indexed ``[y, x]``."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(NUM_OBJECT_IDS + NUM_COLOR_IDS + NUM_STATE_IDS, embed_dim)
        self.register_buffer(
            "offsets", torch.tensor([0, NUM_OBJECT_IDS, NUM_OBJECT_IDS + NUM_COLOR_IDS]), persistent=False
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        cells = self.embed(image.long() + self.offsets).sum(dim=3)  # (B, x, y, E)
        return cells.permute(0, 3, 2, 1)


class PixelCells(nn.Module):
    """uint8 ``(B, 56, 56, 3)`` rendered view -> ``(B, embed_dim, 7, 7)``: one patch per cell."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, embed_dim, RGB_TILE, stride=RGB_TILE)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # MiniGrid renders (height, width, 3): rows are already view rows.
        return torch.relu(self.patch(image.permute(0, 3, 1, 2).float() / 255.0))


class Encoder(nn.Module):
    """Cell embedding + conv trunk.

    Args:
        kind: ``symbolic`` or ``pixels``.
        embed_dim: channels of the cell map.
        channels: channels of the trunk's three convolutions.

    Shapes:
        image -> ``(B, out_dim)`` with ``out_dim = channels[-1]``.
    """

    def __init__(self, kind: str, *, embed_dim: int = 16, channels: tuple[int, int, int] = (32, 32, 64)) -> None:
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"encoder={kind!r} is unknown; known: {', '.join(ENCODERS)}.")
        self.cells = ENCODERS[kind](embed_dim)
        c1, c2, c3 = channels
        self.convs = nn.ModuleList([nn.Conv2d(embed_dim, c1, 2), nn.Conv2d(c1, c2, 2), nn.Conv2d(c2, c3, 2)])
        self.pool = nn.MaxPool2d(2)
        self.channels = tuple(channels)
        self.out_dim = c3  # 7 -conv-> 6 -pool-> 3 -conv-> 2 -conv-> 1

    def forward(self, image: torch.Tensor, modulate: Modulate | None = None) -> torch.Tensor:
        x = self.cells(image)  # (B, E, 7, 7)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if modulate is not None:
                x = modulate(i, x)
            x = torch.relu(x)
            if i == 0:
                x = self.pool(x)  # 6x6 -> 3x3
        return x.flatten(1)  # (B, c3): the map is 1x1 by now


ENCODERS: dict[str, type[nn.Module]] = {"symbolic": SymbolicCells, "pixels": PixelCells}
