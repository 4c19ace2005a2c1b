"""Long audio: voice-activity segmentation, translation segment by segment, subtitles, and IWSLT-style scoring
of whole talks.

VAD: `webrtcvad-wheels` (WebRTC's GMM VAD; no model file, no torch). Measured on 6 SynthST tst-COMMON talk wavs
(138 s, 36 sentence gaps, 300 ms minimum silence): webrtcvad (aggressiveness 3) found 30/36 gaps between the
gold segments, silero-vad 6.2.3 found 29/36, neither split inside a sentence; webrtcvad took 0.2 s, silero 11 s
(one CPU thread). silero-vad brings no torchaudio, but runs a network per 32 ms: for equal boundaries the cheap
one wins. Segments longer than `max_seconds` are cut at their quietest 30 ms frame, so a decode never sees
more than `max_seconds` of audio.

Memory stays bounded for an hour of audio: the VAD reads the file in blocks and keeps only speech/non-speech
flags (one byte per 30 ms), and each segment is read from the file as a slice when it is translated.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from speechxl.data.audio import SAMPLE_RATE, resolve_path

FORMATS = ("srt", "vtt", "txt")


@dataclass
class VadOptions:
    aggressiveness: int = 3  # webrtcvad 0 (keeps most) .. 3 (drops most non-speech)
    frame_ms: int = 30  # webrtcvad accepts 10, 20 or 30 ms
    min_silence: float = 0.3  # seconds of non-speech that end a segment
    # seconds of non-speech kept on each side of a segment. 0: the SynthST S2T model (trained on tightly cut
    # slices) scored 9.8 BLEU on the gold segments of tst-COMMON, 5.7 on VAD segments (+ mweralign) without
    # padding and 1.3 with 0.1 s: leading silence derails it
    pad: float = 0.0
    max_seconds: float = 20.0  # longer speech is cut at its quietest frame
    min_seconds: float = 0.1  # shorter segments are dropped (clicks)


def _frames_of_file(path: str | Path, frame: int, block_seconds: float = 60.0):
    """16 kHz float frames of `frame` samples, read block by block (mono, resampled as a stream); an unreadable
    file raises DataError naming it."""
    from speechxl.errors import DataError

    if not Path(path).is_file():
        raise DataError(path, "no such audio file")
    try:
        info = sf.info(str(path))
        rest = np.zeros(0, dtype=np.float32)
        block = int(block_seconds * info.samplerate)
        resampler = soxr.ResampleStream(info.samplerate, SAMPLE_RATE, 1, dtype="float32")
        read = 0
        for chunk in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
            read += len(chunk)
            wave = chunk.mean(axis=1)
            if info.samplerate != SAMPLE_RATE:
                wave = resampler.resample_chunk(wave, last=read >= info.frames)
            wave = np.concatenate([rest, wave])
            n = len(wave) // frame
            for i in range(n):
                yield wave[i * frame : (i + 1) * frame]
            rest = wave[n * frame :]
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(path, f"cannot read the audio: {err}") from None


def speech_flags(frames, options: VadOptions) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: speech (bool) and energy (for cutting long segments)."""
    import webrtcvad

    vad = webrtcvad.Vad(options.aggressiveness)
    flags, energy = [], []
    for frame in frames:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767).astype(np.int16)
        flags.append(vad.is_speech(pcm.tobytes(), SAMPLE_RATE))
        energy.append(float(np.mean(frame.astype(np.float64) ** 2)))
    return np.asarray(flags, dtype=bool), np.asarray(energy, dtype=np.float32)


def segments_from_flags(flags: np.ndarray, energy: np.ndarray, options: VadOptions) -> list[tuple[float, float]]:
    """Speech regions (start, end) in seconds: runs of speech frames joined across silences shorter than
    `min_silence`, padded, cut to at most `max_seconds`."""
    step = options.frame_ms / 1000
    gap = max(1, round(options.min_silence / step))
    regions, start, silent = [], None, 0
    for i, speech in enumerate(flags):
        if speech:
            if start is None:
                start = i
            silent, end = 0, i + 1
        elif start is not None:
            silent += 1
            if silent >= gap:
                regions.append((start, end))
                start = None
    if start is not None:
        regions.append((start, end))
    limit = max(1, int(options.max_seconds / step) - 2 * round(options.pad / step))
    cut: list[tuple[int, int]] = []
    for a, b in regions:
        _split(a, b, energy, limit, cut)
    total = len(flags) * step
    out = []
    for a, b in cut:
        s, e = max(0.0, a * step - options.pad), min(total, b * step + options.pad)
        if e - s >= options.min_seconds:
            out.append((round(s, 3), round(e, 3)))
    return out


def _split(a: int, b: int, energy: np.ndarray, limit: int, out: list[tuple[int, int]]) -> None:
    """Cut frames [a, b) at the quietest frame of its middle half until every piece has <= limit frames."""
    if b - a <= limit:
        out.append((a, b))
        return
    lo, hi = a + (b - a) // 4, a + 3 * (b - a) // 4
    mid = lo + int(np.argmin(energy[lo:hi])) if hi > lo else (a + b) // 2
    _split(a, mid, energy, limit, out)
    _split(mid, b, energy, limit, out)


