"""Batched beam search and greedy search for any model that implements the speechxl model protocol.

The model provides `encode(batch)`, `decode_step(tokens (N, t), enc, cache) -> (log_probs (N, V), cache)`,
`reorder_encoder_out(enc, order)`, `reorder_cache(cache, order)`, and the ints `model.eos` (also the
decoder's start token, as in fairseq) and `model.pad`. The encoder output is *not* copied per beam:
`decode_step` gets N = B·beam token rows, rows b·beam … b·beam+beam−1 belonging to utterance b of `enc`.

Semantics follow fairseq's SequenceGenerator:
- scores are sums of log-probs (a forced prefix's log-probs included), finished hypotheses are ranked by
  score / len^lenpen with len = generated tokens including the prefix and </s>;
- each step keeps the top 2·beam candidates; </s> among the first `beam` finishes a hypothesis, the best
  `beam` non-</s> candidates continue; an utterance is done once it holds `beam` finished hypotheses
  (HF `early_stopping=True`); when more than `beam` finish in that last step the best `beam` are kept;
- max length per utterance = ⌊a·x + b⌋ tokens before </s>, x = the utterance's source length in input
  positions (fbank frames, waveform samples, or source tokens: `audio_lengths` / `transcript_lengths`);
  at that step only </s> is allowed (its real log-prob is kept);
- `<pad>` is never produced; </s> is blocked for the first `min_len` steps (ignored while a prefix is forced).
`speechxl.convert.hf_generation` maps these settings onto HF `generate()` for exact comparisons.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Hypothesis:
    tokens: list[int]  # generated tokens, forced prefix included, without the start token and </s>
    score: float


def source_lengths(batch: dict[str, Any]) -> torch.Tensor:
    for key in ("audio_lengths", "transcript_lengths"):
        if batch.get(key) is not None:
            return batch[key]
    raise KeyError("batch has neither audio_lengths nor transcript_lengths to bound the output length")


def _max_lengths(batch: dict[str, Any], a: float, b: float, floor: int, device: torch.device) -> torch.Tensor:
    limits = torch.floor(a * source_lengths(batch).double() + b).long()
    return limits.clamp(min=floor).to(device)


def constrain_next_token(lp: torch.Tensor, step: int, *, eos: int, pad: int, min_len: int,
               max_len_rows: torch.Tensor, prefix_rows: torch.Tensor | None) -> torch.Tensor:
    """Apply the search constraints to next-token log-probs (N, V) in place."""
    eos_lp = lp[:, eos].clone()
    lp[:, pad] = -math.inf
    if prefix_rows is not None and step < prefix_rows.size(1):
        forced = prefix_rows[:, step : step + 1]
        forced_lp = lp.gather(1, forced)
        lp.fill_(-math.inf).scatter_(1, forced, forced_lp)
    elif step < min_len:
        lp[:, eos] = -math.inf
    at_max = step >= max_len_rows
    if bool(at_max.any()):
        lp[at_max] = -math.inf
        lp[at_max, eos] = eos_lp[at_max]
    return lp


def _check_prefix(prefix: torch.Tensor | None, batch_size: int) -> int:
    if prefix is None:
        return 0
    if prefix.dim() != 2 or prefix.size(0) != batch_size:
        raise ValueError(f"prefix must be (batch {batch_size}, k), got {tuple(prefix.shape)}")
    return prefix.size(1)


@torch.inference_mode()
def beam_search(model, batch: dict[str, Any], *, beam: int = 5, lenpen: float = 1.0, max_len_a: float = 0.0,
                max_len_b: int = 200, prefix: torch.Tensor | None = None, nbest: int = 1,
                min_len: int = 1) -> list[list[Hypothesis]]:
    """Per utterance, the `nbest` best hypotheses (best first)."""
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be between 1 and beam ({beam}), got {nbest}")
    enc = model.encode(batch)
    device = next(iter(enc.values())).device
    batch_size = next(iter(enc.values())).size(0)
    prefix_len = _check_prefix(prefix, batch_size)
    max_len = _max_lengths(batch, max_len_a, max_len_b, max(min_len, prefix_len), device)
    prefix = prefix.to(device) if prefix is not None else None

    alive = list(range(batch_size))  # original index of each running utterance
    finished: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    tokens = torch.full((batch_size * beam, 1), model.eos, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, beam, device=device)
    scores[:, 1:] = -math.inf  # all beams start identical: expand from the first only
    cache = None
    step = 0
    while alive:
        n = len(alive)
        lp, cache = model.decode_step(tokens, enc, cache)
        lp = constrain_next_token(lp.float(), step, eos=model.eos, pad=model.pad, min_len=min_len,
                        max_len_rows=max_len.repeat_interleave(beam),
                        prefix_rows=prefix.repeat_interleave(beam, 0) if prefix is not None else None)
        vocab = lp.size(1)
        candidates = (scores.unsqueeze(2) + lp.view(n, beam, vocab)).view(n, beam * vocab)
        cand_scores, cand_index = candidates.topk(2 * beam, dim=1)
        cand_beam, cand_token = cand_index // vocab, cand_index % vocab
        cand_row = torch.arange(n, device=device).unsqueeze(1) * beam + cand_beam
        is_eos = cand_token.eq(model.eos) & torch.isfinite(cand_scores)

        finishing = is_eos[:, :beam].nonzero().tolist()
        if finishing:
            where = tuple(zip(*finishing))
            ends = tokens.index_select(0, cand_row[where])[:, 1:].tolist()
            final = (cand_scores[where] / (step + 1) ** lenpen).tolist()
            touched = set()
            for (i, _), hyp_tokens, score in zip(finishing, ends, final):
                finished[alive[i]].append(Hypothesis(hyp_tokens, score))
                touched.add(alive[i])
            for sentence in touched:
                finished[sentence] = sorted(finished[sentence], key=lambda h: -h.score)[:beam]

        at_max = (step >= max_len).tolist()
        keep = [i for i in range(n) if len(finished[alive[i]]) < beam and not at_max[i]]
        # continue with the best `beam` candidates that did not end
        cont_scores, pick = cand_scores.masked_fill(is_eos, -math.inf).topk(beam, dim=1)
        order, new_tokens = cand_row.gather(1, pick), cand_token.gather(1, pick)
        if len(keep) < n:
            keep_index = torch.tensor(keep, dtype=torch.long, device=device)
            order, new_tokens, cont_scores = order[keep_index], new_tokens[keep_index], cont_scores[keep_index]
            max_len = max_len[keep_index]
            prefix = prefix[keep_index] if prefix is not None else None
            alive = [alive[i] for i in keep]
            if alive:
                enc = model.reorder_encoder_out(enc, keep_index)
        if not alive:
            break
        order = order.view(-1)
        tokens = torch.cat([tokens.index_select(0, order), new_tokens.view(-1, 1)], dim=1)
        scores = cont_scores
        cache = model.reorder_cache(cache, order)
        step += 1
    return [hyps[:nbest] for hyps in finished]


@torch.inference_mode()
def greedy_search(model, batch: dict[str, Any], *, max_len_a: float = 0.0, max_len_b: int = 200,
                  prefix: torch.Tensor | None = None, min_len: int = 1) -> list[list[Hypothesis]]:
    """Per utterance one hypothesis; its score is the plain sum of log-probs (no length normalisation)."""
    enc = model.encode(batch)
    device = next(iter(enc.values())).device
    batch_size = next(iter(enc.values())).size(0)
    prefix_len = _check_prefix(prefix, batch_size)
    max_len = _max_lengths(batch, max_len_a, max_len_b, max(min_len, prefix_len), device)
    prefix = prefix.to(device) if prefix is not None else None

    alive = list(range(batch_size))
    results: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    tokens = torch.full((batch_size, 1), model.eos, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, device=device)
    cache = None
    step = 0
    while alive:
        lp, cache = model.decode_step(tokens, enc, cache)
        lp = constrain_next_token(lp.float(), step, eos=model.eos, pad=model.pad, min_len=min_len,
                        max_len_rows=max_len, prefix_rows=prefix)
        best_lp, best = lp.max(dim=1)
        scores = scores + best_lp
        tokens = torch.cat([tokens, best.unsqueeze(1)], dim=1)
        ended = best.eq(model.eos).tolist()
        if any(ended):
            done_rows = [i for i, e in enumerate(ended) if e]
            for i, hyp_tokens, score in zip(done_rows, tokens[done_rows, 1:-1].tolist(), scores[done_rows].tolist()):
                results[alive[i]] = [Hypothesis(hyp_tokens, score)]
            keep = [i for i, e in enumerate(ended) if not e]
            alive = [alive[i] for i in keep]
            if not alive:
                break
            keep_index = torch.tensor(keep, dtype=torch.long, device=device)
            tokens, scores, max_len = tokens[keep_index], scores[keep_index], max_len[keep_index]
            prefix = prefix[keep_index] if prefix is not None else None
            enc = model.reorder_encoder_out(enc, keep_index)
            cache = model.reorder_cache(cache, keep_index)
        step += 1
    return results
