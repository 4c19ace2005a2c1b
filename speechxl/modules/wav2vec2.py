"""wav2vec 2.0 acoustic encoder on top of `transformers.Wav2Vec2Model`.

`Wav2Vec2Encoder` maps a padded batch of raw 16 kHz waves to frame states (~49 frames/s) and adds what
ST fine-tuning needs around HF's model: per-utterance waveform normalisation, freezing (always, or for
the first K updates), fairseq's `feature_grad_mult`, layerdrop, and no time masking unless asked for.

Padding: every output frame of an utterance is the same whether the utterance is padded in a batch or
not. The CNN has no padding, so valid frames only see valid samples; the transformer receives the
attention mask; and for base (group-norm) models the one GroupNorm after conv 0 takes its statistics
over each utterance's real frames only. (HF's processors instead feed group-norm models the padded wave
with no attention mask, and fairseq normalises over the padded length — both let padding change the
output; ours equals their output for the utterance alone.)
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

# Settings per preset; everything else is HF's Wav2Vec2Config default (which is wav2vec 2.0 base).
_FAIRSEQ_CNN = {"conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2]}
PRESETS: dict[str, dict[str, Any]] = {
    "base": {
        **_FAIRSEQ_CNN,
        "feat_extract_norm": "group",
        "conv_bias": False,
        "do_stable_layer_norm": False,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "do_normalize": False,
    },
    "large": {  # LV-60
        **_FAIRSEQ_CNN,
        "feat_extract_norm": "layer",
        "conv_bias": True,
        "do_stable_layer_norm": True,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "do_normalize": True,
        "codevector_dim": 768,
        "proj_codevector_dim": 768,
    },
    "tiny": {  # tests and SynthST: same stride (320 samples) as the real models, tiny widths
        **_FAIRSEQ_CNN,
        "conv_dim": [32] * 7,
        "feat_extract_norm": "group",
        "conv_bias": False,
        "do_stable_layer_norm": False,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "num_codevector_groups": 2,
        "num_codevectors_per_group": 16,
        "codevector_dim": 32,
        "proj_codevector_dim": 32,
        "num_negatives": 10,
        "do_normalize": False,
    },
}


def wav2vec2_config(preset: str = "base", **overrides: Any) -> Wav2Vec2Config:
    """A Wav2Vec2Config from a preset name (base, large, tiny) plus overrides.

    Time masking and layerdrop are off unless overridden (ST fine-tuning: no masking, layerdrop 0 or 0.05).
    `do_normalize` (per-utterance waveform normalisation) is stored in config.json beside HF's fields.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown wav2vec2 preset {preset!r}; choose from {sorted(PRESETS)}")
    settings = {**PRESETS[preset], "mask_time_prob": 0.0, "layerdrop": 0.0, **overrides}
    return Wav2Vec2Config(**settings)


def conv_output_lengths(lengths: torch.Tensor, kernels: list[int], strides: list[int]) -> torch.Tensor:
    """Frames a stack of unpadded convs makes from `lengths` samples: per conv ⌊(L − k) / s⌋ + 1."""
    for kernel, stride in zip(kernels, strides):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def _wants_normalize(config: Wav2Vec2Config, directory: str | None) -> bool:
    """Waveform normalisation: config.json's `do_normalize`, else HF's preprocessor_config.json,
    else what wav2vec 2.0 models do (layer-norm CNN ⇔ LV-60 style, normalised)."""
    if getattr(config, "do_normalize", None) is not None:
        return bool(config.do_normalize)
    if directory is not None:
        preprocessor = os.path.join(directory, "preprocessor_config.json")
        if os.path.isfile(preprocessor):
            with open(preprocessor, encoding="utf-8") as f:
                value = json.load(f).get("do_normalize")
            if value is not None:
                return bool(value)
    return config.feat_extract_norm == "layer"


