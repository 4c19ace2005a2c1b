"""Simultaneous (streaming) translation with an offline-trained model: audio arrives in chunks, a policy decides
after each chunk which target tokens to commit, and committed tokens are never retracted.

Works for every model through the model protocol (speechxl.models.base.SpeechModel): `encode`, `decode_step`,
`decode_prefix`, `logit_processors`, `output_texts`. Nothing here knows a model by name.

What each chunk recomputes (`StreamingTranslator.push`):
- features: fbank models compute the fbank frames of the new samples only (Kaldi frames depend on their own
  25 ms window: bit-equal to the fbank of the whole prefix), then CMVN over all frames: utterance CMVN uses the
  mean/variance of everything received so far, so every frame's features change a little as audio arrives;
  global CMVN (`data.cmvn: global`) leaves past frames unchanged. Wave models take the wave prefix as it is;
- the model's front end (conv subsampler, positions) over the whole prefix: O(prefix) per chunk, cheap;
- the Transformer encoder: by default over the whole prefix. A chunk-causal encoder (`model.encoder_chunk_frames`
  N) keeps the per-layer keys/values and outputs of its complete chunks (modules.transformer.EncoderStateCache)
  and runs only the chunks from the first one whose input frames changed: with global CMVN that is the chunk
  holding the front end's lookahead (an s2t conv stack of k=5 looks ≤ 2 encoder frames ahead) and the new
  frames; with utterance CMVN every input changes, so nothing is reused (the result is the same either way:
  the cache compares inputs, it never approximates);
- the decoder over the forced prefix (`decode_prefix` = the language tag) + the committed tokens, in one call,
  then new tokens one at a time (its cross-attention keys depend on the new encoder states).

Policies (`--policy`):
- `waitk`: fixed pre-decision — after chunk i (1-based) the target may hold i − k + 1 tokens (greedy); wait-k of
  fairseq SimulST with the pushed chunk as the pre-decision unit.
- `la`: local agreement LA-n — re-decode the whole prefix (beam search, committed tokens forced) at every chunk
  and commit the longest common prefix of the last n hypotheses.
- `alignatt`: AlignAtt — greedy candidates from the committed prefix; a candidate is committed only while the
  encoder frame its cross-attention (decoder layer `attn_layer`, heads averaged) points at lies before the last
  `frames` frames; else wait for audio.
When the source is finished every policy writes the rest of its hypothesis (greedy, or beam for LA with
la_beam > 1 or with final_beam > 1).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import kaldi_native_fbank as knf
import numpy as np
import torch

from speechxl.data.audio import (
    SAMPLE_RATE,
    compute_fbank,
    fbank_frames,
    fbank_options,
    global_cmvn,
    load_audio,
    utterance_cmvn,
    utterance_cmvn_fairseq,
)
from speechxl.data.dataset import FeatureConfig
from speechxl.errors import DataError
from speechxl.inference.search import MinLength, NoToken, apply_processors, beam_search
from speechxl.modules.transformer import DecoderLayer, EncoderStateCache, TransformerDecoder, TransformerEncoder
from speechxl.tasks import get_task

POLICIES = ("waitk", "la", "alignatt")


@dataclass
class PolicyOptions:
    policy: str = "waitk"
    k: int = 3  # waitk: chunks read before the first write
    la_n: int = 2  # la: agreement of the last n hypotheses
    la_beam: int = 1  # la: beam of each re-decoding
    frames: int = 2  # alignatt: f, the last encoder frames a committed token must not attend to
    attn_layer: int = -1  # alignatt: the decoder layer whose cross-attention is read (-1: last)
    max_len_a: float = 0.0
    max_len_b: int = 200
    final_beam: int = 1  # beam of the decoding that finishes a hypothesis once the source is complete

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.k < 1 or self.la_n < 1 or self.frames < 0:
            raise ValueError("k and la_n must be >= 1, frames >= 0")


@dataclass
class Commit:
    """Tokens committed after a chunk, with the audio time (seconds received) at which they were committed."""

    tokens: list[int]
    text: str  # the new text: the full committed text minus the text committed before
    audio_seconds: float
    finished: bool


class FeatureExtractor:
    """The model input of a wave prefix, as the checkpoint's `data` section says (dataset.py `_features`).

    Calling it computes the features of a whole wave (the reference). `push(samples)` / `current()` keep the
    features of a growing stream instead: Kaldi fbank frames depend only on their own 25 ms window, so only
    the frames of new samples are computed (bit-equal to the whole-wave fbank); CMVN is then applied to all of
    them (utterance CMVN: the statistics of the whole prefix, so every frame changes a little as audio arrives;
    global CMVN: fixed statistics, so the features of past frames never change)."""

    def __init__(self, data_config: dict[str, Any]):
        from_data = getattr(FeatureConfig, "from_data", None)  # reads data.cmvn / global stats where supported
        config = from_data(data_config) if from_data else FeatureConfig(features=data_config.get("features", "fbank"))
        self.features, self.cmvn, self.num_mel_bins = config.features, config.cmvn, config.num_mel_bins
        self.fairseq_cmvn = getattr(config, "fairseq_cmvn", False)
        self.stats = None
        if getattr(config, "global_cmvn", ""):
            with np.load(config.global_cmvn) as stats:
                self.stats = stats["mean"].astype(np.float32), stats["std"].astype(np.float32)
        self.reset()

    def min_samples(self) -> int:
        return 400  # one 25 ms window: fbank's first frame, wav2vec2's first conv

    def _normalize(self, feats: np.ndarray) -> np.ndarray:
        if self.stats is not None:
            return global_cmvn(feats, *self.stats)
        if self.cmvn:
            return (utterance_cmvn_fairseq if self.fairseq_cmvn else utterance_cmvn)(feats)
        return feats

    def __call__(self, wave: np.ndarray) -> torch.Tensor:
        if self.features == "wave":
            return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        return torch.from_numpy(self._normalize(compute_fbank(wave, self.num_mel_bins)))

    def reset(self) -> None:
        self.wave = np.zeros(0, dtype=np.float32)
        self._fbank = knf.OnlineFbank(fbank_options(self.num_mel_bins)) if self.features == "fbank" else None
        self._frames = np.zeros((0, self.num_mel_bins), dtype=np.float32)

    def push(self, samples: np.ndarray) -> None:
        self.wave = np.concatenate([self.wave, samples])
        if self._fbank is not None and len(samples):
            # Kaldi expects 16-bit integer sample values (as compute_fbank)
            self._fbank.accept_waveform(SAMPLE_RATE, samples * 32768.0)
            first, ready = len(self._frames), self._fbank.num_frames_ready
            if ready > first:
                new = np.stack([self._fbank.get_frame(i) for i in range(first, ready)])
                self._frames = np.concatenate([self._frames, new])

    def current(self) -> torch.Tensor:
        """The features of everything pushed since `reset`: equal to `self(self.wave)`."""
        if self.features == "wave":
            return torch.from_numpy(self.wave.copy())
        return torch.from_numpy(self._normalize(self._frames))

    def length(self, n_samples: int) -> int:
        return n_samples if self.features == "wave" else fbank_frames(n_samples)


def _decoder_layers(model) -> list[DecoderLayer]:
    """The decoder layers of every TransformerDecoder in the model (the one decode_step runs records)."""
    return [layer for module in model.modules() if isinstance(module, TransformerDecoder) for layer in module.layers]


class StreamingTranslator:
    """One utterance at a time: `push(samples, finished)` -> the newly committed piece; `reset()` between."""

    def __init__(
        self,
        model,
        vocab,
        data_config: dict[str, Any],
        options: PolicyOptions,
        *,
        task: str = "st",
        tgt_lang: str = "de",
        src_lang: str = "en",
        device: str = "cpu",
        encoder_cache: bool = True,
    ):
        self.model, self.vocab, self.options, self.device = model.eval(), vocab, options, device
        self.task = get_task(task)
        self.features = FeatureExtractor(data_config)
        self.tag_lang = {"tgt_lang": tgt_lang, "src_lang": src_lang}[self.task.prefix_lang]
        self.use_tag = data_config.get("prepend_lang_tag", True)
        if options.policy == "alignatt":
            decoders = [m for m in model.modules() if isinstance(m, TransformerDecoder)]
            if not decoders:
                raise ValueError("alignatt needs a model whose decoder is a TransformerDecoder (cross-attention)")
            self.attn_layers = [d.layers[options.attn_layer] for d in decoders]
        # chunk-causal encoders keep the states of complete past chunks between pushes (EncoderStateCache)
        self.cached_encoders = [
            m for m in model.modules() if isinstance(m, TransformerEncoder) and m.chunk_frames > 0 and encoder_cache
        ]
        self.reset()

    @property
    def wave(self) -> np.ndarray:
        """The samples received since `reset`."""
        return self.features.wave

    def reset(self) -> None:
        self.features.reset()
        self.encoder_caches = [EncoderStateCache() for _ in self.cached_encoders]
        self.committed: list[int] = []
        self.committed_text = ""
        self.chunks = 0
        self.history: list[list[int]] = []  # la: the last hypotheses (without the forced prefix)
        self.finished = False

    # ------------------------------------------------------------------------------------------ batch / decode

    def _batch(self, audio: torch.Tensor | None = None) -> dict[str, Any]:
        """The model batch of the received audio (or of `audio`, features of another prefix)."""
        audio = self.features.current() if audio is None else audio
        length = audio.size(0)
        batch: dict[str, Any] = {
            "ids": ["stream"],
            "task": self.task.name,
            "audio": audio.unsqueeze(0).to(self.device),
            "audio_lengths": torch.tensor([length], device=self.device),
            "audio_padding_mask": torch.zeros(1, length, dtype=torch.bool, device=self.device),
            "prefix": None,
            "ntokens": 0,
        }
        if self.use_tag:
            batch["prefix"] = torch.tensor([[self.vocab.tag(self.tag_lang)]], device=self.device)
        return batch

    def _forced(self, batch: dict[str, Any]) -> list[int]:
        prefix = self.model.decode_prefix(batch)
        return [] if prefix is None else prefix[0].tolist()

    def _max_len(self) -> int:
        return int(self.options.max_len_a * self.features.length(len(self.wave)) + self.options.max_len_b)

    def _greedy(
        self, batch: dict[str, Any], enc, budget: int | None, check_attention: bool, allow_eos: bool
    ) -> tuple[list[int], bool]:
        """Greedy continuation of forced prefix + committed: up to `budget` new tokens (None: no limit).

        Returns the new tokens and whether </s> was reached (and allowed). With `check_attention` a candidate
        whose cross-attention argmax lies in the last `frames` encoder frames stops the continuation."""
        forced = self._forced(batch)
        tokens = [self.model.eos] + forced + self.committed
        # beam search's own constraints: greedy is then exactly beam search with beam 1
        processors = self.model.logit_processors(batch) + [NoToken(self.model.pad), MinLength(1, self.model.eos)]
        n_frames = int((~enc["memory_padding_mask"][0]).sum()) if "memory_padding_mask" in enc else None
        new: list[int] = []
        cache = None
        max_len = self._max_len()
        for layer in self.attn_layers if check_attention else []:
            layer.keep_cross_attention = True
        try:
            while budget is None or len(new) < budget:
                if len(tokens) - 1 >= max_len:  # the limit counts the forced prefix, as offline search does
                    return new, True
                row = torch.tensor([tokens], device=self.device)
                for layer in self.attn_layers if check_attention else []:
                    layer.cross_attention = None
                lp, cache = self.model.decode_step(row, enc, cache)
                lp = apply_processors(processors, lp.float(), len(tokens) - 1, row, self.model.eos)
                token = int(lp[0].argmax())
                if token == self.model.eos:
                    return new, allow_eos
                if check_attention:
                    attn = next(
                        layer.cross_attention for layer in self.attn_layers if layer.cross_attention is not None
                    )[0, -1]
                    frames = n_frames if n_frames is not None else attn.size(-1)
                    if int(attn[:frames].argmax()) >= frames - self.options.frames:
                        return new, False
                new.append(token)
                tokens.append(token)
            return new, False
        finally:
            for layer in self.attn_layers if check_attention else []:
                layer.keep_cross_attention, layer.cross_attention = False, None

    def _beam(self, batch: dict[str, Any], beam: int) -> list[int]:
        """Full re-decoding with forced prefix + committed tokens (beam search); the tokens after them."""
        forced = self._forced(batch)
        if len(forced) + len(self.committed) >= self._max_len():
            return []
        prefix = torch.tensor([forced + self.committed], device=self.device) if forced + self.committed else None
        # the length limit a·|x| + b counts the forced prefix, as offline search and _greedy do
        hyp = beam_search(
            self.model,
            batch,
            beam=beam,
            max_len_a=self.options.max_len_a,
            max_len_b=self.options.max_len_b,
            prefix=prefix,
        )[0][0].tokens
        hyp = hyp[:-1] if hyp and hyp[-1] == self.model.eos else hyp
        return hyp[len(forced) + len(self.committed) :]

    # ------------------------------------------------------------------------------------------ policy

    @torch.inference_mode()
    def push(self, samples: np.ndarray | list[float], finished: bool = False) -> Commit:
        """Append a chunk of 16 kHz float samples; returns what the policy commits after it."""
        if self.finished:
            raise RuntimeError("the utterance is finished: reset() before the next one")
        self.features.push(np.asarray(samples, dtype=np.float32))
        self.chunks += 1
        seconds = len(self.wave) / SAMPLE_RATE
        if len(self.wave) < self.features.min_samples():
            if not finished:
                return Commit([], "", seconds, False)
            self.finished = True
            return Commit([], "", seconds, True)
        for encoder, cache in zip(self.cached_encoders, self.encoder_caches):
            encoder.stream_cache = cache
        try:
            new = self._decide(finished)
        finally:
            for encoder in self.cached_encoders:
                encoder.stream_cache = None
        self.committed += new
        self.finished = finished
        text = self.text()
        piece = text[len(self.committed_text) :] if text.startswith(self.committed_text) else text
        self.committed_text = text
        return Commit(new, piece, seconds, finished)

    def text(self) -> str:
        return self.model.output_texts(self.committed, self.vocab, self.task).get(self.task.output, "")

    def _decide(self, finished: bool) -> list[int]:
        o = self.options
        batch = self._batch()
        if finished:
            beam = max(o.final_beam, o.la_beam if o.policy == "la" else 1)
            if beam > 1:
                return self._beam(batch, beam)
            return self._greedy(batch, self.model.encode(batch), None, False, True)[0]
        if o.policy == "waitk":
            allowed = self.chunks - o.k + 1
            if allowed <= len(self.committed):
                return []
            return self._greedy(batch, self.model.encode(batch), allowed - len(self.committed), False, False)[0]
        if o.policy == "alignatt":
            return self._greedy(batch, self.model.encode(batch), None, True, False)[0]
        # local agreement: hypotheses are whole continuations of what is committed (beam 1: greedy, the same
        # hypothesis without beam search's bookkeeping)
        if o.la_beam > 1:
            hyp = self.committed + self._beam(batch, o.la_beam)
        else:
            hyp = self.committed + self._greedy(batch, self.model.encode(batch), None, False, True)[0]
        self.history = (self.history + [hyp])[-o.la_n :]
        if len(self.history) < o.la_n:
            return []
        agreed = longest_common_prefix(self.history)
        return agreed[len(self.committed) :] if len(agreed) > len(self.committed) else []


def longest_common_prefix(seqs: list[list[int]]) -> list[int]:
    out: list[int] = []
    for items in zip(*seqs):
        if any(item != items[0] for item in items):
            break
        out.append(items[0])
    return out


def chunks_of(wave: np.ndarray, chunk_ms: float) -> list[np.ndarray]:
    size = max(1, math.ceil(chunk_ms / 1000 * SAMPLE_RATE))
    return [wave[i : i + size] for i in range(0, len(wave), size)] or [wave]


def file_chunks(path: str, chunk_ms: float, realtime: bool = False) -> Iterator[np.ndarray]:
    """16 kHz mono float chunks of `chunk_ms` of an audio file, read block by block: channels averaged, other
    rates resampled as a stream (soxr, equal to resampling the whole file); `realtime` sleeps as long as each
    chunk lasts, like a microphone. An unreadable file raises DataError naming it."""
    import soundfile as sf

    if not os.path.isfile(path):
        raise DataError(path, "no such audio file")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(path, f"cannot read the audio: {err}") from None
    if info.format == "MP3":  # libsndfile's MPEG decoder is wrong after a partial read (data/audio.py): whole file
        pieces = iter(chunks_of(load_audio(path), chunk_ms)) if info.frames else iter(())
    else:
        pieces = _resampled_blocks(path, info, chunk_ms)
    for samples in pieces:
        if realtime:
            time.sleep(len(samples) / SAMPLE_RATE)
        yield samples


def _resampled_blocks(path: str, info, chunk_ms: float) -> Iterator[np.ndarray]:
    import soundfile as sf
    import soxr

    size = max(1, round(chunk_ms / 1000 * info.samplerate))
    resampler = soxr.ResampleStream(info.samplerate, SAMPLE_RATE, 1, dtype="float32")
    read = 0
    try:
        for block in sf.blocks(path, blocksize=size, dtype="float32", always_2d=True):
            read += len(block)
            samples = block.mean(axis=1)
            if info.samplerate != SAMPLE_RATE:
                samples = resampler.resample_chunk(samples, last=read >= info.frames)
            yield samples
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(path, f"the audio breaks off after {read} samples: {err}") from None


PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def pcm_chunks(stream: BinaryIO, chunk_ms: float, fmt: str = "s16le") -> Iterator[np.ndarray]:
    """16 kHz mono float chunks of raw little-endian PCM (`s16le` or `f32le`) read from a binary stream until
    it ends. A stream that ends inside a sample loses that partial sample, with a warning on stderr."""
    dtype = PCM_FORMATS[fmt]
    want = max(1, round(chunk_ms / 1000 * SAMPLE_RATE)) * dtype.itemsize
    rest = b""
    while True:
        data = stream.read(want - len(rest))
        if not data:
            break
        data, rest = rest + data, b""
        whole = len(data) // dtype.itemsize * dtype.itemsize
        data, rest = data[:whole], data[whole:]
        if data:
            samples = np.frombuffer(data, dtype=dtype).astype(np.float32)
            yield samples / 32768.0 if fmt == "s16le" else samples
    if rest:
        print(
            f"warning: the {fmt} stream ended inside a sample: {len(rest)} trailing byte(s) dropped",
            file=sys.stderr,
        )


def stream_wave(translator: StreamingTranslator, wave: np.ndarray, chunk_ms: float) -> list[Commit]:
    """Push a whole wave in chunks of `chunk_ms`; the commits (empty ones included)."""
    translator.reset()
    pieces = chunks_of(wave, chunk_ms)
    return [translator.push(piece, finished=i == len(pieces) - 1) for i, piece in enumerate(pieces)]


@dataclass
class Piece:
    """A committed piece of a stream: its text, the absolute audio time of the commit, and the utterance
    (VAD segment) it belongs to, with that segment's start; `end` is set on the last piece of a segment."""

    text: str
    time: float
    segment: int
    start: float
    end: float | None = None


