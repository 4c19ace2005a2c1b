"""SynthST generation: espeak-ng speech, the MuST-C and CoVoST 2 layouts, held-out voice, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from speechxl.cli import main
from speechxl.synth.espeak import get_espeak
from speechxl.synth.grammar import sample_splits
from speechxl.synth.synth import VALIDATED_COLUMNS, VOICES, synthesize

MUSTC_SPLITS = {"train": "train", "dev": "dev", "test": "tst-COMMON"}


def _info(root: Path) -> dict:
    return json.loads((root / "synth_info.json").read_text(encoding="utf-8"))


def _sentences(root: Path) -> dict:
    """The grammar's sentences for the run recorded in synth_info.json."""
    info = _info(root)
    sizes = dict(info["counts"])
    if info["ext_mt"]:
        sizes["ext_mt"] = info["ext_mt"]
    return sample_splits(info["seed"], sizes)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _tsv(path: Path) -> list[dict[str, str]]:
    header, *rows = [line.split("\t") for line in _lines(path)]
    assert all(len(row) == len(header) for row in rows)
    return [dict(zip(header, row)) for row in rows]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- espeak-ng ---------------------------------------------------------------------------------------------


def test_espeak_speaks_longer_text_for_longer_and_with_real_energy():
    engine = get_espeak()
    short = engine.synthesize("the cat sleeps .", "en-us+m1")
    long = engine.synthesize("the old cat sleeps on the red chair near the big window every day .", "en-us+m1")
    assert engine.sample_rate == 22050
    assert short.dtype == np.int16
    assert len(long) > 2 * len(short)
    assert _rms(long.astype(np.float32) / 32768) > 0.02
    # Speech alternates loud and quiet stretches (syllables, pauses); a tone or noise would not.
    frames = long[: len(long) // 441 * 441].reshape(-1, 441).astype(np.float64)
    energy = np.sqrt((frames**2).mean(axis=1))
    assert energy.max() > 10 * np.percentile(energy, 10)


def test_espeak_output_depends_only_on_its_arguments():
    engine = get_espeak()
    text = "three small dogs see the green house ."
    first = engine.synthesize(text, "en+f2", rate=160, pitch=40, seed=5)
    engine.synthesize("ganz andere Wörter hier .", "de+m3", rate=200, pitch=70, seed=9)
    again = engine.synthesize(text, "en+f2", rate=160, pitch=40, seed=5)
    np.testing.assert_array_equal(first, again)
    faster = engine.synthesize(text, "en+f2", rate=210, pitch=40, seed=5)
    assert len(faster) < len(first)


def test_espeak_unknown_voice_raises():
    with pytest.raises(RuntimeError, match="no voice"):
        get_espeak().synthesize("hello", "xx-nowhere+m1")


# --- MuST-C layout -----------------------------------------------------------------------------------------


def test_mustc_layout_segments_text_and_audio(synth_mustc):
    sentences = _sentences(synth_mustc)
    for split, name in MUSTC_SPLITS.items():
        txt = synth_mustc / "en-de" / "data" / name / "txt"
        segments = yaml.safe_load((txt / f"{name}.yaml").read_text(encoding="utf-8"))
        en, de = _lines(txt / f"{name}.en"), _lines(txt / f"{name}.de")
        assert len(segments) == len(en) == len(de) == len(sentences[split])
        assert en == [s.en for s in sentences[split]] and de == [s.de for s in sentences[split]]
        talks: dict[str, list[dict]] = {}
        for seg in segments:
            assert set(seg) == {"duration", "offset", "speaker_id", "wav"}
            talks.setdefault(seg["wav"], []).append(seg)
        assert len(talks) >= 1
        for wav, segs in talks.items():
            assert 1 <= len(segs) <= 10
            audio, rate = sf.read(synth_mustc / "en-de" / "data" / name / "wav" / wav, dtype="float32")
            info = sf.info(synth_mustc / "en-de" / "data" / name / "wav" / wav)
            assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            end = 0
            for seg in segs:
                start, stop = round(seg["offset"] * rate), round((seg["offset"] + seg["duration"]) * rate)
                assert end + 0.3 * rate <= start + 1 and stop <= len(audio)  # in order, silence between
                assert _rms(audio[start:stop]) > 0.02  # each segment holds speech
                assert _rms(audio[end:start]) == 0.0  # and the gap before it is silence
                end = stop
            assert len(audio) - end >= 0.3 * rate - 1


def test_mustc_hard_links_audio_for_every_target(tmp_path):
    info = synthesize(tmp_path, "mustc", ["fr", "es"], 5, 1, 1, seed=4, jobs=1)
    assert info["directions"] == ["en-fr", "en-es"]
    sentences = _sentences(tmp_path)
    for name in MUSTC_SPLITS.values():
        for wav in (tmp_path / "en-fr" / "data" / name / "wav").iterdir():
            twin = tmp_path / "en-es" / "data" / name / "wav" / wav.name
            assert twin.stat().st_ino == wav.stat().st_ino
    assert _lines(tmp_path / "en-es" / "data" / "train" / "txt" / "train.es") == [s.es for s in sentences["train"]]
    assert not (tmp_path / "en-de").exists()


# --- CoVoST 2 layout ---------------------------------------------------------------------------------------


def test_covost2_layout_clips_and_tsvs(synth_covost2):
    sentences = _sentences(synth_covost2)
    for src, tgt in (("en", "de"), ("de", "en")):
        root = synth_covost2 / src
        assert _lines(root / "validated.tsv")[0].split("\t") == VALIDATED_COLUMNS
        validated = {row["path"]: row for row in _tsv(root / "validated.tsv")}
        rows = _tsv(root / f"covost_v2.{src}_{tgt}.tsv")
        assert list(rows[0]) == ["path", "sentence", "translation", "client_id", "split"]
        for split in ("train", "dev", "test"):
            mine = [row for row in rows if row["split"] == split]
            assert [r["sentence"] for r in mine] == [s.text(src) for s in sentences[split]]
            assert [r["translation"] for r in mine] == [s.text(tgt) for s in sentences[split]]
        for row in rows:
            assert validated[row["path"]]["sentence"] == row["sentence"]
            assert validated[row["path"]]["locale"] == src
            assert (root / "clips" / row["path"]).is_file()
        clip = root / "clips" / rows[0]["path"]
        info = sf.info(clip)
        assert (info.samplerate, info.channels, info.format) == (48000, 1, "MP3")
        assert _rms(sf.read(clip, dtype="float32")[0]) > 0.01


def test_covost2_de_root_has_german_speech(synth_covost2):
    info = _info(synth_covost2)
    assert "de-en" in info["directions"]
    for voices in info["voices"]["de"].values():
        assert voices and all(v.split("+")[0] == "de" for v in voices)
    german_ids = {hashlib.sha512(v.encode()).hexdigest() for v in (*VOICES["de"].seen, VOICES["de"].held_out)}
    rows = _tsv(synth_covost2 / "de" / "validated.tsv")
    assert {row["client_id"] for row in rows} <= german_ids
    sentences = _sentences(synth_covost2)
    assert rows[0]["sentence"] == sentences["train"][0].de
    durations = []
    for row in rows[:6]:
        audio, rate = sf.read(synth_covost2 / "de" / "clips" / row["path"], dtype="float32")
        assert rate == 48000 and _rms(audio) > 0.01
        durations.append(len(audio) / rate)
    assert min(durations) > 0.5


# --- held-out voice, external MT, determinism, CLI ---------------------------------------------------------


def test_test_split_voice_is_never_heard_in_train_or_dev(synth_mustc, synth_covost2):
    for root in (synth_mustc, synth_covost2):
        info = _info(root)
        names = info["splits"]
        for _lang, per_split in info["voices"].items():
            heard = set(per_split[names["train"]]) | set(per_split[names["dev"]])
            assert per_split[names["test"]] and not set(per_split[names["test"]]) & heard
            assert len(set(per_split[names["train"]])) >= 3
    # The corpus itself agrees: test clips come from speakers (client ids) absent from train and dev.
    rows = _tsv(synth_covost2 / "en" / "covost_v2.en_de.tsv")
    test_speakers = {r["client_id"] for r in rows if r["split"] == "test"}
    assert test_speakers and not test_speakers & {r["client_id"] for r in rows if r["split"] != "test"}
    assert len(VOICES["en"].seen) >= 6 and len(VOICES["de"].seen) >= 6


def test_ext_mt_is_aligned_and_disjoint_from_spoken_text(synth_mustc):
    ext = synth_mustc / "ext_mt"
    en, de = _lines(ext / "train.en"), _lines(ext / "train.de")
    assert len(en) == len(de) == _info(synth_mustc)["ext_mt"] == 16
    assert [s.de for s in _sentences(synth_mustc)["ext_mt"]] == de
    spoken = set()
    for name in MUSTC_SPLITS.values():
        spoken |= set(_lines(synth_mustc / "en-de" / "data" / name / "txt" / f"{name}.en"))
    assert spoken and not spoken & set(en)


@pytest.mark.parametrize(
    "layout, sizes",
    [
        ("mustc", dict(n_train=6, n_dev=2, n_test=2, n_ext_mt=3)),
        ("covost2", dict(n_train=2, n_dev=1, n_test=1, n_ext_mt=3)),  # mp3 encoding is the slow part: fewer clips
    ],
)
def test_same_seed_same_bytes_whatever_the_job_count(tmp_path, layout, sizes):
    synthesize(tmp_path / "a", layout, ["de"], seed=5, jobs=1, **sizes)
    synthesize(tmp_path / "b", layout, ["de"], seed=5, jobs=2, **sizes)
    synthesize(tmp_path / "c", layout, ["de"], seed=6, jobs=1, **sizes)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(a) > 5 and a == b
    audio = [name for name in a if name.endswith((".wav", ".mp3"))]
    assert audio and all(a[name] != c.get(name) for name in audio)


def test_cli_writes_corpus_and_refuses_bad_flags(tmp_path, capsys):
    out = tmp_path / "corpus"
    main(
        [
            "synth",
            "--out",
            str(out),
            "--layout",
            "mustc",
            "--langs",
            "es",
            "--train",
            "3",
            "--dev",
            "1",
            "--test",
            "1",
            "--seed",
            "2",
            "--jobs",
            "1",
        ]
    )
    assert "utt/s" in capsys.readouterr().out
    assert _info(out)["counts"] == {"train": 3, "dev": 1, "test": 1}
    assert (out / "en-es" / "data" / "tst-COMMON" / "txt" / "tst-COMMON.es").is_file()
    with pytest.raises(SystemExit, match="not empty"):
        main(["synth", "--out", str(out), "--train", "1"])
    with pytest.raises(SystemExit, match="de,fr,es"):
        main(["synth", "--out", str(tmp_path / "other"), "--langs", "de,it", "--train", "1"])
