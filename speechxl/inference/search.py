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
These constraints are logit processors (`builtin_processors`); a model adds its own with
`model.logit_processors(batch)` (applied first: the length limit has the last word).
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


# ---------------------------------------------------------------------------------------------- processors


@dataclass
class SearchStep:
    """What a logit processor sees at one step: N = utterances × rows per utterance (beam, or 1 for greedy)."""

    step: int  # tokens generated so far (the next one has index `step`)
    tokens: torch.Tensor  # (N, step + 1): the start token and the tokens so far
    raw_eos: torch.Tensor  # (N,) the model's log-prob of </s> before any processor


class LogitProcessor:
    """A search constraint: edits next-token log-probs (N, V) in place and returns them.

    Per-utterance state (a prefix, a length limit) is indexed by utterance; `select(keep)` follows the
    utterances that stay in the batch when others finish. Rows are grouped per utterance (b·k … b·k+k−1)."""

    def __call__(self, lp: torch.Tensor, s: SearchStep) -> torch.Tensor:
        raise NotImplementedError

    def select(self, keep: torch.Tensor) -> None:
        """Utterances `keep` (indices into the current ones) continue; the rest left the batch."""


def _rows(per_utterance: torch.Tensor, n_rows: int) -> torch.Tensor:
    return per_utterance.repeat_interleave(n_rows // per_utterance.size(0), dim=0)


class NoToken(LogitProcessor):
    """A token that is never produced (`<pad>`)."""

    def __init__(self, token: int):
        self.token = token

    def __call__(self, lp, s):
        lp[:, self.token] = -math.inf
        return lp


class MinLength(LogitProcessor):
    """No </s> before `min_len` tokens (the forced prefix has its own rule)."""

    def __init__(self, min_len: int, eos: int):
        self.min_len, self.eos = min_len, eos

    def __call__(self, lp, s):
        if s.step < self.min_len:
            lp[:, self.eos] = -math.inf
        return lp


class ForcePrefix(LogitProcessor):
    """The first k tokens of every hypothesis are the utterance's prefix (B, k); their log-probs count."""

    def __init__(self, prefix: torch.Tensor):
        self.prefix = prefix

    def __call__(self, lp, s):
        if s.step < self.prefix.size(1):
            forced = _rows(self.prefix[:, s.step : s.step + 1], lp.size(0))
            forced_lp = lp.gather(1, forced)
            lp.fill_(-math.inf).scatter_(1, forced, forced_lp)
        return lp

    def select(self, keep):
        self.prefix = self.prefix[keep]


class MaxLength(LogitProcessor):
    """At an utterance's length limit only </s> is allowed, with its real (unprocessed) log-prob."""

    def __init__(self, max_len: torch.Tensor, eos: int):
        self.max_len, self.eos = max_len, eos

    def __call__(self, lp, s):
        at_max = s.step >= _rows(self.max_len, lp.size(0))
        if bool(at_max.any()):
            lp[at_max] = -math.inf
            lp[at_max, self.eos] = s.raw_eos[at_max]
        return lp

    def select(self, keep):
        self.max_len = self.max_len[keep]


def builtin_processors(
    *, eos: int, pad: int, min_len: int, prefix: torch.Tensor | None, max_len: torch.Tensor
) -> list[LogitProcessor]:
    """Never <pad>, a minimum length, the forced prefix, and the length limit (last: at the limit </s> wins
    over every other constraint)."""
    processors: list[LogitProcessor] = [NoToken(pad), MinLength(min_len, eos)]
    if prefix is not None:
        processors.append(ForcePrefix(prefix))
    return processors + [MaxLength(max_len, eos)]


def apply_processors(
    processors: list[LogitProcessor], lp: torch.Tensor, step: int, tokens: torch.Tensor, eos: int
) -> torch.Tensor:
    s = SearchStep(step=step, tokens=tokens, raw_eos=lp[:, eos].clone())
    for processor in processors:
        lp = processor(lp, s)
    return lp


def _check_prefix(prefix: torch.Tensor | None, batch_size: int) -> int:
    if prefix is None:
        return 0
    if prefix.dim() != 2 or prefix.size(0) != batch_size:
        raise ValueError(f"prefix must be (batch {batch_size}, k), got {tuple(prefix.shape)}")
    return prefix.size(1)


@torch.inference_mode()
def beam_search(
    model,
    batch: dict[str, Any],
    *,
    beam: int = 5,
    lenpen: float = 1.0,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    prefix: torch.Tensor | None = None,
    nbest: int = 1,
    min_len: int = 1,
) -> list[list[Hypothesis]]:
    """Per utterance, the `nbest` best hypotheses (best first)."""
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be between 1 and beam ({beam}), got {nbest}")
    enc = model.encode(batch)
    device = next(iter(enc.values())).device
    batch_size = next(iter(enc.values())).size(0)
    prefix_len = _check_prefix(prefix, batch_size)
    max_len = _max_lengths(batch, max_len_a, max_len_b, max(min_len, prefix_len), device)
    prefix = prefix.to(device) if prefix is not None else None
    processors = model.logit_processors(batch) + builtin_processors(
        eos=model.eos, pad=model.pad, min_len=min_len, prefix=prefix, max_len=max_len
    )

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
        lp = apply_processors(processors, lp.float(), step, tokens, model.eos)
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
            for processor in processors:
                processor.select(keep_index)
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
def greedy_search(
    model,
    batch: dict[str, Any],
    *,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
    prefix: torch.Tensor | None = None,
    min_len: int = 1,
) -> list[list[Hypothesis]]:
    """Per utterance one hypothesis; its score is the plain sum of log-probs (no length normalisation)."""
    enc = model.encode(batch)
    device = next(iter(enc.values())).device
    batch_size = next(iter(enc.values())).size(0)
    prefix_len = _check_prefix(prefix, batch_size)
    max_len = _max_lengths(batch, max_len_a, max_len_b, max(min_len, prefix_len), device)
    prefix = prefix.to(device) if prefix is not None else None
    processors = model.logit_processors(batch) + builtin_processors(
        eos=model.eos, pad=model.pad, min_len=min_len, prefix=prefix, max_len=max_len
    )

    alive = list(range(batch_size))
    results: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    tokens = torch.full((batch_size, 1), model.eos, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, device=device)
    cache = None
    step = 0
    while alive:
        lp, cache = model.decode_step(tokens, enc, cache)
        lp = apply_processors(processors, lp.float(), step, tokens, model.eos)
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
            tokens, scores = tokens[keep_index], scores[keep_index]
            for processor in processors:
                processor.select(keep_index)
            enc = model.reorder_encoder_out(enc, keep_index)
            cache = model.reorder_cache(cache, keep_index)
        step += 1
    return results