def stream_segments(translator: StreamingTranslator, chunks, *, vad=None):
    """Translate an endless stream: `chunks` yields float 16 kHz arrays; with `vad` (longform.VadOptions) an
    utterance ends where `vad.min_silence` s of non-speech follow speech (the chunk is cut there), or at
    `vad.max_seconds`; the translator then starts afresh, so memory and per-chunk cost stay bounded however long
    the audio. Leading non-speech is dropped. Yields `Piece`s."""
    import webrtcvad

    frame = SAMPLE_RATE * (vad.frame_ms if vad else 30) // 1000
    detector = webrtcvad.Vad(vad.aggressiveness) if vad else None
    state = {"received": 0, "start": 0.0, "segment": 0, "silent": 0, "heard": False}
    pending = np.zeros(0, dtype=np.float32)  # samples not yet cut into VAD frames
    translator.reset()

    def push(samples: np.ndarray, end: bool):
        state["received"] += len(samples)
        now = state["received"] / SAMPLE_RATE
        if not state["heard"] and not end:  # nothing spoken yet: drop the silence, do not translate it
            state["start"] = now
            return
        commit = translator.push(samples, finished=end)
        if commit.text or end:
            yield Piece(commit.text, now, state["segment"], state["start"], now if end else None)
        if end:
            state.update(segment=state["segment"] + 1, start=now, heard=False, silent=0)
            translator.reset()

    for chunk in chunks:
        chunk = np.asarray(chunk, dtype=np.float32)
        if detector is None:
            state["heard"] = True
            yield from push(chunk, False)
            continue
        # cut the chunk where a pause completes or the segment reaches its limit
        first = len(pending)  # pending[j] is chunk[j - first]: the first samples are left from the last chunk
        pending = np.concatenate([pending, chunk])
        used = 0  # samples of `chunk` already pushed
        n = len(pending) // frame
        for f in range(n):
            pcm = (np.clip(pending[f * frame : (f + 1) * frame], -1, 1) * 32767).astype(np.int16)
            if detector.is_speech(pcm.tobytes(), SAMPLE_RATE):
                if not state["heard"]:  # speech starts: the segment starts at this frame
                    skip = max(0, (f * frame) - first - used)
                    yield from push(chunk[used : used + skip], False)
                    used += skip
                state["silent"], state["heard"] = 0, True
            else:
                state["silent"] += 1
            cut = max(0, (f + 1) * frame - first)  # end of this frame within the chunk
            length = (state["received"] + cut - used) / SAMPLE_RATE - state["start"]
            pause = state["heard"] and state["silent"] * vad.frame_ms / 1000 >= vad.min_silence
            if pause or (state["heard"] and length >= vad.max_seconds):
                yield from push(chunk[used:cut], True)
                used = cut
        pending = pending[n * frame :]
        if used < len(chunk):
            yield from push(chunk[used:], False)
    if translator.chunks and not translator.finished:
        yield from push(np.zeros(0, dtype=np.float32), True)
