"""What every corpus preparer does once it has read its corpus: 16 kHz conversion, text checks, length,
empty-text and excluded-text filters, external MT text, the joint vocabulary, the manifests and the prep report."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import soundfile as sf
import soxr

from speechxl.data.manifest import SAMPLE_RATE, atomic_output, read_manifest, write_manifest
from speechxl.data.vocab import Vocab, train_vocab
from speechxl.errors import DataError

REPORT_NAME = "prep_report.json"
SPM_PREFIX = "spm"
# Evaluation splits keep long utterances: dropping them would change the reference set that published
# BLEU scores are computed on (fairseq also applies its length cap to train only).
MAX_LENGTH_SPLITS = {"train"}
EXCLUDED_TEXT = "excluded_text"  # the report's reason for a row dropped by --exclude-text
_BLOCK = 1 << 16


@dataclass
class Utterance:
    """One manifest row plus where it came from (for the report)."""

    id: str
    audio: str
    n_frames: int
    src_text: str
    tgt_text: str
    speaker: str
    src_lang: str
    tgt_lang: str
    file: str
    line: int | None

    def manifest_row(self) -> dict[str, object]:
        return {
            "id": self.id,
            "audio": self.audio,
            "n_frames": self.n_frames,
            "tgt_text": self.tgt_text,
            "speaker": self.speaker,
            "src_text": self.src_text,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
        }


@dataclass
class PrepReport:
    """Counts per split and every skipped item with its reason; written to OUT/prep_report.json."""

    corpus: str
    root: str
    src_lang: str
    tgt_lang: str
    corpus_version: str = "unknown"  # MuST-C v1 and v2 have different references: never mix their scores
    kept: Counter = field(default_factory=Counter)
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def skip(
        self, split: str, reason: str, detail: str, id: str | None, file: str | os.PathLike | None, line: int | None
    ) -> None:
        self.skipped.append(
            {
                "split": split,
                "reason": reason,
                "detail": detail,
                "id": id,
                "file": None if file is None else str(file),
                "line": line,
            }
        )

    def as_dict(self, splits: Sequence[str]) -> dict:
        by_split: dict[str, dict] = {}
        # Rows skipped before a split was known (e.g. an unknown split value) get their own entry.
        for split in dict.fromkeys([*splits, *(s["split"] for s in self.skipped)]):
            reasons = Counter(s["reason"] for s in self.skipped if s["split"] == split)
            by_split[split] = {
                "kept": self.kept[split],
                "skipped": sum(reasons.values()),
                "skipped_by_reason": dict(sorted(reasons.items())),
            }
        return {
            "corpus": self.corpus,
            "corpus_version": self.corpus_version,
            "root": self.root,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
            "splits": by_split,
            **self.extra,
            "notes": self.notes,
            "skipped": self.skipped,
        }


def corpus_identity(root: Path, corpus: str, version: str) -> tuple[str, str]:
    """(corpus, version) that `translate` records beside each score: SynthST (found by the `synth_info.json`
    that `speechxl synth` writes) is its own corpus, versioned by its seed and split sizes; else what the caller
    says."""
    for directory in (root, root.parent):
        info_path = directory / "synth_info.json"
        if info_path.is_file():
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
            except ValueError as err:
                raise DataError(info_path, f"malformed JSON ({err})") from err
            # the seed and the split sizes fix every sentence: two draws share references only if these match
            counts = info.get("counts", {})
            sizes = "-".join(f"{split}{counts[split]}" for split in ("train", "dev", "test") if split in counts)
            return "synthst", f"seed{info.get('seed', '?')}" + (f"-{sizes}" if sizes else "")
    return corpus, version


def convert_to_16k_mono(src: Path, dst: Path) -> int:
    """Decode `src`, downmix to mono, resample to 16 kHz and write a 16-bit WAV atomically; returns frames.

    Streams in blocks so a talk-length file never has to fit in memory at its original rate.
    """
    frames = 0
    with sf.SoundFile(src) as reader, atomic_output(dst) as tmp:
        resampler = (
            None
            if reader.samplerate == SAMPLE_RATE
            else soxr.ResampleStream(reader.samplerate, SAMPLE_RATE, 1, dtype="float32")
        )
        with sf.SoundFile(tmp, "w", SAMPLE_RATE, 1, "PCM_16", format="WAV") as writer:

            def put(chunk: np.ndarray) -> None:
                nonlocal frames
                writer.write(np.clip(chunk, -1.0, 1.0))
                frames += len(chunk)

            for block in reader.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True):
                mono = block.mean(axis=1, dtype=np.float32)
                put(mono if resampler is None else resampler.resample_chunk(mono))
            if resampler is not None:
                put(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return frames


def check_text(text: str, path: str | os.PathLike, line: int | None) -> str:
    """A tab cannot go into a fairseq TSV field: fail at the source line rather than at write time."""
    if "\t" in text:
        raise DataError(path, "text contains a tab, which a manifest (fairseq TSV) cannot hold", line)
    return text


def read_ext_mt(directory: str | os.PathLike, src: str, tgt: str, report: PrepReport) -> list[Utterance]:
    """External parallel text `DIR/train.<src>` + `DIR/train.<tgt>` (aligned by line) -> text-only rows."""
    src_path, tgt_path = Path(directory) / f"train.{src}", Path(directory) / f"train.{tgt}"
    for path in (src_path, tgt_path):
        if not path.is_file():
            raise DataError(path, "external MT file not found (--ext-mt DIR needs train.<src> and train.<tgt>)")
    src_lines, tgt_lines = read_text_lines(src_path), read_text_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            src_path,
            f"has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
            "external MT files must be aligned line by line",
        )
    rows = []
    for i, (src_text, tgt_text) in enumerate(zip(src_lines, tgt_lines)):
        line = i + 1
        rows.append(
            Utterance(
                id=f"ext_mt_{i}",
                audio="",
                n_frames=0,
                src_text=check_text(src_text, src_path, line),
                tgt_text=check_text(tgt_text, tgt_path, line),
                speaker="",
                src_lang=src,
                tgt_lang=tgt,
                file=str(src_path),
                line=line,
            )
        )
    return rows


def read_text_lines(path: Path) -> list[str]:
    # Iterating a text file splits on \n, \r\n and \r only (str.splitlines would also split on U+2028 etc.,
    # which would misalign parallel files).
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f]
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 ({err.reason} at byte {err.start})") from err


def read_excluded_texts(manifests: Sequence[str | os.PathLike], report: PrepReport) -> dict[str, str]:
    """`--exclude-text`: source text -> the manifest it was found in, read before any audio work so that a
    wrong path fails at once."""
    excluded: dict[str, str] = {}
    for path in manifests:
        if not Path(path).is_file():
            raise DataError(path, "manifest not found (--exclude-text takes manifest TSVs, e.g. OUT/dev.tsv)")
        rows = read_manifest(path)
        # A plain fairseq manifest has no src_text column (read as ""): excluding by it would silently drop nothing.
        if rows and not any(row["src_text"] for row in rows):
            raise DataError(path, "no row has a src_text: cannot exclude utterances by their source text")
        for row in rows:
            if row["src_text"]:
                excluded.setdefault(row["src_text"], str(path))
    if manifests:
        report.extra["exclude_text"] = {"manifests": [str(p) for p in manifests], "sentences": len(excluded)}
    return excluded


def filter_split(
    split: str,
    utterances: Iterable[Utterance],
    report: PrepReport,
    min_seconds: float,
    max_seconds: float,
    excluded: Mapping[str, str] | None = None,
) -> list[Utterance]:
    """Drop (and report) empty texts, excluded source texts and too short / too long audio; count what is kept."""
    excluded = excluded or {}
    kept = []
    for u in utterances:
        seconds = u.n_frames / SAMPLE_RATE
        if not u.src_text or not u.tgt_text:
            side = "transcript" if not u.src_text else "translation"
            report.skip(split, "empty_text", f"empty {side}", u.id, u.file, u.line)
        elif u.src_text in excluded:
            report.skip(
                split,
                EXCLUDED_TEXT,
                f"source text in an excluded manifest: {excluded[u.src_text]}",
                u.id,
                u.file,
                u.line,
            )
        elif u.audio and seconds < min_seconds:
            report.skip(split, "too_short", f"{seconds:.3f} s < {min_seconds} s", u.id, u.file, u.line)
        elif u.audio and split in MAX_LENGTH_SPLITS and seconds > max_seconds:
            report.skip(split, "too_long", f"{seconds:.3f} s > {max_seconds} s", u.id, u.file, u.line)
        else:
            kept.append(u)
    report.kept[split] += len(kept)
    return kept


def finish(
    out: str | os.PathLike,
    report: PrepReport,
    splits: dict[str, list[Utterance]],
    ext_mt: list[Utterance] | None,
    langs: Sequence[str],
    vocab_size: int,
    min_seconds: float,
    max_seconds: float,
    excluded: Mapping[str, str] | None = None,
) -> dict:
    """Filter, write `<split>.tsv` (+ `ext_mt.tsv`), train the vocabulary, write and print the report.

    `excluded` (from `read_excluded_texts`) drops rows of every split, external MT included, by source text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report.extra["filters"] = {
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "max_seconds_applies_to": sorted(MAX_LENGTH_SPLITS),
    }
    names = list(splits)
    kept = {name: filter_split(name, rows, report, min_seconds, max_seconds, excluded) for name, rows in splits.items()}
    for name, rows in kept.items():
        write_manifest(out / f"{name}.tsv", (u.manifest_row() for u in rows))
    texts = [t for u in kept.get("train", []) for t in (u.src_text, u.tgt_text)]
    if ext_mt is not None:
        names.append("ext_mt")
        ext_kept = filter_split("ext_mt", ext_mt, report, min_seconds, max_seconds, excluded)
        write_manifest(out / "ext_mt.tsv", (u.manifest_row() for u in ext_kept))
        texts += [t for u in ext_kept for t in (u.src_text, u.tgt_text)]
    if not texts:
        raise DataError(out, "no training text left after filtering: cannot train a vocabulary")
    report.extra["vocab"] = _vocab(out, texts, vocab_size, langs, report)
    result = report.as_dict(names)
    with atomic_output(out / REPORT_NAME) as tmp:
        tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(summary(result, out))
    return result


