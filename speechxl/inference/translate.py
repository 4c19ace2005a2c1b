"""Offline translation: a checkpoint directory + a manifest split (or audio files) -> hypotheses and a score.

Utterances are decoded in length-sorted batches (little padding) and written back in input order, so
`hyp.txt` and `ref.txt` line up with the manifest.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

from speechxl.data.batching import length_batches
from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
from speechxl.data.manifest import read_manifest
from speechxl.errors import DataError
from speechxl.eval.bleu import bleu, wer
from speechxl.inference.search import beam_search
from speechxl.train.checkpoint import load_model


@dataclass
class DecodeOptions:
    beam: int = 5
    lenpen: float = 1.0
    max_len_a: float = 0.0
    max_len_b: int = 200
    max_tokens: int | None = None  # batch budget in input units; None: 50k fbank frames or 3.2M wave samples
    max_sentences: int = 64


def _feature_config(config: dict) -> FeatureConfig:
    data = config.get("data", {})
    return FeatureConfig(features=data.get("features", "fbank"))


def _audio_rows(paths: list[str], src_lang: str, tgt_lang: str) -> list[dict[str, str]]:
    """Manifest rows for bare audio files (no references), so they decode through the same dataset."""
    rows = []
    for path in paths:
        try:
            info = sf.info(path)
        except Exception as err:  # soundfile raises several types for unreadable files
            raise DataError(path, f"cannot read audio: {err}") from err
        n_frames = round(info.frames * 16000 / info.samplerate)
        rows.append({"id": Path(path).stem, "audio": str(Path(path).resolve()), "n_frames": str(n_frames),
                     "tgt_text": "-", "speaker": "", "src_text": "-", "src_lang": src_lang, "tgt_lang": tgt_lang})
    return rows


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
    """Decode `manifest` (or `audio` files) with the model in `checkpoint`; write hyp/ref text and score.json."""
    if (manifest is None) == (audio is None):
        raise ValueError("give exactly one of a manifest or audio files")
    model, vocab, config = load_model(checkpoint, device=device)
    model.eval()
    if manifest is not None:
        rows = read_manifest(manifest)
        has_refs = True
    else:
        rows = _audio_rows(audio, src_lang or "en", tgt_lang or "de")
        has_refs = False
    data = config.get("data", {})
    dataset = SpeechTextDataset(rows, "asr" if task == "asr" else "st", vocab,
                                manifest=manifest or "<audio files>", features=_feature_config(config),
                                prepend_lang_tag=data.get("prepend_lang_tag", True))
    default_budget = 3_200_000 if dataset.features.features == "wave" else 50_000
    # Never below the longest utterance: every input must be decoded, alone in its batch if need be.
    budget = max(options.max_tokens or default_budget, int(dataset.sizes.max(initial=1)))
    batches = length_batches(dataset.sizes, budget, options.max_sentences)
    prefix_lang_of = {row["id"]: row["src_lang" if task == "asr" else "tgt_lang"] for row in rows}
    prepend_tag = data.get("prepend_lang_tag", True)
    hyps: dict[int, str] = {}
    start = time.perf_counter()
    for indices in tqdm(batches, desc="translate", unit="batch"):
        batch = dataset.collate([dataset[i] for i in indices])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        prefix = None
        if prepend_tag:
            tags = [vocab.tag(prefix_lang_of[dataset.ids[i]]) for i in indices]
            prefix = torch.tensor(tags, dtype=torch.long, device=device)[:, None]
        results = beam_search(model, batch, beam=options.beam, lenpen=options.lenpen,
                              max_len_a=options.max_len_a, max_len_b=options.max_len_b, prefix=prefix)
        for i, nbest in zip(indices, results):
            hyps[i] = vocab.decode(nbest[0].tokens)
    elapsed = time.perf_counter() - start
    order = range(len(dataset))
    text_key = "src_text" if task == "asr" else "tgt_text"
    row_of = {row["id"]: row for row in rows}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hyp_lines = [hyps[i] for i in order]
    (out / "hyp.txt").write_text("\n".join(hyp_lines) + "\n", encoding="utf-8")
    (out / "ids.txt").write_text("\n".join(dataset.ids) + "\n", encoding="utf-8")
    result: dict = {"checkpoint": str(checkpoint), "n": len(hyp_lines), "task": task,
                    "beam": options.beam, "lenpen": options.lenpen, "decode_seconds": round(elapsed, 2)}
    if has_refs:
        ref_lines = [row_of[dataset.ids[i]][text_key] for i in order]
        (out / "ref.txt").write_text("\n".join(ref_lines) + "\n", encoding="utf-8")
        result["manifest"] = str(manifest)
        result.update(wer(hyp_lines, ref_lines) if task == "asr" else bleu(hyp_lines, ref_lines))
        if dataset.skipped:
            result["skipped"] = dataset.skip_report()
    (out / "score.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
