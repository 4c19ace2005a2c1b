"""Streaming: policies (wait-k, LA-n, AlignAtt) against hand computations with the model's teacher-forced
decoder, cross-attention weights, the chunk-causal encoder, the SimulEval agent, VAD, subtitles, `speechxl stream`."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_run import make_corpus, tiny_config

from speechxl.cli import main
from speechxl.config import config_from_dict
from speechxl.data.audio import load_audio
from speechxl.data.manifest import read_manifest
from speechxl.inference.longform import VadOptions, resegment, vad_segments, write_subtitles
from speechxl.inference.streaming import (
    PolicyOptions,
    StreamingTranslator,
    chunks_of,
    longest_common_prefix,
    stream_wave,
)
from speechxl.models import load_model
from speechxl.modules.transformer import MultiheadAttention, TransformerEncoder
from speechxl.train.loop import train

CHUNK_MS = 60


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    corpus = make_corpus(root / "corpus")
    train(config_from_dict(tiny_config(corpus, root / "run", max_update=40, lr=5e-3, validate_every=0, save_every=0)))
    model, vocab, config = load_model(root / "run" / "checkpoints" / "last")
    # a 40-update model says nothing for some inputs: tests that need output stream one it speaks on
    translator = StreamingTranslator(model, vocab, config["data"], PolicyOptions(policy="waitk", k=2, max_len_b=8))
    for i in range(16):
        wave = load_audio(str(corpus / "wav" / f"train{i}.wav"))
        if "".join(commit.text for commit in stream_wave(translator, wave, CHUNK_MS)).strip():
            sf.write(corpus / "wav" / "speaking.wav", wave, 16000, subtype="FLOAT")
            break
    return corpus, root / "run" / "checkpoints" / "last", model, vocab, config


def _run(translator, wave):
    """Push `wave` chunk by chunk; the committed token list before and after each chunk."""
    translator.reset()
    pieces = chunks_of(wave, CHUNK_MS)
    states = []
    for i, piece in enumerate(pieces):
        before = list(translator.committed)
        commit = translator.push(piece, finished=i == len(pieces) - 1)
        states.append((len(translator.wave), before, list(translator.committed), commit))
    return states


def _teacher_forced(translator, n_samples, tokens, attention=False):
    """Log-probs (t, V) and optionally cross-attention (t, S) of the last decoder layer after each of
    [eos] + forced + tokens, with the audio prefix of `n_samples` samples: the independent reference."""
    model = translator.model
    batch = translator._batch(translator.features(translator.wave[:n_samples]))
    prev = torch.tensor([[model.eos] + translator._forced(batch) + tokens])
    layer = model.decoder.layers[-1]
    with torch.no_grad():
        enc = model.encode(batch)
        layer.keep_cross_attention = attention
        logits = model.decoder(prev, enc["memory"], enc["memory_padding_mask"])
        layer.keep_cross_attention = False
    lp = torch.log_softmax(logits[0], -1)
    lp[:, model.pad] = -float("inf")
    return lp, (layer.cross_attention[0] if attention else None), len(translator._forced(batch))


def _wave(corpus, name="speaking"):
    return load_audio(str(corpus / "wav" / f"{name}.wav"))


def test_cross_attention_weights_by_hand_and_output_unchanged():
    torch.manual_seed(0)
    attn = MultiheadAttention(8, 2).eval()
    x, mem = torch.randn(3, 2, 8), torch.randn(1, 5, 8)  # 3 beam rows of one utterance
    mask = torch.tensor([[True, True, True, True, False]])[:, None, None, :]
    keys, values = attn.keys_values(mem)
    w = attn.weights(x, keys, mask)
    q = attn.q_proj(x).view(3, 2, 2, 4).transpose(1, 2)
    k = attn.k_proj(mem).view(1, 5, 2, 4).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / 2.0
    scores[..., 4] = -float("inf")
    torch.testing.assert_close(w, scores.softmax(-1).mean(1))
    assert torch.all(w[..., 4] == 0)


def test_decoder_records_attention_without_changing_its_output(trained):
    *_, model, vocab, config = trained
    memory, tokens = torch.randn(1, 7, 16), torch.tensor([[model.eos, 5, 9]])
    with torch.no_grad():
        plain = model.decoder(tokens, memory, None)
        layer = model.decoder.layers[-1]
        layer.keep_cross_attention = True
        recorded = model.decoder(tokens, memory, None)
        layer.keep_cross_attention = False
    torch.testing.assert_close(plain, recorded)
    assert layer.cross_attention.shape == (1, 3, 7)
    torch.testing.assert_close(layer.cross_attention.sum(-1), torch.ones(1, 3))


def test_chunk_causal_encoder_padding_and_stable_past():
    torch.manual_seed(0)
    enc = TransformerEncoder(2, 8, 2, 16, dropout=0.0, chunk_frames=3).eval()
    x = torch.randn(2, 10, 8)
    lengths = torch.tensor([10, 7])
    padding = torch.arange(10)[None, :] >= lengths[:, None]
    with torch.no_grad():
        batched = enc(x, padding)
        for b, n in enumerate(lengths.tolist()):  # a padded batch equals each utterance alone
            torch.testing.assert_close(batched[b, :n], enc(x[b : b + 1, :n], None)[0], atol=1e-5, rtol=1e-5)
        # appending frames leaves the complete chunks (frames 0..5 of 7) unchanged, not the partial one
        short, longer = enc(x[:1, :7], None), enc(x[:1], None)
    torch.testing.assert_close(short[0, :6], longer[0, :6], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(short[0, 6], longer[0, 6], atol=1e-4)
    full = TransformerEncoder(2, 8, 2, 16, dropout=0.0).eval()
    full.load_state_dict(enc.state_dict())
    with torch.no_grad():  # without the mask the past does change
        assert not torch.allclose(full(x[:1, :7], None)[0, :6], full(x[:1], None)[0, :6], atol=1e-4)


@pytest.mark.parametrize("policy", ["waitk", "la", "alignatt"])
def test_committed_text_only_grows(trained, policy):
    corpus, _, model, vocab, config = trained
    translator = StreamingTranslator(
        model, vocab, config["data"], PolicyOptions(policy=policy, k=2, frames=1, max_len_b=12)
    )
    texts = [""]
    for _, before, after, commit in _run(translator, _wave(corpus)):  # noqa: B007 (commit read after)
        assert after[: len(before)] == before  # never retracted
        texts.append(texts[-1] + commit.text)
        assert vocab.decode(after) == texts[-1]  # the pieces printed so far are the committed text
    assert commit.finished and translator.text() == texts[-1]


def test_waitk_reads_k_minus_1_chunks_then_writes_one_greedy_token_per_chunk(trained):
    corpus, _, model, vocab, config = trained
    k = 3
    translator = StreamingTranslator(model, vocab, config["data"], PolicyOptions(policy="waitk", k=k, max_len_b=50))
    states = _run(translator, _wave(corpus))
    for i, (n, before, after, _) in enumerate(states[:-1], start=1):
        new = after[len(before) :]
        if i < k:
            assert new == []
            continue
        lp, _, _ = _teacher_forced(translator, n, before)
        best = int(lp[-1].argmax())
        # one token per chunk: the greedy one, unless greedy says </s> before the source ends (then wait)
        assert new == ([] if best == model.eos else [best]), (i, new, best)
    # the last chunk writes the rest greedily up to </s>
    n, before, after, _ = states[-1]
    lp, _, _ = _teacher_forced(translator, n, after)
    assert int(lp[-1].argmax()) == model.eos or len(after) >= 50 - 1  # the limit counts the language tag


def _greedy_hypothesis(translator, n, committed, max_new=11):  # max_len_b 12 minus the language tag
    tokens = list(committed)
    while len(tokens) < max_new:
        lp, _, _ = _teacher_forced(translator, n, tokens)
        best = int(lp[-1].argmax())
        if best == translator.model.eos:
            break
        tokens.append(best)
    return tokens


def test_la_n_commits_the_longest_common_prefix_of_the_last_n_hypotheses(trained):
    corpus, _, model, vocab, config = trained
    translator = StreamingTranslator(model, vocab, config["data"], PolicyOptions(policy="la", la_n=2, max_len_b=12))
    states = _run(translator, _wave(corpus))
    hyps = []
    for n, before, after, _ in states[:-1]:
        if n < 400:
            continue
        hyps.append(_greedy_hypothesis(translator, n, before))
        expected = before if len(hyps) < 2 else max(before, longest_common_prefix(hyps[-2:]), key=len)
        assert after == expected


def test_alignatt_waits_while_attention_is_on_the_last_frames(trained):
    corpus, _, model, vocab, config = trained
    wave = _wave(corpus)
    # f larger than the encoder: every candidate attends into the last f frames -> nothing before the end
    never = StreamingTranslator(
        model, vocab, config["data"], PolicyOptions(policy="alignatt", frames=10_000, max_len_b=12)
    )
    states = _run(never, wave)
    assert all(after == [] for _, _, after, _ in states[:-1]) and states[-1][2]
    # f = 0: no wait, the greedy continuation is committed up to </s>
    free = StreamingTranslator(model, vocab, config["data"], PolicyOptions(policy="alignatt", frames=0, max_len_b=12))
    for n, before, after, _ in _run(free, wave)[:-1]:
        if n >= 400:
            assert after == _greedy_hypothesis(free, n, before)
    # f = 1: each committed token attended before the last frame; the first held-back one attended into it
    f = 1
    some = StreamingTranslator(model, vocab, config["data"], PolicyOptions(policy="alignatt", frames=f, max_len_b=12))
    for n, before, after, _ in _run(some, wave)[:-1]:
        if n < 400:
            continue
        lp, attn, forced = _teacher_forced(some, n, after, attention=True)
        frames = attn.size(-1)
        steps = attn[forced + len(before) : forced + len(after)]  # rows that predicted the new tokens
        assert all(int(row.argmax()) < frames - f for row in steps)
        if len(after) < 11 and int(lp[-1].argmax()) != model.eos:
            assert int(attn[-1].argmax()) >= frames - f


@pytest.mark.skipif(
    importlib.util.find_spec("simuleval") is None, reason="simuleval is an optional extra (pip install '.[streaming]')"
)
def test_simuleval_agent_end_to_end(trained, synth_mustc, tmp_path):
    from speechxl.inference.simuleval_agent import non_ca_scores

    corpus, checkpoint, *_ = trained
    wavs = sorted((synth_mustc / "en-de" / "data" / "tst-COMMON" / "wav").glob("*.wav"))[:1]
    refs = (synth_mustc / "en-de" / "data" / "tst-COMMON" / "txt" / "tst-COMMON.de").read_text().splitlines()
    # two utterances: the first two seconds of a SynthST talk, and one the tiny model speaks on
    wave, rate = sf.read(wavs[0], dtype="float32")
    sf.write(tmp_path / "utt0.wav", wave[: 2 * rate], rate)
    sources = [str(tmp_path / "utt0.wav"), str(corpus / "wav" / "speaking.wav")]
    (tmp_path / "source.txt").write_text("\n".join(sources) + "\n")
    (tmp_path / "target.txt").write_text("\n".join(refs[:2]) + "\n")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "simuleval.cli",
        "--agent-class",
        "speechxl.inference.simuleval_agent.SpeechXLAgent",
        "--checkpoint",
        str(checkpoint),
        "--policy",
        "waitk",
        "--waitk",
        "2",
        "--max-len-b",
        "12",
        "--source",
        str(tmp_path / "source.txt"),
        "--target",
        str(tmp_path / "target.txt"),
        "--source-segment-size",
        "280",
        "--output",
        str(out),
        "--computation-aware",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    )
    lines = (out / "instances.log").read_text().splitlines()
    assert len(lines) == 2, done.stderr[-2000:]
    import json

    logged = [json.loads(line) for line in lines]
    assert all(row["source_length"] > 0 for row in logged)
    # every word written once, with a delay no later than the end of its source
    for row in logged:
        assert len(row["delays"]) == len(row["prediction"].split())
        assert all(d <= row["source_length"] + 1e-6 for d in row["delays"])
        assert row["delays"] == sorted(row["delays"]) and row["elapsed"] == sorted(row["elapsed"])
    scores = non_ca_scores(out)
    assert scores["n_scored"] == sum(1 for row in logged if row["delays"]) >= 1
    assert scores["AL"] <= scores["AL_CA"] and scores["LAAL"] <= scores["LAAL_CA"]


def test_vad_splits_a_talk_at_its_silence(synth_mustc):
    wav = sorted((synth_mustc / "en-de" / "data" / "tst-COMMON" / "wav").glob("*.wav"))[0]
    wave, rate = sf.read(wav, dtype="float32")
    speech = wave[: rate * 2]
    talk = np.concatenate([speech, np.zeros(rate, dtype=np.float32), speech])  # speech - 1 s silence - speech
    segments = vad_segments(talk, VadOptions(min_silence=0.5))
    assert segments[0][0] < 2.0 and segments[-1][1] > 3.5  # speech on both sides of the silence is kept
    cuts = [(a[1], b[0]) for a, b in zip(segments, segments[1:])]
    assert any(end < 3.0 and start > 2.0 for end, start in cuts), segments  # a cut overlaps the silence
    long = vad_segments(np.tile(speech, 10), VadOptions(max_seconds=3.0, min_silence=5.0))
    assert all(e - s <= 3.0 + 1e-6 for s, e in long)


def test_subtitles_parse_back(tmp_path):
    import srt
    import webvtt

    segments, texts = [(0.0, 1.5), (2.25, 3.0), (3.5, 4.0)], ["Hallo Welt.", "Zwei", "  "]
    write_subtitles(tmp_path / "a.srt", segments, texts, "srt")
    subs = list(srt.parse((tmp_path / "a.srt").read_text()))
    assert [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs] == [
        (0.0, 1.5, "Hallo Welt."),
        (2.25, 3.0, "Zwei"),
    ]
    write_subtitles(tmp_path / "a.vtt", segments, texts, "vtt")
    caps = webvtt.read(str(tmp_path / "a.vtt"))
    assert [(c.start, c.end, c.text) for c in caps] == [
        ("00:00:00.000", "00:00:01.500", "Hallo Welt."),
        ("00:00:02.250", "00:00:03.000", "Zwei"),
    ]


def test_resegment_follows_the_reference_segments():
    refs = ["Das ist gut.", "Ich bin hier.", "Der Hund."]
    assert resegment(refs, "Das ist gut ich bin hier. Der Hund.") == ["Das ist gut", "ich bin hier.", "Der Hund."]


def test_stream_cli_prints_committed_pieces_with_times(trained, capsys, tmp_path):
    corpus, checkpoint, *_ = trained
    main(
        [
            "stream",
            "--checkpoint",
            str(checkpoint),
            "--audio",
            str(corpus / "wav" / "speaking.wav"),
            "--chunk-ms",
            "60",
            "--policy",
            "waitk",
            "--waitk",
            "2",
            "--segment",
            "none",
            "--format",
            "srt",
            "--out",
            str(tmp_path / "s.srt"),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(re.fullmatch(r"\[ *\d+\.\d\ds\] .*", line) for line in lines)
    times = [float(line[1 : line.index("s]")]) for line in lines]
    assert times == sorted(times) and times[-1] == pytest.approx(len(_wave(corpus)) / 16000, abs=0.01)


def test_translate_long_audio_by_vad_writes_timed_subtitles(trained, synth_mustc, tmp_path, capsys):
    import srt

    _, checkpoint, *_ = trained
    wav = sorted((synth_mustc / "en-de" / "data" / "tst-COMMON" / "wav").glob("*.wav"))[0]
    wave, rate = sf.read(wav, dtype="float32")
    talk = np.concatenate([wave[: 2 * rate], np.zeros(rate, dtype=np.float32), wave[: 2 * rate]])
    sf.write(tmp_path / "talk.wav", talk, rate)
    main(
        [
            "translate",
            "--checkpoint",
            str(checkpoint),
            "--audio",
            str(tmp_path / "talk.wav"),
            "--segment",
            "vad",
            "--format",
            "srt",
            "--max-segment",
            "4",
            "--beam",
            "2",
            "--max-len-b",
            "12",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    report = __import__("json").loads((tmp_path / "o" / "segments.json").read_text())
    segments = report["files"][0]["segments"]
    assert len(segments) >= 2 and all(s["end"] - s["start"] <= 4.0 + 1e-6 for s in segments)
    subs = list(srt.parse((tmp_path / "o" / "talk.srt").read_text()))
    assert [(round(s.start.total_seconds(), 3), s.content) for s in subs] == [
        (seg["start"], seg["text"]) for seg in segments if seg["text"].strip()
    ]


def test_chunk_causal_option_reaches_the_model_encoder(trained):
    from tiny_run import TINY_MODEL

    from speechxl.models.base import build_model

    *_, vocab, _ = trained
    model = build_model({**TINY_MODEL, "encoder_chunk_frames": 2, "dropout": 0.0}, vocab).eval()
    assert model.encoder.chunk_frames == 2 and model.checkpoint_config()["encoder_chunk_frames"] == 2
    torch.manual_seed(0)
    feats, lengths = torch.randn(2, 90, 80), torch.tensor([90, 61])
    batch = {"audio": feats, "audio_lengths": lengths}
    with torch.no_grad():
        both = model.encode(batch)
        alone = model.encode({"audio": feats[1:, :61], "audio_lengths": lengths[1:]})
    n = int((~alone["memory_padding_mask"][0]).sum())
    torch.testing.assert_close(both["memory"][1, :n], alone["memory"][0, :n], atol=1e-5, rtol=1e-5)


def test_stream_vad_ends_an_utterance_at_the_pause(trained, synth_mustc):
    from speechxl.inference.streaming import stream_segments

    *_, model, vocab, config = trained
    wav = sorted((synth_mustc / "en-de" / "data" / "tst-COMMON" / "wav").glob("*.wav"))[0]
    wave, rate = sf.read(wav, dtype="float32")
    speech = wave[: 2 * rate]
    talk = np.concatenate([speech, np.zeros(rate, dtype=np.float32), speech])
    translator = StreamingTranslator(model, vocab, config["data"], PolicyOptions(policy="waitk", k=2, max_len_b=8))
    pieces = list(stream_segments(translator, chunks_of(talk, 280), vad=VadOptions(min_silence=0.3)))
    ends = [(p.start, p.end) for p in pieces if p.end is not None]
    assert len(ends) >= 2 and [p.segment for p in pieces] == sorted(p.segment for p in pieces)
    offline = vad_segments(talk, VadOptions(min_silence=0.3))  # the same webrtcvad decisions, offline
    assert len(ends) == len(offline) == 2 and offline[0][1] <= 2.2 and offline[1][0] >= 2.9  # cut at the pause
    # the first utterance ends 0.3 s into the pause (mid-chunk: chunks are 280 ms), the next starts with speech
    assert ends[0] == pytest.approx((offline[0][0], offline[0][1] + 0.3), abs=0.031)
    assert ends[1][0] == pytest.approx(offline[1][0], abs=0.031)
    assert ends[1][1] == pytest.approx(len(talk) / rate, abs=0.03)


# ---------------------------------------------------------------------------------------------- encoder reuse


def _talk_speech(synth_mustc, seconds=3.0):
    wav = sorted((synth_mustc / "en-de" / "data" / "tst-COMMON" / "wav").glob("*.wav"))[0]
    wave, rate = sf.read(wav, dtype="float32")
    return wave[: int(seconds * rate)]


def _chunk_causal_model(vocab, tmp_path, wave, cmvn="global"):
    """A random chunk-causal tiny S2T (chunks of 2 encoder frames = 80 ms) and its data config. Weights do not
    matter for equality of cached and full computation; global CMVN stats are those of `wave` itself."""
    from tiny_run import TINY_MODEL

    from speechxl.data.audio import compute_fbank
    from speechxl.models.base import build_model

    torch.manual_seed(0)
    model = build_model({**TINY_MODEL, "encoder_chunk_frames": 2, "dropout": 0.0}, vocab).eval()
    feats = compute_fbank(wave)
    np.savez(tmp_path / "stats.npz", mean=feats.mean(0), std=feats.std(0) + 1e-3)
    data = {"features": "fbank", "cmvn": cmvn, "global_cmvn_stats": str(tmp_path / "stats.npz") * (cmvn == "global")}
    return model, data


@pytest.mark.parametrize("cmvn", ["utterance", "global"])
def test_incremental_features_equal_the_features_of_the_whole_prefix(trained, tmp_path, synth_mustc, cmvn):
    from speechxl.inference.streaming import FeatureExtractor

    wave = _talk_speech(synth_mustc, 1.5)
    _, data = _chunk_causal_model(trained[3], tmp_path, wave, cmvn)
    features = FeatureExtractor(data)
    for piece in chunks_of(wave, 70):  # 70 ms: chunks end inside fbank windows
        features.push(piece)
        torch.testing.assert_close(features.current(), features(features.wave), rtol=0, atol=0)


def test_encoder_cache_equals_full_recomputation_and_reuses_past_chunks(trained, synth_mustc, tmp_path):
    *_, vocab, _ = trained
    wave = _talk_speech(synth_mustc)
    model, data = _chunk_causal_model(vocab, tmp_path, wave)
    translator = StreamingTranslator(model, vocab, data, PolicyOptions(policy="waitk"))
    encoder, cache = translator.cached_encoders[0], translator.encoder_caches[0]
    reused = []
    with torch.no_grad():
        for piece in chunks_of(wave, 280):
            translator.features.push(piece)
            batch = translator._batch()
            full = model.encode(batch)["memory"]
            encoder.stream_cache = cache
            cached = model.encode(batch)["memory"]
            encoder.stream_cache = None
            torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
            reused.append(cache.reused)
            assert cache.reused + cache.computed == full.size(1) and cache.reused % 2 == 0
    # 280 ms = 7 encoder frames (40 ms) per chunk; the conv front end looks 2 frames ahead, so the last chunk
    # or two before the edge are recomputed: everything before them is reused
    frames = [n for n in np.cumsum([len(p) for p in chunks_of(wave, 280)]) // 640]
    assert all(r >= f - 7 - 4 for r, f in zip(reused[1:], frames[:-1])), (reused, frames)


def test_utterance_cmvn_changes_every_input_so_the_cache_reuses_nothing(trained, synth_mustc, tmp_path):
    *_, vocab, _ = trained
    wave = _talk_speech(synth_mustc, 1.5)
    model, data = _chunk_causal_model(vocab, tmp_path, wave, cmvn="utterance")
    translator = StreamingTranslator(model, vocab, data, PolicyOptions(policy="waitk"))
    for piece in chunks_of(wave, 280):
        translator.push(piece)
        assert translator.encoder_caches[0].reused == 0


@pytest.mark.parametrize("policy", ["waitk", "la", "alignatt"])
def test_streaming_with_the_encoder_cache_commits_what_it_commits_without(trained, synth_mustc, tmp_path, policy):
    *_, vocab, _ = trained
    wave = _talk_speech(synth_mustc)
    model, data = _chunk_causal_model(vocab, tmp_path, wave)
    options = PolicyOptions(policy=policy, k=2, frames=2, max_len_b=10)
    runs = []
    for encoder_cache in (True, False):
        translator = StreamingTranslator(model, vocab, data, options, encoder_cache=encoder_cache)
        runs.append([(c.tokens, c.audio_seconds) for c in stream_wave(translator, wave, 280)])
    assert runs[0] == runs[1] and any(tokens for tokens, _ in runs[0])


# ---------------------------------------------------------------------------------------------- infinite latency


def test_whole_file_as_one_chunk_gives_the_offline_output(trained, tmp_path):
    from speechxl.inference.decode import DecodeOptions
    from speechxl.inference.longform import translate_rows

    corpus, _, model, vocab, config = trained
    rows = read_manifest(corpus / "dev.tsv")
    for row in rows:
        row["audio"] = str(corpus / row["audio"])
    for beam, policy in ((1, "waitk"), (1, "alignatt"), (1, "la"), (4, "la")):
        offline = translate_rows(model, vocab, config, rows, "st", DecodeOptions(beam=beam, max_len_b=12))
        translator = StreamingTranslator(
            model, vocab, config["data"], PolicyOptions(policy=policy, la_beam=beam, max_len_b=12)
        )
        streamed = []
        for row in rows:
            translator.reset()
            streamed.append(translator.push(load_audio(row["audio"]), finished=True).text)
        assert streamed == offline, policy


# ---------------------------------------------------------------------------------------------- audio input


def _stream_cli(checkpoint, audio, capsys, *extra):
    main(
        ["stream", "--checkpoint", str(checkpoint), "--audio", str(audio), "--chunk-ms", "60"]
        + ["--policy", "waitk", "--waitk", "2", "--segment", "none", *extra]
    )
    return capsys.readouterr()


def test_stream_reads_raw_pcm_on_stdin_like_the_file(trained, capsys, monkeypatch, tmp_path):
    corpus, checkpoint, *_ = trained
    wave = _wave(corpus)
    sf.write(tmp_path / "a.wav", wave, 16000, subtype="PCM_16")  # stdin s16le carries exactly these samples
    from_file = _stream_cli(checkpoint, tmp_path / "a.wav", capsys).out
    assert from_file.strip()
    pcm = sf.read(tmp_path / "a.wav", dtype="int16")[0].astype("<i2").tobytes()
    for data, warned in ((pcm, False), (pcm + b"\x01", True)):  # the second stream stops inside a sample
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        out = _stream_cli(checkpoint, "-", capsys)
        assert out.out == from_file
        assert ("ended inside a sample: 1 trailing byte(s) dropped" in out.err) == warned
    floats = np.asarray(load_audio(str(tmp_path / "a.wav")), dtype="<f4").tobytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(floats)))
    assert _stream_cli(checkpoint, "-", capsys, "--pcm-format", "f32le").out == from_file


def test_stream_from_a_pipe_that_stops_mid_sample_ends(trained, tmp_path):
    corpus, checkpoint, *_ = trained
    pcm = (np.clip(_wave(corpus), -1, 1) * 32767).astype("<i2").tobytes()[:-1]  # odd byte count
    done = subprocess.run(
        [sys.executable, "-m", "speechxl.cli", "stream", "--checkpoint", str(checkpoint), "--audio", "-"]
        + ["--segment", "none", "--chunk-ms", "60"],
        input=pcm,
        capture_output=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert b"trailing byte(s) dropped" in done.stderr and done.stdout.strip()


def test_file_chunks_downmix_and_resample_like_load_audio(synth_mustc, tmp_path):
    import soxr

    from speechxl.inference.streaming import file_chunks

    wave = _talk_speech(synth_mustc, 1.3)
    stereo = soxr.resample(np.stack([wave, 0.5 * wave], axis=1), 16000, 44100)
    sf.write(tmp_path / "s.wav", stereo, 44100, subtype="FLOAT")
    pieces = list(file_chunks(str(tmp_path / "s.wav"), 280))
    assert len(pieces) == 5  # 1.3 s in blocks of 280 ms (the resampler's delay shifts samples between them)
    np.testing.assert_array_equal(np.concatenate(pieces), load_audio(str(tmp_path / "s.wav")))


def test_stream_bad_and_degenerate_inputs(trained, capsys, tmp_path):
    import soxr

    corpus, checkpoint, *_ = trained
    # corrupt or missing file: one clear line naming it
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    for path in (tmp_path / "bad.wav", tmp_path / "missing.wav"):
        with pytest.raises(SystemExit) as err:
            _stream_cli(checkpoint, path, capsys)
        assert str(path) in str(err.value)
    # empty file: nothing to translate; silence: VAD finds no utterance
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    assert _stream_cli(checkpoint, tmp_path / "empty.wav", capsys).out == ""
    sf.write(tmp_path / "silent.wav", np.zeros(32000, dtype=np.float32), 16000)
    assert _stream_cli(checkpoint, tmp_path / "silent.wav", capsys, "--segment", "vad").out == ""
    # shorter than one chunk and shorter than one fbank window: a result at the end, no error
    wave = _wave(corpus)
    for n in (3000, 200):
        sf.write(tmp_path / "short.wav", wave[:n], 16000)
        lines = _stream_cli(checkpoint, tmp_path / "short.wav", capsys, "--chunk-ms", "280").out.splitlines()
        assert all(line.startswith(f"[{n / 16000:8.2f}s]") for line in lines)
    # stereo 44.1 kHz: read, downmixed and resampled
    sf.write(tmp_path / "st.wav", soxr.resample(np.stack([wave, wave], 1), 16000, 44100), 44100)
    # (its samples equal load_audio's: test_file_chunks_downmix_and_resample_like_load_audio)
    result = _stream_cli(checkpoint, tmp_path / "st.wav", capsys)
    assert result.err == "" and all(line.startswith("[") for line in result.out.splitlines())


# ---------------------------------------------------------------------------------------------- whole talks


def _talk_manifest(synth_mustc, path):
    """The tst-COMMON talks as a MuST-C-layout manifest: one `wav/talk.wav:offset:frames` slice per YAML
    segment, relative to the manifest, in talk and time order."""
    import yaml

    from speechxl.data.manifest import write_manifest

    split = synth_mustc / "en-de" / "data" / "tst-COMMON"
    segments = yaml.safe_load((split / "txt" / "tst-COMMON.yaml").read_text())
    targets = (split / "txt" / "tst-COMMON.de").read_text().splitlines()
    rows = []
    for i, (seg, target) in enumerate(zip(segments, targets)):
        offset, frames = round(seg["offset"] * 16000), round(seg["duration"] * 16000)
        rows.append(
            {
                "id": f"seg{i}",
                "audio": f"wav/{seg['wav']}:{offset}:{frames}",
                "n_frames": frames,
                "tgt_text": target,
                "speaker": seg["speaker_id"],
                "src_text": "",
                "src_lang": "en",
                "tgt_lang": "de",
            }
        )
    rows.sort(key=lambda r: (r["audio"].split(":")[0], int(r["audio"].split(":")[1])))
    write_manifest(path, rows)
    return segments, rows


def test_vad_finds_the_utterances_of_a_synthst_talk(synth_mustc, tmp_path):
    segments, _ = _talk_manifest(synth_mustc, tmp_path / "talks.tsv")
    talks = {}
    for seg in segments:
        talks.setdefault(seg["wav"], []).append((seg["offset"], seg["offset"] + seg["duration"]))
    for wav, gold in talks.items():
        found = vad_segments(synth_mustc / "en-de" / "data" / "tst-COMMON" / "wav" / wav)
        # a VAD segment starts at a gold start and ends at a gold end (it may span several sentences)
        for start, end in found:
            assert min(abs(start - s) for s, _ in gold) <= 0.1, (wav, start, gold)
            assert min(abs(end - e) for _, e in gold) <= 0.2, (wav, end, gold)
        # and every pause of at least half a second between sentences is a cut
        cuts = [(a[1], b[0]) for a, b in zip(found, found[1:])]
        for (_, e), (s, _) in zip(gold, gold[1:]):
            if s - e >= 0.5:
                assert any(abs(c0 - e) <= 0.2 and abs(c1 - s) <= 0.1 for c0, c1 in cuts), (wav, e, s, found)


def test_translate_talks_scores_vad_segments_against_gold_segments(trained, synth_mustc, tmp_path, capsys):
    import json

    from speechxl.eval.bleu import bleu

    _, checkpoint, *_ = trained
    manifest = tmp_path / "talks.tsv"  # its wav/ paths are relative to it
    (tmp_path / "wav").symlink_to(synth_mustc / "en-de" / "data" / "tst-COMMON" / "wav")
    _, rows = _talk_manifest(synth_mustc, manifest)
    common = ["--checkpoint", str(checkpoint), "--beam", "2", "--max-len-b", "10"]
    main(["translate", *common, "--talks", str(manifest), "--out", str(tmp_path / "talks")])
    score = json.loads((tmp_path / "talks" / "score.json").read_text())
    n_talks = len({row["audio"].split(":")[0] for row in rows})
    assert (score["talks"], score["reference_segments"]) == (n_talks, len(rows))
    read = lambda name: (tmp_path / "talks" / name).read_text().splitlines()  # noqa: E731
    refs, vad, gold = read("ref.txt"), read("hyp.vad_mweralign.txt"), read("hyp.gold.txt")
    assert refs == [row["tgt_text"] for row in rows] and len(vad) == len(gold) == len(rows)
    # the gold-segment hypotheses are what offline `translate --manifest` gives those rows
    main(["translate", *common, "--manifest", str(manifest), "--out", str(tmp_path / "offline")])
    capsys.readouterr()
    offline = [line for line in (tmp_path / "offline").glob("hyp*")][0].read_text().splitlines()
    assert gold == offline
    # re-segmentation moves words between reference segments, it neither drops nor adds any
    by_talk = json.loads((tmp_path / "talks" / "vad_segments.json").read_text())
    talk_of_row = [row["audio"].split(":")[0] for row in rows]
    for talk, segments in by_talk.items():
        mine = [line for line, t in zip(vad, talk_of_row) if Path(t).name == Path(talk).name]
        assert " ".join(mine).split() == " ".join(s["text"] for s in segments).split()
    assert score["vad_mweralign"]["bleu"] == bleu(vad, refs)["bleu"]
    assert score["gold_segments"]["bleu"] == bleu(gold, refs)["bleu"]


def test_translate_long_audio_bad_and_empty_inputs(trained, tmp_path, capsys):
    import json

    _, checkpoint, *_ = trained
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(32000, dtype=np.float32), 44100)
    for name in ("bad", "missing"):
        with pytest.raises(SystemExit) as err:
            main(
                ["translate", "--checkpoint", str(checkpoint), "--audio", str(tmp_path / f"{name}.wav")]
                + ["--segment", "vad", "--out", str(tmp_path / f"o_{name}")]
            )
        assert str(tmp_path / f"{name}.wav") in str(err.value)
    for name in ("empty", "silent"):  # no speech: no segment, an empty subtitle file
        main(
            ["translate", "--checkpoint", str(checkpoint), "--audio", str(tmp_path / f"{name}.wav")]
            + ["--segment", "vad", "--out", str(tmp_path / f"o_{name}")]
        )
        report = json.loads((tmp_path / f"o_{name}" / "segments.json").read_text())
        assert report["files"][0]["segments"] == [] and (tmp_path / f"o_{name}" / f"{name}.srt").read_text() == ""
    capsys.readouterr()
