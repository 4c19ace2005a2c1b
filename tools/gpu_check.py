"""One GPU figure per JSON line: training steps/s, tokens/s, MFU and peak memory of a model in bf16.

    python tools/gpu_check.py train --arch s2t --size m                 # S2T-m, bf16 autocast, fused AdamW
    python tools/gpu_check.py train --arch xstnet --size base --compile # XSTNet-base under torch.compile
    python tools/gpu_check.py flops --arch xstnet --size base --batch 8 --frames 125000 --tokens 40
    python tools/gpu_check.py peak "NVIDIA H100 80GB HBM3"

MFU = model FLOPs per step × steps/s ÷ the device's dense bf16 peak. Model FLOPs are counted from the config
(`model_flops`): every matmul and convolution of one forward pass, 2 FLOPs per multiply-add, attention
scores and weighted sums included (QKᵀ and PV: 4·Tq·Tk·D per layer), × 3 for forward + backward. Element-wise
work (norms, softmax, activations) is not counted, as in the usual MFU convention; `torch.utils.flop_counter`
counts the same operations, and tests/test_speed.py checks the two agree on tiny models.
The batch is synthetic: equal-length utterances (no padding), so the figure is the model's, not the data's.
tools/gpu_check.sh runs the whole check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

# Dense (no sparsity) bf16 tensor-core peak per GPU, TFLOP/s, from the vendors' datasheets. Looked up by the
# longest key contained in torch.cuda.get_device_name() (so "H100 PCIe" wins over "H100").
BF16_PEAK_TFLOPS: dict[str, float] = {
    "B200": 2250.0,
    "H200": 989.4,
    "GH200": 989.4,
    "H100": 989.4,  # SXM
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H800": 989.4,
    "A100": 312.0,
    "A800": 312.0,
    "A40": 149.7,
    "A30": 165.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "RTX 6000 Ada": 364.2,
    "RTX A6000": 154.8,
    "RTX 4090": 165.2,
    "RTX 3090": 71.0,
}

SEQ2SEQ_ARCHS = ("s2t", "xstnet")


def bf16_peak_tflops(device_name: str) -> float | None:
    """The table's peak for a device name (case-insensitive, longest matching key), None if unknown."""
    name = device_name.lower()
    matches = [key for key in BF16_PEAK_TFLOPS if key.lower() in name]
    return BF16_PEAK_TFLOPS[max(matches, key=len)] if matches else None


# ------------------------------------------------------------------------------------------------ FLOPs


def model_config(arch: str, size: str, overrides: dict[str, Any] | None = None):
    """The resolved config dataclass of `arch` at preset `size`."""
    config = {"size": size, **(overrides or {})}
    if arch == "s2t":
        from speechxl.models.s2t import S2TConfig

        return S2TConfig.from_dict(config)
    if arch == "xstnet":
        from speechxl.models.xstnet import XSTNetConfig

        return XSTNetConfig.from_dict(config)
    raise ValueError(f"gpu_check counts FLOPs of {', '.join(SEQ2SEQ_ARCHS)}, not {arch!r}")


