"""XSTNet (Ye, Wang, Li 2021): one Transformer encoder–decoder shared by speech and text.

Audio: raw wave -> wav2vec 2.0 (`acoustic`) -> Conv1dSubsampler (`subsampler`) -> ×√D, with the `<audio>`
tag embedding in front, + sinusoidal positions. Text: the shared token embedding ×√D + positions (the MT
source is the batch's `transcript`, `<en> x </s>`). Both go through the same `encoder`; the `decoder`
ties its output projection to the token embedding, which is also the encoder's text embedding
(`decoder.embed_tokens`). Tasks: st (audio -> target), asr (audio -> transcript), mt (transcript -> target),
triplet (all three from one batch); loss L_ST + L_ASR + L_MT with equal weights.

Positions on the audio path: the `<audio>` tag takes the first position and the frames the following
ones (the tag is part of the sequence, exactly as a language tag is part of a text source).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Wav2Vec2Config

from speechxl.errors import DataError
from speechxl.losses import label_smoothed_nll_loss
from speechxl.models.base import (
    Seq2SeqConfig,
    SpeechModel,
    build_encoder_decoder,
    config_from_preset,
    config_to_dict,
    prefix_size,
)
from speechxl.modules.positions import SinusoidalPositions
from speechxl.modules.subsampling import Conv1dSubsampler, lengths_to_padding_mask
from speechxl.modules.wav2vec2 import Wav2Vec2Encoder, wav2vec2_config
from speechxl.tasks import AUDIO, TEXT, get_task

# `base` is the paper's model; `tiny` is for tests and SynthST on a CPU (same 320-sample wav2vec2 stride).
SIZES: dict[str, dict[str, Any]] = {
    "base": dict(
        w2v_preset="base",
        w2v_overrides={},
        conv_channels=1024,
        dim=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_heads=8,
        decoder_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        dropout=0.1,
    ),
    "tiny": dict(
        w2v_preset="tiny",
        w2v_overrides=dict(
            conv_dim=[64] * 7, hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192
        ),
        conv_channels=256,
        dim=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_heads=4,
        decoder_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        dropout=0.1,
    ),
}

# A triplet batch trains three losses: (loss name, encoder input, decoder target). Every other task trains
# one loss, as the task table says (speechxl/tasks.py).
TRIPLET_LOSSES = (("st", AUDIO, "target"), ("asr", AUDIO, "transcript"), ("mt", TEXT, "target"))


@dataclass
class XSTNetConfig(Seq2SeqConfig):
    # wav2vec 2.0: an HF Wav2Vec2Model directory (`w2v_path`), else a full HF config dict (`w2v_config`, what
    # `to_dict` writes so a checkpoint rebuilds without the directory), else a preset plus overrides.
    w2v_path: str = ""
    w2v_config: dict[str, Any] = field(default_factory=dict)
    w2v_preset: str = "base"
    w2v_overrides: dict[str, Any] = field(default_factory=dict)
    w2v_layerdrop: float = 0.0
    feature_grad_mult: float = 1.0  # fairseq's scale of the CNN feature extractor's gradient (0.1 optional)
    w2v_checkpointing: bool = False  # recompute wav2vec2's Transformer layers in backward (less memory, ~30% more time)
    w2v_normalize: bool | None = None  # per-utterance waveform normalisation; None: from the w2v config
    audio_tag: bool = True  # prepend the `<audio>` tag embedding to audio inputs

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "XSTNetConfig":
        """`size` (base/tiny, default base) gives the preset; other keys override it."""
        return config_from_preset(cls, config, SIZES, "base", "xstnet")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, "xstnet")


def build_acoustic(c: XSTNetConfig) -> Wav2Vec2Encoder:
    """The wav2vec 2.0 encoder the config asks for (loaded from `w2v_path`, or randomly initialised)."""
    options = dict(feature_grad_mult=c.feature_grad_mult, normalize=c.w2v_normalize, checkpointing=c.w2v_checkpointing)
    if c.w2v_path:
        if not os.path.isfile(os.path.join(c.w2v_path, "config.json")):
            raise DataError(c.w2v_path, "w2v_path is not an HF Wav2Vec2Model directory (no config.json)")
        return Wav2Vec2Encoder.from_pretrained(c.w2v_path, layerdrop=c.w2v_layerdrop, **options)
    if c.w2v_config:
        config = Wav2Vec2Config.from_dict({**c.w2v_config, "layerdrop": c.w2v_layerdrop, "mask_time_prob": 0.0})
    else:
        config = wav2vec2_config(c.w2v_preset, layerdrop=c.w2v_layerdrop, **c.w2v_overrides)
    return Wav2Vec2Encoder(config, **options)


class XSTNet(SpeechModel):
    def __init__(self, config: XSTNetConfig, vocab_size: int, pad: int, eos: int, audio_tag_id: int | None):
        super().__init__()
        if config.audio_tag and audio_tag_id is None:
            raise DataError("model config", "audio_tag is on but the vocabulary has no <audio> tag")
        self.config, self.pad, self.eos = config, pad, eos
        self.audio_tag_id = audio_tag_id if config.audio_tag else None
        c = config
        with torch.random.fork_rng(devices=[]):
            # wav2vec2 draws its random init from a stream of its own, so the rest of the model starts from
            # the same weights whether wav2vec2 is random or loaded (a clean pre-trained vs random ablation)
            torch.manual_seed(int(torch.randint(2**62, ())))
            self.acoustic = build_acoustic(c)
        self.subsampler = Conv1dSubsampler(
            self.acoustic.output_dim, c.conv_channels, c.dim, c.conv_kernel_sizes, mask_padding=c.mask_conv_padding
        )
        self.embed_scale = math.sqrt(c.dim)
        self.embed_positions = SinusoidalPositions(c.dim, padding_idx=pad)
        self.encoder, self.decoder = build_encoder_decoder(c, vocab_size, pad)

    @classmethod
    def from_config(cls, config: dict[str, Any], vocab) -> "XSTNet":
        audio_tag = vocab.tag("audio") if vocab.has_tag("audio") else None
        return cls(XSTNetConfig.from_dict(config), len(vocab), vocab.pad, vocab.eos, audio_tag)

    def checkpoint_config(self) -> dict[str, Any]:
        """The model config that rebuilds this architecture without `w2v_path` (its weights come from the
        checkpoint): the loaded wav2vec2 config is written in full and the normalisation choice resolved."""
        values = self.config.to_dict()
        values.update(w2v_path="", w2v_config=self.acoustic.config.to_dict(), w2v_normalize=self.acoustic.normalize)
        return values

    def acoustic_encoder(self) -> Wav2Vec2Encoder:
        return self.acoustic

    # ------------------------------------------------------------------------------------------- encoder

    @property
    def embed_tokens(self) -> nn.Embedding:
        """The one token embedding (owned by the decoder, which ties its output projection to it)."""
        return self.decoder.embed_tokens

    def encoder_input(self, batch: dict[str, Any]) -> str:
        """ "audio" or "text": `batch["encoder_input"]` when set, else the task's (mt reads the transcript)."""
        task = batch.get("task")
        default = get_task(task).encoder_input if task else (AUDIO if batch.get("audio") is not None else TEXT)
        choice = batch.get("encoder_input") or default
        if choice not in (AUDIO, TEXT):
            raise ValueError(f"encoder_input must be 'audio' or 'text', not {choice!r}")
        return choice

    def output_lengths(self, audio_lengths: torch.Tensor) -> torch.Tensor:
        """Encoder positions for waves of `audio_lengths` samples: wav2vec2 CNN, subsampler, + the tag."""
        frames = self.subsampler.output_lengths(self.acoustic.output_lengths(audio_lengths))
        return frames + (1 if self.audio_tag_id is not None else 0)

    def embed_audio(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) wave -> (B, S, D) embedded encoder input and its padding mask (B, S)."""
        if wave.dim() != 2:
            raise ValueError(f"xstnet reads raw 16 kHz waves (B, T), got {tuple(wave.shape)}: set data.features=wave")
        padding = torch.arange(wave.size(1), device=wave.device)[None, :] >= lengths[:, None]
        states, frame_padding = self.acoustic(wave, padding)
        x, frame_lengths = self.subsampler(states, (~frame_padding).sum(dim=1))
        x = self.embed_scale * x
        if self.audio_tag_id is not None:
            tag = self.embed_tokens.weight[self.audio_tag_id].to(x.dtype)
            x = torch.cat([self.embed_scale * tag.expand(x.size(0), 1, -1), x], dim=1)
            frame_lengths = frame_lengths + 1
        padding_mask = lengths_to_padding_mask(frame_lengths, x.size(1))
        return x + self.embed_positions(padding_mask), padding_mask

    def embed_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) right-padded tokens -> (B, S, D) embedded encoder input and its padding mask."""
        padding_mask = tokens.eq(self.pad)
        return self.embed_scale * self.embed_tokens(tokens) + self.embed_positions(padding_mask), padding_mask

    def encode_audio(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, padding_mask = self.embed_audio(batch["audio"], batch["audio_lengths"])
        return {"memory": self.encoder(x, padding_mask), "memory_padding_mask": padding_mask}

    def encode_text(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, padding_mask = self.embed_text(batch["transcript"])
        return {"memory": self.encoder(x, padding_mask), "memory_padding_mask": padding_mask}

    def encode(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Memory (B, S, D) and its padding mask (B, S) of the input `encoder_input(batch)` picks."""
        return self.encode_audio(batch) if self.encoder_input(batch) == "audio" else self.encode_text(batch)

    # ------------------------------------------------------------------------------------------- training

    def _loss(
        self, enc: dict[str, torch.Tensor], prev: torch.Tensor, target: torch.Tensor, skip: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        logits = self.decoder(prev, enc["memory"], enc["memory_padding_mask"])
        return label_smoothed_nll_loss(
            logits, target, epsilon=self.label_smoothing, ignore_index=self.pad, ignore_prefix_size=skip
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Losses of the batch's task (triplet: st + asr + mt, equal weights).

        `loss` and `sample_size` are sums over the included losses: sample_size is the total number of
        target tokens that carry loss (language-tag prefix excluded), so a triplet batch counts its
        target tokens twice (st and mt) plus its transcript tokens (asr). `logs` has `<task>_loss` and
        `<task>_ntokens` per included task, and `nll_loss` / `ntokens` over all of them.
        """
        task = batch.get("task") or "st"
        spec = get_task(task)
        losses = TRIPLET_LOSSES if task == "triplet" else ((task, spec.encoder_input, spec.decoder_target),)
        skip = prefix_size(batch)
        encoded: dict[str, dict[str, torch.Tensor]] = {}
        total = None
        logs: dict[str, float] = {"nll_loss": 0.0, "ntokens": 0, "nsentences": len(batch["ids"])}
        for name, source, target_key in losses:
            if source not in encoded:  # a triplet encodes its audio once for st and asr
                encoded[source] = self.encode_audio(batch) if source == AUDIO else self.encode_text(batch)
            loss, nll, ntokens = self._loss(encoded[source], batch[f"prev_{target_key}"], batch[target_key], skip)
            total = loss if total is None else total + loss
            logs[f"{name}_loss"], logs[f"{name}_ntokens"] = loss.item(), ntokens
            logs["nll_loss"] += nll.item()
            logs["ntokens"] += ntokens
        return {"loss": total, "sample_size": logs["ntokens"], "logs": logs}
