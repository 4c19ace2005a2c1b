"""fairseq's `s2t_transformer`: fbank -> Conv1dSubsampler -> ×√D + positions -> Transformer encoder ->
Transformer decoder with tied embeddings, trained with label-smoothed cross-entropy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speechxl.losses import ctc_loss, label_smoothed_nll_loss
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
from speechxl.tasks import get_task

# fairseq's s2t_transformer_{xs,s,m,l} registrations; attention/activation dropout default to `dropout`.
SIZES: dict[str, dict[str, Any]] = {
    "xs": dict(
        dim=256,
        encoder_layers=6,
        decoder_layers=3,
        encoder_heads=4,
        decoder_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
        dropout=0.3,
    ),
    "s": dict(
        dim=256,
        encoder_layers=12,
        decoder_layers=6,
        encoder_heads=4,
        decoder_heads=4,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        dropout=0.1,
    ),
    "m": dict(
        dim=512,
        encoder_layers=12,
        decoder_layers=6,
        encoder_heads=8,
        decoder_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        dropout=0.15,
    ),
    "l": dict(
        dim=1024,
        encoder_layers=12,
        decoder_layers=6,
        encoder_heads=16,
        decoder_heads=16,
        encoder_ffn_dim=4096,
        decoder_ffn_dim=4096,
        dropout=0.2,
    ),
}


@dataclass
class S2TConfig(Seq2SeqConfig):
    input_dim: int = 80
    # Auxiliary CTC on the encoder output against the transcript (triplet batches), weighted into the loss:
    # joint CTC/attention training makes the encoder learn acoustics much sooner. 0 = fairseq's model.
    ctc_weight: float = 0.0

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "S2TConfig":
        """`size` (xs/s/m/l, default s) gives fairseq's preset; other keys override it."""
        return config_from_preset(cls, config, SIZES, "s", "s2t")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, "s2t")


class S2TTransformer(SpeechModel):
    def __init__(self, config: S2TConfig, vocab_size: int, pad: int, eos: int, blank: int = 0):
        super().__init__()
        self.config, self.pad, self.eos, self.blank = config, pad, eos, blank
        c = config
        self.subsampler = Conv1dSubsampler(
            c.input_dim, c.conv_channels, c.dim, c.conv_kernel_sizes, mask_padding=c.mask_conv_padding
        )
        self.embed_scale = math.sqrt(c.dim)
        self.embed_positions = SinusoidalPositions(c.dim, padding_idx=pad)
        self.encoder, self.decoder = build_encoder_decoder(c, vocab_size, pad)

        # CTC blank = <s>, which never occurs inside a target (fairseq's choice for speech CTC)
        self.ctc_head = nn.Linear(c.dim, vocab_size) if c.ctc_weight > 0 else None

    @classmethod
    def from_config(cls, config: dict[str, Any], vocab) -> "S2TTransformer":
        return cls(S2TConfig.from_dict(config), len(vocab), vocab.pad, vocab.eos, blank=vocab.bos)

    def encode(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """(B, T, input_dim) fbank -> memory (B, S, D) and its padding mask (B, S)."""
        x, lengths = self.subsampler(batch["audio"], batch["audio_lengths"])
        padding_mask = lengths_to_padding_mask(lengths, x.size(1))
        x = self.embed_scale * x + self.embed_positions(padding_mask)
        return {"memory": self.encoder(x, padding_mask), "memory_padding_mask": padding_mask}

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        task = batch.get("task") or "st"
        spec = get_task(task)
        if spec.encoder_input != "audio":
            raise ValueError(f"s2t reads audio; task {task!r} has a text encoder input")
        # ASR is the same model with the transcript as target (its <src_lang> tag tells the decoder)
        key = spec.decoder_target
        target, prev = batch[key], batch[f"prev_{key}"]
        enc = self.encode(batch)
        # logits only for the tokens that carry loss: padding and the forced prefix are a third of a batch
        scored = target.ne(self.pad)
        scored[:, : prefix_size(batch)] = False
        logits = self.decoder(prev, enc["memory"], enc["memory_padding_mask"], rows=scored)
        loss, nll, ntokens = label_smoothed_nll_loss(
            logits, target[scored], epsilon=self.label_smoothing, ignore_index=self.pad
        )
        # sample_size counts the tokens that carry loss (the ignored language tag is not one of them)
        name = "st" if task == "triplet" else task  # s2t reads a triplet as ST (+ CTC on its transcript)
        logs = {f"{name}_loss": loss.item(), "nll_loss": nll.item(), "ntokens": ntokens, "nsentences": target.size(0)}
        if self.ctc_head is not None and batch.get("transcript") is not None:
            ctc = self._ctc(enc, batch, prefix_size(batch))
            logs["ctc_loss"] = ctc.item()
            loss = loss + self.config.ctc_weight * ctc
        return {"loss": loss, "sample_size": ntokens, "logs": logs}

    def _ctc(self, enc: dict[str, torch.Tensor], batch: dict[str, Any], skip: int) -> torch.Tensor:
        """CTC against the transcript without its language tag (`skip` tokens) and </s> (neither is spoken)."""
        tokens = batch["transcript"][:, skip:]
        lengths = batch["transcript_lengths"] - skip - 1
        tokens = tokens.masked_fill(tokens.eq(self.eos), self.pad)
        frames = (~enc["memory_padding_mask"]).sum(1)
        return ctc_loss(self.ctc_head(enc["memory"]), frames, tokens, lengths, blank=self.blank)