def _conv_out(length: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (length + 2 * padding - kernel) // stride + 1


def _subsampler_flops(frames: int, in_channels: int, mid_channels: int, dim: int, kernels) -> tuple[int, int]:
    """Conv1dSubsampler (stride 2, GLU halves the channels) -> (FLOPs, output length)."""
    flops, channels = 0, in_channels
    for i, k in enumerate(kernels):
        frames = _conv_out(frames, k, 2, k // 2)
        out = mid_channels if i < len(kernels) - 1 else 2 * dim
        flops += 2 * frames * k * channels * out
        channels = out // 2
    return flops, frames


def _wav2vec2_flops(samples: int, w2v) -> tuple[int, int]:
    """wav2vec 2.0 (HF config): CNN, feature projection, positional conv, Transformer -> (FLOPs, frames)."""
    flops, length, channels = 0, samples, 1
    for out, kernel, stride in zip(w2v.conv_dim, w2v.conv_kernel, w2v.conv_stride):
        length = _conv_out(length, kernel, stride)
        flops += 2 * length * kernel * channels * out
        channels = out
    hidden, k, groups = w2v.hidden_size, w2v.num_conv_pos_embeddings, w2v.num_conv_pos_embedding_groups
    flops += 2 * length * channels * hidden  # feature projection
    flops += 2 * _conv_out(length, k, 1, k // 2) * k * (hidden // groups) * hidden  # positional conv
    flops += w2v.num_hidden_layers * _layer_flops(length, length, hidden, w2v.intermediate_size)
    return flops, length


def _layer_flops(rows: int, keys: int, dim: int, ffn_dim: int) -> int:
    """One Transformer encoder layer: q/k/v/out projections, feed-forward, QKᵀ and PV."""
    return 2 * rows * (4 * dim * dim + 2 * dim * ffn_dim) + 4 * rows * keys * dim


def _decoder_flops(tokens: int, scored: int, memory: int, c, vocab: int) -> int:
    """Teacher-forced decoder over `tokens` positions, cross-attending `memory` rows, logits for `scored`."""
    d = c.dim
    per_layer = (
        _layer_flops(tokens, tokens, d, c.decoder_ffn_dim)  # self-attention + feed-forward
        + 2 * tokens * 2 * d * d  # cross-attention q and out projections
        + 2 * memory * 2 * d * d  # cross-attention keys and values of the memory
        + 4 * tokens * memory * d  # cross-attention QKᵀ and PV
    )
    return c.decoder_layers * per_layer + 2 * scored * d * vocab


def model_flops(arch: str, config, *, batch: int, frames: int, tokens: int, vocab: int, prefix: int = 0) -> dict:
    """FLOPs of one forward pass and one training step for `batch` utterances of `frames` input positions
    (fbank frames for s2t, 16 kHz samples for xstnet) and `tokens` target positions, `prefix` of them a
    forced tag without loss (no logits computed for them)."""
    if arch == "s2t":
        front, memory = _subsampler_flops(
            frames, config.input_dim, config.conv_channels, config.dim, config.conv_kernel_sizes
        )
    elif arch == "xstnet":
        from transformers import Wav2Vec2Config

        from speechxl.modules.wav2vec2 import wav2vec2_config

        w2v = (
            Wav2Vec2Config.from_dict(config.w2v_config)
            if config.w2v_config
            else wav2vec2_config(config.w2v_preset, **config.w2v_overrides)
        )
        front, w2v_frames = _wav2vec2_flops(frames, w2v)
        sub, memory = _subsampler_flops(
            w2v_frames, w2v.hidden_size, config.conv_channels, config.dim, config.conv_kernel_sizes
        )
        front += sub
        memory += 1 if config.audio_tag else 0
    else:
        raise ValueError(f"gpu_check counts FLOPs of {', '.join(SEQ2SEQ_ARCHS)}, not {arch!r}")
    encoder = config.encoder_layers * _layer_flops(memory, memory, config.dim, config.encoder_ffn_dim)
    decoder = _decoder_flops(tokens, tokens - prefix, memory, config, vocab)
    forward = batch * (front + encoder + decoder)
    return {"forward_flops": forward, "train_flops": 3 * forward, "encoder_positions": memory}


# ------------------------------------------------------------------------------------------------ the run


def figure(**fields: Any) -> str:
    """One JSON line of the check: `check` names the figure, the rest are its values."""
    return json.dumps({"check": fields.pop("check"), **fields}, sort_keys=False)


def synthetic_batch(arch: str, batch: int, frames: int, tokens: int, vocab: int, device: str) -> dict:
    """Equal-length inputs and targets (no padding), shaped as the collater makes them."""
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, frames, 80, generator=g) if arch == "s2t" else torch.randn(batch, frames, generator=g)
    target = torch.randint(4, vocab, (batch, tokens), generator=g)
    target[:, -1] = 2  # </s>
    prev = torch.cat([torch.full((batch, 1), 2), target[:, :-1]], dim=1)
    out = {
        "task": "st",
        "ids": list(range(batch)),
        "audio": audio,
        "audio_lengths": torch.full((batch,), frames),
        "target": target,
        "prev_target": prev,
        "target_lengths": torch.full((batch,), tokens),
    }
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in out.items()}


def build(arch: str, config, vocab: int):
    if arch == "s2t":
        from speechxl.models.s2t import S2TTransformer

        return S2TTransformer(config, vocab, pad=1, eos=2)
    from speechxl.models.xstnet import XSTNet

    return XSTNet(config, vocab, pad=1, eos=2, audio_tag_id=3 if config.audio_tag else None)


def train_figure(a: argparse.Namespace) -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing to measure")
    device = "cuda"
    config = model_config(a.arch, a.size)
    model = build(a.arch, config, a.vocab).to(device).train()
    model.label_smoothing = 0.1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step_model = torch.compile(model) if a.compile else model
    batch = synthetic_batch(a.arch, a.batch, a.frames, a.tokens, a.vocab, device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = step_model(batch)
        (out["loss"] / out["sample_size"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warm = time.perf_counter()
    for _ in range(a.warmup):  # compilation happens here
        step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - warm
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / a.steps
    flops = model_flops(a.arch, config, batch=a.batch, frames=a.frames, tokens=a.tokens, vocab=a.vocab)
    name = torch.cuda.get_device_name()
    peak = bf16_peak_tflops(name)
    achieved = flops["train_flops"] / seconds / 1e12
    return {
        "check": "train",
        "arch": a.arch,
        "size": a.size,
        "dtype": "bf16",
        "compile": bool(a.compile),
        "steps_per_s": round(1 / seconds, 3),
        "target_tokens_per_s": round(a.batch * a.tokens / seconds, 1),
        "input_positions_per_s": round(a.batch * a.frames / seconds, 1),
        "model_tflops_per_step": round(flops["train_flops"] / 1e12, 4),
        "achieved_tflops": round(achieved, 2),
        "peak_bf16_tflops": peak,
        "mfu": round(achieved / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "batch": a.batch,
        "frames": a.frames,
        "tokens": a.tokens,
        "vocab": a.vocab,
        "steps": a.steps,
        "warmup_s": round(warmup_s, 1),
        "device": name,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("train", "flops"):
        p = sub.add_parser(command)
        p.add_argument("--arch", default="s2t", choices=SEQ2SEQ_ARCHS)
        p.add_argument("--size", default="m", help="model preset (s2t: xs/s/m/l, xstnet: base/tiny)")
        p.add_argument("--batch", type=int, default=None, help="utterances per step (default: per arch)")
        p.add_argument(
            "--frames", type=int, default=None, help="input positions per utterance: fbank frames or samples"
        )
        p.add_argument("--tokens", type=int, default=40, help="target tokens per utterance")
        p.add_argument("--vocab", type=int, default=8000)
        if command == "train":
            p.add_argument("--steps", type=int, default=20, help="timed steps")
            p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
            p.add_argument("--compile", action="store_true", help="torch.compile the model")
    peak = sub.add_parser("peak", help="the bf16 peak the table gives a device name")
    peak.add_argument("name")
    a = parser.parse_args(argv)
    if a.command == "peak":
        print(figure(check="peak", device=a.name, peak_bf16_tflops=bf16_peak_tflops(a.name)))
        return 0
    # fairseq's recipes: S2T 40k fbank frames per batch (40 × 1000), XSTNet 1M samples (8 × 125k = 7.8 s)
    a.batch = a.batch or (40 if a.arch == "s2t" else 8)
    a.frames = a.frames or (1000 if a.arch == "s2t" else 125_000)
    if a.command == "flops":
        flops = model_flops(
            a.arch, model_config(a.arch, a.size), batch=a.batch, frames=a.frames, tokens=a.tokens, vocab=a.vocab
        )
        print(figure(check="flops", arch=a.arch, size=a.size, batch=a.batch, frames=a.frames, **flops))
        return 0
    print(figure(**train_figure(a)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
