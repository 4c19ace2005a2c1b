"""fairseq `s2t_transformer` checkpoint (.pt) -> speechxl `s2t` checkpoint directory.

The checkpoint is read with the restricted unpickler (no code from the file runs); its model settings come from
`cfg["model"]` (an argparse Namespace in fairseq's legacy-arch checkpoints) or `args`. The vocabulary is the fairseq
dictionary (`spm_*.txt`, ids <s>=0 <pad>=1 </s>=2 <unk>=3 then its lines) plus the SentencePiece model, both
named by the data config (`config_st.yaml`) or given directly; the data settings (CMVN, SpecAugment, language
tags) come from that config too, so the converted model decodes the same data as fairseq did.

Names: fairseq's are HF Speech2Text's without `model.`: `encoder.subsample.conv_layers.N`,
`encoder.transformer_layers.N.*`, `encoder.layer_norm`, `decoder.layers.N.*`, `decoder.embed_tokens`,
`decoder.output_projection` (tied), `decoder.layer_norm`. Any other weight is an error, nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from speechxl.convert.hf_speech2text import convert_state_dict as convert_hf_state_dict
from speechxl.convert.unpickle import load_checkpoint
from speechxl.errors import CheckpointError

# fairseq name -> the HF Speech2Text name our HF converter maps (one set of rules for both).
_TO_HF = [
    (re.compile(r"^encoder\.subsample\.conv_layers\.(\d+)\.(weight|bias)$"), r"model.encoder.conv.conv_layers.\1.\2"),
    (re.compile(r"^encoder\.transformer_layers\.(\d+)\.(.*)$"), r"model.encoder.layers.\1.\2"),
    (re.compile(r"^encoder\.layer_norm\.(weight|bias)$"), r"model.encoder.layer_norm.\1"),
    (re.compile(r"^decoder\.(layers\.\d+\..*|layer_norm\.(weight|bias)|embed_tokens\.weight)$"), r"model.decoder.\1"),
]
# Rebuilt by our model (sinusoid tables, fairseq's version buffers) or tied to the embedding (checked).
_DROPPED = re.compile(
    r"^((encoder|decoder)\.embed_positions\._float_tensor|(encoder|decoder)\.version|"
    r"decoder\.output_projection\.weight)$"
)
_CTC = re.compile(r"^encoder\.ctc_proj\.(weight|bias)$")


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fairseq S2TTransformerModel parameter names -> speechxl S2TTransformer names."""
    hf: dict[str, torch.Tensor] = {}
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _DROPPED.match(key):
            continue
        ctc = _CTC.match(key)
        if ctc:
            ours[f"ctc_head.{ctc[1]}"] = value
            continue
        for pattern, replacement in _TO_HF:
            if pattern.match(key):
                hf[pattern.sub(replacement, key)] = value
                break
        else:
            raise CheckpointError(f"unexpected fairseq s2t_transformer weight {key!r}: no mapping for it")
    head = state.get("decoder.output_projection.weight")
    if head is not None and not torch.equal(head, state["decoder.embed_tokens.weight"]):
        raise CheckpointError(
            "decoder.output_projection.weight differs from decoder.embed_tokens.weight; only "
            "tied models (share_decoder_input_output_embed) are supported"
        )
    try:
        ours.update(convert_hf_state_dict(hf))
    except CheckpointError as err:
        raise CheckpointError(str(err).replace("HF Speech2Text", "fairseq s2t_transformer")) from err
    return ours


def _model_args(ckpt: dict[str, Any], src: Path) -> dict[str, Any]:
    cfg = ckpt.get("cfg") or {}
    args = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(args, dict) or not args:
        args = ckpt.get("args")
    if not isinstance(args, dict):
        raise CheckpointError(f"{src}: no model settings (cfg['model'] or args)")
    return args


def _require_setting(args: dict[str, Any], key: str, allowed: tuple, default: Any, hint: str = "") -> None:
    value = args.get(key, default)
    if value not in allowed:
        raise CheckpointError(
            f"fairseq setting {key}={value!r} has no speechxl equivalent (supported: "
            f"{', '.join(map(repr, allowed))}){hint}"
        )


