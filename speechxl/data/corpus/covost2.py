"""CoVoST 2 -> manifests: `ROOT/<src>/{clips/*.mp3, validated.tsv, covost_v2.<src>_<tgt>.tsv}`.

As in fairseq's prep, the CoVoST TSV (path, translation, split) is joined with Common Voice's validated.tsv
(path, sentence, client_id) on `path`, the split value `train_covost` counts as train, and both TSVs are read
with QUOTE_NONE and `\\` as escape character. Clips are decoded once into 16 kHz mono WAVs under
OUT/clips16k (in parallel; existing ones are reused, so an interrupted run resumes).
"""

from __future__ import annotations

import csv
import os
from multiprocessing import Pool
from pathlib import Path
from typing import Sequence

import soundfile as sf
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
)
from speechxl.errors import DataError

SPLITS = {"train": "train", "train_covost": "train", "dev": "dev", "test": "test"}
CONVERTED_DIR = "clips16k"


def prepare_covost2(
    root: str | os.PathLike,
    src: str,
    tgt: str,
    out: str | os.PathLike,
    vocab_size: int = 8000,
    ext_mt: str | os.PathLike | None = None,
    min_seconds: float = 0.1,
    max_seconds: float = 30.0,
    jobs: int = 2,
    exclude_text: Sequence[str | os.PathLike] = (),
) -> dict:
    """Write `<out>/{train,dev,test}.tsv`, `spm.model`, `prep_report.json`; return the report.

    `root` is the directory holding `<src>/`, or the `<src>` directory itself. Rows whose source text appears
    in one of the `exclude_text` manifests are dropped (and reported).
    """
    lang_dir = _language_dir(Path(root), src)
    covost_tsv = lang_dir / f"covost_v2.{src}_{tgt}.tsv"
    validated = {
        row["path"]: (line, row)
        for line, row in read_tsv(lang_dir / "validated.tsv", ["path", "sentence", "client_id"])
    }
    corpus, version = corpus_identity(Path(lang_dir).resolve().parent, "covost2", "2")
    report = PrepReport(corpus, str(lang_dir.resolve()), src, tgt, corpus_version=version)
    excluded = read_excluded_texts(exclude_text, report)
    wanted = _select_rows(covost_tsv, validated, report)
    out = Path(out)
    results = _convert_clips(lang_dir / "clips", out, [row["path"] for _, _, row in wanted], jobs)
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    for (split, line, row), (frames, problem) in zip(wanted, results):
        utt_id = row["path"].replace(".mp3", "")
        clip = lang_dir / "clips" / row["path"]
        if problem is not None:
            report.skip(
                split, problem[0], f"{problem[1]} (listed on line {line} of {covost_tsv.name})", utt_id, clip, None
            )
            continue
        v_line, v_row = validated[row["path"]]
        splits[split].append(
            Utterance(
                id=utt_id,
                audio=_converted_name(row["path"]),
                n_frames=frames,
                src_text=check_text(v_row["sentence"], lang_dir / "validated.tsv", v_line),
                tgt_text=check_text(row["translation"], covost_tsv, line),
                speaker=v_row["client_id"],
                src_lang=src,
                tgt_lang=tgt,
                file=str(covost_tsv),
                line=line,
            )
        )
    report.extra["audio"] = {
        "converted_to_16k_mono": sum(1 for _, p in results if p is None),
        "converted_dir": CONVERTED_DIR,
    }
    ext = read_ext_mt(ext_mt, src, tgt, report) if ext_mt is not None else None
    return finish(out, report, splits, ext, [src, tgt], vocab_size, min_seconds, max_seconds, excluded)


def _language_dir(root: Path, src: str) -> Path:
    for candidate in (root / src, root):
        if (candidate / "validated.tsv").is_file():
            return candidate
    raise DataError(
        root,
        f"no validated.tsv in {root / src} or {root}: expected the Common Voice layout "
        "<root>/<src>/{clips/, validated.tsv, covost_v2.<src>_<tgt>.tsv}",
    )


def read_tsv(path: Path, required: list[str]) -> list[tuple[int, dict[str, str]]]:
    """(line, row) pairs of a headed TSV, read as fairseq reads Common Voice / CoVoST TSVs."""
    if not path.is_file():
        raise DataError(path, "TSV not found")
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            header = next(reader, [])
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(path, f"header lacks column(s) {', '.join(missing)}", 1)
            for fields in reader:
                if len(fields) != len(header):
                    raise DataError(
                        path, f"expected {len(header)} tab-separated columns, found {len(fields)}", reader.line_num
                    )
                rows.append((reader.line_num, dict(zip(header, fields))))
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 ({err.reason} at byte {err.start})") from err
    return rows


def _select_rows(covost_tsv: Path, validated: dict, report: PrepReport) -> list[tuple[str, int, dict]]:
    """CoVoST rows that belong to a split and are in validated.tsv, as (split, line, row)."""
    wanted, seen = [], {}
    for line, row in read_tsv(covost_tsv, ["path", "translation", "split"]):
        utt_id = row["path"].replace(".mp3", "")
        if row["path"] in seen:
            raise DataError(covost_tsv, f"clip {row['path']} is listed twice (first on line {seen[row['path']]})", line)
        seen[row["path"]] = line
        split = SPLITS.get(row["split"])
        if split is None:
            report.skip(
                "unassigned",
                "unknown_split",
                f"split value {row['split']!r} is none of {', '.join(SPLITS)}",
                utt_id,
                covost_tsv,
                line,
            )
        elif row["path"] not in validated:
            report.skip(split, "not_in_validated_tsv", "clip is not listed in validated.tsv", utt_id, covost_tsv, line)
        else:
            wanted.append((split, line, row))
    return wanted


def _converted_name(clip: str) -> str:
    return f"{CONVERTED_DIR}/{Path(clip).stem}.wav"


def _convert_clips(clips: Path, out: Path, names: list[str], jobs: int) -> list[tuple[int, tuple | None]]:
    tasks = [(clips / name, out / _converted_name(name)) for name in names]
    bar = dict(total=len(tasks), desc="covost2 clips -> 16 kHz", unit="clip")
    if jobs <= 1:
        return [_convert_clip(t) for t in tqdm(tasks, **bar)]
    with Pool(jobs) as pool:
        return list(tqdm(pool.imap(_convert_clip, tasks, chunksize=16), **bar))


def _convert_clip(task: tuple[Path, Path]) -> tuple[int, tuple[str, str] | None]:
    """(frames at 16 kHz, None), or (0, (reason, detail)) for a clip that is missing or cannot be decoded."""
    clip, target = task
    if target.is_file():  # converted by an earlier run (written atomically, so complete)
        return sf.info(str(target)).frames, None
    if not clip.is_file():
        return 0, ("audio_missing", f"clip not found: {clip}")
    try:
        return convert_to_16k_mono(clip, target), None
    except (sf.SoundFileError, RuntimeError) as err:
        return 0, ("audio_unreadable", f"cannot decode {clip}: {err}")
