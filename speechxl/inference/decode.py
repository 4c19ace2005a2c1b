"""The one decode path: validation during training, `speechxl translate`, and streaming call `decode_batch`.

A batch of one task (speechxl.tasks) goes through beam search with the model's forced prefix and logit
processors, and comes back as the model's output texts, by output name (`translation`, `transcript`, ...):
a model may return several (COSTT: transcript and translation), each scored with the metrics of
`speechxl.tasks.OUTPUTS` by `score_outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from speechxl.eval.bleu import bleu, wer
from speechxl.inference.search import beam_search
from speechxl.tasks import OUTPUTS, TEXT_COLUMN, Task


@dataclass
class DecodeOptions:
    beam: int = 5
    lenpen: float = 1.0
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 1  # no </s> before this many tokens
    max_tokens: int | None = None  # batch budget in input units; None: 50k fbank frames or 3.2M wave samples
    max_sentences: int = 64


def decode_batch(model, batch: dict[str, Any], vocab, task: Task, options: DecodeOptions) -> list[dict[str, str]]:
    """Per utterance of `batch`, its output texts {output name: text} from the best hypothesis."""
    with torch.no_grad():
        results = beam_search(
            model,
            batch,
            beam=options.beam,
            lenpen=options.lenpen,
            max_len_a=options.max_len_a,
            max_len_b=options.max_len_b,
            prefix=model.decode_prefix(batch),
            min_len=options.min_len,
        )
    return [model.output_texts(nbest[0].tokens, vocab, task) for nbest in results]


def batch_references(batch: dict[str, Any], vocab, outputs) -> dict[str, list[str]]:
    """References of a training-style batch for each output, decoded from its token sequences."""
    column_key = {column: key for key, column in TEXT_COLUMN.items()}
    refs = {}
    for name in outputs:
        tokens = batch.get(column_key[OUTPUTS[name].reference])
        if tokens is not None:
            refs[name] = [vocab.decode(row) for row in tokens.tolist()]
    return refs


def score_output(name: str, hyps: list[str], refs: list[str]) -> dict[str, Any]:
    """The metrics of output `name` (BLEU + chrF with signatures, or WER)."""
    metrics = OUTPUTS[name].metrics
    return wer(hyps, refs) if metrics[0] == "wer" else bleu(hyps, refs)


def score_outputs(hyps: dict[str, list[str]], refs: dict[str, list[str]], main: str | None) -> dict[str, Any]:
    """Scores of every output that has references: the `main` output's figures at the top level, the others
    under their output name ({"bleu": .., "transcript": {"wer": ..}})."""
    result: dict[str, Any] = {}
    for name in hyps:
        if name not in refs:
            continue
        scores = score_output(name, hyps[name], refs[name])
        if name == main:
            result.update(scores)
        else:
            result[name] = scores
    return result
