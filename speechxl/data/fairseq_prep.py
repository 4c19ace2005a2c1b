"""fairseq S2T data in and out.

`import_fairseq_data`: a fairseq-prepared directory (manifests whose audio is `fbank80.zip:<offset>:<length>` or
`flac.zip:...`, a `config_*.yaml`, its `spm_*.txt` dictionary and SentencePiece model) -> a speechxl data
directory: the manifests with absolute audio paths (resolved like fairseq: against `audio_root`, else the
manifests' directory) and the languages filled in where the columns are missing, `spm.model` + `vocab.json`
(the fairseq dictionary's ids), and `config.yaml`, an experiment config that `speechxl train` runs as is.

`export_fairseq_data`: speechxl manifests -> what fairseq's MuST-C/CoVoST prep scripts write
(`examples/speech_to_text/data_utils.py`): one ZIP_STORED `fbank80.zip` of `<id>.npy` log-mel matrices (or
`flac.zip` of 16 kHz FLAC), `<split>_<task>.tsv` manifests whose audio is `zip:<byte offset>:<byte length>` with
the offsets from each member's local header (get_zip_manifest), the dictionary `spm_<name>.txt`, the
SentencePiece model and `config_<task>.yaml` (gen_config_yaml).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
import yaml

from speechxl.data.audio import compute_fbank, load_audio
from speechxl.data.fairseq_config import read_dictionary, read_fairseq_config, write_dictionary
from speechxl.data.manifest import COLUMNS, atomic_output, read_manifest, write_manifest
from speechxl.data.vocab import Vocab
from speechxl.data.zipped import split_zip_slice, zip_members
from speechxl.errors import DataError

# fairseq's MuST-C manifest columns, then the optional ones its SpeechToTextDatasetCreator reads
FAIRSEQ_COLUMNS = ["id", "audio", "n_frames", "tgt_text", "speaker", "src_text", "src_lang", "tgt_lang"]
SPECAUGMENT_POLICIES = {  # fairseq S2TDataConfigWriter.set_specaugment_*_policy
    "lb": dict(time_wrap_w=0, freq_mask_n=1, freq_mask_f=27, time_mask_n=1, time_mask_t=100, time_mask_p=1.0),
    "ld": dict(time_wrap_w=0, freq_mask_n=2, freq_mask_f=27, time_mask_n=2, time_mask_t=100, time_mask_p=1.0),
    "sm": dict(time_wrap_w=0, freq_mask_n=2, freq_mask_f=15, time_mask_n=2, time_mask_t=70, time_mask_p=0.2),
    "ss": dict(time_wrap_w=0, freq_mask_n=2, freq_mask_f=27, time_mask_n=2, time_mask_t=70, time_mask_p=0.2),
}


# ---------------------------------------------------------------------------------------------------- import


def _absolute_audio(audio: str, root: Path) -> str:
    if not audio:
        return audio
    zipped = split_zip_slice(audio)
    path, rest = (zipped[0], f":{zipped[1]}:{zipped[2]}") if zipped else (audio, "")
    if not zipped:
        parts = audio.rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            path, rest = parts[0], f":{parts[1]}:{parts[2]}"
    return (str(Path(path)) if os.path.isabs(path) else str((root / path).resolve())) + rest


def _split_names(stems: Sequence[str]) -> tuple[str, str]:
    train = sorted(s for s in stems if s.startswith("train"))
    dev = sorted(s for s in stems if s.startswith("dev") or s.startswith("valid"))
    return (train[0] if train else "train"), (dev[0] if dev else "dev")


def import_fairseq_data(
    config: str | os.PathLike,
    manifests: str | os.PathLike,
    out: str | os.PathLike,
    *,
    src_lang: str = "",
    tgt_lang: str = "",
    spm_model: str | os.PathLike | None = None,
    dictionary: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Turn fairseq-prepared data into a speechxl data directory `out`; returns a summary."""
    fs = read_fairseq_config(config, spm_model=spm_model, dictionary=dictionary)
    manifests = Path(manifests)
    out = Path(out)
    tsvs = sorted(manifests.glob("*.tsv"))
    if not tsvs:
        raise DataError(manifests, "no *.tsv manifests in this directory")
    pieces = read_dictionary(fs.dictionary)
    if not fs.spm_model.is_file():
        raise DataError(fs.spm_model, "SentencePiece model not found (bpe_tokenizer.sentencepiece_model; or --spm)")
    vocab = Vocab.load(fs.spm_model, pieces=pieces)  # fails early on a dictionary without the specials
    out.mkdir(parents=True, exist_ok=True)
    # fairseq resolves audio against audio_root (relative to where it runs); its prep scripts put zips beside
    # the manifests, so a relative root is taken from the manifests' directory
    root = Path(fs.audio_root) if fs.audio_root else manifests
    if not root.is_absolute():
        root = manifests / root
    splits: dict[str, int] = {}
    for tsv in tsvs:
        rows = read_manifest(tsv)
        for row in rows:
            row["audio"] = _absolute_audio(row["audio"], root)
            row["src_lang"] = row["src_lang"] or src_lang
            row["tgt_lang"] = row["tgt_lang"] or tgt_lang
        write_manifest(out / tsv.name, rows)
        splits[tsv.stem] = len(rows)
    shutil.copyfile(fs.spm_model, out / "spm.model")
    with atomic_output(out / "vocab.json") as tmp:
        tmp.write_text(json.dumps(pieces, ensure_ascii=False), encoding="utf-8")
    train_split, valid_split = _split_names(list(splits))
    data = {
        "manifest_dir": str(out.resolve()),
        "train_split": train_split,
        "valid_split": valid_split,
        **fs.data,
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
    }
    if data["prepend_lang_tag"] and tgt_lang and not vocab.has_tag(tgt_lang):
        raise DataError(fs.dictionary, f"prepend_tgt_lang_tag is set but the dictionary has no <lang:{tgt_lang}>")
    experiment = {"run_dir": str(out / "run"), "model": {"arch": "s2t", "size": "s", **fs.model}, "data": data}
    with atomic_output(out / "config.yaml") as tmp:
        tmp.write_text(
            "# written by `speechxl fairseq prep` from "
            + str(Path(config).resolve())
            + "\n"
            + yaml.safe_dump(experiment, sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
    return {
        "out": str(out),
        "splits": splits,
        "vocab_size": len(pieces),
        "config": str(out / "config.yaml"),
        "data": data,
    }


# ---------------------------------------------------------------------------------------------------- export


def _zip_manifest(zip_path: Path, relative_to: Path) -> dict[str, tuple[str, int]]:
    """fairseq's get_zip_manifest: member stem -> `zip:<offset>:<length>` from each member's header."""
    entries: dict[str, tuple[str, int]] = {}
    members = zip_members(str(zip_path), os.stat(zip_path).st_mtime_ns)
    with zipfile.ZipFile(zip_path) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    name = zip_path.relative_to(relative_to).as_posix()
    for offset, member in members.items():
        info = infos[member.name]
        # fairseq computes header_offset + 30 + len(filename): only right without an extra field; ours must agree
        if offset != info.header_offset + 30 + len(info.filename):
            raise RuntimeError(f"{zip_path}: member {member.name} has an extra field; fairseq would misread it")
        entries[Path(member.name).stem] = (f"{name}:{offset}:{member.length}", offset)
    return entries


def _lang_pieces(vocab: Vocab, langs: set[str]) -> list[str]:
    """Our pieces, with our `<xx>` language tags spelled fairseq's way (`<lang:xx>`)."""
    pieces = [vocab.piece(i) for i in range(len(vocab))]
    return [f"<lang:{p[1:-1]}>" if p.startswith("<") and p.endswith(">") and p[1:-1] in langs else p for p in pieces]


def export_fairseq_data(
    manifest_dir: str | os.PathLike,
    out: str | os.PathLike,
    splits: Sequence[str],
    *,
    task: str = "st",
    audio: str = "fbank",
    specaugment: str | None = "lb",
    lang_tags: bool | None = None,
    vocab_path: str | os.PathLike | None = None,
    num_mel_bins: int = 80,
) -> dict[str, Any]:
    """Write speechxl manifests `splits` of `manifest_dir` as fairseq S2T data in `out`; returns a summary."""
    if task not in ("st", "asr"):
        raise ValueError(f"task must be st or asr, not {task!r}")
    if audio not in ("fbank", "flac"):
        raise ValueError(f"audio must be fbank or flac, not {audio!r}")
    if specaugment is not None and specaugment not in SPECAUGMENT_POLICIES:
        raise ValueError(f"specaugment must be one of {sorted(SPECAUGMENT_POLICIES)} or None")
    manifest_dir, out = Path(manifest_dir), Path(out)
    vocab_path = Path(vocab_path) if vocab_path else manifest_dir / "spm.model"
    vocab = Vocab.load(vocab_path)
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / ("fbank80.zip" if audio == "fbank" else "flac.zip")
    suffix = ".npy" if audio == "fbank" else ".flac"
    kept: dict[str, list[dict[str, str]]] = {}
    skipped: dict[str, int] = {}
    owner: dict[str, str] = {}
    langs: set[str] = set()
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        for split in splits:
            manifest = manifest_dir / f"{split}.tsv"
            rows = read_manifest(manifest)
            kept[split], skipped[split] = [], 0
            for line, row in enumerate(rows, start=2):
                text = row["tgt_text"] if task == "st" else row["src_text"]
                if not row["audio"] or not text.strip():
                    skipped[split] += 1  # text-only rows (MT), or rows without this task's text
                    continue
                if row["id"] in owner:
                    raise DataError(
                        manifest,
                        f"id {row['id']!r} is also in split {owner[row['id']]}; one zip "
                        "holds every split, so ids must be unique across them",
                        line,
                    )
                owner[row["id"]] = split
                wave = load_audio(row["audio"], manifest_dir, manifest=manifest, line=line)
                target = Path(tmp) / f"{row['id']}{suffix}"
                if audio == "fbank":
                    feats = compute_fbank(wave, num_mel_bins)
                    np.save(target, feats.astype(np.float32))
                else:
                    sf.write(target, wave, 16000, format="FLAC")
                lang = row["tgt_lang"] if task == "st" else row["src_lang"]
                langs.add(lang)
                kept[split].append(
                    {
                        "id": row["id"],
                        "tgt_text": text,
                        "speaker": row["speaker"],
                        "src_text": row["src_text"],
                        "src_lang": row["src_lang"],
                        "tgt_lang": lang,
                    }
                )
        # fairseq's create_zip: ZIP_STORED, files added with their names as arcname
        partial = zip_path.with_name(zip_path.name + ".tmp")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
            for split in splits:
                for row in kept[split]:
                    archive.write(Path(tmp) / f"{row['id']}{suffix}", arcname=f"{row['id']}{suffix}")
        os.replace(partial, zip_path)
    entries = _zip_manifest(zip_path, out)
    lengths = _member_lengths(zip_path, entries, audio)
    for split in splits:
        rows = [{**row, "audio": entries[row["id"]][0], "n_frames": lengths[row["id"]]} for row in kept[split]]
        _write_fairseq_tsv(out / f"{split}_{task}.tsv", rows)
    if lang_tags is None:
        lang_tags = all(vocab.has_tag(lang) for lang in langs if lang) and all(langs)
    name = f"spm_{len(vocab)}_{task}"  # fairseq's prep names them spm_<type><size>_<task>
    shutil.copyfile(vocab_path, out / f"{name}.model")
    write_dictionary(
        out / f"{name}.txt", _lang_pieces(vocab, langs) if lang_tags else [vocab.piece(i) for i in range(len(vocab))]
    )
    config = _gen_config(out, f"{name}.model", specaugment, lang_tags, audio, num_mel_bins)
    with atomic_output(out / f"config_{task}.yaml") as tmp_config:
        tmp_config.write_text(yaml.dump(config), encoding="utf-8")
    return {
        "out": str(out),
        "zip": str(zip_path),
        "rows": {s: len(r) for s, r in kept.items()},
        "skipped": skipped,
        "config": str(out / f"config_{task}.yaml"),
        "prepend_tgt_lang_tag": lang_tags,
    }


def _member_lengths(zip_path: Path, entries: dict[str, tuple[str, int]], audio: str) -> dict[str, int]:
    """n_frames as fairseq's get_zip_manifest counts it: matrix rows (npy) or samples (audio)."""
    lengths = {}
    with open(zip_path, "rb") as f:
        for stem, (spec, offset) in entries.items():
            length = int(spec.rsplit(":", 1)[1])
            f.seek(offset)
            data = io.BytesIO(f.read(length))
            lengths[stem] = np.load(data).shape[0] if audio == "fbank" else sf.info(data).frames
    return lengths


def _write_fairseq_tsv(path: Path, rows: list[dict[str, Any]]) -> None:
    """fairseq's save_df_to_tsv: tab-separated, header, no quoting (our writer rejects tabs in text)."""
    if COLUMNS != FAIRSEQ_COLUMNS:  # our writer's column order is fairseq's MuST-C one plus its optional columns
        raise RuntimeError("manifest columns changed; update FAIRSEQ_COLUMNS")
    write_manifest(path, rows)


def _gen_config(
    out: Path, spm_filename: str, specaugment: str | None, lang_tags: bool, audio: str, num_mel_bins: int
) -> dict[str, Any]:
    """fairseq's gen_config_yaml (utterance CMVN), as its S2TDataConfigWriter lays it out."""
    config: dict[str, Any] = {
        "vocab_filename": spm_filename.replace(".model", ".txt"),
        "input_channels": 1,
        "input_feat_per_channel": num_mel_bins,
    }
    if audio == "flac":
        config["use_audio_input"] = True
    else:
        if specaugment is not None:
            p = SPECAUGMENT_POLICIES[specaugment]
            config["specaugment"] = {
                "time_wrap_W": p["time_wrap_w"],
                "freq_mask_N": p["freq_mask_n"],
                "freq_mask_F": p["freq_mask_f"],
                "time_mask_N": p["time_mask_n"],
                "time_mask_T": p["time_mask_t"],
                "time_mask_p": p["time_mask_p"],
            }
            config.setdefault("transforms", {})["_train"] = ["utterance_cmvn", "specaugment"]
        config.setdefault("transforms", {})["*"] = ["utterance_cmvn"]
    config["bpe_tokenizer"] = {"bpe": "sentencepiece", "sentencepiece_model": (out.resolve() / spm_filename).as_posix()}
    # the manifests name the zip relative to `out`; fairseq resolves it against audio_root (else its cwd)
    config["audio_root"] = out.resolve().as_posix()
    if lang_tags:
        config["prepend_tgt_lang_tag"] = True
    return config
