"""HF `Speech2TextForConditionalGeneration` directory -> speechxl `s2t` checkpoint directory.

The weight mapping is a pure function (`convert_state_dict`, `convert_config`); `convert_hf_speech2text`
reads the HF files and writes a checkpoint with `speechxl.checkpoint.write_checkpoint`. A dictionary with
language tags (`<lang:de>`, fairseq's multilingual models) makes a checkpoint that forces the target tag; one
without (fairseq's bilingual MuST-C models) makes one that forces none (`data.prepend_lang_tag: false`).
HF Speech2Text is fairseq's s2t_transformer (pre-norm, tied embeddings), so the import is exact, including
fairseq's conv subsampler that sees padding (`mask_conv_padding: false`).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from speechxl.errors import CheckpointError

_LAYER_PARTS = {
    "self_attn": "self_attn",
    "encoder_attn": "cross_attn",
    "self_attn_layer_norm": "self_attn_norm",
    "encoder_attn_layer_norm": "cross_attn_norm",
    "final_layer_norm": "ffn_norm",
    "fc1": "ffn.fc1",
    "fc2": "ffn.fc2",
}
_RULES: list[tuple[re.Pattern, Any]] = [
    (re.compile(r"^model\.encoder\.conv\.conv_layers\.(\d+)\.(weight|bias)$"), r"subsampler.convs.\1.\2"),
    (
        re.compile(
            r"^model\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)"
            r"\.(weight|bias)$"
        ),
        lambda m: f"{m[1]}.layers.{m[2]}.{_LAYER_PARTS[m[3]]}.{m[4]}.{m[5]}",
    ),
    (
        re.compile(
            r"^model\.(encoder|decoder)\.layers\.(\d+)\.(self_attn_layer_norm|encoder_attn_layer_norm|"
            r"final_layer_norm|fc1|fc2)\.(weight|bias)$"
        ),
        lambda m: f"{m[1]}.layers.{m[2]}.{_LAYER_PARTS[m[3]]}.{m[4]}",
    ),
    (re.compile(r"^model\.(encoder|decoder)\.layer_norm\.(weight|bias)$"), r"\1.final_norm.\2"),
    (re.compile(r"^model\.decoder\.embed_tokens\.weight$"), "decoder.embed_tokens.weight"),
]
# Rebuilt by our model (sinusoids) or tied to the embedding (checked below).
_DROPPED = re.compile(r"^(model\.(encoder|decoder)\.embed_positions\.weights|lm_head\.weight)$")


def convert_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF Speech2Text parameter names -> speechxl S2TTransformer names."""
    ours: dict[str, torch.Tensor] = {}
    for key, value in hf_state.items():
        if _DROPPED.match(key):
            continue
        for pattern, replacement in _RULES:
            if pattern.match(key):
                ours[pattern.sub(replacement, key)] = value
                break
        else:
            raise CheckpointError(f"unexpected HF Speech2Text weight {key!r}: no mapping for it")
    head = hf_state.get("lm_head.weight")
    if head is not None and not torch.equal(head, hf_state["model.decoder.embed_tokens.weight"]):
        raise CheckpointError("lm_head.weight differs from the decoder embedding; only tied models are supported")
    return ours