def _vocab(out: Path, texts: list[str], vocab_size: int, langs: Sequence[str], report: PrepReport) -> dict:
    """Train the joint SentencePiece model, or keep the existing one when its inputs are unchanged
    (a re-run is then cheap and leaves `spm.model` byte-identical)."""
    digest = hashlib.sha256(json.dumps([vocab_size, list(langs), texts], ensure_ascii=False).encode()).hexdigest()
    model = out / f"{SPM_PREFIX}.model"
    previous = _previous_report(out).get("vocab", {})
    if model.is_file() and previous.get("input_sha256") == digest:
        vocab = Vocab.load(model)
    else:
        vocab = train_vocab(texts, out / SPM_PREFIX, vocab_size, langs)
    if len(vocab) != vocab_size:
        report.notes.append(
            f"vocab size {vocab_size} is more than the training text supports; trained {len(vocab)} pieces instead"
        )
    return {
        "model": model.name,
        "requested_size": vocab_size,
        "size": len(vocab),
        "langs": list(langs),
        "training_sentences": len(texts),
        "input_sha256": digest,
    }


def _previous_report(out: Path) -> dict:
    try:
        return json.loads((out / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def summary(result: dict, out: Path) -> str:
    """A few lines for the terminal; the JSON report has the details."""
    lines = [f"prep {result['corpus']} {result['src_lang']}->{result['tgt_lang']} -> {out}"]
    for name, s in result["splits"].items():
        reasons = ", ".join(f"{r} {n}" for r, n in s["skipped_by_reason"].items())
        detail = f" ({reasons})" if reasons else ""
        lines.append(f"  {name:<12} kept {s['kept']:>8}   skipped {s['skipped']:>6}{detail}")
    vocab = result["vocab"]
    lines.append(f"  vocab        {vocab['size']} pieces ({vocab['model']}), languages {' '.join(vocab['langs'])}")
    lines += [f"  note: {n}" for n in result["notes"]]
    lines.append(f"  details: {out / REPORT_NAME}")
    return "\n".join(lines)
