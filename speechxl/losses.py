"""Training losses. Each returns *sums* over tokens; the trainer divides by the sample size."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_nll_loss(logits: torch.Tensor, target: torch.Tensor, *, epsilon: float, ignore_index: int,
                            ignore_prefix_size: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """fairseq's label-smoothed cross-entropy, summed over non-padding target tokens.

    With eps_i = ε/(V−1): loss = (1−ε−eps_i)·(−lp[y]) + eps_i·(−Σ_k lp[k]). The first `ignore_prefix_size`
    target positions (a forced language tag) carry no loss. Returns (loss, nll_loss, number of tokens scored).
    """
    if ignore_prefix_size > 0:
        logits, target = logits[:, ignore_prefix_size:], target[:, ignore_prefix_size:]
    lprobs = F.log_softmax(logits.float(), dim=-1)
    keep = target.ne(ignore_index)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -lprobs.sum(-1)
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss[keep].sum(), nll[keep].sum(), int(keep.sum())


def ctc_loss(logits: torch.Tensor, input_lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor, *, blank: int) -> torch.Tensor:
    """CTC of encoder logits (B, T, V) against right-padded token targets (B, U), summed over utterances.

    Utterances whose target cannot be aligned (too few frames) contribute zero instead of infinity."""
    lprobs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V) as F.ctc_loss wants
    return F.ctc_loss(lprobs, targets, input_lengths, target_lengths, blank=blank, reduction="sum",
                      zero_infinity=True)
