"""Audio loading, fbank, CMVN and SpecAugment (speechxl.data.audio)."""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import pytest
import soundfile as sf

from speechxl.data.audio import (
    SpecAugment,
    compute_fbank,
    fbank_frames,
    load_audio,
    utterance_cmvn,
)
from speechxl.errors import DataError


def sine(freq: float, seconds: float, rate: int = 16000, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    "ext, subtype, tolerance",
    [("wav", "PCM_16", 1e-4), ("flac", "PCM_16", 1e-4), ("ogg", "VORBIS", 0.05), ("mp3", "MPEG_LAYER_III", 0.05)],
)
def test_round_trip_each_format(tmp_path, ext, subtype, tolerance):
    wave = sine(440, 1.0)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, wave, 16000, subtype=subtype)
    loaded = load_audio(str(path))
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert len(loaded) == len(wave)
    assert np.abs(loaded - wave).max() < tolerance  # lossy codecs only approximately
    assert np.abs(loaded).max() <= 1.0


def test_44k_stereo_becomes_16k_mono(tmp_path):
    left, right = sine(440, 1.0, rate=44100, amp=0.6), sine(440, 1.0, rate=44100, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    loaded = load_audio(str(path))
    assert len(loaded) == 16000
    expected = sine(440, 1.0, rate=16000, amp=0.4)  # mean of the two channels, resampled
    inner = slice(200, -200)  # the resampler's filter edges
    assert np.abs(loaded[inner] - expected[inner]).max() < 1e-2


def test_slice_reads_exactly_those_samples(tmp_path):
    ramp = (np.arange(20000) % 30000).astype(np.int16)  # every sample distinct and exactly representable
    sf.write(tmp_path / "talk.wav", ramp, 16000, subtype="PCM_16")
    loaded = load_audio("talk.wav:1234:567", base_dir=tmp_path)  # relative path, resolved against base_dir
    np.testing.assert_array_equal(np.round(loaded * 32768).astype(np.int16), ramp[1234:1801])


def test_slice_offsets_count_16k_samples_in_other_rates(tmp_path):
    wave = sine(300, 2.0, rate=32000)
    sf.write(tmp_path / "hi.wav", wave, 32000, subtype="FLOAT")
    whole = load_audio(str(tmp_path / "hi.wav"))
    part = load_audio(f"{tmp_path / 'hi.wav'}:8000:4000")
    assert len(part) == 4000
    assert np.abs(part[100:-100] - whole[8100:11900]).max() < 1e-2


def test_slice_past_end_names_file_and_manifest_line(tmp_path):
    sf.write(tmp_path / "short.wav", sine(440, 0.5), 16000)
    with pytest.raises(DataError) as err:
        load_audio(f"{tmp_path}/short.wav:7000:2000")
    assert "short.wav" in str(err.value) and "past the end" in str(err.value)
    with pytest.raises(DataError) as err:
        load_audio("short.wav:7000:2000", tmp_path, manifest="train.tsv", line=7)
    assert str(err.value).startswith("train.tsv:7:") and "short.wav" in str(err.value)


def test_missing_and_corrupt_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="nothere.wav.*no such audio file"):
        load_audio(str(tmp_path / "nothere.wav"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match="bad.wav.*cannot"):
        load_audio(str(bad))


def kaldi_reference(wave: np.ndarray) -> np.ndarray:
    """kaldi-native-fbank called directly with the settings the spec names."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.frame_length_ms = 25
    opts.frame_opts.frame_shift_ms = 10
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, (wave * 32768).tolist())
    fbank.input_finished()
    return np.array([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


def test_fbank_shape_and_agreement_with_kaldi_native_fbank():
    rng = np.random.default_rng(0)
    wave = (sine(440, 0.77) + 0.05 * rng.standard_normal(12320)).astype(np.float32)
    feats = compute_fbank(wave)
    assert feats.shape == (fbank_frames(len(wave)), 80) == (1 + (12320 - 400) // 160, 80)
    np.testing.assert_allclose(feats, kaldi_reference(wave), rtol=1e-5, atol=1e-4)
    assert compute_fbank(wave[:399]).shape == (0, 80)  # shorter than one window


def test_fbank_puts_energy_in_the_right_mel_bands():
    low = compute_fbank(sine(300, 0.5)).mean(axis=0).argmax()
    high = compute_fbank(sine(3000, 0.5)).mean(axis=0).argmax()
    assert low < high


def test_utterance_cmvn_zero_mean_unit_variance():
    feats = compute_fbank(sine(440, 1.0) + 0.01 * np.random.default_rng(1).standard_normal(16000).astype(np.float32))
    normed = utterance_cmvn(feats)
    np.testing.assert_allclose(normed.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(normed.std(axis=0), 1, atol=1e-3)


def test_fairseq_policies():
    lb, ld = SpecAugment.from_policy("lb"), SpecAugment.from_policy("LD")
    assert (lb.freq_mask_F, lb.freq_mask_N, lb.time_mask_T, lb.time_mask_N, lb.time_mask_p) == (27, 1, 100, 1, 1.0)
    assert (ld.freq_mask_N, ld.time_mask_N) == (2, 2) and ld.time_warp_W == 0
    with pytest.raises(ValueError):
        SpecAugment.from_policy("xx")


def test_specaugment_masks_the_drawn_bands_and_nothing_else():
    feats = np.random.default_rng(3).standard_normal((300, 80)).astype(np.float32) + 5.0
    aug = SpecAugment(freq_mask_F=27, freq_mask_N=2, time_mask_T=40, time_mask_N=3, time_mask_p=0.1, mask_value=-7.0)
    freq_spans, time_spans = aug.sample_masks(300, 80, np.random.default_rng(11))
    assert len(freq_spans) == 2 and len(time_spans) == 3
    assert all(w < 27 and s + w <= 80 for s, w in freq_spans)
    assert all(w < min(40, 30) and s + w <= 300 for s, w in time_spans)  # p·frames = 30 caps T
    out = aug(feats, np.random.default_rng(11))
    masked = np.zeros_like(feats, dtype=bool)
    for s, w in freq_spans:
        masked[:, s : s + w] = True
    for s, w in time_spans:
        masked[s : s + w, :] = True
    assert masked.any()
    assert np.all(out[masked] == -7.0)
    np.testing.assert_array_equal(out[~masked], feats[~masked])


def test_specaugment_is_deterministic_per_seed():
    feats = np.random.default_rng(4).standard_normal((200, 80)).astype(np.float32)
    original = feats.copy()
    aug = SpecAugment.from_policy("ld")
    first = aug(feats, np.random.default_rng(5))
    np.testing.assert_array_equal(first, aug(feats, np.random.default_rng(5)))
    assert any(not np.array_equal(first, aug(feats, np.random.default_rng(s))) for s in range(6, 9))
    np.testing.assert_array_equal(feats, original)  # the input is never modified


def test_time_warp_keeps_shape_and_is_off_by_default():
    feats = np.cumsum(np.ones((120, 80), dtype=np.float32), axis=0)
    assert SpecAugment().time_warp_W == 0
    warped = SpecAugment(freq_mask_N=0, time_mask_N=0, time_warp_W=10)(feats, np.random.default_rng(2))
    assert warped.shape == feats.shape
    assert not np.allclose(warped, feats)
    assert np.all(np.diff(warped[:, 0]) >= 0)  # a warp stretches time; it never reorders frames
