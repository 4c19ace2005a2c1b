"""MuST-C -> manifests: `ROOT/en-XX/data/<split>/{wav/<talk>.wav, txt/<split>.{yaml,en,XX}}`.

Segments stay inside their talk files as `path:offset:frames` slices (16 kHz samples). Ids are fairseq's
`<talk>_<index>`, where fairseq numbers a talk's segments after sorting them by the offset *as written in
the YAML* (a string sort); we do the same so our ids name the same segments as a fairseq-prepared manifest.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import soundfile as sf
import yaml
from tqdm import tqdm

from speechxl.data.corpus.common import (
    PrepReport,
    Utterance,
    check_text,
    convert_to_16k_mono,
    corpus_identity,
    finish,
    read_excluded_texts,
    read_ext_mt,
    read_text_lines,
)
from speechxl.data.manifest import SAMPLE_RATE
from speechxl.errors import DataError

REQUIRED_SPLITS = ["train", "dev", "tst-COMMON"]
OPTIONAL_SPLITS = ["tst-HE"]
SEGMENT_KEYS = ("duration", "offset", "speaker_id", "wav")
CONVERTED_DIR = "audio16k"
# Rounding offset and duration separately (and resampling a talk) can put a segment that ends exactly at
# the end of its talk a few samples past it; up to 10 ms is trimmed (counted in the report), anything more
# is skipped.
END_TOLERANCE = SAMPLE_RATE // 100
# For YAML not in MuST-C's one-segment-per-line layout. The Base loader keeps every value a string, as
# fairseq reads it, which the fairseq-compatible id order depends on; the C version is ~4x faster.
_YAML_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
# A flat flow mapping of plain scalars: no quotes, nesting, anchors, tags or comments.
_FLOW_LINE = re.compile(r"^- \{([^'\"\[\]{}#&*!|>%@`]*)\}\s*$")


def prepare_mustc(
    root: str | os.PathLike,
    lang: str,
    out: str | os.PathLike,
    vocab_size: int = 8000,
    ext_mt: str | os.PathLike | None = None,
    min_seconds: float = 0.1,
    max_seconds: float = 30.0,
    exclude_text: Sequence[str | os.PathLike] = (),
    corpus_version: str = "unknown",
) -> dict:
    """Write `<out>/{train,dev,tst-COMMON[,tst-HE]}.tsv`, `spm.model`, `prep_report.json`; return the report.

    Rows whose source text appears in one of the `exclude_text` manifests are dropped (and reported)."""
    data = Path(root) / f"en-{lang}" / "data"
    if not data.is_dir():
        raise DataError(data, f"not found: expected the MuST-C layout ROOT/en-{lang}/data/<split>/")
    names = REQUIRED_SPLITS + [s for s in OPTIONAL_SPLITS if (data / s).is_dir()]
    corpus, version = corpus_identity(Path(root).resolve(), "mustc", corpus_version)
    report = PrepReport(corpus, str(Path(root).resolve()), "en", lang, corpus_version=version)
    excluded = read_excluded_texts(exclude_text, report)
    converted: list[str] = []
    trimmed: Counter = Counter()
    splits = {name: _read_split(data / name, name, lang, Path(out), report, converted, trimmed) for name in names}
    report.extra["audio"] = {
        "converted_to_16k_mono": len(converted),
        "converted_dir": CONVERTED_DIR,
        "converted_talks": converted,
        "trimmed_to_talk_end": dict(trimmed),
    }
    ext = read_ext_mt(ext_mt, "en", lang, report) if ext_mt is not None else None
    return finish(out, report, splits, ext, ["en", lang], vocab_size, min_seconds, max_seconds, excluded)


def _read_split(
    split_dir: Path, split: str, lang: str, out: Path, report: PrepReport, converted: list[str], trimmed: Counter
) -> list[Utterance]:
    txt, wav_dir = split_dir / "txt", split_dir / "wav"
    yaml_path = txt / f"{split}.yaml"
    segments = read_segments(yaml_path)
    texts = {}
    for side in ("en", lang):
        path = txt / f"{split}.{side}"
        if not path.is_file():
            raise DataError(path, "text file not found")
        texts[side] = read_text_lines(path)
        if len(texts[side]) != len(segments):
            raise DataError(path, f"has {len(texts[side])} lines but {yaml_path} has {len(segments)} segments")
    line_of = _segment_lines(yaml_path, len(segments))

    talks: dict[str, list[int]] = {}
    for i, seg in enumerate(segments):
        talks.setdefault(seg["wav"], []).append(i)
    rows = []
    for wav_name, indices in tqdm(talks.items(), desc=f"mustc {split}", unit="talk", leave=False):
        audio, total, problem = _talk_audio(wav_dir / wav_name, split, out, converted)
        stem = Path(wav_name).stem
        for index, i in enumerate(sorted(indices, key=lambda i: segments[i]["offset"])):
            seg, line, seg_id = segments[i], line_of(i), f"{stem}_{index}"
            if problem is not None:
                report.skip(split, problem[0], problem[1], seg_id, yaml_path, line)
                continue
            offset = round(_seconds(seg, "offset", yaml_path, line) * SAMPLE_RATE)
            frames = round(_seconds(seg, "duration", yaml_path, line) * SAMPLE_RATE)
            overshoot = offset + frames - total
            if overshoot > END_TOLERANCE:
                report.skip(
                    split,
                    "past_end_of_audio",
                    f"segment ends at sample {offset + frames} but {wav_name} has {total} samples at 16 kHz",
                    seg_id,
                    yaml_path,
                    line,
                )
                continue
            if overshoot > 0:
                frames -= overshoot
                trimmed[split] += 1
            rows.append(
                Utterance(
                    id=seg_id,
                    audio=f"{audio}:{offset}:{frames}",
                    n_frames=frames,
                    src_text=check_text(texts["en"][i], txt / f"{split}.en", i + 1),
                    tgt_text=check_text(texts[lang][i], txt / f"{split}.{lang}", i + 1),
                    speaker=seg["speaker_id"],
                    src_lang="en",
                    tgt_lang=lang,
                    file=str(yaml_path),
                    line=line,
                )
            )
    return rows


def read_segments(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(path, "segment YAML not found")
    text = path.read_text(encoding="utf-8")
    segments = _read_flow_lines(text)
    if segments is None:
        try:
            segments = yaml.load(text, Loader=_YAML_LOADER)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            raise DataError(
                path, f"invalid YAML: {getattr(err, 'problem', err)}", None if mark is None else mark.line + 1
            ) from err
    if not isinstance(segments, list):
        raise DataError(path, "expected a list of segments ({duration, offset, speaker_id, wav})")
    for i, seg in enumerate(segments):
        missing = [k for k in SEGMENT_KEYS if not isinstance(seg, dict) or k not in seg]
        if missing:
            raise DataError(path, f"segment {i + 1} lacks {', '.join(missing)}")
    return segments


def _read_flow_lines(text: str) -> list[dict] | None:
    """MuST-C's own layout, one `- {key: value, ...}` of plain scalars per line, parsed directly (the C YAML
    loader needs ~2 min for the 250k-segment train YAML on a busy 2-core machine, this well under 2 s).
    Values stay strings, as with the Base loader. None: the file has anything else; use the YAML loader."""
    segments = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        match = _FLOW_LINE.match(line)
        if match is None:
            return None
        segment = {}
        for item in match.group(1).split(","):
            key, colon, value = item.partition(": ")
            if not colon:
                return None
            segment[key.strip()] = value.strip()
        segments.append(segment)
    return segments


def _segment_lines(path: Path, count: int):
    """Line of segment i: MuST-C writes one `- {...}` flow mapping per line; other layouts get None."""
    with open(path, encoding="utf-8") as f:
        one_per_line = sum(1 for line in f if line.startswith("- ")) == count
    return (lambda i: i + 1) if one_per_line else (lambda i: None)


def _seconds(seg: dict, key: str, path: Path, line: int | None) -> float:
    try:
        value = float(seg[key])
    except ValueError:
        raise DataError(path, f"{key} {seg[key]!r} is not a number", line) from None
    if value < 0:
        raise DataError(path, f"{key} {seg[key]!r} is negative", line)
    return value


def _talk_audio(path: Path, split: str, out: Path, converted: list[str]):
    """(manifest audio path, frames at 16 kHz, None) or (None, 0, (reason, detail)) for an unusable talk.

    16 kHz mono talks stay in place; any other rate or channel count is converted once into OUT.
    """
    if not path.is_file():
        return None, 0, ("audio_missing", f"talk file not found: {path}")
    try:
        info = sf.info(str(path))
        if info.samplerate == SAMPLE_RATE and info.channels == 1:
            return str(path.resolve()), info.frames, None
        relative = Path(CONVERTED_DIR) / split / f"{path.stem}.wav"
        target = out / relative
        frames = sf.info(str(target)).frames if target.is_file() else convert_to_16k_mono(path, target)
        converted.append(f"{split}/{path.name}")
        return relative.as_posix(), frames, None
    except (sf.SoundFileError, RuntimeError) as err:
        return None, 0, ("audio_unreadable", f"cannot read talk file {path}: {err}")
