"""Shared encoders: MiniGrid's egocentric view -> a feature vector.

The trunk has the rl-starter-files shape (three 2x2 convolutions and one
2x2 max-pool, 7x7 -> 1x1), whose layers a conditioning module may modulate
(FiLM) between convolution and activation. Its input is one vector per view
cell:

* **symbolic** view: the one-hot of the cell's object, colour and state ids
  (20 values, three of them set). A learned embedding followed by the first
  convolution would be two linear maps in a row; the first convolution reads
  the one-hot directly instead, which is the same function class (BabyAI's
  "bag of words" cell embedding folded into the convolution) and needs no
  gradient with respect to its input.
* **pixels**: each rendered 8x8 cell is projected to an embedding (a
  linear map of its 192 pixel values, i.e. a convolution whose kernel and
  stride cover exactly one cell), then the trunk as above.

The maps are channels-last ``(B, y, x, C)`` and every convolution is computed
as one matrix product over its 2x2 patches: on a 7x7 view the convolutions are
too small for a convolution kernel to pay off, and a matrix product is several
times faster on CPU, forward and backward (``bench/throughput_vs_sb3.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

NUM_OBJECT_IDS = 11  # MiniGrid's OBJECT_TO_IDX: unseen .. agent
NUM_COLOR_IDS = 6
NUM_STATE_IDS = 3
NUM_CELL_IDS = NUM_OBJECT_IDS + NUM_COLOR_IDS + NUM_STATE_IDS
VIEW = 7
RGB_TILE = 8

Modulate = Callable[[int, torch.Tensor], torch.Tensor]
"""``modulate(layer_index, pre_activation_map) -> map``: a conditioning hook on channels-last maps."""


def patches2x2(x: torch.Tensor) -> torch.Tensor:
    """The 2x2 patches of a channels-last map: ``(B, H, W, C) -> (B, H-1, W-1, 4C)``."""
    return torch.cat([x[:, :-1, :-1], x[:, :-1, 1:], x[:, 1:, :-1], x[:, 1:, 1:]], dim=-1)


class SymbolicCells(nn.Module):
    """uint8 ``(B, 7, 7, 3)`` ids indexed ``[x, y]`` -> the first convolution's 2x2 patches of one-hot cells.

    Returns a float ``(B, 6, 6, 4 * 20)`` map indexed ``[y, x]`` (no gradient flows here).
    """

    in_features = 4 * NUM_CELL_IDS

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(
            "offsets", torch.tensor([0, NUM_OBJECT_IDS, NUM_OBJECT_IDS + NUM_COLOR_IDS]), persistent=False
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        ids = image.transpose(1, 2).long() + self.offsets  # (B, y, x, 3) in [0, 20)
        # Index of each set bit in the patch vector: patch position k holds ids + 20k.
        hot = torch.cat(
            [ids[:, dy : dy + VIEW - 1, dx : dx + VIEW - 1] + NUM_CELL_IDS * k
             for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1)))],
            dim=-1,
        )  # (B, 6, 6, 12)
        out = torch.zeros(*hot.shape[:-1], self.in_features, device=image.device)
        return out.scatter_(-1, hot, 1.0)


class PixelCells(nn.Module):
    """uint8 ``(B, 56, 56, 3)`` rendered view -> ``(B, 6, 6, 4 * embed_dim)``: 2x2 patches of per-cell embeddings."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.patch = nn.Linear(RGB_TILE * RGB_TILE * 3, embed_dim)
        self.in_features = 4 * embed_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # MiniGrid renders (height, width, 3): rows are already view rows.
        b = image.shape[0]
        tiles = image.view(b, VIEW, RGB_TILE, VIEW, RGB_TILE, 3).permute(0, 1, 3, 2, 4, 5)
        cells = torch.relu(self.patch(tiles.reshape(b, VIEW, VIEW, -1).float() / 255.0))
        return patches2x2(cells)


class Encoder(nn.Module):
    """Cell input + conv trunk.

    Args:
        kind: ``symbolic`` or ``pixels``.
        embed_dim: channels of the per-cell embedding (pixels).
        channels: channels of the trunk's three convolutions.

    Shapes:
        image -> ``(B, out_dim)`` with ``out_dim = channels[-1]``.
    """

    def __init__(self, kind: str, *, embed_dim: int = 16, channels: tuple[int, int, int] = (32, 32, 64)) -> None:
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"encoder={kind!r} is unknown; known: {', '.join(ENCODERS)}.")
        self.cells = PixelCells(embed_dim) if kind == "pixels" else SymbolicCells()
        c1, c2, c3 = channels
        # 2x2 convolutions as matrix products over patches: 7 -conv-> 6 -pool-> 3 -conv-> 2 -conv-> 1.
        self.convs = nn.ModuleList(
            [nn.Linear(self.cells.in_features, c1), nn.Linear(4 * c1, c2), nn.Linear(4 * c2, c3)]
        )
        self.channels = tuple(channels)
        self.out_dim = c3

    def forward(self, image: torch.Tensor, modulate: Modulate | None = None) -> torch.Tensor:
        x = self.cells(image)  # (B, 6, 6, 4 * C_in): the first convolution's patches
        for i, conv in enumerate(self.convs):
            if i == 2:
                x = x.flatten(1)  # a 2x2 map under a 2x2 kernel: one patch
            elif i == 1:
                x = patches2x2(x)
            x = conv(x)
            if modulate is not None:
                x = modulate(i, x)
            x = torch.relu(x)
            if i == 0:  # 2x2 max-pool, 6x6 -> 3x3
                # On a channels-first view of the channels-last map (no copy): one kernel each
                # way. Two torch.maximum over strided halves computed the same forward, but their
                # backward (masks, ties split in half, slice scatters) was a fifth of an update.
                x = F.max_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        return x  # (B, c3)


ENCODERS: dict[str, type[nn.Module]] = {"symbolic": SymbolicCells, "pixels": PixelCells}
