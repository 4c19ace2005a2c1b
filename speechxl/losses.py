"""Training losses. Each returns *sums* over tokens; the trainer divides by the sample size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_nll_loss(
    logits: torch.Tensor, target: torch.Tensor, *, epsilon: float, ignore_index: int, ignore_prefix_size: int = 0
) -> tuple[torch.Tensor, torch.Tensor, int]:
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


def ctc_loss(
    logits: torch.Tensor,
    input_lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    *,
    blank: int,
) -> torch.Tensor:
    """CTC of encoder logits (B, T, V) against right-padded token targets (B, U), summed over utterances.

    Utterances whose target cannot be aligned (too few frames) contribute zero instead of infinity."""
    lprobs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V) as F.ctc_loss wants
    return F.ctc_loss(lprobs, targets, input_lengths, target_lengths, blank=blank, reduction="sum", zero_infinity=True)


# ---------------------------------------------------------------------------------------------- contrastive
# Chimera's and ConST's contrastive losses between the audio and the text view of the same utterances. Each
# returns one loss per utterance (B,), so that the model decides how to weigh them against token-summed CE
# (speechxl/models/chimera.py: the per-utterance mean, scaled by the batch's sample size).


def _cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., N, D), (..., K, D) -> (..., N, K) cosine similarities (fp32)."""
    a, b = F.normalize(a.float(), dim=-1, eps=1e-8), F.normalize(b.float(), dim=-1, eps=1e-8)
    return torch.matmul(a, b.transpose(-1, -2))


def slot_contrastive_loss(audio: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Chimera's default (`triplet_st_mt_contrastive.py`): per utterance, the (M, M) cosine similarities of its
    audio-memory slots (rows) with its text-memory slots / τ; cross-entropy with slot j's positive at slot j.
    The negatives are the other slots of the same utterance. audio, text (B, M, D) -> (B,): the mean over the
    M slots (the release sums over slots; see chimera.py for the scale)."""
    logits = _cosine_matrix(audio, text) / temperature  # (B, M, M); target arange(M) = the diagonal
    return -logits.log_softmax(dim=-1).diagonal(dim1=-2, dim2=-1).mean(dim=-1)


def batch_contrastive_loss(audio: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """The release's variant (`triplet_st_mt_samplecontrastive.py`): for each slot j, the (B, B) cosine
    similarities of the utterances' audio slot j with their text slot j / τ; cross-entropy in both directions
    (audio -> text over rows, text -> audio over columns), the positive being the same utterance. The
    negatives are the same slot of the other utterances. (B, M, D) -> (B,): per utterance, the mean over
    slots of the two directions' sum."""
    logits = _cosine_matrix(audio.transpose(0, 1), text.transpose(0, 1)) / temperature  # (M, B, B)
    audio_to_text = -logits.log_softmax(dim=-1).diagonal(dim1=-2, dim2=-1)  # (M, B)
    text_to_audio = -logits.log_softmax(dim=-2).diagonal(dim1=-2, dim2=-1)
    return (audio_to_text + text_to_audio).mean(dim=0)


def masked_mean(x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, D) mean over the real positions (padding_mask True at padding) -> (B, D)."""
    if padding_mask is None:
        return x.mean(dim=1)
    keep = (~padding_mask).to(x.dtype).unsqueeze(-1)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


def sentence_contrastive_loss(
    audio: torch.Tensor,
    audio_padding_mask: torch.Tensor | None,
    text: torch.Tensor,
    text_padding_mask: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """ConST (`label_smoothed_cross_entropy_with_contrastive_loss.py`): each view mean-pooled over its real
    positions, the (B, B) cosine similarities sim[i, j] = cos(audio_i, text_j) / τ, and
    `-log_softmax(sim, dim=0).diag()`: for the text of utterance b, the audio of b among the batch's audio.
    (B, T, D) + masks -> (B,)."""
    logits = _cosine_matrix(masked_mean(audio, audio_padding_mask), masked_mean(text, text_padding_mask))
    return -(logits / temperature).log_softmax(dim=0).diagonal()


# ---------------------------------------------------------------------------------------------- masked LM
# FAT-MLM (speechxl/models/fat.py): cross-entropy on masked tokens and L2 reconstruction of masked fbank frames.


def masked_tokens_ce_loss(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cross-entropy of the logits (N, V) at the N masked positions against their original tokens (N,), summed;
    returns (loss, N)."""
    return F.cross_entropy(logits.float(), tokens, reduction="sum"), int(tokens.numel())


def masked_frames_l2_loss(
    prediction: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Per masked frame, the mean over feature bins of the squared error; summed over the frames where
    `frame_mask` (B, T) is True. prediction, target (B, T, bins). Returns (loss, masked frames)."""
    error = (prediction.float() - target.float()).pow(2).mean(dim=-1)
    return error[frame_mask].sum(), int(frame_mask.sum())
