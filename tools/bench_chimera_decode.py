"""Beam-search decoding speed of Chimera (the decoder reads M memory slots, whatever the input length) against
XSTNet (the decoder reads every encoder frame), on the same test manifest, batches and beam.

    python tools/bench_chimera_decode.py --chimera exp/synth_chimera/chimera/avg \
        --xstnet exp/synth_chimera/xstnet/avg --manifest data/synth_ablation/en-de/tst-COMMON.tsv

Batches are built (audio read) before the clock starts; each model decodes them all `--repeats` times
(alternating, the fastest run counts). Prints ONE JSON line: utterances/s of each, `speedup` (Chimera over
XSTNet), the same per CPU second of this process (`*_utt_per_cpu_s`, `speedup_cpu`: steadier than the wall
clock on a shared machine; with --threads 1 they differ only by the time other processes held the CPU), the
mean hypothesis length in tokens (decoding time grows with it), BLEU / chrF of each (sacreBLEU on the
manifest's references), the memory size M and the mean number of encoder frames the XSTNet decoder attends
to. Give checkpoints of the same sizes (the synth recipe's `chimera` and `xstnet` rows are) for a fair
comparison.

Decoding time grows with the output length, and two models rarely write equally long hypotheses (an
undertrained one runs on to --max-len-b, another stops early). `--min-len N` with `--max-len-b N` makes every
hypothesis of both models exactly N tokens: the same number of beam steps, so the ratio measures the cost of
a step (the decoder reading M slots vs every encoder frame) alone. Its BLEU is then that of forced-length
output, not a quality figure.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from speechxl.data.batching import length_batches
from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
from speechxl.data.manifest import read_manifest
from speechxl.inference.decode import DecodeOptions, decode_batch, score_output
from speechxl.models import load_model
from speechxl.tasks import get_task


def load(checkpoint: str, manifest: str, max_tokens: int, max_sentences: int):
    model, vocab, config = load_model(checkpoint)
    rows = read_manifest(manifest)
    features = FeatureConfig(features=config.get("data", {}).get("features", "wave"))
    dataset = SpeechTextDataset(rows, "st", vocab, manifest=manifest, features=features)
    batches = []
    for indices in length_batches(dataset.sizes, max_tokens, max_sentences):
        batches.append((indices, dataset.collate([dataset[i] for i in indices])))
    return model.eval(), vocab, rows, batches


def decode_all(model, vocab, batches, n_rows: int, options: DecodeOptions) -> tuple[list[str], float, float]:
    """The hypotheses, and the wall and CPU (this process) seconds they took."""
    task = get_task("st")
    hyps = [""] * n_rows
    start, cpu_start = time.perf_counter(), time.process_time()
    for indices, batch in batches:
        for i, texts in zip(indices, decode_batch(model, batch, vocab, task, options)):
            hyps[i] = texts["translation"]
    return hyps, time.perf_counter() - start, time.process_time() - cpu_start


@torch.no_grad()
def encoder_frames(model, batches) -> float:
    """Mean number of positions the decoder cross-attends to per utterance."""
    total = count = 0
    for _, batch in batches:
        enc = model.encode(batch)
        total += int((~enc["memory_padding_mask"]).sum())
        count += enc["memory"].size(0)
    return total / max(count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chimera", required=True, help="Chimera checkpoint directory")
    parser.add_argument("--xstnet", required=True, help="XSTNet checkpoint directory")
    parser.add_argument("--manifest", required=True, help="test manifest (audio + tgt_text)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-len-b", type=int, default=200)
    parser.add_argument(
        "--min-len", type=int, default=1, help="no </s> before this many tokens (= --max-len-b: equal lengths)"
    )
    parser.add_argument("--max-tokens", type=int, default=3_200_000, help="wave samples per batch")
    parser.add_argument("--max-sentences", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    options = DecodeOptions(beam=a.beam, max_len_b=a.max_len_b, min_len=a.min_len)
    systems = {
        name: load(path, a.manifest, a.max_tokens, a.max_sentences)
        for name, path in (("chimera", a.chimera), ("xstnet", a.xstnet))
    }
    refs = [row["tgt_text"] for row in systems["chimera"][2]]
    seconds = {name: float("inf") for name in systems}
    cpu_seconds = dict(seconds)
    hyps: dict[str, list[str]] = {}
    for _ in range(a.repeats):
        for name, (model, vocab, rows, batches) in systems.items():
            hyps[name], took, cpu = decode_all(model, vocab, batches, len(rows), options)
            seconds[name], cpu_seconds[name] = min(seconds[name], took), min(cpu_seconds[name], cpu)
    result = {"utterances": len(refs), "beam": a.beam, "threads": a.threads, "min_len": a.min_len}
    for name in systems:
        scores = score_output("translation", hyps[name], refs)
        result[f"{name}_utt_per_s"] = round(len(refs) / seconds[name], 2)
        result[f"{name}_utt_per_cpu_s"] = round(len(refs) / cpu_seconds[name], 2)
        result[f"{name}_bleu"], result[f"{name}_chrf"] = round(scores["bleu"], 2), round(scores["chrf"], 1)
        # decoding time grows with the output length: an untrained model's runaway hypotheses cost more steps
        vocab = systems[name][1]
        result[f"{name}_mean_hyp_tokens"] = round(sum(len(vocab.encode(h)) for h in hyps[name]) / len(refs), 1)
    result["speedup"] = round(result["chimera_utt_per_s"] / result["xstnet_utt_per_s"], 3)
    # on a shared machine the wall clock also counts the time other processes held the CPU
    result["speedup_cpu"] = round(result["chimera_utt_per_cpu_s"] / result["xstnet_utt_per_cpu_s"], 3)
    result["memory_slots"] = systems["chimera"][0].memory.num_slots
    result["xstnet_mean_encoder_frames"] = round(encoder_frames(systems["xstnet"][0], systems["xstnet"][3]), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
