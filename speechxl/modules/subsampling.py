"""Convolutional front ends that shrink a feature sequence in time."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def lengths_to_padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True at padding."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class Conv1dSubsampler(nn.Module):
    """fairseq's Conv1dSubsampler: per layer Conv1d(k, stride 2, padding k//2) then GLU over channels.

    in -> mid (GLU: mid/2) -> ... -> 2·out (GLU: out); each layer maps a length L to ⌊(L−1)/2⌋+1.
    `mask_padding` zeroes padded frames before every conv so that a padded batch gives each utterance
    exactly what it gets alone; fairseq and HF do not, so imported checkpoints turn it off to match them.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int] = (5, 5),
        mask_padding: bool = True,
    ):
        super().__init__()
        n = len(kernel_sizes)
        self.convs = nn.ModuleList(
            nn.Conv1d(
                in_channels if i == 0 else mid_channels // 2,
                mid_channels if i < n - 1 else out_channels * 2,
                kernel_size=k,
                stride=2,
                padding=k // 2,
            )
            for i, k in enumerate(kernel_sizes)
        )
        self.mask_padding = mask_padding

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in self.convs:
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) features and (B,) lengths -> (B, T', out) and (B,) output lengths."""
        x = x.transpose(1, 2)
        for conv in self.convs:
            if self.mask_padding:
                x = x.masked_fill(lengths_to_padding_mask(lengths, x.size(2))[:, None, :], 0.0)
            x = F.glu(conv(x), dim=1)
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return x.transpose(1, 2), lengths


class StackSubsampler(nn.Module):
    """COSTT's front end: each fbank frame with its `context` right neighbours stacked (80·6 = 480 dims), every
    `stride`-th stacked frame kept, then a linear map to `out_channels`.

    Right context past an utterance's end is zeros (the utterance mean after CMVN), and padding is zeroed
    first, so a padded batch gives each utterance what it gets alone. A length L becomes ⌊(L−1)/stride⌋+1.
    """

    def __init__(self, in_channels: int, out_channels: int, context: int = 5, stride: int = 3):
        super().__init__()
        self.context, self.stride = context, stride
        self.proj = nn.Linear(in_channels * (context + 1), out_channels)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths - 1, self.stride, rounding_mode="floor") + 1

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) features and (B,) lengths -> (B, T', out) and (B,) output lengths."""
        x = x.masked_fill(lengths_to_padding_mask(lengths, x.size(1))[:, :, None], 0.0)
        padded = F.pad(x, (0, 0, 0, self.context))
        kept = torch.arange(0, x.size(1), self.stride, device=x.device)
        stacked = torch.cat([padded[:, kept + k] for k in range(self.context + 1)], dim=-1)
        return self.proj(stacked), self.output_lengths(lengths)


class Conv2dSubsampler(nn.Module):
    """The 2D-conv front end (ESPnet's Conv2dSubsampling, with padding 1): per layer Conv2d(3×3, stride 2) over
    (time, frequency) + ReLU, then a linear map of channels × remaining bins to `out_channels`.

    Each layer maps a length L to ⌊(L−1)/2⌋+1; padding is zeroed before every conv (padded batch = alone)."""

    def __init__(self, in_channels: int, conv_channels: int, out_channels: int, layers: int = 2):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else conv_channels, conv_channels, 3, stride=2, padding=1) for i in range(layers)
        )
        bins = in_channels
        for _ in range(layers):
            bins = (bins - 1) // 2 + 1
        self.proj = nn.Linear(conv_channels * bins, out_channels)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in self.convs:
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.unsqueeze(1)  # (B, 1, T, F)
        for conv in self.convs:
            x = x.masked_fill(lengths_to_padding_mask(lengths, x.size(2))[:, None, :, None], 0.0)
            x = torch.relu(conv(x))
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        b, c, t, f = x.shape
        return self.proj(x.transpose(1, 2).reshape(b, t, c * f)), lengths