def convert_config(args: dict[str, Any]) -> dict[str, Any]:
    """fairseq s2t_transformer settings -> the `model` section of a speechxl config (arch s2t)."""
    arch = args.get("arch", args.get("_name", "s2t_transformer"))
    if not str(arch).startswith("s2t_transformer"):
        raise CheckpointError(f"arch {arch!r} is not an s2t_transformer")
    _require_setting(args, "conv_version", ("s2t_transformer",), "s2t_transformer")
    _require_setting(args, "no_scale_embedding", (False,), False)
    # fairseq's s2t default is untied; its MuST-C / CoVoST recipes pass --share-decoder-input-output-embed
    _require_setting(
        args,
        "share_decoder_input_output_embed",
        (True,),
        False,
        "; speechxl's decoder ties its output projection to the embedding, as fairseq's recipes train",
    )
    _require_setting(args, "layernorm_embedding", (False,), False)
    _require_setting(args, "encoder_learned_pos", (False,), False)
    _require_setting(args, "decoder_learned_pos", (False,), False)
    _require_setting(args, "no_token_positional_embeddings", (False,), False)
    _require_setting(args, "adaptive_softmax_cutoff", (None,), None)
    _require_setting(args, "activation_fn", ("relu", "gelu"), "relu")
    normalize = args.get("encoder_normalize_before", True)
    if args.get("decoder_normalize_before", True) != normalize:
        raise CheckpointError(
            "encoder_normalize_before and decoder_normalize_before differ; speechxl has one normalize_before for both"
        )
    dim = args["encoder_embed_dim"]
    for key in ("decoder_embed_dim", "decoder_output_dim"):
        if args.get(key, dim) != dim:
            raise CheckpointError(f"{key}={args[key]} differs from encoder_embed_dim={dim}; speechxl needs one width")
    dropout = float(args.get("dropout", 0.1))
    model = {
        "arch": "s2t",
        "input_dim": int(args.get("input_feat_per_channel", 80)) * int(args.get("input_channels", 1)),
        "conv_channels": int(args.get("conv_channels", 1024)),
        "conv_kernel_sizes": [int(k) for k in str(args.get("conv_kernel_sizes", "5,5")).split(",")],
        "mask_conv_padding": False,  # fairseq's subsampler lets padding into the convs; exact import needs that
        "dim": dim,
        "encoder_layers": args["encoder_layers"],
        "decoder_layers": args["decoder_layers"],
        "encoder_heads": args["encoder_attention_heads"],
        "decoder_heads": args["decoder_attention_heads"],
        "encoder_ffn_dim": args["encoder_ffn_embed_dim"],
        "decoder_ffn_dim": args["decoder_ffn_embed_dim"],
        "dropout": dropout,
        "attention_dropout": float(args.get("attention_dropout", dropout)),
        "activation_dropout": float(args.get("activation_dropout", args.get("relu_dropout", dropout))),
        "activation": args.get("activation_fn", "relu"),
        "normalize_before": bool(normalize),
        "encoder_layerdrop": float(args.get("encoder_layerdrop", 0.0)),
        "decoder_layerdrop": float(args.get("decoder_layerdrop", 0.0)),
    }
    if float(args.get("ctc_weight", 0.0) or 0.0) > 0:
        model["ctc_weight"] = float(args["ctc_weight"])
    return model


def convert_fairseq_s2t(
    src: str | Path,
    out: str | Path,
    *,
    config: str | Path | None = None,
    spm_model: str | Path | None = None,
    dictionary: str | Path | None = None,
) -> Path:
    """Convert the fairseq checkpoint `src` into the speechxl checkpoint directory `out`.

    `config`: fairseq's data config (config_st.yaml), which names the dictionary and SentencePiece model and
    sets CMVN / SpecAugment / language tags; `spm_model` / `dictionary` give or override those files."""
    from speechxl.checkpoint import PIECES_FILE, VOCAB_FILE, write_checkpoint
    from speechxl.data.fairseq_config import read_dictionary, read_fairseq_config

    src = Path(src)
    if config is not None:
        fs = read_fairseq_config(config, spm_model=spm_model, dictionary=dictionary)
        spm_model, dictionary, data = fs.spm_model, fs.dictionary, dict(fs.data)
    else:
        if spm_model is None or dictionary is None:
            raise CheckpointError("give the fairseq data config (--config config_st.yaml), or both --spm and --dict")
        data = {"features": "fbank", "cmvn": "utterance_fairseq", "prepend_lang_tag": False}
    if not data.get("specaugment"):
        data.pop("specaugment", None)
    ckpt = load_checkpoint(src)
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{src}: no 'model' state dict; is this a fairseq checkpoint?")
    model_config = convert_config(_model_args(ckpt, src))
    pieces = read_dictionary(dictionary)
    rows = state["decoder.embed_tokens.weight"].shape[0]
    if rows != len(pieces):
        raise CheckpointError(
            f"{src}: the embedding has {rows} rows but the dictionary {dictionary} has "
            f"{len(pieces)} entries (4 specials + its lines); is it this model's dictionary?"
        )
    ours = convert_state_dict(state)
    with tempfile.TemporaryDirectory() as tmp:
        spm_copy, pieces_copy = Path(tmp) / VOCAB_FILE, Path(tmp) / PIECES_FILE
        spm_copy.write_bytes(Path(spm_model).read_bytes())
        pieces_copy.write_text(json.dumps(pieces, ensure_ascii=False), encoding="utf-8")
        return write_checkpoint(
            out,
            model_state=ours,
            config={"model": model_config, "data": data},
            vocab_files=[spm_copy, pieces_copy],
            metrics={"converted_from": str(src)},
        )
