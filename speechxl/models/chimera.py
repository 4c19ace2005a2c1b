"""Chimera (Han, Wang, Ji, Li — Findings ACL 2021): speech and text meet in a shared semantic memory.

Audio: raw wave -> wav2vec 2.0 (`acoustic`) -> Conv1dSubsampler (`subsampler`) -> ×√D, no positions and no tag
(as the release). Text: the shared token embedding ×√D + sinusoidal positions (the MT source is the batch's
`transcript`). Both go through the same pre-norm `encoder`; its states H are read by the `memory`
(speechxl/modules/memory.py: M learned queries, 3 layers, padding masked unless `mask_memory_padding` is
off); the tied `decoder` cross-attends to the M memory slots only, whatever the input length.

Tasks: st (audio -> target), mt (transcript -> target), triplet (both from one batch + the contrastive loss
between the two memories); asr works too (audio -> transcript) but is not part of Chimera.

Loss of a triplet batch: w_st·L_ST + w_mt·L_MT + w_ctr(t)·L_CTR (`loss_weights`, default 1:1:1), where
w_ctr(t) ramps linearly from 0 to its weight over `contrastive_ramp` updates starting at update
`contrastive_ramp_start` (set it to the length of the MT pre-training stage; the release's
`--contrastive-increase-until`). `contrastive`: slot (Chimera), batch (the release's sample variant),
sentence (ConST), none; `contrastive_temperature` (default 0.1, 0.02 for sentence).

How a per-sentence loss meets token-summed CE: the trainer divides the summed loss of an update by its summed
`sample_size`. Here `sample_size` is the number of target tokens of the batch counted once (the release's
`ntokens`: a triplet batch's ST and MT share the target), so L_ST and L_MT become per-token means. The
contrastive sum over the B utterances (each utterance's loss already a mean over its slots) is multiplied
by sample_size / B before it is added: after the division it is the per-utterance mean contrastive loss,
whatever the sentence lengths, and `loss_weights` mean what they say (1:1:1 = per-token ST CE + per-token MT
CE + per-utterance contrastive). The release instead sums the slot CE over slots and utterances and divides
by the tokens, which weighs its contrastive term about M / (tokens per sentence) times more than here (~3×
for M = 64 on MuST-C); raise w_ctr to match it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from speechxl.errors import DataError
from speechxl.losses import (
    batch_contrastive_loss,
    label_smoothed_nll_loss,
    sentence_contrastive_loss,
    slot_contrastive_loss,
)
from speechxl.models.base import config_from_preset, config_to_dict, prefix_size
from speechxl.models.xstnet import SIZES, XSTNet, XSTNetConfig
from speechxl.modules.memory import SemanticMemory
from speechxl.modules.subsampling import lengths_to_padding_mask
from speechxl.tasks import AUDIO, TEXT, get_task

CONTRASTIVE = ("slot", "batch", "sentence", "none")
DEFAULT_TEMPERATURE = {"slot": 0.1, "batch": 0.1, "sentence": 0.02, "none": 0.1}
# A triplet batch: (loss name, encoder input, decoder target) + the contrastive loss between its two inputs.
TRIPLET_LOSSES = (("st", AUDIO, "target"), ("mt", TEXT, "target"))


@dataclass
class ChimeraConfig(XSTNetConfig):
    audio_tag: bool = False  # Chimera's audio path has no tag (and no positions)
    memory_slots: int = 64  # M: the release's flag default is 16, both its training scripts use 64
    memory_layers: int = 3
    mask_memory_padding: bool = True  # False: the release (its memory attends to H's padding too)
    contrastive: str = "slot"
    contrastive_temperature: float = 0.0  # 0: 0.1 (slot, batch) or 0.02 (sentence)
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # ST, MT, contrastive
    contrastive_ramp: int = 0  # updates over which the contrastive weight rises linearly from 0; 0: no ramp
    contrastive_ramp_start: int = 0  # the update the ramp starts at (the triplet stage's first)

    def __post_init__(self) -> None:
        if self.contrastive not in CONTRASTIVE:
            raise DataError(
                "model config", f"chimera contrastive {self.contrastive!r} is not one of {', '.join(CONTRASTIVE)}"
            )
        self.loss_weights = tuple(float(w) for w in self.loss_weights)
        if len(self.loss_weights) != 3:
            raise DataError(
                "model config",
                f"chimera loss_weights are 3 numbers (ST, MT, contrastive), got {list(self.loss_weights)}",
            )
        if self.audio_tag:
            raise DataError("model config", "chimera has no <audio> tag (audio_tag must be false)")
        if not self.contrastive_temperature:
            self.contrastive_temperature = DEFAULT_TEMPERATURE[self.contrastive]

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "ChimeraConfig":
        """`size` (base/tiny, default base: the paper's 6+6 layers, d 512) gives XSTNet's presets."""
        return config_from_preset(cls, config, SIZES, "base", "chimera")

    def to_dict(self) -> dict[str, Any]:
        values = config_to_dict(self, "chimera")
        values["loss_weights"] = list(self.loss_weights)
        return values


class Chimera(XSTNet):
    """XSTNet's acoustic path, text embedding, shared encoder and tied decoder, plus the semantic memory."""

    def __init__(self, config: ChimeraConfig, vocab_size: int, pad: int, eos: int):
        super().__init__(config, vocab_size, pad, eos, None)
        c = config
        self.memory = SemanticMemory(
            c.memory_slots,
            c.dim,
            c.encoder_heads,
            c.encoder_ffn_dim,
            c.memory_layers,
            dropout=c.dropout,
            attention_dropout=c.attention_dropout,
            activation_dropout=c.activation_dropout,
            activation=c.activation,
            normalize_before=c.normalize_before,
            mask_padding=c.mask_memory_padding,
        )
        self.num_updates = 0

    @classmethod
    def from_config(cls, config: dict[str, Any], vocab) -> "Chimera":
        return cls(ChimeraConfig.from_dict(config), len(vocab), vocab.pad, vocab.eos)

    def set_update(self, num_updates: int) -> None:
        self.num_updates = num_updates

    def contrastive_weight(self) -> float:
        """The contrastive loss weight at the current update (the linear ramp, then `loss_weights[2]`)."""
        weight, c = self.config.loss_weights[2], self.config
        if c.contrastive_ramp <= 0:
            return weight
        done = self.num_updates - c.contrastive_ramp_start + 1  # set_update gets the count before the update
        return weight * min(1.0, max(0.0, done / c.contrastive_ramp))

    # ------------------------------------------------------------------------------------------- encoder

    def embed_audio(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) wave -> (B, S, D): wav2vec2, subsampler, ×√D (no positions: the release adds none to audio)."""
        if wave.dim() != 2:
            raise ValueError(f"chimera reads raw 16 kHz waves (B, T), got {tuple(wave.shape)}: set data.features=wave")
        padding = torch.arange(wave.size(1), device=wave.device)[None, :] >= lengths[:, None]
        states, frame_padding = self.acoustic(wave, padding)
        x, frame_lengths = self.subsampler(states, (~frame_padding).sum(dim=1))
        return self.embed_scale * x, lengths_to_padding_mask(frame_lengths, x.size(1))

    def encode_source(self, source: str, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """`memory` (B, M, D) and its (all-False) padding mask, plus the encoder `inputs` and their padding
        mask (ConST's pooled view)."""
        if source == AUDIO:
            x, padding = self.embed_audio(batch["audio"], batch["audio_lengths"])
        else:
            x, padding = self.embed_text(batch["transcript"])
        memory = self.memory(self.encoder(x, padding), padding)
        return {
            "memory": memory,
            "memory_padding_mask": memory.new_zeros(memory.shape[:2], dtype=torch.bool),
            "inputs": x,
            "input_padding_mask": padding,
        }

    def encode_audio(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        enc = self.encode_source(AUDIO, batch)
        return {"memory": enc["memory"], "memory_padding_mask": enc["memory_padding_mask"]}

    def encode_text(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        enc = self.encode_source(TEXT, batch)
        return {"memory": enc["memory"], "memory_padding_mask": enc["memory_padding_mask"]}

    # ------------------------------------------------------------------------------------------- training

    def contrastive_loss(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-utterance contrastive losses (B,) between the audio and the text encoding of a triplet batch."""
        kind, tau = self.config.contrastive, self.config.contrastive_temperature
        if kind == "slot":
            return slot_contrastive_loss(audio["memory"], text["memory"], tau)
        if kind == "batch":
            return batch_contrastive_loss(audio["memory"], text["memory"], tau)
        return sentence_contrastive_loss(
            audio["inputs"], audio["input_padding_mask"], text["inputs"], text["input_padding_mask"], tau
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Losses of the batch's task (triplet: ST + MT + contrastive, see the module docstring).

        `sample_size`: target tokens that carry loss, counted once per batch (language-tag prefix excluded).
        `logs`: `<task>_loss` / `<task>_ntokens` per CE loss (unweighted), `nll_loss` / `ntokens` over them,
        and for a triplet `ctr_loss` (unweighted) with `ctr_ntokens` = utterances, so that the log shows the
        per-utterance mean."""
        task = batch.get("task") or "st"
        spec = get_task(task)
        losses = TRIPLET_LOSSES if task == "triplet" else ((task, spec.encoder_input, spec.decoder_target),)
        weights = {"st": self.config.loss_weights[0], "mt": self.config.loss_weights[1]}
        skip = prefix_size(batch)
        encoded: dict[str, dict[str, torch.Tensor]] = {}
        total = None
        sample_size = 0
        logs: dict[str, float] = {"nll_loss": 0.0, "ntokens": 0, "nsentences": len(batch["ids"])}
        for name, source, target_key in losses:
            encoded[source] = self.encode_source(source, batch)
            enc = encoded[source]
            logits = self.decoder(batch[f"prev_{target_key}"], enc["memory"], enc["memory_padding_mask"])
            loss, nll, ntokens = label_smoothed_nll_loss(
                logits, batch[target_key], epsilon=self.label_smoothing, ignore_index=self.pad, ignore_prefix_size=skip
            )
            weighted = weights.get(name, 1.0) * loss
            total = weighted if total is None else total + weighted
            sample_size = max(sample_size, ntokens)  # a triplet's ST and MT share their target: count it once
            logs[f"{name}_loss"], logs[f"{name}_ntokens"] = loss.item(), ntokens
            logs["nll_loss"] += nll.item()
            logs["ntokens"] += ntokens
        if task == "triplet" and self.config.contrastive != "none":
            per_utterance = self.contrastive_loss(encoded[AUDIO], encoded[TEXT])
            weight = self.contrastive_weight()
            batch_size = per_utterance.numel()
            total = total + (weight * sample_size / max(batch_size, 1)) * per_utterance.sum()
            logs["ctr_loss"], logs["ctr_ntokens"] = per_utterance.sum().item(), batch_size
        return {"loss": total, "sample_size": sample_size, "logs": logs}
