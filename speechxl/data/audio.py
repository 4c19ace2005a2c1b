"""Audio in, model input out: load (whole files or `path:offset:frames` slices), resample, downmix,
80-dim Kaldi fbank, utterance CMVN and SpecAugment.

Everything here works on numpy arrays so it runs inside DataLoader workers without torch threads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import kaldi_native_fbank as knf
import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

from speechxl.data.manifest import split_audio_slice
from speechxl.errors import DataError

SAMPLE_RATE = 16000
# Kaldi's frame layout (25 ms window, 10 ms shift at 16 kHz, snip_edges): frames = 1 + (n - 400) // 160.
FRAME_LENGTH = 400
FRAME_SHIFT = 160


def resolve_path(path: str, base_dir: str | os.PathLike | None) -> str:
    """Relative manifest paths are relative to the manifest's directory (`base_dir`)."""
    if base_dir is None or os.path.isabs(path):
        return path
    return os.path.join(base_dir, path)


def load_audio(
    spec: str,
    base_dir: str | os.PathLike | None = None,
    *,
    manifest: str | os.PathLike | None = None,
    line: int | None = None,
) -> np.ndarray:
    """Read a file or a `path:offset:frames` slice as float32 mono 16 kHz samples in [-1, 1].

    `offset` and `frames` count 16 kHz samples (the manifest contract); for a file stored at another
    rate they are converted to the file's rate, and only the slice is read from disk.
    Errors raise `DataError` naming the audio file, or the manifest and its line when given.
    """
    path, offset, frames = split_audio_slice(spec)
    path = resolve_path(path, base_dir)

    def fail(message: str) -> DataError:
        if manifest is not None:
            return DataError(manifest, f"audio {path}: {message}", line)
        return DataError(path, message, line)

    if not os.path.isfile(path):
        raise fail("no such audio file")
    try:
        with sf.SoundFile(path) as f:
            rate, total = f.samplerate, f.frames
            if offset is None:
                start, stop = 0, total
            else:
                start = round(offset * rate / SAMPLE_RATE)
                stop = start + round(frames * rate / SAMPLE_RATE)
                if stop > total:
                    raise fail(
                        f"slice {offset}:{frames} ends at 16 kHz sample {offset + frames}, past the end of "
                        f"the file ({math.floor(total * SAMPLE_RATE / rate)} samples at 16 kHz)"
                    )
            if f.format == "MP3":
                # libsndfile's MPEG decoder is wrong after a seek or a partial read (silence, decode
                # errors): decode the whole file in one call and cut the slice in memory.
                samples = f.read(dtype="float32", always_2d=True)[start:stop]
            else:
                f.seek(start)
                samples = f.read(stop - start, dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:  # unreadable or corrupt container/codec
        raise fail(f"cannot decode audio ({err})") from err
    except RuntimeError as err:  # soundfile reports some decode failures (e.g. bad seeks) as RuntimeError
        raise fail(f"cannot read audio ({err})") from err
    wave = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != SAMPLE_RATE:
        wave = soxr.resample(wave, rate, SAMPLE_RATE)
    return np.ascontiguousarray(wave, dtype=np.float32)


def fbank_frames(n_samples: int) -> int:
    """Number of fbank frames Kaldi produces for `n_samples` 16 kHz samples (0 if shorter than a window)."""
    return 0 if n_samples < FRAME_LENGTH else 1 + (n_samples - FRAME_LENGTH) // FRAME_SHIFT


def fbank_options(num_mel_bins: int = 80) -> knf.FbankOptions:
    """Kaldi `compute-fbank-feats` defaults as fairseq/ESPnet use them, but dither 0 so features are
    deterministic (torchaudio.compliance.kaldi.fbank, which fairseq calls, also defaults to dither 0)."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.frame_length_ms = 25
    opts.frame_opts.frame_shift_ms = 10
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = num_mel_bins
    return opts


def compute_fbank(wave: np.ndarray, num_mel_bins: int = 80) -> np.ndarray:
    """Log-mel filterbank (frames, num_mel_bins) float32 of a 16 kHz float wave in [-1, 1]."""
    extractor = knf.OnlineFbank(fbank_options(num_mel_bins))
    # Kaldi expects 16-bit integer sample values; its log floor and energies assume that range.
    extractor.accept_waveform(SAMPLE_RATE, np.asarray(wave, dtype=np.float32) * 32768.0)
    extractor.input_finished()
    n = extractor.num_frames_ready
    if n == 0:
        return np.zeros((0, num_mel_bins), dtype=np.float32)
    return np.stack([extractor.get_frame(i) for i in range(n)])


def utterance_cmvn(feats: np.ndarray) -> np.ndarray:
    """Per-utterance mean and variance normalisation of each feature dimension (fairseq UtteranceCMVN)."""
    feats = feats.astype(np.float64)
    mean = feats.mean(axis=0)
    var = np.maximum((feats**2).mean(axis=0) - mean**2, 1e-10)  # floor: a constant band must not divide by 0
    return ((feats - mean) / np.sqrt(var)).astype(np.float32)


def utterance_cmvn_fairseq(feats: np.ndarray) -> np.ndarray:
    """fairseq's UtteranceCMVN bit for bit: in float32, var = sum(x^2)/n - mean^2 floored at 1e-10. On a
    near-constant band float32 cancels badly (the variance can hit the floor and the band blow up), so speechxl's
    own default is `utterance_cmvn` in float64; this one gives a fairseq-trained model the inputs it was trained on
    (data.cmvn: utterance_fairseq, which `speechxl fairseq prep` and `convert fairseq-s2t` set)."""
    feats = np.asarray(feats, dtype=np.float32)
    mean = feats.mean(axis=0)
    square_sums = (feats**2).sum(axis=0)
    var = square_sums / feats.shape[0] - mean**2
    return np.divide(feats - mean, np.sqrt(np.maximum(var, 1e-10))).astype(np.float32)


def global_cmvn(feats: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """fairseq GlobalCMVN: `(x - mean) / std` with corpus-level stats."""
    return ((feats - mean) / std).astype(np.float32)


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment (Park et al. 2019) with fairseq's parameter names and sampling.

    Per utterance: time warp (only when `time_warp_W` > 0; off in every policy, as in fairseq), then
    `freq_mask_N` bands of width uniform in [0, F) and `time_mask_N` spans of width uniform in
    [0, min(T, floor(p * frames))), each at a uniform start. Masked cells get `mask_value`
    (None: the utterance mean, which is what fairseq's config path uses; ~0 after CMVN).
    """

    freq_mask_F: int = 27
    freq_mask_N: int = 1
    time_mask_T: int = 100
    time_mask_N: int = 1
    time_mask_p: float = 1.0
    time_warp_W: int = 0
    mask_value: float | None = None

    @classmethod
    def from_policy(cls, name: str) -> SpecAugment:
        """fairseq's named policies: LB, LD (Park et al.'s LibriSpeech basic/double), SM, SS; or explicit
        fields `freq_mask_F=27,freq_mask_N=1,time_mask_T=100,time_mask_N=1,time_mask_p=1.0,time_warp_W=0`
        (fairseq's `specaugment` config fields, + `mask_value`; the ones not given keep the defaults above)."""
        if "=" in name:
            return cls.from_fields(name)
        policies = {
            "lb": cls(freq_mask_F=27, freq_mask_N=1, time_mask_T=100, time_mask_N=1, time_mask_p=1.0),
            "ld": cls(freq_mask_F=27, freq_mask_N=2, time_mask_T=100, time_mask_N=2, time_mask_p=1.0),
            "sm": cls(freq_mask_F=15, freq_mask_N=2, time_mask_T=70, time_mask_N=2, time_mask_p=0.2),
            "ss": cls(freq_mask_F=27, freq_mask_N=2, time_mask_T=70, time_mask_N=2, time_mask_p=0.2),
            # COSTT (Dong et al. 2021): 2 frequency masks of width < 30, 2 time masks of width < 40
            "costt": cls(freq_mask_F=30, freq_mask_N=2, time_mask_T=40, time_mask_N=2, time_mask_p=1.0),
        }
        if name.lower() not in policies:
            raise ValueError(f"unknown SpecAugment policy {name!r}; choose one of {sorted(policies)}")
        return policies[name.lower()]

    @classmethod
    def from_fields(cls, text: str) -> SpecAugment:
        kinds = {
            "freq_mask_F": int,
            "freq_mask_N": int,
            "time_mask_T": int,
            "time_mask_N": int,
            "time_mask_p": float,
            "time_warp_W": int,
            "mask_value": float,
        }
        values: dict[str, int | float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in kinds:
                raise ValueError(f"unknown SpecAugment field {key!r}; fields: {', '.join(kinds)}")
            try:
                values[key] = kinds[key](value.strip())
            except ValueError as err:
                raise ValueError(f"SpecAugment field {key} needs a {kinds[key].__name__}, got {value!r}") from err
        return cls(**values)

    def sample_masks(
        self, n_frames: int, n_freqs: int, rng: np.random.Generator
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Draw (start, width) of every frequency band and time span to mask."""
        freq_spans: list[tuple[int, int]] = []
        time_spans: list[tuple[int, int]] = []
        if n_frames == 0 or n_freqs < self.freq_mask_F:
            return freq_spans, time_spans
        for _ in range(self.freq_mask_N):
            width = int(rng.integers(0, self.freq_mask_F))
            freq_spans.append((int(rng.integers(0, n_freqs - width)), width))
        max_t = min(self.time_mask_T, math.floor(n_frames * self.time_mask_p))
        if max_t >= 1:
            for _ in range(self.time_mask_N):
                width = int(rng.integers(0, max_t))
                time_spans.append((int(rng.integers(0, n_frames - width)), width))
        return freq_spans, time_spans

    def __call__(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return an augmented copy of `feats` (frames, bins)."""
        out = feats.copy()
        if self.time_warp_W > 0:
            out = self._time_warp(out, rng)
        value = float(feats.mean()) if self.mask_value is None else self.mask_value
        freq_spans, time_spans = self.sample_masks(out.shape[0], out.shape[1], rng)
        for start, width in freq_spans:
            out[:, start : start + width] = value
        for start, width in time_spans:
            out[start : start + width, :] = value
        return out

    def _time_warp(self, feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Move the frame at a random centre w0 by w frames, stretching both sides linearly."""
        n, w_max = feats.shape[0], self.time_warp_W
        if 2 * w_max >= n:
            return feats
        w0 = int(rng.integers(w_max, n - w_max))
        w = int(rng.integers(-w_max + 1, w_max))

        def stretch(part: np.ndarray, length: int) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(part.T))[None]  # (1, bins, frames)
            return F.interpolate(x, size=length, mode="linear", align_corners=False)[0].T.numpy()

        return np.concatenate([stretch(feats[:w0], w0 + w), stretch(feats[w0:], n - w0 - w)], axis=0)
