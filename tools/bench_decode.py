"""Beam-search throughput of speechxl's S2T vs HF Speech2Text `generate`, same weights and inputs.

Asserts identical outputs (fp32) and prints one JSON line.
  python tools/bench_decode.py --threads 1 --repeats 3    # CPU, one thread; runs alternate, medians compared
  python tools/bench_decode.py --device cuda --dtype bf16
In bf16 the two implementations round differently, so outputs are counted, not asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import transformers
from bench_train import EOS, PAD, models, padded_batch

from speechxl.convert.hf_generation import hf_generate_kwargs, hf_sequences_to_tokens
from speechxl.inference.search import beam_search
from speechxl.models.s2t import SIZES


def timed(fn, device: str):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast")
    parser.add_argument("--size", default="s", choices=list(SIZES))
    parser.add_argument("--utterances", type=int, default=32)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=30, help="output tokens before </s>")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed runs per implementation, alternating (the order flips)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both (default: torch's)")
    a = parser.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ours, hf = models(a.size, a.vocab, a.device)
    ours.eval(), hf.eval()
    batch = padded_batch(a.utterances, (300, 1200), (20, 60), a.vocab, a.device)
    mask = (torch.arange(batch["audio"].size(1), device=a.device)[None, :] < batch["audio_lengths"][:, None]).long()
    autocast = torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.dtype == "bf16")
    kwargs = hf_generate_kwargs(eos=EOS, pad=PAD, beam=a.beam, lenpen=1.0, max_len=a.max_len)

    def run_ours():
        with autocast:
            return [h[0].tokens for h in beam_search(ours, batch, beam=a.beam, lenpen=1.0, max_len_b=a.max_len)]

    def run_hf():
        with autocast, torch.inference_mode():
            return hf_sequences_to_tokens(
                hf.generate(input_features=batch["audio"], attention_mask=mask, **kwargs), EOS
            )

    # alternate the two, flipping the order every round, so both see the same load on a shared CPU
    seconds: dict[str, list[float]] = {"ours": [], "hf": []}
    outputs = {}
    for round_ in range(a.repeats):
        for name in ("ours", "hf") if round_ % 2 == 0 else ("hf", "ours"):
            outputs[name], elapsed = timed(run_ours if name == "ours" else run_hf, a.device)
            seconds[name].append(elapsed)
    ours_out, hf_out = outputs["ours"], outputs["hf"]
    ours_s, hf_s = statistics.median(seconds["ours"]), statistics.median(seconds["hf"])
    same = sum(x == y for x, y in zip(ours_out, hf_out))
    if a.dtype == "fp32":
        assert same == len(ours_out), f"outputs differ for {len(ours_out) - same} of {len(ours_out)} utterances"
    n = a.utterances
    print(
        json.dumps(
            {
                "bench": "beam_decode",
                "ours_utt_per_s": round(n / ours_s, 3),
                "hf_utt_per_s": round(n / hf_s, 3),
                "statistic": "median",
                "ratio": round(hf_s / ours_s, 3),
                "identical_outputs": f"{same}/{len(ours_out)}",
                "device": a.device,
                "dtype": a.dtype,
                "size": a.size,
                "beam": a.beam,
                "max_len": a.max_len,
                "output_tokens": sum(len(t) for t in ours_out),
                "utterances": a.utterances,
                "repeats": a.repeats,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
