"""Parity check: our fairseq-wav2vec2 converter against fairseq's own forward pass.

Needs a THROW-AWAY venv with fairseq (never the project venv; not imported by the tests):

    python3 -m venv /tmp/fsenv && /tmp/fsenv/bin/pip install torch==2.13.0 setuptools wheel cython numpy
    /tmp/fsenv/bin/pip install --no-build-isolation fairseq-fixed==0.12.3.1 &&
    /tmp/fsenv/bin/pip uninstall -y torchaudio

Step 1 (fairseq venv): build tiny base-like and large-like fairseq Wav2Vec2Models, save real fairseq
checkpoints (as its trainer does: {"args": None, "cfg": ..., "model": ...}) and their features_only,
mask=False outputs on a fixed wave:
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /tmp/fsenv/bin/python tools/check_fairseq_wav2vec2.py make DIR
Step 2 (project venv): convert each checkpoint and print one JSON line per variant with the max abs difference:
    python tools/check_fairseq_wav2vec2.py compare DIR
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

VARIANTS = {
    "base": {"extractor_mode": "default", "layer_norm_first": False, "conv_bias": False, "normalize": False},
    "large": {"extractor_mode": "layer_norm", "layer_norm_first": True, "conv_bias": True, "normalize": True},
}
TINY = {
    "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
    "encoder_layers": 2,
    "encoder_embed_dim": 32,
    "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 2,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "final_dim": 16,
    "latent_vars": 8,
    "latent_groups": 2,
}


def wave() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((2, 12000)).astype(np.float32))


def make(directory: str) -> None:
    from fairseq.checkpoint_utils import torch_persistent_save
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from omegaconf import OmegaConf

    os.makedirs(directory, exist_ok=True)
    for name, variant in VARIANTS.items():
        torch.manual_seed(0)
        settings = {k: v for k, v in variant.items() if k != "normalize"}
        cfg = OmegaConf.structured(Wav2Vec2Config(**TINY, **settings))
        model = Wav2Vec2Model(cfg).eval()
        with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped one shows
            for key, param in model.named_parameters():
                if "norm" in key or key.endswith("bias"):
                    param.add_(0.1 * torch.randn_like(param))
        x = wave()
        if variant["normalize"]:
            x = torch.nn.functional.layer_norm(x, x.shape[1:])  # what fairseq's dataset does per utterance
        with torch.no_grad():
            out = model(x, mask=False, features_only=True)["x"]
        np.save(os.path.join(directory, f"{name}.npy"), out.numpy())
        task = {"_name": "audio_pretraining", "normalize": variant["normalize"]}
        full = {"model": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "task": task}
        torch_persistent_save(
            {"args": None, "cfg": full, "model": model.state_dict()}, os.path.join(directory, f"{name}.pt")
        )
        # older fairseq releases pickled a DictConfig object (a structured one with enums cannot be pickled)
        torch_persistent_save(
            {"args": None, "cfg": OmegaConf.create(full), "model": model.state_dict()},
            os.path.join(directory, f"{name}_dictconfig.pt"),
        )


def compare(directory: str) -> None:
    from speechxl.convert.fairseq_wav2vec2 import convert_fairseq_wav2vec2
    from speechxl.errors import CheckpointError
    from speechxl.modules.wav2vec2 import Wav2Vec2Encoder

    for name in VARIANTS:
        reference = np.load(os.path.join(directory, f"{name}.npy"))
        for suffix in ("", "_dictconfig"):
            out = os.path.join(directory, f"hf_{name}{suffix}")
            try:
                convert_fairseq_wav2vec2(os.path.join(directory, f"{name}{suffix}.pt"), out)
            except CheckpointError as err:
                print(json.dumps({"variant": name + suffix, "error": str(err)}))
                continue
            encoder = Wav2Vec2Encoder.from_pretrained(out).eval()
            with torch.no_grad():
                states, _ = encoder(wave())  # normalises itself when the checkpoint says so
            diff = float(np.abs(states.numpy() - reference).max())
            print(
                json.dumps(
                    {
                        "variant": name + suffix,
                        "max_abs_diff": diff,
                        "normalize": encoder.normalize,
                        "frames": states.shape[1],
                    }
                )
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["make", "compare"])
    parser.add_argument("directory")
    args = parser.parse_args()
    make(args.directory) if args.step == "make" else compare(args.directory)
