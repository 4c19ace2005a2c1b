"""SynthST: grammar sentences spoken by espeak-ng, written in the on-disk layout of MuST-C or CoVoST 2.

The parent process plans everything (sentences, voices, speed, pitch, silences, noise seeds) from RNGs seeded
per (seed, layout, language, split), so the bytes on disk do not depend on --jobs or on which worker ran what;
workers only render a planned talk or clip and write it. Each split draws from its own RNG, so changing
--test does not change the training audio.

Layouts (the real ones, so `speechxl prep` reads SynthST with the same code as the real corpora):
  mustc    DIR/en-XX/data/{train,dev,tst-COMMON}/wav/ted_N.wav   talks, 16 kHz mono PCM16
           DIR/en-XX/data/<split>/txt/<split>.{yaml,en,XX}       segments (flow-style YAML), aligned text
  covost2  DIR/<src>/clips/common_voice_<src>_N.mp3 (48 kHz mono), DIR/<src>/validated.tsv,
           DIR/<src>/covost_v2.<src>_<tgt>.tsv                   en->each language; de->en when de is asked
  both     DIR/ext_mt/train.{en,XX} (text only), DIR/synth_info.json (provenance)
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from speechxl.data.manifest import SAMPLE_RATE
from speechxl.errors import DataError
from speechxl.synth.espeak import get_espeak
from speechxl.synth.grammar import Sentence, sample_splits

LANGS = ("de", "fr", "es")
SPLITS = ("train", "dev", "test")
MUSTC_SPLITS = {"train": "train", "dev": "dev", "test": "tst-COMMON"}
MP3_RATE = 48000  # Common Voice clips


@dataclass(frozen=True)
class VoicePool:
    """Voices heard in train and dev, and the held-out voice that speaks the test split."""

    seen: tuple[str, ...]
    held_out: str


# espeak-ng "<accent>+<variant>" names; the variants live in espeak-ng-data/voices/!v. The held-out voice has
# an accent and a variant that training never uses, like a new speaker in a real test set.
VOICES = {
    "en": VoicePool(
        seen=tuple(
            f"{accent}+{variant}"
            for accent in ("en-us", "en", "en-gb-scotland")
            for variant in ("m1", "m3", "f2", "f4")
        ),
        held_out="en-gb-x-rp+f5",
    ),
    "de": VoicePool(seen=tuple(f"de+{variant}" for variant in ("m1", "m3", "m4", "f1", "f2", "f4")), held_out="de+m6"),
}
RATE_WPM = (140, 210)  # espeak default 175
PITCH = (30, 70)  # espeak default 50 (0-100)
PITCH_RANGE = (30, 70)
TALK_UTTERANCES = (4, 10)  # MuST-C: several segments per talk
GAP_SECONDS = (0.3, 1.0)  # silence around and between the segments of a talk
CLIP_PAD_SECONDS = (0.1, 0.5)  # silence before and after a Common Voice clip
# Common Voice metadata derived from the voice, so a voice looks like one speaker (one client_id).
ACCENTS = {"en-us": "us", "en": "england", "en-gb-scotland": "scotland", "en-gb-x-rp": "england", "de": "germany"}
VALIDATED_COLUMNS = [
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accent",
    "locale",
    "segment",
]
COVOST_COLUMNS = ["path", "sentence", "translation", "client_id", "split"]


@dataclass(frozen=True)
class Utterance:
    """Everything espeak needs to speak one sentence; rendering depends on nothing else."""

    text: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    noise_seed: int


@dataclass(frozen=True)
class TalkJob:
    """A MuST-C talk: utterances separated by silences (`gaps` has one more entry than `utterances`)."""

    path: str
    utterances: tuple[Utterance, ...]
    gaps: tuple[int, ...]


@dataclass(frozen=True)
class ClipJob:
    """A Common Voice clip: one utterance with silence before and after (16 kHz samples)."""

    path: str
    utterance: Utterance
    lead: int
    trail: int


def synthesize(
    out: str | os.PathLike,
    layout: str,
    langs: Sequence[str],
    n_train: int,
    n_dev: int,
    n_test: int,
    n_ext_mt: int = 0,
    seed: int = 1,
    jobs: int = 0,
) -> dict:
    """Generate SynthST under `out` (which must be empty or absent) and return what `synth_info.json` holds."""
    langs = _check_args(out, layout, langs, (n_train, n_dev, n_test, n_ext_mt))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    # ext_mt last: a grammar that draws splits in order then gives the same spoken sentences with or without it.
    sentences = sample_splits(seed, {**sizes, "ext_mt": n_ext_mt} if n_ext_mt else sizes)
    jobs = jobs or _cores()
    started = time.perf_counter()
    if layout == "mustc":
        info = _write_mustc(out, langs, sentences, seed, jobs)
    else:
        info = _write_covost2(out, langs, sentences, seed, jobs)
    if n_ext_mt:
        _write_ext_mt(out / "ext_mt", langs, sentences["ext_mt"])
    info = {
        "seed": seed,
        "layout": layout,
        "langs": list(langs),
        "counts": sizes,
        "ext_mt": n_ext_mt,
        **info,
        "voice_pools": {lang: {"seen": list(p.seen), "held_out": p.held_out} for lang, p in VOICES.items()},
        "synthesizer": "espeak-ng (espeakng-loader)",
    }
    (out / "synth_info.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(_summary(info, out, time.perf_counter() - started))
    return info


def _check_args(out: str | os.PathLike, layout: str, langs: Sequence[str], counts: Sequence[int]) -> list[str]:
    if layout not in ("mustc", "covost2"):
        raise ValueError(f"unknown layout {layout!r}: use mustc or covost2")
    langs = [lang.strip() for lang in langs if lang.strip()]
    unknown = sorted(set(langs) - set(LANGS))
    if not langs or unknown or len(set(langs)) != len(langs):
        raise ValueError(f"--langs must name distinct languages among {','.join(LANGS)} (got {','.join(langs)})")
    if min(counts) < 0:
        raise ValueError("utterance counts must not be negative")
    # Refuse to mix with existing files: a stale talk or clip from an earlier run would silently join the corpus.
    if Path(out).exists() and any(Path(out).iterdir()):
        raise FileExistsError(f"{out} is not empty: synth writes a fresh corpus into an empty directory")
    return langs


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _rng(seed: int, *parts: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`: stable across runs and Python processes.
    return random.Random(":".join(["synthst", str(seed), *parts]))


def _plan_utterance(rng: random.Random, text: str, voice: str) -> Utterance:
    return Utterance(
        text=text,
        voice=voice,
        rate=rng.randint(*RATE_WPM),
        pitch=rng.randint(*PITCH),
        pitch_range=rng.randint(*PITCH_RANGE),
        noise_seed=rng.randrange(1, 2**31),
    )


def _voice_cycle(rng: random.Random, lang: str, split: str) -> Callable[[int], str]:
    """Voice of the i-th talk or clip: the held-out voice for test, otherwise a shuffled round robin (so even
    a tiny split hears as many different voices as it can)."""
    pool = VOICES[lang]
    if split == "test":
        return lambda i: pool.held_out
    order = list(pool.seen)
    rng.shuffle(order)
    return lambda i: order[i % len(order)]


def _seconds(rng: random.Random, bounds: tuple[float, float]) -> int:
    return round(rng.uniform(*bounds) * SAMPLE_RATE)


def _speak(utterance: Utterance) -> np.ndarray:
    """int16 samples at 16 kHz."""
    engine = get_espeak()
    wave = engine.synthesize(
        utterance.text,
        utterance.voice,
        rate=utterance.rate,
        pitch=utterance.pitch,
        pitch_range=utterance.pitch_range,
        seed=utterance.noise_seed,
    )
    return soxr.resample(wave, engine.sample_rate, SAMPLE_RATE)


def _render_talk(job: TalkJob) -> list[tuple[int, int]]:
    """Write the talk wav; return (offset, length) of each segment in 16 kHz samples."""
    pieces, segments, position = [], [], 0
    for gap, utterance in zip(job.gaps, job.utterances):
        speech = _speak(utterance)
        pieces += [np.zeros(gap, dtype=np.int16), speech]
        segments.append((position + gap, len(speech)))
        position += gap + len(speech)
    pieces.append(np.zeros(job.gaps[-1], dtype=np.int16))
    sf.write(job.path, np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return segments


def _render_clip(job: ClipJob) -> int:
    """Write the 48 kHz mp3 clip; return the speech length in 16 kHz samples."""
    speech = _speak(job.utterance)
    wave = np.concatenate([np.zeros(job.lead, np.int16), speech, np.zeros(job.trail, np.int16)])
    sf.write(job.path, soxr.resample(wave, SAMPLE_RATE, MP3_RATE), MP3_RATE, format="MP3", subtype="MPEG_LAYER_III")
    return len(speech)


def _run(render: Callable, jobs_list: list, sizes: list[int], jobs: int, desc: str) -> list:
    """Render every job (in a pool when jobs > 1); results in job order, with a progress bar over utterances."""
    results = []
    with tqdm(total=sum(sizes), desc=desc, unit="utt") as bar:
        if jobs <= 1:
            for job, size in zip(jobs_list, sizes):
                results.append(render(job))
                bar.update(size)
        else:
            with multiprocessing.Pool(jobs) as pool:
                for result, size in zip(pool.imap(render, jobs_list), sizes):
                    results.append(result)
                    bar.update(size)
    return results


def _write_mustc(out: Path, langs: list[str], sentences: dict[str, list[Sentence]], seed: int, jobs: int) -> dict:
    """English talks, spoken once into en-<first lang>/ and hard-linked into the other en-XX/ trees."""
    plans: dict[str, list[tuple[TalkJob, list[Sentence], str]]] = {}
    talk_number = 0
    for split in SPLITS:
        name = MUSTC_SPLITS[split]
        rng = _rng(seed, "mustc", "en", split)
        voice_of = _voice_cycle(rng, "en", split)
        for lang in langs:
            (out / f"en-{lang}" / "data" / name / "wav").mkdir(parents=True, exist_ok=True)
            (out / f"en-{lang}" / "data" / name / "txt").mkdir(parents=True, exist_ok=True)
        plans[split] = []
        todo = sentences[split]
        while todo:
            count = min(rng.randint(*TALK_UTTERANCES), len(todo))
            talk, todo = todo[:count], todo[count:]
            voice = voice_of(len(plans[split]))
            talk_number += 1
            utterances = tuple(_plan_utterance(rng, s.en, voice) for s in talk)
            gaps = tuple(_seconds(rng, GAP_SECONDS) for _ in range(count + 1))
            path = out / f"en-{langs[0]}" / "data" / name / "wav" / f"ted_{talk_number}.wav"
            plans[split].append((TalkJob(str(path), utterances, gaps), talk, f"spk.{talk_number}"))

    all_jobs = [job for split in SPLITS for job, _, _ in plans[split]]
    segments = iter(_run(_render_talk, all_jobs, [len(j.utterances) for j in all_jobs], jobs, "synth mustc"))
    voices, seconds = {}, 0.0
    for split in SPLITS:
        name = MUSTC_SPLITS[split]
        yaml_lines, texts = [], []
        for job, talk, speaker in plans[split]:
            wav = Path(job.path).name
            for lang in langs[1:]:
                _hard_link(Path(job.path), out / f"en-{lang}" / "data" / name / "wav" / wav)
            for (offset, length), sentence in zip(next(segments), talk):
                yaml_lines.append(
                    f"- {{duration: {length / SAMPLE_RATE:.6f}, offset: {offset / SAMPLE_RATE:.6f}, "
                    f"speaker_id: {speaker}, wav: {wav}}}\n"
                )
                texts.append(sentence)
                seconds += length / SAMPLE_RATE
        voices[name] = sorted({job.utterances[0].voice for job, _, _ in plans[split]})
        for lang in langs:
            txt = out / f"en-{lang}" / "data" / name / "txt"
            (txt / f"{name}.yaml").write_text("".join(yaml_lines), encoding="utf-8")
            _write_lines(txt / f"{name}.en", (s.en for s in texts))
            _write_lines(txt / f"{name}.{lang}", (s.text(lang) for s in texts))
    return {
        "splits": MUSTC_SPLITS,
        "directions": [f"en-{lang}" for lang in langs],
        "utterances": sum(len(sentences[s]) for s in SPLITS),
        "voices": {"en": voices},
        "hours": {"en": round(seconds / 3600, 4)},
    }


def _write_covost2(out: Path, langs: list[str], sentences: dict[str, list[Sentence]], seed: int, jobs: int) -> dict:
    """A Common Voice root per speech language: English speech for en->X, German speech for de->en."""
    directions = [("en", lang) for lang in langs] + ([("de", "en")] if "de" in langs else [])
    sources = list(dict.fromkeys(src for src, _ in directions))
    plans: list[tuple[str, str, ClipJob, Sentence]] = []
    for src in sources:
        (out / src / "clips").mkdir(parents=True, exist_ok=True)
        clip_number = 0
        for split in SPLITS:
            rng = _rng(seed, "covost2", src, split)
            voice_of = _voice_cycle(rng, src, split)
            for i, sentence in enumerate(sentences[split]):
                clip_number += 1
                path = out / src / "clips" / f"common_voice_{src}_{clip_number}.mp3"
                job = ClipJob(
                    str(path),
                    _plan_utterance(rng, sentence.text(src), voice_of(i)),
                    _seconds(rng, CLIP_PAD_SECONDS),
                    _seconds(rng, CLIP_PAD_SECONDS),
                )
                plans.append((src, split, job, sentence))

    lengths = _run(_render_clip, [job for _, _, job, _ in plans], [1] * len(plans), jobs, "synth covost2")
    voices: dict[str, dict[str, list[str]]] = {src: {} for src in sources}
    seconds = dict.fromkeys(sources, 0.0)
    for src in sources:
        mine = [(split, job, s) for (source, split, job, s) in plans if source == src]
        for split in SPLITS:
            voices[src][split] = sorted({job.utterance.voice for sp, job, _ in mine if sp == split})
        _write_tsv(
            out / src / "validated.tsv",
            VALIDATED_COLUMNS,
            (
                [
                    _client_id(job.utterance.voice),
                    Path(job.path).name,
                    s.text(src),
                    "2",
                    "0",
                    "",
                    _gender(job.utterance.voice),
                    ACCENTS.get(job.utterance.voice.split("+")[0], ""),
                    src,
                    "",
                ]
                for _, job, s in mine
            ),
        )
        for tgt in (t for s, t in directions if s == src):
            _write_tsv(
                out / src / f"covost_v2.{src}_{tgt}.tsv",
                COVOST_COLUMNS,
                (
                    [Path(job.path).name, s.text(src), s.text(tgt), _client_id(job.utterance.voice), split]
                    for split, job, s in mine
                ),
            )
    for (src, _, _, _), length in zip(plans, lengths):
        seconds[src] += length / SAMPLE_RATE
    return {
        "splits": {split: split for split in SPLITS},
        "directions": [f"{s}-{t}" for s, t in directions],
        "utterances": len(plans),
        "voices": voices,
        "hours": {src: round(s / 3600, 4) for src, s in seconds.items()},
    }


def _client_id(voice: str) -> str:
    # Common Voice client ids are 128 hex digits (SHA-512); one per voice makes each voice one speaker.
    return hashlib.sha512(voice.encode()).hexdigest()


def _gender(voice: str) -> str:
    variant = voice.partition("+")[2]
    return {"m": "male", "f": "female"}.get(variant[:1], "")


def _hard_link(src: Path, dst: Path) -> None:
    """The same English audio serves every target language: link instead of storing it again."""
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        dst.write_bytes(src.read_bytes())


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(lines, start=1):
            f.write(_one_line(line, path, number) + "\n")


def _write_tsv(path: Path, header: list[str], rows: Iterable[list[str]]) -> None:
    # Common Voice / CoVoST TSVs are read with quoting off and "\\" as escape (fairseq's reader): fields are
    # written raw, so a backslash could not round-trip either.
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for number, row in enumerate(rows, start=2):
            f.write("\t".join(_one_line(field, path, number, forbidden="\t\n\r\\") for field in row) + "\n")


def _one_line(text: str, path: Path, line: int, forbidden: str = "\n\r") -> str:
    if any(c in text for c in forbidden):
        raise DataError(
            path,
            f"generated text {text!r} contains a character the file cannot hold "
            f"({', '.join(repr(c) for c in forbidden if c in text)})",
            line,
        )
    return text


def _write_ext_mt(directory: Path, langs: list[str], sentences: list[Sentence]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for lang in ["en", *langs]:
        _write_lines(directory / f"train.{lang}", (s.text(lang) for s in sentences))


def _summary(info: dict, out: Path, wall: float) -> str:
    n = info["utterances"]
    lines = [f"SynthST ({info['layout']}, seed {info['seed']}) -> {out}: {', '.join(info['directions'])}"]
    for split, name in info["splits"].items():
        lines.append(f"  {name:<11} {info['counts'][split]:>7} sentences")
    for lang, per_split in info["voices"].items():
        for name, voices in per_split.items():
            lines.append(f"  voices {lang} {name:<11} {' '.join(voices)}")
    hours = ", ".join(f"{lang} {h:.3f} h" for lang, h in info["hours"].items())
    lines.append(f"  audio: {n} utterances synthesised ({hours}) in {wall:.1f} s, {n / max(wall, 1e-9):.0f} utt/s")
    if info["ext_mt"]:
        lines.append(f"  ext_mt: {info['ext_mt']} text-only pairs in {out / 'ext_mt'}")
    return "\n".join(lines)
