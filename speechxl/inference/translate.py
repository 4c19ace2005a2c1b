"""Offline translation: a checkpoint directory + a manifest split (or audio files) -> hypotheses and a score.

Utterances are decoded in length-sorted batches (little padding) and written back in input order: `hyp.txt`
has one line per input, `ref.txt` and `ids.txt` line up with it. An input that cannot be translated (a
missing or unreadable file, audio shorter than one 25 ms window) gets an empty line, is named with its
reason on stderr and in `score.json` (`failed`), and the rest are still translated.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

from speechxl.data.batching import length_batches
from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
from speechxl.data.manifest import read_manifest
from speechxl.errors import DataError
from speechxl.inference.decode import DecodeOptions, decode_batch, score_outputs
from speechxl.models import load_model
from speechxl.tasks import OUTPUTS, get_task

__all__ = ["DecodeOptions", "translate"]


def _audio_rows(paths: list[str], src_lang: str, tgt_lang: str) -> tuple[list[dict[str, str]], dict[int, str]]:
    """Manifest rows for bare audio files (no references), and the reason for each file that cannot be read."""
    rows, failed = [], {}
    for index, path in enumerate(paths):
        n_frames = 0
        if not Path(path).is_file():
            failed[index] = "file not found"
        else:
            try:
                info = sf.info(path)
                n_frames = round(info.frames * 16000 / info.samplerate)
            except Exception as err:  # soundfile raises several types for unreadable files
                failed[index] = f"cannot read audio: {str(err).strip()}"
        rows.append(
            {
                "id": Path(path).stem,
                "audio": str(Path(path).resolve()),
                "n_frames": str(n_frames),
                "tgt_text": "",
                "speaker": "",
                "src_text": "",
                "src_lang": src_lang,
                "tgt_lang": tgt_lang,
            }
        )
    return rows, failed


def _corpus_info(manifest: Path | None, rows: list[dict[str, str]], langs: dict[str, str]) -> dict[str, str]:
    """What makes a score comparable: corpus and version (from prep's report beside the manifest), split,
    direction; "unknown" where nothing says."""
    report: dict = {}
    if manifest is not None and (manifest.parent / "prep_report.json").is_file():
        try:
            report = json.loads((manifest.parent / "prep_report.json").read_text(encoding="utf-8"))
        except ValueError:
            report = {}
    pairs = {
        (row.get("src_lang") or langs.get("src_lang", ""), row.get("tgt_lang") or langs.get("tgt_lang", ""))
        for row in rows
    }
    src, tgt = next(iter(pairs)) if len(pairs) == 1 else ("", "")
    return {
        "corpus": report.get("corpus", "unknown"),
        "corpus_version": report.get("corpus_version", "unknown"),
        "split": manifest.stem if manifest is not None else "unknown",
        "direction": f"{src}-{tgt}" if src and tgt else "unknown",
    }


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _output_file(stem: str, name: str, main: str | None) -> str:
    return f"{stem}.txt" if name == main else f"{stem}.{name}.txt"


@torch.no_grad()
def translate(
    checkpoint: str | Path,
    *,
    out: str | Path,
    manifest: str | Path | None = None,
    audio: list[str] | None = None,
    task: str = "st",
    options: DecodeOptions = DecodeOptions(),
    device: str = "cpu",
    src_lang: str | None = None,
    tgt_lang: str | None = None,
) -> dict:
    """Decode `manifest` (or `audio` files) with the model in `checkpoint`; write hypotheses (+ references) per
    output and score.json."""
    if (manifest is None) == (audio is None):
        raise ValueError("give exactly one of a manifest or audio files")
    spec = get_task(task)
    if spec.output is None:
        raise DataError("--task", f"task {task!r} has no decoded output (it is trained for its loss only)")
    model, vocab, config = load_model(checkpoint, device=device)
    data = config.get("data", {})
    if manifest is not None:
        manifest = Path(manifest)
        rows, failed = read_manifest(manifest), {}
    else:
        rows, failed = _audio_rows(audio, src_lang or "en", tgt_lang or "de")
    row_of_usable = [index for index in range(len(rows)) if index not in failed]  # dataset row -> input row
    # Manifests without language columns (fairseq's bilingual ones): the flags, else the model's config.
    langs = {"src_lang": src_lang or data.get("src_lang", ""), "tgt_lang": tgt_lang or data.get("tgt_lang", "")}
    dataset = SpeechTextDataset(
        [rows[index] for index in row_of_usable],
        task,
        vocab,
        manifest=manifest or "<audio files>",
        features=FeatureConfig.from_data(data),
        prepend_lang_tag=data.get("prepend_lang_tag", True),
        decoding=True,
        langs=langs,
    )
    for usable_index, reason in dataset.skip_reasons.items():
        failed[row_of_usable[usable_index]] = reason
    default_budget = 3_200_000 if dataset.features.features == "wave" else 50_000
    # Never below the longest utterance: every input must be decoded, alone in its batch if need be.
    budget = max(options.max_tokens or default_budget, int(dataset.sizes.max(initial=1)))
    hyps: dict[int, dict[str, str]] = {}  # row index -> output texts
    start = time.perf_counter()
    for indices in tqdm(length_batches(dataset.sizes, budget, options.max_sentences), desc="translate", unit="batch"):
        examples = []
        for i in indices:
            try:
                examples.append((i, dataset[i]))
            except DataError as err:  # e.g. a corrupt file in a manifest: this input fails, the rest go on
                failed[row_of_usable[dataset.row_index[i]]] = err.reason
        if not examples:
            continue
        batch = dataset.collate([example for _, example in examples])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        for (i, _), texts in zip(examples, decode_batch(model, batch, vocab, spec, options)):
            hyps[row_of_usable[dataset.row_index[i]]] = texts
    elapsed = time.perf_counter() - start

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [spec.output] + sorted({name for texts in hyps.values() for name in texts} - {spec.output})
    hyp_lines = {name: [hyps.get(i, {}).get(name, "") for i in range(len(rows))] for name in names}
    for name, lines in hyp_lines.items():
        _write_lines(out / _output_file("hyp", name, spec.output), lines)
    _write_lines(out / "ids.txt", [row["id"] for row in rows])
    result: dict = {
        "checkpoint": str(checkpoint),
        "task": task,
        "n": len(rows),
        "beam": options.beam,
        "lenpen": options.lenpen,
        **_corpus_info(manifest, rows, langs),
        "decode_seconds": round(elapsed, 2),
        "hyp_file": str(out / "hyp.txt"),
    }
    if manifest is not None:
        refs = {name: [row.get(OUTPUTS[name].reference, "") for row in rows] for name in names}
        for name, lines in refs.items():
            _write_lines(out / _output_file("ref", name, spec.output), lines)
        result.update(manifest=str(manifest), ref_file=str(out / "ref.txt"))
        result.update(score_outputs(hyp_lines, refs, spec.output))
    if failed:
        result["failed"] = [
            {
                "line": index + 2 if manifest is not None else None,
                "id": rows[index]["id"],
                "input": audio[index] if audio is not None else rows[index]["audio"],
                "reason": reason,
            }
            for index, reason in sorted(failed.items())
        ]
        for item in result["failed"]:
            print(
                f"speechxl translate: {item['input']}: not translated ({item['reason']}); its line is empty",
                file=sys.stderr,
            )
    (out / "score.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if failed and len(failed) == len(rows):
        raise DataError(
            result["failed"][0]["input"],
            f"no input could be translated: "
            f"{result['failed'][0]['reason']}" + (f" (and {len(rows) - 1} more)" if len(rows) > 1 else ""),
        )
    return result
