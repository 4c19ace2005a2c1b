"""fairseq wav2vec2 .pt → HF directory: outputs match the source model; hostile pickles are refused."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from speechxl.cli import main
from speechxl.convert.fairseq_wav2vec2 import convert_fairseq_wav2vec2, parse_conv_layers
from speechxl.convert.unpickle import load_checkpoint
from speechxl.errors import CheckpointError
from speechxl.modules.wav2vec2 import Wav2Vec2Encoder

CONV = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"


def fairseq_model_cfg(large: bool) -> dict:
    return {
        "_name": "wav2vec2",
        "extractor_mode": "layer_norm" if large else "default",
        "conv_feature_layers": CONV,
        "conv_bias": large,
        "layer_norm_first": large,
        "encoder_layers": 2,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 64,
        "encoder_attention_heads": 2,
        "activation_fn": "gelu",
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "final_dim": 16,
        "latent_vars": 8,
        "latent_groups": 2,
        "mask_prob": 0.65,
    }


def hf_source_model(large: bool) -> Wav2Vec2Model:
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        conv_dim=[32] * 7,
        conv_kernel=[10, 3, 3, 3, 3, 2, 2],
        conv_stride=[5, 2, 2, 2, 2, 2, 2],
        feat_extract_norm="layer" if large else "group",
        conv_bias=large,
        do_stable_layer_norm=large,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        mask_time_prob=0.65,
    )
    model = Wav2Vec2Model(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped one shows
        for name, param in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model


def to_fairseq_names(model: Wav2Vec2Model, large: bool, weight_norm: str) -> dict[str, torch.Tensor]:
    """The inverse of the converter's map, written independently as plain string edits."""
    state = {}
    for key, value in model.state_dict().items():
        k = key
        if k.startswith("feature_extractor.conv_layers."):
            k = k.replace(".conv.", ".0.").replace(".layer_norm.", ".2.1." if large else ".2.")
        k = k.replace("feature_projection.layer_norm.", "layer_norm.")
        k = k.replace("feature_projection.projection.", "post_extract_proj.")
        k = k.replace("masked_spec_embed", "mask_emb")
        k = k.replace("encoder.pos_conv_embed.conv.", "encoder.pos_conv.0.")
        if weight_norm == "old":
            k = k.replace("parametrizations.weight.original0", "weight_g")
            k = k.replace("parametrizations.weight.original1", "weight_v")
        k = k.replace(".attention.", ".self_attn.")
        if ".layers." in k:
            k = k.replace(".layer_norm.", ".self_attn_layer_norm.")
        k = k.replace("feed_forward.intermediate_dense", "fc1").replace("feed_forward.output_dense", "fc2")
        state[k] = value.clone()
    # pre-training heads that a Wav2Vec2Model drops
    state["quantizer.vars"] = torch.randn(1, 16, 8)
    state["project_q.weight"] = torch.randn(16, 16)
    state["final_proj.weight"] = torch.randn(16, 32)
    return state


def outputs(model: Wav2Vec2Model, wave: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(wave).last_hidden_state


WAVE = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))


def test_base_args_namespace_checkpoint_converts_exactly(tmp_path):
    source = hf_source_model(large=False)
    ckpt = {
        "args": argparse.Namespace(**fairseq_model_cfg(False), normalize=False),
        "model": to_fairseq_names(source, large=False, weight_norm="old"),
    }
    torch.save(ckpt, tmp_path / "base.pt")
    summary = convert_fairseq_wav2vec2(tmp_path / "base.pt", tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "model.safetensors"]
    assert summary["finetuned_ctc"] is False
    converted = Wav2Vec2Model.from_pretrained(tmp_path / "out").eval()
    assert converted.config.feat_extract_norm == "group" and not converted.config.do_stable_layer_norm
    torch.testing.assert_close(outputs(converted, WAVE), outputs(source, WAVE), atol=1e-5, rtol=1e-5)
    assert Wav2Vec2Encoder.from_pretrained(tmp_path / "out").normalize is False


def test_large_omegaconf_checkpoint_converts_exactly(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    source = hf_source_model(large=True)
    cfg = omegaconf.OmegaConf.create({"model": fairseq_model_cfg(True), "task": {"normalize": True}})
    torch.save(
        {"args": None, "cfg": cfg, "model": to_fairseq_names(source, large=True, weight_norm="new")},
        tmp_path / "large.pt",
    )
    convert_fairseq_wav2vec2(tmp_path / "large.pt", tmp_path / "out")
    converted = Wav2Vec2Model.from_pretrained(tmp_path / "out").eval()
    assert converted.config.feat_extract_norm == "layer" and converted.config.do_stable_layer_norm
    torch.testing.assert_close(outputs(converted, WAVE), outputs(source, WAVE), atol=1e-5, rtol=1e-5)
    assert Wav2Vec2Encoder.from_pretrained(tmp_path / "out").normalize is True


def test_ctc_finetuned_checkpoint_converts_and_keeps_the_head(tmp_path):
    source = hf_source_model(large=False)
    state = {
        f"w2v_encoder.w2v_model.{k}": v
        for k, v in to_fairseq_names(source, False, "old").items()
        if not k.startswith(("quantizer", "project_q", "final_proj"))
    }
    head = torch.randn(30, 32)
    state["w2v_encoder.proj.weight"], state["w2v_encoder.proj.bias"] = head, torch.zeros(30)
    cfg = {
        "model": {
            "_name": "wav2vec_ctc",
            "w2v_args": {"model": fairseq_model_cfg(False), "task": {"normalize": False}},
        },
        "task": {"normalize": False},
    }
    torch.save({"args": None, "cfg": cfg, "model": state}, tmp_path / "ctc.pt")
    main(["convert", "fairseq-wav2vec2", str(tmp_path / "ctc.pt"), str(tmp_path / "out")])
    converted = Wav2Vec2Model.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(outputs(converted, WAVE), outputs(source, WAVE), atol=1e-5, rtol=1e-5)
    from safetensors.torch import load_file

    torch.testing.assert_close(load_file(tmp_path / "out" / "ctc_head.safetensors")["weight"], head)


def test_unknown_weight_is_an_error_not_a_silent_drop(tmp_path):
    source = hf_source_model(large=False)
    state = to_fairseq_names(source, False, "old")
    state["encoder.layers.0.adapter.weight"] = torch.zeros(1)
    torch.save({"args": argparse.Namespace(**fairseq_model_cfg(False)), "model": state}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="adapter"):
        convert_fairseq_wav2vec2(tmp_path / "x.pt", tmp_path / "out")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "args": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="system"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_conv_layer_spec_is_parsed_without_eval():
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2") == [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    with pytest.raises(CheckpointError):
        parse_conv_layers("__import__('os').system('true')")


def test_missing_projection_when_widths_match_is_the_identity(tmp_path):
    """fairseq has no post_extract_proj when the CNN width equals the model width (as in these tiny models)."""
    source = hf_source_model(large=False)
    with torch.no_grad():
        source.feature_projection.projection.weight.copy_(torch.eye(32))
        source.feature_projection.projection.bias.zero_()
    state = {k: v for k, v in to_fairseq_names(source, False, "old").items() if not k.startswith("post_extract_proj")}
    torch.save({"args": argparse.Namespace(**fairseq_model_cfg(False)), "model": state}, tmp_path / "x.pt")
    convert_fairseq_wav2vec2(tmp_path / "x.pt", tmp_path / "out")
    converted = Wav2Vec2Model.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(outputs(converted, WAVE), outputs(source, WAVE), atol=1e-5, rtol=1e-5)
