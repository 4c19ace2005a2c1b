"""CTC-guided shrinking (COSTT, Dong et al. AAAI 2021): keep one acoustic state per CTC-predicted token.

With the greedy CTC label l_t of each frame, frame t starts a run iff l_t is not blank and l_t ≠ l_{t−1}
(a label repeated across a blank, `A _ A`, starts two runs, exactly as CTC collapsing reads it). `first`
keeps the first state of each run; `average` keeps the mean of the run's states (its non-blank frames
with that label). Kept states are packed to the left and right-padded with zeros; gradients flow into
the kept (or averaged) states.

An utterance whose frames are all blank (or whose labels are all masked by padding) would be left with
nothing to attend to: it keeps exactly one state, the mean of all its frames, in both modes.
"""

from __future__ import annotations

import torch

from speechxl.modules.subsampling import lengths_to_padding_mask

MODES = ("first", "average")


def shrink_segments(
    labels: torch.Tensor, lengths: torch.Tensor, blank: int, mode: str = "first"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which frame goes into which shrunk state.

    labels (B, T) greedy CTC labels, lengths (B,) -> segment (B, T) long: the shrunk position each frame
    contributes to, member (B, T) bool: whether it contributes, and the shrunk lengths (B,) (≥ 1)."""
    if mode not in MODES:
        raise ValueError(f"shrink mode must be one of {MODES}, not {mode!r}")
    valid = ~lengths_to_padding_mask(lengths, labels.size(1))
    nonblank = labels.ne(blank) & valid
    previous = torch.cat([torch.full_like(labels[:, :1], blank), labels[:, :-1]], dim=1)
    starts = nonblank & labels.ne(previous)
    segment = starts.long().cumsum(1) - 1
    member = starts if mode == "first" else nonblank  # a non-blank frame that is no start continues its run
    counts = starts.sum(1)
    empty = counts.eq(0)  # all blank: one state, the mean of every frame
    member = torch.where(empty[:, None], valid, member)
    segment = torch.where(empty[:, None], torch.zeros_like(segment), segment).clamp(min=0)
    return segment, member, counts.clamp(min=1)


def pack_segments(
    states: torch.Tensor, segment: torch.Tensor, member: torch.Tensor, out_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of the member frames of each segment: (B, T, D) -> (B, S, D) with S = max length, and its
    padding mask (B, S) (True at padding; padded states are zeros)."""
    batch, _, dim = states.shape
    size = int(out_lengths.max())
    weights = member.to(states.dtype)
    index = segment.masked_fill(~member, 0)
    sums = states.new_zeros(batch, size, dim).scatter_add(
        1, index[:, :, None].expand(-1, -1, dim), states * weights[:, :, None]
    )
    counts = states.new_zeros(batch, size).scatter_add(1, index, weights)
    packed = sums / counts.clamp(min=1)[:, :, None]
    return packed, lengths_to_padding_mask(out_lengths, size)


def ctc_shrink(
    states: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, blank: int, mode: str = "first"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shrink (B, T, D) acoustic states by their greedy CTC labels (B, T) -> packed states (B, S, D), their
    lengths (B,) and padding mask (B, S)."""
    segment, member, out_lengths = shrink_segments(labels, lengths, blank, mode)
    packed, padding_mask = pack_segments(states, segment, member, out_lengths)
    return packed, out_lengths, padding_mask
