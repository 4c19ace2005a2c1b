"""The model protocol, its default hooks, and the one registry of model architectures.

Every model is a `SpeechModel`: the trainer, the stages runner, the one decode path (inference/decode.py)
and the checkpoint loader talk to models only through the methods below, never by probing attributes.
A model overrides a hook where its default does not fit (docs/internals.md, Models).

Training
- `forward(batch) -> {"loss", "sample_size", "logs"}` (summed losses; the trainer divides by sample_size).
- `label_smoothing`: set by the trainer from `train.label_smoothing` before training.
- `set_update(num_updates)`: called before every update, for behaviour that depends on it (loss ramps).
- `acoustic_encoder()`: the pre-trained acoustic part (wav2vec2) that `train.freeze_acoustic_updates`
  freezes, or None.
- `parameter_groups()`: named sets of parameter names that a stage's `trainable:` (and parameter-efficient
  fine-tuning) selects: `acoustic`, `encoder`, `decoder`, `embeddings`, `layer_norms`,
  `encoder.self_attention`, `decoder.self_attention`, `decoder.cross_attention`, ...
- `checkpoint_config()`: the model section a checkpoint stores, enough to rebuild the model alone.

Search (one beam search serves every model; inference/search.py)
- `encode(batch)`, `decode_step(tokens, enc, cache)`, `reorder_encoder_out(enc, order)`, `reorder_cache(cache,
  order)`; `eos` (also the start token) and `pad`. Defaults here serve models whose `encode` returns
  `memory` + `memory_padding_mask` and whose `self.decoder` is a `TransformerDecoder`.
- `decode_prefix(batch)`: the tokens every hypothesis starts with (default: the batch's `prefix`, the task's
  language tag); `logit_processors(batch)`: extra search constraints (e.g. "no </s> before <ast>");
  `output_texts(tokens, vocab, task)`: the decoded text(s), by output name (speechxl.tasks.OUTPUTS).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechxl import checkpoint as ckpt
from speechxl.config import MOVED_KEYS
from speechxl.errors import DataError
from speechxl.models import peft
from speechxl.modules.adapters import LayerAdapters
from speechxl.modules.transformer import DecoderLayer, EncoderLayer, TransformerDecoder, TransformerEncoder

# ---------------------------------------------------------------------------------------------- registry

# arch -> the model class, or "module:Class" so that building a model imports only the module it needs
ARCHS: dict[str, type | str] = {
    "s2t": "speechxl.models.s2t:S2TTransformer",
    "xstnet": "speechxl.models.xstnet:XSTNet",
    "chimera": "speechxl.models.chimera:Chimera",
    "costt": "speechxl.models.costt:COSTT",
    "lut": "speechxl.models.lut:LUT",
    "fat_mlm": "speechxl.models.fat:FatMLM",
    "fat_st": "speechxl.models.fat:FatST",
}


def register_model(arch: str, model: type | str) -> None:
    """Add an architecture (a SpeechModel subclass, or "module:Class") under `arch`."""
    ARCHS[arch] = model


def model_class(arch: str) -> type:
    if arch not in ARCHS:
        raise DataError("model config", f"unknown arch {arch!r}; known: {', '.join(sorted(ARCHS))}")
    entry = ARCHS[arch]
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = ARCHS[arch] = getattr(importlib.import_module(module), name)
    return entry


def load_model(directory: str | Path, device: str | torch.device = "cpu"):
    """(model, vocab, config) from a checkpoint directory; the model is in eval mode on `device`.

    A delta checkpoint (parameter-efficient child) loads its parent first: building the model from its
    config's `model.peft` section loads the parent's weights (refused when missing or changed)."""
    directory = Path(directory)
    config = ckpt.upgrade_config(ckpt.load_config_dict(directory))
    vocab = ckpt.load_vocab(directory)
    try:
        model = build_model(config["model"], vocab)
    except ckpt.CheckpointError as err:  # a delta's parent: name the child too
        raise ckpt.CheckpointError(f"{directory}: {err}") from err
    weights = ckpt.require_file(directory, ckpt.MODEL_FILE)
    state = ckpt.load_weights(weights)
    if isinstance(state, ckpt.DeltaState):
        if state.parent_sha256 != (config["model"].get("peft") or {}).get("parent_sha256"):
            raise ckpt.CheckpointError(f"{weights}: its parent's SHA-256 differs from the one in its config.yaml")
        ckpt.overlay_delta(model, state, weights)  # build_model loaded the parent
    else:
        ckpt.load_state_into(model, state, weights)
    return model.to(device).eval(), vocab, config


def merge(child: str | Path, out: str | Path) -> Path:
    """`speechxl merge`: a delta checkpoint and its parent -> one full checkpoint at `out` (it keeps the
    child's adapters / LoRA as modules, and needs no parent any more)."""
    child = Path(child)
    model, _, config = load_model(child)
    spec = {k: v for k, v in (config["model"].get("peft") or {}).items() if k in ("adapters", "lora") and v}
    model_config = {k: v for k, v in config["model"].items() if k != "peft"}
    config = {**config, "model": {**model_config, **({"peft": spec} if spec else {})}}
    vocab_files = [child / name for name in (ckpt.VOCAB_FILE, ckpt.PIECES_FILE) if (child / name).is_file()]
    return ckpt.write_checkpoint(
        out,
        model_state=model.state_dict(),
        config=config,
        vocab_files=vocab_files,
        metrics={**ckpt.load_metrics(child), "merged_from": str(child)},
    )


def build_model(config: dict[str, Any], vocab) -> SpeechModel:
    """The model `config["arch"]` names, built from the rest of `config` (its own dataclass checks it).

    A `peft` section makes a parameter-efficient child of a trained parent (speechxl/models/peft.py): its
    adapters / LoRA are added and the parent's weights loaded; its model config is the parent's (arch included)
    with the keys the child sets."""
    config = dict(config)
    spec = config.pop("peft", None)
    if spec is not None and spec.get("parent"):  # the parent's model, with what the child changes (not arch)
        parent = peft.parent_model_config(peft.check_spec(spec))
        config = {**parent, **{k: v for k, v in config.items() if k != "arch"}}
    model = model_class(config.get("arch")).from_config({k: v for k, v in config.items() if k != "arch"}, vocab)
    model.built_from = dict(config)
    if spec is not None:
        peft.attach(model, spec, vocab)
    return model


# ---------------------------------------------------------------------------------------------- the base


def prefix_size(batch: dict[str, Any]) -> int:
    """How many leading target tokens are a forced prefix (the language tag): ignored by the loss."""
    prefix = batch.get("prefix")
    return 0 if prefix is None else prefix.size(1)


class SpeechModel(nn.Module):
    """Base class of every speechxl model; see the module docstring for the protocol."""

    label_smoothing: float = 0.0
    built_from: dict[str, Any] | None = None  # the model config build_model was given
    eos: int
    pad: int

    @classmethod
    def from_config(cls, config: dict[str, Any], vocab) -> SpeechModel:
        raise NotImplementedError

    def checkpoint_config(self) -> dict[str, Any]:
        """Default: the config the model was built from (a model built by hand: its resolved config)."""
        return dict(self.built_from) if self.built_from is not None else self.config.to_dict()

    # ------------------------------------------------------------------------------------------ training

    def set_update(self, num_updates: int) -> None:
        """Before every update (global count); models whose behaviour depends on it override this."""

    def acoustic_encoder(self) -> nn.Module | None:
        return None

    def parameter_groups(self) -> dict[str, list[str]]:
        """Group name -> parameter names: each top-level part (`encoder`, `decoder`, `subsampler`, ...),
        `acoustic`, `embeddings`, `layer_norms` (and `encoder.` / `decoder.layer_norms`, the decoder being the
        Transformer decoder, the encoder side the rest), `length_adaptor`, the attention and FFN blocks of the
        Transformer layers (and wav2vec2's attention in `encoder.self_attention`), `adapters`, `lora`."""
        groups: dict[str, list[str]] = {}

        def add(group: str, prefix: str, module: nn.Module) -> None:
            names = groups.setdefault(group, [])
            names += [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()]

        for name, child in self.named_children():
            add(name, name, child)
            if name == "subsampler":  # the conv that shrinks the audio sequence (LNA trains it always)
                add("length_adaptor", name, child)
        acoustic = self.acoustic_encoder()
        acoustic_name = next((name for name, m in self.named_modules() if m is acoustic), None)
        decoders = [name for name, m in self.named_modules() if isinstance(m, TransformerDecoder)]
        for name, module in self.named_modules():
            side = "decoder" if any(name == d or name.startswith(d + ".") for d in decoders) else "encoder"
            if acoustic is not None and module is acoustic:
                add("acoustic", name, module)
            if isinstance(module, nn.Embedding):
                add("embeddings", name, module)
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                add("layer_norms", name, module)
                add(f"{side}.layer_norms", name, module)
            elif isinstance(module, LayerAdapters):
                add("adapters", name, module)
            elif acoustic_name and name.startswith(acoustic_name + ".") and type(module).__name__.endswith("Attention"):
                add("encoder.self_attention", name, module)  # wav2vec2's (HF) attention blocks
            if "lora_" in name.rsplit(".", 1)[-1]:
                add("lora", name, module)
            elif isinstance(module, (EncoderLayer, DecoderLayer)):
                side = "encoder" if isinstance(module, EncoderLayer) else "decoder"
                add(f"{side}.self_attention", f"{name}.self_attn", module.self_attn)
                add(f"{side}.self_attention", f"{name}.self_attn_norm", module.self_attn_norm)
                add(f"{side}.ffn", f"{name}.ffn", module.ffn)
                if isinstance(module, DecoderLayer):
                    add("decoder.cross_attention", f"{name}.cross_attn", module.cross_attn)
                    add("decoder.cross_attention", f"{name}.cross_attn_norm", module.cross_attn_norm)
        return {group: sorted(set(names)) for group, names in groups.items() if names}

    # ------------------------------------------------------------------------------------------ search

    def encode(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def reorder_encoder_out(enc: dict[str, torch.Tensor], new_order: torch.Tensor) -> dict[str, torch.Tensor]:
        return {key: value.index_select(0, new_order) for key, value in enc.items()}

    def decode_step(self, tokens: torch.Tensor, enc: dict[str, torch.Tensor], cache):
        """tokens (N, t) with N = B·k rows grouped per utterance -> next-token log-probs (N, V), cache."""
        logits, cache = self.decoder.step(tokens, enc["memory"], enc["memory_padding_mask"], cache)
        return F.log_softmax(logits.float(), dim=-1), cache

    def reorder_cache(self, cache, new_order: torch.Tensor):
        return self.decoder.reorder_cache(cache, new_order)

    def decode_prefix(self, batch: dict[str, Any]) -> torch.Tensor | None:
        return batch.get("prefix")

    def logit_processors(self, batch: dict[str, Any]) -> list:
        return []

    def output_texts(self, tokens: list[int], vocab, task) -> dict[str, str]:
        return {task.output: vocab.decode(tokens)}


# ---------------------------------------------------------------------------------------------- shared pieces


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
    # > 0: chunk-causal encoder (streaming): frames attend only to their own and earlier chunks of this many
    # encoder frames, so states of past chunks never change when audio arrives (docs/streaming.md)
    encoder_chunk_frames: int = 0


def build_encoder_decoder(c: Seq2SeqConfig, vocab_size: int, pad: int):
    """The shared Transformer encoder and the tied-embedding decoder that a `Seq2SeqConfig` describes."""
    common = dict(
        dropout=c.dropout,
        attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout,
        activation=c.activation,
        normalize_before=c.normalize_before,
    )
    encoder = TransformerEncoder(
        c.encoder_layers,
        c.dim,
        c.encoder_heads,
        c.encoder_ffn_dim,
        layerdrop=c.encoder_layerdrop,
        chunk_frames=c.encoder_chunk_frames,
        **common,
    )
    decoder = TransformerDecoder(
        vocab_size,
        pad,
        c.decoder_layers,
        c.dim,
        c.decoder_heads,
        c.decoder_ffn_dim,
        layerdrop=c.decoder_layerdrop,
        **common,
    )
    return encoder, decoder


def config_from_preset(
    cls: type, config: dict[str, Any], sizes: dict[str, dict[str, Any]], default_size: str, arch: str
):
    """A model's config dataclass from a dict: `size` picks a preset from `sizes`, the other keys override it.

    Unknown keys are an error naming the valid ones; attention/activation dropout default to `dropout`."""
    config = dict(config)
    size = config.pop("size", default_size)
    if size not in sizes:
        raise DataError("model config", f"{arch} size {size!r} is not one of {', '.join(sizes)}")
    for key in config:
        if f"model.{key}" in MOVED_KEYS:
            raise DataError(
                "model config", f"model.{key} is no longer a setting; it lives in {MOVED_KEYS[f'model.{key}']}"
            )
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
