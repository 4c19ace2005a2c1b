"""Scoring: sacreBLEU and chrF for translations, WER for transcripts.

MuST-C and CoVoST 2 numbers are case-sensitive, detokenized sacreBLEU with the 13a tokenizer; we report the
signature beside every score so a number can always be traced to how it was computed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import sacrebleu

from speechxl.errors import DataError


def bleu(hyps: list[str], refs: list[str], *, tokenize: str = "13a", lowercase: bool = False) -> dict:
    """Corpus BLEU and chrF of `hyps` against one reference each, with their sacreBLEU signatures."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    metric = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase)
    score = metric.corpus_score(hyps, [refs])
    chrf_metric = sacrebleu.CHRF()
    chrf = chrf_metric.corpus_score(hyps, [refs])
    return {
        "bleu": round(score.score, 2),
        "chrf": round(chrf.score, 2),
        "n": len(hyps),
        "precisions": [round(p, 2) for p in score.precisions],
        "bp": round(score.bp, 4),
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": str(metric.get_signature()),
        "chrf_signature": str(chrf_metric.get_signature()),
    }


_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def normalize_for_wer(text: str) -> str:
    """Lower-case, drop punctuation (keeping word-internal apostrophes), squeeze spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


def _edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev_diag, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev_diag + (x != y))
    return row[-1]


def wer(hyps: list[str], refs: list[str]) -> dict:
    """Word error rate (%) after `normalize_for_wer`, over the whole corpus."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    errors = words = 0
    for h, r in zip(hyps, refs):
        r_words = normalize_for_wer(r).split()
        errors += _edit_distance(normalize_for_wer(h).split(), r_words)
        words += len(r_words)
    return {"wer": round(100.0 * errors / max(words, 1), 2), "errors": errors, "ref_words": words, "n": len(hyps)}


def read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    return path.read_text(encoding="utf-8").splitlines()


def score_files(hyp: str | Path, ref: str | Path, *, metric: str = "bleu", out: str | Path | None = None) -> dict:
    """Score a hypothesis file against a reference file (one segment per line)."""
    hyps, refs = read_lines(hyp), read_lines(ref)
    if len(hyps) != len(refs):
        raise DataError(hyp, f"{len(hyps)} lines, but the reference {ref} has {len(refs)}")
    result = wer(hyps, refs) if metric == "wer" else bleu(hyps, refs)
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
