"""Sinusoidal positions exactly as fairseq (and HF Speech2Text) build them.

Sin half then cos half; real positions start at `padding_idx + 1`; padding positions get the zero row.
Matching fairseq bit for bit is what lets fairseq / HF checkpoints import without retraining.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(num_positions: int, dim: int, padding_idx: int | None) -> torch.Tensor:
    half = dim // 2
    rate = math.log(10000) / (half - 1)
    inv_freq = torch.exp(torch.arange(half, dtype=torch.float) * -rate)
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * inv_freq.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    if padding_idx is not None:
        table[padding_idx] = 0
    return table


class SinusoidalPositions(nn.Module):
    """(B, T) padding mask -> (B, T, dim) position vectors; the table grows on demand, never saved."""

    def __init__(self, dim: int, padding_idx: int = 1, initial_size: int = 1024):
        super().__init__()
        self.dim = dim
        self.padding_idx = padding_idx
        self.register_buffer("table", sinusoidal_table(initial_size, dim, padding_idx), persistent=False)

    def forward(self, padding_mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """`padding_mask` True at padding; `offset` counts positions already consumed (incremental decoding)."""
        real = (~padding_mask).long()
        positions = (torch.cumsum(real, dim=1) + offset) * real + self.padding_idx
        needed = self.padding_idx + 1 + offset + padding_mask.size(1)
        if needed > self.table.size(0):
            self.table = sinusoidal_table(needed, self.dim, self.padding_idx).to(self.table)
        return self.table[positions]
