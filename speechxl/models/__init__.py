"""Model registry: `config["arch"]` picks the class; the rest of the dict is that class's own config.

Each model module registers its class with `@register_model("<arch>")`; the class provides
`from_config(config: dict, vocab) -> nn.Module`. `_ARCH_MODULES` says where each arch lives so that
`build_model` imports only the module it needs.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechxl.errors import DataError
from speechxl.modules.transformer import TransformerDecoder, TransformerEncoder

_ARCH_MODULES = {"s2t": "speechxl.models.s2t", "xstnet": "speechxl.models.xstnet"}
MODELS: dict[str, type] = {}


def register_model(arch: str):
    def register(cls: type) -> type:
        MODELS[arch] = cls
        return cls

    return register


def build_model(config: dict[str, Any], vocab) -> nn.Module:
    arch = config.get("arch")
    if arch not in _ARCH_MODULES:
        raise DataError("model config", f"unknown arch {arch!r}; known: {', '.join(sorted(_ARCH_MODULES))}")
    importlib.import_module(_ARCH_MODULES[arch])
    return MODELS[arch].from_config({k: v for k, v in config.items() if k != "arch"}, vocab)


@dataclasses.dataclass
class Seq2SeqConfig:
    """What every speechxl model shares: the conv subsampler and the Transformer encoder–decoder.

    The defaults are fairseq's s2t_transformer_s; each model's `SIZES` presets set the sizes it uses."""

    conv_channels: int = 1024
    conv_kernel_sizes: tuple[int, ...] = (5, 5)
    mask_conv_padding: bool = True  # False reproduces fairseq/HF exactly (they let padding leak into convs)
    dim: int = 256
    encoder_layers: int = 12
    decoder_layers: int = 6
    encoder_heads: int = 4
    decoder_heads: int = 4
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    activation: str = "relu"
    normalize_before: bool = True
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    label_smoothing: float = 0.1
    ignore_prefix_size: int = 1


def build_encoder_decoder(c: Seq2SeqConfig, vocab_size: int, pad: int):
    """The shared Transformer encoder and the tied-embedding decoder that a `Seq2SeqConfig` describes."""
    common = dict(dropout=c.dropout, attention_dropout=c.attention_dropout,
                  activation_dropout=c.activation_dropout, activation=c.activation,
                  normalize_before=c.normalize_before)
    encoder = TransformerEncoder(c.encoder_layers, c.dim, c.encoder_heads, c.encoder_ffn_dim,
                                 layerdrop=c.encoder_layerdrop, **common)
    decoder = TransformerDecoder(vocab_size, pad, c.decoder_layers, c.dim, c.decoder_heads,
                                 c.decoder_ffn_dim, layerdrop=c.decoder_layerdrop, **common)
    return encoder, decoder


class DecoderSearch:
    """The search side of the model protocol for models whose `encode` returns `memory` and
    `memory_padding_mask` and whose `self.decoder` is a `TransformerDecoder` (docs/internals.md, Models)."""

    @staticmethod
    def reorder_encoder_out(enc: dict[str, torch.Tensor], new_order: torch.Tensor) -> dict[str, torch.Tensor]:
        return {key: value.index_select(0, new_order) for key, value in enc.items()}

    def decode_step(self, tokens: torch.Tensor, enc: dict[str, torch.Tensor], cache):
        """tokens (N, t) with N = B·k rows grouped per utterance -> next-token log-probs (N, V), cache."""
        logits, cache = self.decoder.step(tokens, enc["memory"], enc["memory_padding_mask"], cache)
        return F.log_softmax(logits.float(), dim=-1), cache

    def reorder_cache(self, cache, new_order: torch.Tensor):
        return self.decoder.reorder_cache(cache, new_order)


def config_from_preset(cls: type, config: dict[str, Any], sizes: dict[str, dict[str, Any]], default_size: str,
                       arch: str):
    """A model's config dataclass from a dict: `size` picks a preset from `sizes`, the other keys override it.

    Unknown keys are an error naming the valid ones; attention/activation dropout default to `dropout`."""
    config = dict(config)
    size = config.pop("size", default_size)
    if size not in sizes:
        raise DataError("model config", f"{arch} size {size!r} is not one of {', '.join(sizes)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise DataError("model config", f"unknown {arch} keys {unknown}; valid: {', '.join(sorted(fields))}, size")
    values = {**sizes[size], **config}
    for key in ("attention_dropout", "activation_dropout"):
        values.setdefault(key, values["dropout"])
    values["conv_kernel_sizes"] = tuple(values.get("conv_kernel_sizes", cls.conv_kernel_sizes))
    return cls(**values)


def config_to_dict(config: Any, arch: str) -> dict[str, Any]:
    """The config dataclass as the plain dict a checkpoint stores (tuples as lists)."""
    values = dataclasses.asdict(config)
    values["conv_kernel_sizes"] = list(config.conv_kernel_sizes)
    return {"arch": arch, **values}
