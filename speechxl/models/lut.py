"""LUT (Dong et al., AAAI 2021, "Listen, Understand and Translate: Triple Supervision Decouples End-to-end
Speech-to-text Translation").

Listen: fbank -> COSTT's front end and acoustic encoder (`front`) with a CTC head on the transcript.
Understand: a semantic encoder (`encoder`) on the acoustic states (optionally CTC-shrunk, `shrink`; off by
default as in the paper), whose states S are read by the transcript's text-encoder states H through a 4-head
attention (query = H, keys = values = S, `semantic_attn`); the result is pulled to H with MSE.
Translate: the decoder (`decoder`, tied embeddings) on S.
Loss on a triplet batch: `ctc_weight`·CTC + `mse_weight`·MSE + `ce_weight`·CE (0.5 / 0.05 / 0.45).

The text encoder (the teacher) is the encoder of a speechxl MT checkpoint (`teacher_path`): any model with
`encode_text(batch)` (XSTNet trained on mt, or COSTT after its MT step), with the same vocabulary. It is
frozen and kept outside the module tree: it is not in `state_dict`, not in the optimizer, not moved by
`.to()` with the rest (it follows the batch's device), and `checkpoint_config()` drops `teacher_path`, so a
checkpoint rebuilds (and `speechxl translate` decodes) without it. Training a triplet batch with
`mse_weight` > 0 needs it.

MSE: the squared distance per text token, averaged over the hidden dimension, summed over the non-padding
tokens of H (language tag and </s> included: the teacher encodes them too); a sum like every speechxl loss.

CTC blank = `<s>` (id 0). Tasks: triplet (all three losses), st (CE only), asr (CTC only: the listen step).
Decoding is the default: the target-language tag forced, the translation out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speechxl.errors import DataError, TrainingError
from speechxl.losses import ctc_loss, label_smoothed_nll_loss
from speechxl.models.base import (
    SpeechModel,
    build_encoder_decoder,
    config_from_preset,
    config_to_dict,
    load_model,
    prefix_size,
)
from speechxl.models.costt import FRONT_ENDS, SHRINK, SIZES, CosttConfig, FbankCTCEncoder, ctc_targets
from speechxl.modules.positions import SinusoidalPositions
from speechxl.modules.shrink import ctc_shrink

# the same presets as COSTT (its acoustic encoder, semantic encoder and decoder are LUT's too)


@dataclass
class LUTConfig(CosttConfig):
    shrink: str = "none"
    ctc_weight: float = 0.5
    mse_weight: float = 0.05
    ce_weight: float = 0.45
    semantic_heads: int = 4
    teacher_path: str = ""  # a speechxl MT checkpoint directory (training only; never stored in the checkpoint)
    teacher_dim: int = 0  # the teacher's hidden size; 0: `dim` (checked against the teacher when it loads)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "LUTConfig":
        c = config_from_preset(cls, config, SIZES, "base", "lut")
        if c.front_end not in FRONT_ENDS or c.shrink not in SHRINK:
            raise DataError("model config", f"lut front_end must be one of {FRONT_ENDS} and shrink one of {SHRINK}")
        return c

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, "lut")


def load_teacher(path: str, vocab) -> nn.Module:
    """The frozen text encoder: a speechxl checkpoint whose model has `encode_text`, on our vocabulary."""
    model, teacher_vocab, _ = load_model(path)
    if not hasattr(model, "encode_text"):
        raise DataError(path, f"LUT teacher {type(model).__name__} has no text encoder (encode_text)")
    if [teacher_vocab.piece(i) for i in range(len(teacher_vocab))] != [vocab.piece(i) for i in range(len(vocab))]:
        raise DataError(path, "LUT teacher has another vocabulary than the data (train both on one prep)")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class LUT(SpeechModel):
    def __init__(
        self, config: LUTConfig, vocab_size: int, pad: int, eos: int, blank: int, teacher: nn.Module | None = None
    ):
        super().__init__()
        self.config, self.pad, self.eos, self.blank = config, pad, eos, blank
        c = config
        self.front = FbankCTCEncoder(c, vocab_size, pad)
        self.embed_positions = SinusoidalPositions(c.dim, padding_idx=pad)
        self.encoder, self.decoder = build_encoder_decoder(c, vocab_size, pad)
        teacher_dim = c.teacher_dim or c.dim
        self.semantic_attn = nn.MultiheadAttention(
            teacher_dim, c.semantic_heads, kdim=c.dim, vdim=c.dim, batch_first=True
        )
        self.set_teacher(teacher)

    @classmethod
    def from_config(cls, config: dict[str, Any], vocab) -> "LUT":
        c = LUTConfig.from_dict(config)
        teacher = load_teacher(c.teacher_path, vocab) if c.teacher_path else None
        return cls(c, len(vocab), vocab.pad, vocab.eos, blank=vocab.bos, teacher=teacher)

    def set_teacher(self, teacher: nn.Module | None) -> None:
        """Attach the frozen text encoder outside the module tree (so no state_dict / parameters() sees it)."""
        if teacher is not None:
            dim = teacher.decoder.embed_tokens.embedding_dim if hasattr(teacher, "decoder") else None
            expected = self.config.teacher_dim or self.config.dim
            if dim is not None and dim != expected:
                raise DataError(
                    self.config.teacher_path or "teacher",
                    f"teacher hidden size {dim} != {expected}: set model.teacher_dim={dim}",
                )
        self.__dict__["teacher"] = teacher

    def checkpoint_config(self) -> dict[str, Any]:
        values = dict(self.built_from) if self.built_from is not None else self.config.to_dict()
        values["teacher_path"] = ""
        return values

    # ------------------------------------------------------------------------------------------- encoder

    def encode_with_acoustic(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        acoustic = self.front(batch["audio"], batch["audio_lengths"])
        states, lengths, padding_mask = acoustic["states"], acoustic["lengths"], acoustic["padding_mask"]
        if self.config.shrink != "none":
            labels = acoustic["ctc_logits"].detach().argmax(-1)
            states, lengths, padding_mask = ctc_shrink(states, labels, lengths, self.blank, self.config.shrink)
            states = states + self.embed_positions(padding_mask)
        memory = self.encoder(states, padding_mask)
        return acoustic, {"memory": memory, "memory_padding_mask": padding_mask}

    def encode(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.encode_with_acoustic(batch)[1]

    # ------------------------------------------------------------------------------------------- training

    def _mse(self, enc: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        teacher = self.teacher
        if teacher is None:
            raise TrainingError(
                "lut: mse_weight > 0 needs the text encoder: set model.teacher_path to a speechxl MT checkpoint"
            )
        device = enc["memory"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        with torch.no_grad():
            text = teacher.encode_text({"transcript": batch["transcript"], "task": "mt", "ids": batch["ids"]})
        h, h_padding = text["memory"].float(), text["memory_padding_mask"]
        pulled, _ = self.semantic_attn(
            h, enc["memory"], enc["memory"], key_padding_mask=enc["memory_padding_mask"], need_weights=False
        )
        per_token = (pulled - h).pow(2).mean(-1)
        keep = ~h_padding
        return per_token[keep].sum(), int(keep.sum())

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        task = batch.get("task") or "triplet"
        c = self.config
        if task not in ("triplet", "st", "asr"):
            raise DataError("data.tasks", f"lut trains triplet, st or asr batches, not {task!r}")
        logs: dict[str, float] = {"nsentences": len(batch["ids"])}
        acoustic, enc = self.encode_with_acoustic(batch)
        total = None
        sample_size = 0
        if task in ("triplet", "asr"):
            tokens, lengths = ctc_targets(batch, self.eos, self.pad)
            ctc = ctc_loss(acoustic["ctc_logits"], acoustic["lengths"], tokens, lengths, blank=self.blank)
            logs.update(ctc_loss=ctc.item(), ctc_ntokens=int(lengths.sum()))
            if task == "asr":
                logs["ntokens"] = int(lengths.sum())
                return {"loss": ctc, "sample_size": int(lengths.sum()), "logs": logs}
            total = c.ctc_weight * ctc
        if task == "triplet" and c.mse_weight > 0:
            mse, n_text = self._mse(enc, batch)
            logs.update(mse_loss=mse.item(), mse_ntokens=n_text)
            total = total + c.mse_weight * mse
        logits = self.decoder(batch["prev_target"], enc["memory"], enc["memory_padding_mask"])
        ce, nll, ntokens = label_smoothed_nll_loss(
            logits,
            batch["target"],
            epsilon=self.label_smoothing,
            ignore_index=self.pad,
            ignore_prefix_size=prefix_size(batch),
        )
        logs.update(st_loss=ce.item(), st_ntokens=ntokens, nll_loss=nll.item(), ntokens=ntokens)
        weight = c.ce_weight if task == "triplet" else 1.0
        total = weight * ce if total is None else total + weight * ce
        sample_size += ntokens
        return {"loss": total, "sample_size": sample_size, "logs": logs}
