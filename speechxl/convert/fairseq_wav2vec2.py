"""fairseq wav2vec 2.0 checkpoint (.pt) → HF `Wav2Vec2Model` directory (config.json + model.safetensors).

Handles pre-trained checkpoints (config in `args` or `cfg["model"]`) and CTC fine-tuned ones (weights under
`w2v_encoder.w2v_model.`, the pre-training config under `w2v_args`), base style (group norm, post-norm)
and large / LV-60 style (layer-norm CNN, pre-norm). The CTC output layer `w2v_encoder.proj` is written
beside the model as `ctc_head.safetensors` (weight, bias); the letter dictionary is not inside a fairseq
checkpoint. Pre-training heads (quantizer, project_q, final_proj) are dropped. Any other key is an error:
nothing is dropped silently.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import tempfile
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2Model

from speechxl.convert.unpickle import load_checkpoint
from speechxl.errors import CheckpointError

FINETUNED_PREFIX = "w2v_encoder.w2v_model."
CTC_HEAD_PREFIX = "w2v_encoder.proj."
_DEFAULT_CONV_LAYERS = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"

# fairseq name → HF name, matched against the whole key (a bare `layer_norm.` is a prefix of several keys).
_KEY_MAP = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"mask_emb", r"masked_spec_embed"),
    (r"encoder\.pos_conv\.0\.(weight_g|parametrizations\.weight\.original0)", r"encoder.pos_conv_embed.conv.@g"),
    (r"encoder\.pos_conv\.0\.(weight_v|parametrizations\.weight\.original1)", r"encoder.pos_conv_embed.conv.@v"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
]
_KEY_MAP = [(re.compile(pattern), target) for pattern, target in _KEY_MAP]
# Pre-training-only heads that a Wav2Vec2Model has no place for.
_DROPPED = re.compile(r"(quantizer|project_q|project_inp|final_proj|target_glu)\..*")
_ACTIVATIONS = {
    "gelu": "gelu",
    "relu": "relu",
    "gelu_accurate": "gelu_new",
    "gelu_fast": "gelu_new",
    "tanh": "tanh",
    "linear": "linear",
}


def convert_fairseq_wav2vec2(src: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Convert `src` (.pt) into the HF directory `out`; returns a summary (style, fine-tuned, files)."""
    ckpt = load_checkpoint(src)
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{src}: no 'model' state dict; is this a fairseq checkpoint?")
    finetuned = any(key.startswith(FINETUNED_PREFIX) for key in state)
    model_cfg, normalize = _pretraining_config(ckpt, finetuned, src)
    config = hf_config(model_cfg, normalize)

    ctc_head = {k[len(CTC_HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(CTC_HEAD_PREFIX)}
    if finetuned:
        state = {k[len(FINETUNED_PREFIX) :]: v for k, v in state.items() if k.startswith(FINETUNED_PREFIX)}
    model = Wav2Vec2Model(config)
    model.load_state_dict(_hf_state(state, model, src), strict=True)

    os.makedirs(out, exist_ok=True)
    # write into a sibling temporary directory, then move the finished files in
    staging = tempfile.mkdtemp(prefix=".convert-", dir=os.path.dirname(os.path.abspath(out)))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        if ctc_head:
            save_file({k: v.contiguous() for k, v in ctc_head.items()}, os.path.join(staging, "ctc_head.safetensors"))
        files = sorted(os.listdir(staging))
        for name in files:
            os.replace(os.path.join(staging, name), os.path.join(out, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "style": "large (layer norm, pre-norm)" if config.do_stable_layer_norm else "base (group norm, post-norm)",
        "finetuned_ctc": finetuned,
        "normalize": normalize,
        "files": files,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _pretraining_config(ckpt: dict, finetuned: bool, src: Any) -> tuple[dict, bool]:
    """The model section of the pre-training config, and whether the waveform is normalised."""
    cfg = ckpt.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model, task = cfg["model"], cfg.get("task") or {}
    elif isinstance(ckpt.get("args"), dict):
        model = task = ckpt["args"]  # legacy argparse: one flat namespace
    else:
        raise CheckpointError(f"{src}: no config found (neither cfg.model nor args)")
    if finetuned:
        w2v_args = model.get("w2v_args")
        if not isinstance(w2v_args, dict):
            raise CheckpointError(f"{src}: fine-tuned checkpoint without w2v_args: the architecture is unknown")
        outer_task = task
        if isinstance(w2v_args.get("model"), dict):
            model, task = w2v_args["model"], w2v_args.get("task") or {}
        else:
            model = task = w2v_args
        normalize = task.get("normalize", outer_task.get("normalize", False))
    else:
        normalize = task.get("normalize", False)
    return model, bool(normalize)


def hf_config(m: dict, normalize: bool) -> Wav2Vec2Config:
    """HF Wav2Vec2Config from a fairseq wav2vec2 model config (defaults: fairseq's Wav2Vec2Config)."""
    if m.get("layer_type", "transformer") != "transformer":
        raise CheckpointError(f"unsupported wav2vec2 layer_type {m['layer_type']!r} (only 'transformer')")
    if int(m.get("pos_conv_depth", 1)) != 1:
        raise CheckpointError("unsupported pos_conv_depth > 1 (data2vec-style positional convs)")
    activation = m.get("activation_fn", "gelu")
    if activation not in _ACTIVATIONS:
        raise CheckpointError(f"unsupported activation_fn {activation!r}")
    conv_layers = parse_conv_layers(m.get("conv_feature_layers", _DEFAULT_CONV_LAYERS))
    embed_dim = int(m.get("encoder_embed_dim", 768))
    final_dim = int(m.get("final_dim", 0) or embed_dim)
    return Wav2Vec2Config(
        conv_dim=[dim for dim, _, _ in conv_layers],
        conv_kernel=[kernel for _, kernel, _ in conv_layers],
        conv_stride=[stride for _, _, stride in conv_layers],
        conv_bias=bool(m.get("conv_bias", False)),
        feat_extract_norm="layer" if m.get("extractor_mode", "default") == "layer_norm" else "group",
        do_stable_layer_norm=bool(m.get("layer_norm_first", False)),
        hidden_size=embed_dim,
        num_hidden_layers=int(m.get("encoder_layers", 12)),
        num_attention_heads=int(m.get("encoder_attention_heads", 12)),
        intermediate_size=int(m.get("encoder_ffn_embed_dim", 3072)),
        hidden_act=_ACTIVATIONS[activation],
        num_conv_pos_embeddings=int(m.get("conv_pos", 128)),
        num_conv_pos_embedding_groups=int(m.get("conv_pos_groups", 16)),
        hidden_dropout=float(m.get("dropout", 0.1)),
        attention_dropout=float(m.get("attention_dropout", 0.1)),
        activation_dropout=float(m.get("activation_dropout", 0.0)),
        feat_proj_dropout=float(m.get("dropout_input", 0.0)),
        layerdrop=float(m.get("encoder_layerdrop", 0.0)),
        mask_time_prob=float(m.get("mask_prob", 0.65)),
        mask_time_length=int(m.get("mask_length", 10)),
        mask_feature_prob=float(m.get("mask_channel_prob", 0.0)),
        mask_feature_length=int(m.get("mask_channel_length", 10)),
        num_codevector_groups=int(m.get("latent_groups", 2)),
        num_codevectors_per_group=int(m.get("latent_vars", 320)),
        codevector_dim=int(m.get("latent_dim", 0) or final_dim),
        proj_codevector_dim=final_dim,
        num_negatives=int(m.get("num_negatives", 100)),
        do_normalize=normalize,
    )


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's `conv_feature_layers` string, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4", without eval():
    only list/tuple literals of integers joined by + and * are accepted."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise CheckpointError(f"unsupported conv_feature_layers: {spec!r}")

    try:
        layers = value(ast.parse(spec, mode="eval").body)
    except (SyntaxError, TypeError) as err:
        raise CheckpointError(f"unsupported conv_feature_layers: {spec!r}") from err
    if not isinstance(layers, list) or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
        raise CheckpointError(f"conv_feature_layers must be a list of (dim, kernel, stride): {spec!r}")
    return layers


def _hf_state(state: dict[str, torch.Tensor], model: Wav2Vec2Model, src: Any) -> dict[str, torch.Tensor]:
    """Rename fairseq keys to the HF model's; weight-norm halves take the target model's naming."""
    target_keys = set(model.state_dict())
    if "encoder.pos_conv_embed.conv.parametrizations.weight.original0" in target_keys:
        norm_names = {"@g": "parametrizations.weight.original0", "@v": "parametrizations.weight.original1"}
    else:
        norm_names = {"@g": "weight_g", "@v": "weight_v"}
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if _DROPPED.fullmatch(key):
            continue
        for pattern, target in _KEY_MAP:
            if pattern.fullmatch(key):
                new_key = pattern.sub(target, key)
                for placeholder, name in norm_names.items():
                    new_key = new_key.replace(placeholder, name)
                out[new_key] = tensor
                break
        else:
            unknown.append(key)
    if "post_extract_proj.weight" not in state and model.config.conv_dim[-1] == model.config.hidden_size:
        # fairseq has no projection when the CNN width equals the model width; HF always has one
        out["feature_projection.projection.weight"] = torch.eye(model.config.hidden_size)
        out["feature_projection.projection.bias"] = torch.zeros(model.config.hidden_size)
    missing = sorted(target_keys - set(out))
    if unknown or missing:
        raise CheckpointError(
            f"{src}: cannot map checkpoint onto Wav2Vec2Model; unknown keys {unknown[:10]}, missing {missing[:10]}"
        )
    return out
