"""HF `generate()` settings that reproduce speechxl's search exactly (for parity tests and benchmarks).

Mapping (speechxl -> HF):
- beam, nbest, lenpen            -> num_beams, num_return_sequences, length_penalty
- finish at `beam` hypotheses    -> early_stopping=True
- start token </s>               -> decoder_start_token_id = eos
- max_len tokens before </s>     -> max_length = max_len + 2 (start token + max_len + </s>)
- no n-gram blocking, no sampling -> no_repeat_ngram_size=0, do_sample=False
- pad never produced, min_len, forced prefix and forced </s> at max_len with its real log-prob (fairseq;
  HF's own ForcedEOS / forced-token processors set the forced score to 0 instead) -> `SearchConstraints`,
  a LogitsProcessor applying speechxl's own logit processors.
Only a max length that is the same for every utterance (max_len_a = 0) has an HF equivalent.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from speechxl.inference.search import apply_processors, builtin_processors


class SearchConstraints(LogitsProcessor):
    def __init__(self, *, eos: int, pad: int, min_len: int, max_len: int, prefix: torch.Tensor | None):
        self.eos, self.pad, self.min_len, self.max_len, self.prefix = eos, pad, min_len, max_len, prefix

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # HF never drops finished utterances from the batch, so the per-utterance state needs no select()
        batch = self.prefix.size(0) if self.prefix is not None else 1
        max_len = torch.full((batch,), self.max_len, device=scores.device)
        prefix = self.prefix.to(scores.device) if self.prefix is not None else None
        processors = builtin_processors(
            eos=self.eos, pad=self.pad, min_len=self.min_len, prefix=prefix, max_len=max_len
        )
        return apply_processors(processors, scores.clone(), input_ids.size(1) - 1, input_ids, self.eos)


def hf_generate_kwargs(
    *,
    eos: int,
    pad: int,
    beam: int,
    lenpen: float = 1.0,
    max_len: int = 200,
    prefix: torch.Tensor | None = None,
    nbest: int = 1,
    min_len: int = 1,
) -> dict[str, Any]:
    max_len = max(max_len, min_len, prefix.size(1) if prefix is not None else 0)
    beam_settings = dict(length_penalty=lenpen, early_stopping=True) if beam > 1 else {}
    return dict(
        num_beams=beam,
        num_return_sequences=nbest,
        **beam_settings,
        max_length=max_len + 2,
        min_length=0,
        no_repeat_ngram_size=0,
        do_sample=False,
        decoder_start_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
        logits_processor=LogitsProcessorList(
            [SearchConstraints(eos=eos, pad=pad, min_len=min_len, max_len=max_len, prefix=prefix)]
        ),
    )


def hf_sequences_to_tokens(sequences: torch.Tensor, eos: int) -> list[list[int]]:
    """HF output rows (start token, tokens, </s>, padding) -> token lists as in speechxl's Hypothesis."""
    out = []
    for row in sequences[:, 1:].tolist():
        out.append(row[: row.index(eos)] if eos in row else row)
    return out
