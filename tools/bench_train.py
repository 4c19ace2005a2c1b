"""Training-step throughput of speechxl's S2T vs HF Speech2Text with the same weights and inputs.

One step = forward + label-smoothed CE + backward + Adam. Prints one JSON line.
  python tools/bench_train.py --steps 5                      # CPU
  python tools/bench_train.py --threads 1 --frames 1200 1200  # one thread (steadier on a shared CPU), no padding
  python tools/bench_train.py --device cuda --dtype bf16 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
import transformers
from tqdm import tqdm
from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

from speechxl.convert.hf_speech2text import convert_config, convert_state_dict
from speechxl.models.s2t import SIZES, S2TConfig, S2TTransformer

PAD, EOS = 1, 2


def models(size: str, vocab: int, device: str, seed: int = 0):
    """A randomly initialised HF Speech2Text of fairseq size `size` and its speechxl conversion."""
    torch.manual_seed(seed)
    s = SIZES[size]
    hf_config = Speech2TextConfig(
        vocab_size=vocab,
        d_model=s["dim"],
        encoder_layers=s["encoder_layers"],
        decoder_layers=s["decoder_layers"],
        encoder_attention_heads=s["encoder_heads"],
        decoder_attention_heads=s["decoder_heads"],
        encoder_ffn_dim=s["encoder_ffn_dim"],
        decoder_ffn_dim=s["decoder_ffn_dim"],
        dropout=s["dropout"],
        attention_dropout=s["dropout"],
        activation_dropout=s["dropout"],
        max_source_positions=2000,
    )
    hf = Speech2TextForConditionalGeneration(hf_config)
    config = convert_config(hf_config.to_dict())
    config.pop("arch")
    ours = S2TTransformer(S2TConfig.from_dict(config), vocab, PAD, EOS)
    ours.load_state_dict(convert_state_dict(hf.state_dict()))
    ours.label_smoothing = 0.1  # as the HF step's loss below (the trainer sets it from train.label_smoothing)
    return ours.to(device), hf.to(device)


def padded_batch(n: int, frames: tuple[int, int], tokens: tuple[int, int], vocab: int, device: str, seed: int = 1):
    """fbank-shaped features and targets of random lengths, right-padded like speechxl's collater."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(frames[0], frames[1] + 1, (n,), generator=g)
    target_lengths = torch.randint(tokens[0], tokens[1] + 1, (n,), generator=g)
    audio = torch.randn(n, int(lengths.max()), 80, generator=g)
    audio *= (torch.arange(audio.size(1))[None, :] < lengths[:, None])[..., None]
    target = torch.full((n, int(target_lengths.max())), PAD)
    for i, u in enumerate(target_lengths.tolist()):
        target[i, : u - 1] = torch.randint(4, vocab, (u - 1,), generator=g)
        target[i, u - 1] = EOS
    prev = torch.full_like(target, PAD)
    prev[:, 0] = EOS
    prev[:, 1:] = target[:, :-1].masked_fill(target[:, :-1].eq(EOS), PAD)
    batch = {
        "task": "st",
        "audio": audio,
        "audio_lengths": lengths,
        "target": target,
        "prev_target": prev,
        "target_lengths": target_lengths,
        "ntokens": int(target_lengths.sum()),
    }
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def timed_alternating(steps: dict, repeats: int, warmup: int, device: str) -> dict[str, float]:
    """Median seconds per step of each callable. Runs interleave and the order flips every round, so both
    see the same machine load (the CPU may be shared); the median ignores a step hit by a burst of load."""

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for step in steps.values():
        for _ in range(warmup):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_ in tqdm(range(repeats), desc="alternating runs", leave=False):
        for name in names if round_ % 2 == 0 else names[::-1]:
            sync()
            start = time.perf_counter()
            steps[name]()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast")
    parser.add_argument("--size", default="s", choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation first")
    parser.add_argument(
        "--frames",
        type=int,
        nargs=2,
        default=(300, 1200),
        metavar=("MIN", "MAX"),
        help="utterance lengths in fbank frames, drawn uniformly (equal MIN and MAX: no padding)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both (default: torch's)")
    a = parser.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ours, hf = models(a.size, a.vocab, a.device)
    ours.train(), hf.train()
    batch = padded_batch(a.batch, tuple(a.frames), (20, 60), a.vocab, a.device)
    mask = (torch.arange(batch["audio"].size(1), device=a.device)[None, :] < batch["audio_lengths"][:, None]).long()
    autocast = torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.dtype == "bf16")
    ours_opt = torch.optim.Adam(ours.parameters(), lr=1e-5)
    hf_opt = torch.optim.Adam(hf.parameters(), lr=1e-5)

    def ours_step():
        with autocast:
            out = ours(batch)
        (out["loss"] / out["sample_size"]).backward()
        ours_opt.step()
        ours_opt.zero_grad(set_to_none=True)

    def hf_step():
        with autocast:
            logits = hf(
                input_features=batch["audio"], attention_mask=mask, decoder_input_ids=batch["prev_target"]
            ).logits
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), batch["target"].flatten(), ignore_index=PAD, label_smoothing=0.1
        )
        loss.backward()
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    seconds = timed_alternating({"ours": ours_step, "hf": hf_step}, a.steps, a.warmup, a.device)
    ours_rate, hf_rate = 1 / seconds["ours"], 1 / seconds["hf"]
    print(
        json.dumps(
            {
                "bench": "train_step",
                "ours_steps_per_s": round(ours_rate, 4),
                "hf_steps_per_s": round(hf_rate, 4),
                "statistic": "median",
                "ratio": round(ours_rate / hf_rate, 3),
                "device": a.device,
                "dtype": a.dtype,
                "size": a.size,
                "batch": a.batch,
                "frames": int(batch["audio_lengths"].sum()),
                "padded_frames": batch["audio"].size(0) * batch["audio"].size(1),
                "target_tokens": batch["ntokens"],
                "vocab": a.vocab,
                "steps": a.steps,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
