"""Masked-LM pieces: per-utterance masks (spans of frames, BERT-style tokens) and the 2D transposed-conv head
that maps encoder states back to filterbank frames.

Masks are drawn per utterance from a generator seeded by (seed, utterance id), never per batch: a padded batch
gets exactly the masks each utterance gets alone, and a run reproduces its masks from the seed alone.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from speechxl.modules.subsampling import lengths_to_padding_mask

# BERT's split of the chosen text positions: replaced by [MASK], by a random token, or kept as they are.
MASK, RANDOM, KEEP = 0, 1, 2


def utterance_generator(seed: int, utterance_id: str) -> torch.Generator:
    """A CPU generator that depends only on `seed` and the utterance's id."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(utterance_id.encode())) % (1 << 62))


def span_mask(length: int, ratio: float, span: int, generator: torch.Generator) -> torch.Tensor:
    """(length,) bool: k = round(ratio·length / span) non-overlapping spans of `span` frames (at least one when
    ratio > 0; a span is cut to `length` for shorter inputs), placed uniformly. Exactly k·span frames masked."""
    mask = torch.zeros(length, dtype=torch.bool)
    if ratio <= 0 or length == 0:
        return mask
    span = min(span, length)
    k = min(max(1, round(ratio * length / span)), length // span)
    free = length - k * span
    # k distinct slots among free + k: slot i starts span i after the spans before it (stars and bars)
    slots = torch.randperm(free + k, generator=generator)[:k].sort().values
    starts = slots + torch.arange(k) * (span - 1)
    mask[(starts[:, None] + torch.arange(span)[None, :]).flatten()] = True
    return mask


def token_mask(
    maskable: torch.Tensor, ratio: float, random_prob: float, keep_prob: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of one sequence: max(1, round(ratio·n)) of its n `maskable` positions are chosen (none when
    n = 0); each chosen one is replaced by [MASK], a random token or kept (probabilities 1−r−k, r, k).
    Returns (chosen (L,) bool, action (L,) long: MASK / RANDOM / KEEP, meaningful where chosen)."""
    positions = maskable.nonzero().squeeze(1)
    chosen = torch.zeros_like(maskable)
    action = torch.full(maskable.shape, MASK, dtype=torch.long)
    n = positions.numel()
    if n == 0 or ratio <= 0:
        return chosen, action
    picked = positions[torch.randperm(n, generator=generator)[: max(1, round(ratio * n))]]
    chosen[picked] = True
    draw = torch.rand(picked.numel(), generator=generator)
    action[picked] = torch.where(
        draw < 1 - random_prob - keep_prob, MASK, torch.where(draw < 1 - keep_prob, RANDOM, KEEP)
    )
    return chosen, action


class Conv2dUpsampler(nn.Module):
    """The mirror of `Conv2dSubsampler`: (B, S, D) states -> a linear map to channels × (bins / 2^layers) ->
    per layer ConvTranspose2d(3×3, stride 2, padding 1, output padding 1) over (time, frequency), ReLU between
    layers -> (B, S·2^layers, bins). Each layer doubles time and frequency exactly.

    Padding is zeroed before every layer, so a padded batch gives each utterance what it gets alone."""

    def __init__(self, in_dim: int, channels: int, bins: int = 80, layers: int = 2):
        super().__init__()
        self.bins, self.channels = bins, channels
        self.start_bins = -(-bins // 2**layers)  # ceil: the output is cut to `bins`
        self.proj = nn.Linear(in_dim, channels * self.start_bins)
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(channels, channels if i < layers - 1 else 1, 3, stride=2, padding=1, output_padding=1)
            for i in range(layers)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, S, D) and (B,) lengths -> (B, S·2^layers, bins)."""
        b, s, _ = x.shape
        x = self.proj(x).view(b, s, self.channels, self.start_bins).transpose(1, 2)  # (B, C, S, F')
        for i, deconv in enumerate(self.deconvs):
            x = x.masked_fill(lengths_to_padding_mask(lengths, x.size(2))[:, None, :, None], 0.0)
            x = deconv(x)
            lengths = lengths * 2
            if i < len(self.deconvs) - 1:
                x = torch.relu(x)
        return x.squeeze(1)[..., : self.bins]