class GradMultiply(torch.autograd.Function):
    """Identity forward, gradient scaled by `scale` backward (fairseq's GradMultiply)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class Wav2Vec2Encoder(nn.Module):
    """wav2vec 2.0 encoder: (wave (B, T), padding_mask (B, T)) → (states (B, T', D), padding_mask (B, T')).

    freeze: never train it (requires_grad False, forward under no_grad).
    freeze_updates: run it under no_grad until `set_update(n)` is called with n >= freeze_updates. Its
        parameters keep requires_grad so optimizers and DDP see them from the start; DDP therefore needs
        find_unused_parameters=True while it is frozen (as in fairseq).
    feature_grad_mult: scale of the CNN feature extractor's gradient (fairseq: 0.1 for ST; 0 = no grad).
    normalize: per-utterance waveform normalisation; None = from the config (see `_wants_normalize`).
    checkpointing: activation checkpointing of the Transformer layers in training (HF's gradient
        checkpointing): their activations are recomputed in backward instead of kept, on any device.
    """

    def __init__(
        self,
        config: Wav2Vec2Config,
        *,
        model: Wav2Vec2Model | None = None,
        freeze: bool = False,
        freeze_updates: int = 0,
        feature_grad_mult: float = 1.0,
        normalize: bool | None = None,
        directory: str | None = None,
        checkpointing: bool = False,
    ):
        super().__init__()
        self.model = model if model is not None else Wav2Vec2Model(config)
        if checkpointing:
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.config = self.model.config
        self.normalize = _wants_normalize(self.config, directory) if normalize is None else normalize
        self.freeze = freeze
        self.freeze_updates = freeze_updates
        self.feature_grad_mult = feature_grad_mult
        self.num_updates = 0
        if freeze:
            self.model.requires_grad_(False)

    @classmethod
    def from_config(
        cls,
        preset: str = "tiny",
        *,
        layerdrop: float = 0.0,
        mask_time_prob: float = 0.0,
        mask_time_length: int = 10,
        **options: Any,
    ) -> "Wav2Vec2Encoder":
        """A randomly initialised encoder from a preset (base, large, tiny)."""
        config = wav2vec2_config(
            preset, layerdrop=layerdrop, mask_time_prob=mask_time_prob, mask_time_length=mask_time_length
        )
        return cls(config, **options)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        layerdrop: float = 0.0,
        mask_time_prob: float = 0.0,
        mask_time_length: int = 10,
        **options: Any,
    ) -> "Wav2Vec2Encoder":
        """Load an HF Wav2Vec2Model directory (config.json + weights), e.g. from `convert fairseq-wav2vec2`
        or `pretrain-w2v`. Layerdrop and time masking are set here, not taken from the checkpoint."""
        directory = os.fspath(directory)
        model = Wav2Vec2Model.from_pretrained(
            directory,
            layerdrop=layerdrop,
            mask_time_prob=mask_time_prob,
            mask_time_length=mask_time_length,
        )
        return cls(model.config, model=model, directory=directory, **options)

    @property
    def output_dim(self) -> int:
        return self.config.hidden_size

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_lengths(lengths, self.config.conv_kernel, self.config.conv_stride)

    def set_update(self, num_updates: int) -> None:
        """Called by the trainer before each update; ends the freeze_updates phase."""
        self.num_updates = num_updates

    @property
    def is_frozen(self) -> bool:
        return self.freeze or self.num_updates < self.freeze_updates

    def forward(
        self, wave: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, samples = wave.shape
        if padding_mask is None:
            padding_mask = torch.zeros(batch, samples, dtype=torch.bool, device=wave.device)
        lengths = samples - padding_mask.sum(dim=1)
        with torch.no_grad() if self.is_frozen else contextlib.nullcontext():
            states, frame_mask = self._forward(wave.float(), padding_mask, lengths)
        return states, frame_mask

    def _forward(self, wave: torch.Tensor, padding_mask: torch.Tensor, lengths: torch.Tensor):
        if self.normalize:
            wave = normalize_waveform(wave, padding_mask)
        wave = wave.masked_fill(padding_mask, 0.0)
        if self.feature_grad_mult > 0:
            features = self._features(wave, lengths)
            if self.feature_grad_mult != 1.0 and torch.is_grad_enabled():
                features = GradMultiply.apply(features, self.feature_grad_mult)
        else:
            with torch.no_grad():
                features = self._features(wave, lengths)
        features = features.transpose(1, 2)  # (B, T', C)
        frame_lengths = self.output_lengths(lengths)
        keep = torch.arange(features.shape[1], device=wave.device)[None, :] < frame_lengths[:, None]
        # all-valid batches skip the attention mask (faster SDPA path, identical result)
        attention_mask = None if bool(keep.all()) else keep
        hidden, _ = self.model.feature_projection(features)
        if self.config.mask_time_prob > 0 and self.training:
            hidden = self.model._mask_hidden_states(hidden, attention_mask=attention_mask)
        states = self.model.encoder(hidden, attention_mask=attention_mask).last_hidden_state
        return states, ~keep

    def _features(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The CNN, with conv 0's GroupNorm (base models) computed over each utterance's real frames."""
        hidden = wave[:, None]
        layers = self.model.feature_extractor.conv_layers
        for index, layer in enumerate(layers):
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):
                first_lengths = conv_output_lengths(
                    lengths, self.config.conv_kernel[: index + 1], self.config.conv_stride[: index + 1]
                )
                hidden = layer.activation(_masked_instance_norm(layer.conv(hidden), first_lengths, norm))
            else:
                hidden = layer(hidden)
        return hidden


def normalize_waveform(wave: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its real samples (fairseq: F.layer_norm on the wave)."""
    if padding_mask is None:
        padding_mask = torch.zeros_like(wave, dtype=torch.bool)
    valid = (~padding_mask).to(wave.dtype)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (wave * valid).sum(dim=1, keepdim=True) / count
    var = (((wave - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
    return (wave - mean) / torch.sqrt(var + 1e-5)


def _masked_instance_norm(x: torch.Tensor, lengths: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm with one group per channel (what wav2vec 2.0 uses) over the first `lengths` frames."""
    if norm.num_groups != norm.num_channels:
        raise ValueError("wav2vec2 feature extractor: expected one GroupNorm group per channel")
    valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]
    count = lengths.clamp(min=1).to(x.dtype)[:, None, None]
    mean = (x * valid).sum(dim=-1, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(dim=-1, keepdim=True) / count
    x = (x - mean) / torch.sqrt(var + norm.eps)
    return x * norm.weight[None, :, None] + norm.bias[None, :, None]