def convert_config(hf_config: dict[str, Any]) -> dict[str, Any]:
    """HF `config.json` -> the `model` section of a speechxl config (arch s2t)."""
    if not hf_config.get("scale_embedding", True):
        raise CheckpointError("HF config has scale_embedding=false; speechxl s2t always scales by sqrt(d_model)")
    if not hf_config.get("tie_word_embeddings", True):
        raise CheckpointError("HF config has tie_word_embeddings=false; speechxl s2t ties them")
    activation = hf_config.get("activation_function", "relu")
    if activation not in ("relu", "gelu"):
        raise CheckpointError(f"HF activation_function {activation!r} is not supported (relu, gelu)")
    return {
        "arch": "s2t",
        "input_dim": hf_config["input_feat_per_channel"] * hf_config.get("input_channels", 1),
        "conv_channels": hf_config["conv_channels"],
        "conv_kernel_sizes": list(hf_config["conv_kernel_sizes"]),
        "mask_conv_padding": False,
        "dim": hf_config["d_model"],
        "encoder_layers": hf_config["encoder_layers"],
        "decoder_layers": hf_config["decoder_layers"],
        "encoder_heads": hf_config["encoder_attention_heads"],
        "decoder_heads": hf_config["decoder_attention_heads"],
        "encoder_ffn_dim": hf_config["encoder_ffn_dim"],
        "decoder_ffn_dim": hf_config["decoder_ffn_dim"],
        "dropout": hf_config.get("dropout", 0.1),
        "attention_dropout": hf_config.get("attention_dropout", 0.0),
        "activation_dropout": hf_config.get("activation_dropout", 0.0),
        "activation": activation,
        "normalize_before": True,
        "encoder_layerdrop": hf_config.get("encoder_layerdrop", 0.0),
        "decoder_layerdrop": hf_config.get("decoder_layerdrop", 0.0),
    }


def pieces_from_vocab_json(vocab: dict[str, int], path: Path) -> list[str]:
    """HF `vocab.json` (piece -> id) -> the piece list speechxl's Vocab takes (index = id)."""
    pieces = sorted(vocab, key=vocab.__getitem__)
    if [vocab[p] for p in pieces] != list(range(len(pieces))):
        raise CheckpointError(f"{path}: ids are not 0..{len(pieces) - 1} without gaps")
    return pieces


_LANG_TAG = re.compile(r"^<lang:[A-Za-z][\w-]*>$")


def has_language_tags(pieces: list[str]) -> bool:
    return any(_LANG_TAG.match(piece) for piece in pieces)


def _read_hf_weights(src: Path) -> dict[str, torch.Tensor]:
    if (src / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(src / "model.safetensors"))
    if (src / "pytorch_model.bin").is_file():
        return torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(f"{src}: no model.safetensors or pytorch_model.bin")


def _require(src: Path, name: str) -> Path:
    if not (src / name).is_file():
        raise CheckpointError(f"{src}: not an HF Speech2Text directory, {name} is missing")
    return src / name


def convert_hf_speech2text(src: str | Path, out: str | Path) -> Path:
    """Read an HF Speech2Text directory (config.json, weights, sentencepiece.bpe.model, vocab.json) and
    write a speechxl checkpoint directory `out` (config.yaml, model.safetensors, spm.model, vocab.json)."""
    from speechxl.checkpoint import PIECES_FILE, VOCAB_FILE, write_checkpoint

    src = Path(src)
    hf_config = json.loads(_require(src, "config.json").read_text(encoding="utf-8"))
    if hf_config.get("model_type") != "speech_to_text":
        raise CheckpointError(
            f"{src / 'config.json'}: model_type is {hf_config.get('model_type')!r}, expected 'speech_to_text'"
        )
    vocab_path = _require(src, "vocab.json")
    pieces = pieces_from_vocab_json(json.loads(vocab_path.read_text(encoding="utf-8")), vocab_path)
    if len(pieces) != hf_config["vocab_size"]:
        raise CheckpointError(
            f"{vocab_path}: {len(pieces)} pieces but config.json says vocab_size {hf_config['vocab_size']}"
        )
    state = convert_state_dict(_read_hf_weights(src))
    model_config = convert_config(hf_config)
    with tempfile.TemporaryDirectory() as tmp:
        spm_copy, pieces_copy = Path(tmp) / VOCAB_FILE, Path(tmp) / PIECES_FILE
        spm_copy.write_bytes(_require(src, "sentencepiece.bpe.model").read_bytes())
        pieces_copy.write_text(json.dumps(pieces, ensure_ascii=False), encoding="utf-8")
        data = {"features": "fbank", "prepend_lang_tag": has_language_tags(pieces)}
        return write_checkpoint(
            out,
            model_state=state,
            config={"model": model_config, "data": data},
            vocab_files=[spm_copy, pieces_copy],
            metrics={"converted_from": str(src)},
        )