def vad_segments(source: str | Path | np.ndarray, options: VadOptions | None = None) -> list[tuple[float, float]]:
    """Speech segments (start, end) seconds of an audio file (read in blocks) or a 16 kHz float wave."""
    options = options or VadOptions()
    frame = SAMPLE_RATE * options.frame_ms // 1000
    if isinstance(source, np.ndarray):
        frames = (source[i : i + frame] for i in range(0, len(source) - frame + 1, frame))
    else:
        frames = _frames_of_file(source, frame)
    return segments_from_flags(*speech_flags(frames, options), options)


# ---------------------------------------------------------------------------------------------- subtitles


def write_subtitles(path: str | Path, segments: list[tuple[float, float]], texts: list[str], fmt: str) -> None:
    """SRT (`srt`), WebVTT (`webvtt-py`) or plain text, one cue per segment with its times."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    cues = [(s, e, t.strip()) for (s, e), t in zip(segments, texts) if t.strip()]
    path = Path(path)
    if fmt == "srt":
        import srt

        subs = [
            srt.Subtitle(index=i + 1, start=timedelta(seconds=s), end=timedelta(seconds=e), content=t)
            for i, (s, e, t) in enumerate(cues)
        ]
        path.write_text(srt.compose(subs), encoding="utf-8")
    elif fmt == "vtt":
        import webvtt

        vtt = webvtt.WebVTT()
        for s, e, t in cues:
            vtt.captions.append(webvtt.Caption(_vtt_time(s), _vtt_time(e), t))
        vtt.save(str(path))
    else:
        path.write_text("".join(f"{s:.2f}\t{e:.2f}\t{t}\n" for s, e, t in cues), encoding="utf-8")


def _vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


# ---------------------------------------------------------------------------------------------- translation


def segment_rows(
    audio: str | Path, segments: list[tuple[float, float]], src_lang: str, tgt_lang: str, talk: str | None = None
) -> list[dict[str, str]]:
    """Manifest rows, one `path:offset:frames` slice per segment (the dataset reads only that slice)."""
    info = sf.info(str(audio))
    total = int(info.frames * SAMPLE_RATE / info.samplerate)
    rows = []
    for i, (s, e) in enumerate(segments):
        offset = int(s * SAMPLE_RATE)
        frames = min(int(e * SAMPLE_RATE), total) - offset
        rows.append(
            {
                "id": f"{talk or Path(audio).stem}_seg{i}",
                "audio": f"{Path(audio).resolve()}:{offset}:{frames}",
                "n_frames": str(frames),
                "tgt_text": "",
                "speaker": "",
                "src_text": "",
                "src_lang": src_lang,
                "tgt_lang": tgt_lang,
            }
        )
    return rows


@torch.no_grad()
def translate_rows(
    model, vocab, config: dict, rows: list[dict[str, str]], task: str, options, device: str = "cpu"
) -> list[str]:
    """The main output text of every row (empty where the row could not be decoded), in row order."""
    from speechxl.data.batching import length_batches
    from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
    from speechxl.inference.decode import decode_batch
    from speechxl.tasks import get_task

    spec = get_task(task)
    data = config.get("data", {})
    from_data = getattr(FeatureConfig, "from_data", None)
    features = from_data(data) if from_data else FeatureConfig(features=data.get("features", "fbank"))
    dataset = SpeechTextDataset(
        rows,
        task,
        vocab,
        manifest="<segments>",
        features=features,
        prepend_lang_tag=data.get("prepend_lang_tag", True),
        decoding=True,
    )
    texts = [""] * len(rows)
    if len(dataset) == 0:
        return texts
    budget = max(
        options.max_tokens or (3_200_000 if features.features == "wave" else 50_000), int(dataset.sizes.max(initial=1))
    )
    for indices in length_batches(dataset.sizes, budget, options.max_sentences):
        batch = dataset.collate([dataset[i] for i in indices])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        for i, out in zip(indices, decode_batch(model, batch, vocab, spec, options)):
            texts[dataset.row_index[i]] = out.get(spec.output, "")
    return texts


def translate_long(
    checkpoint: str | Path,
    audio: list[str],
    out: str | Path,
    *,
    fmt: str = "srt",
    task: str = "st",
    options=None,
    vad: VadOptions | None = None,
    device: str = "cpu",
    src_lang: str | None = None,
    tgt_lang: str | None = None,
) -> dict:
    """`speechxl translate --audio long.wav --segment vad`: VAD segments -> translations -> OUT/<stem>.<fmt>
    (subtitles with the segments' times) and OUT/segments.json."""
    from speechxl.inference.decode import DecodeOptions
    from speechxl.models import load_model

    options, vad = options or DecodeOptions(), vad or VadOptions()
    model, vocab, config = load_model(checkpoint, device=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = config.get("data", {})  # languages: the flags, else the model's config, else en -> de
    src_lang, tgt_lang = src_lang or data.get("src_lang") or "en", tgt_lang or data.get("tgt_lang") or "de"
    report = {"checkpoint": str(checkpoint), "format": fmt, "vad": vad.__dict__, "files": []}
    for path in audio:
        segments = vad_segments(path, vad)
        texts = translate_rows(
            model, vocab, config, segment_rows(path, segments, src_lang, tgt_lang), task, options, device
        )
        target = out / f"{Path(path).stem}.{fmt}"
        write_subtitles(target, segments, texts, fmt)
        report["files"].append(
            {
                "audio": str(path),
                "subtitles": str(target),
                "segments": [{"start": s, "end": e, "text": t} for (s, e), t in zip(segments, texts)],
            }
        )
    (out / "segments.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


# ---------------------------------------------------------------------------------------------- talks (IWSLT)


def talks_of_manifest(manifest: str | Path) -> dict[str, list[dict[str, str]]]:
    """Talk wav -> its manifest rows in time order (MuST-C layout: rows are `talk.wav:offset:frames` slices)."""
    from speechxl.data.manifest import read_manifest
    from speechxl.errors import DataError

    talks: dict[str, list[dict[str, str]]] = defaultdict(list)
    for line, row in enumerate(read_manifest(manifest), start=2):
        match = re.fullmatch(r"(.*):(\d+):(\d+)", row["audio"])
        if not match:
            raise DataError(manifest, f"audio {row['audio']!r} is not a talk slice path:offset:frames", line)
        talk = resolve_path(match.group(1), Path(manifest).parent)  # relative to the manifest, as load_audio reads
        if not Path(talk).is_file():
            raise DataError(manifest, f"no such talk audio file {talk}", line)
        audio = f"{talk}:{match.group(2)}:{match.group(3)}"
        talks[talk].append({**row, "audio": audio, "_offset": int(match.group(2))})
    return {talk: sorted(rows, key=lambda r: r["_offset"]) for talk, rows in talks.items()}


def resegment(references: list[str], hypothesis: str) -> list[str]:
    """The talk's hypothesis cut into one piece per reference segment by minimum WER alignment (mweralign)."""
    import contextlib
    import io
    import os

    from mweralign import align_texts

    # mweralign's C++ core prints its progress and mWER on the process's stdout/stderr: silence them
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(io.StringIO()):
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            aligned = align_texts("\n".join(references), hypothesis)
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    pieces = [piece.strip() for piece in aligned.split("\n")]
    pieces = (pieces + [""] * len(references))[: len(references)]
    return pieces


def score_talks(
    checkpoint: str | Path,
    manifest: str | Path,
    out: str | Path,
    *,
    options=None,
    vad: VadOptions | None = None,
    device: str = "cpu",
    task: str = "st",
) -> dict:
    """IWSLT long-form scoring: translate each whole talk (VAD segments), re-segment the hypotheses to the
    reference segments with mweralign, sacreBLEU; beside it the same model on the gold segments."""
    from speechxl.eval.bleu import bleu
    from speechxl.inference.decode import DecodeOptions
    from speechxl.models import load_model

    options, vad = options or DecodeOptions(), vad or VadOptions()
    model, vocab, config = load_model(checkpoint, device=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    talks = talks_of_manifest(manifest)
    refs, hyps_vad, hyps_gold, n_segments, by_talk = [], [], [], 0, {}
    for talk, rows in talks.items():
        langs = (rows[0].get("src_lang") or "en", rows[0].get("tgt_lang") or "de")
        segments = vad_segments(talk, vad)
        n_segments += len(segments)
        texts = translate_rows(model, vocab, config, segment_rows(talk, segments, *langs), task, options, device)
        by_talk[talk] = [{"start": s, "end": e, "text": t} for (s, e), t in zip(segments, texts)]
        references = [row["tgt_text"] for row in rows]
        refs += references
        hyps_vad += resegment(references, " ".join(t for t in texts if t.strip()))
        gold_rows = [{k: v for k, v in row.items() if k != "_offset"} for row in rows]
        hyps_gold += translate_rows(model, vocab, config, gold_rows, task, options, device)
    for name, lines in (("ref.txt", refs), ("hyp.vad_mweralign.txt", hyps_vad), ("hyp.gold.txt", hyps_gold)):
        (out / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    # the VAD segments of each talk and their translations, before re-segmentation
    (out / "vad_segments.json").write_text(json.dumps(by_talk, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    vad_score, gold_score = bleu(hyps_vad, refs), bleu(hyps_gold, refs)
    result = {
        "checkpoint": str(checkpoint),
        "manifest": str(manifest),
        "talks": len(talks),
        "reference_segments": len(refs),
        "vad_segments": n_segments,
        "beam": options.beam,
        "vad_mweralign": vad_score,
        "gold_segments": gold_score,
        "segmentation_cost_bleu": round(gold_score["bleu"] - vad_score["bleu"], 2),
    }
    (out / "score.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
