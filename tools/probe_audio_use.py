"""Does a speech translation model listen? Its per-token NLL of the references of a manifest, decoded from
each utterance's own audio and from another utterance's audio (each length-sorted batch rotated by one).

    python tools/probe_audio_use.py --checkpoint exp/synth_ablation/base_random/avg \
        --manifest data/synth_ablation/en-de/dev.tsv

Prints ONE JSON line: `nll_own` and `nll_other` (nats per target token, language tag excluded, no label
smoothing) and `gain` = nll_other - nll_own. A gain near 0 means the decoder writes from its language
model and ignores the audio: a BLEU above 0 then measures fluent target text, not translation.
"""

from __future__ import annotations

import argparse
import json

import torch

from speechxl.data.batching import length_batches
from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
from speechxl.data.manifest import read_manifest
from speechxl.models import load_model


def rotated(batch: dict, shift: int = 1) -> dict:
    """The batch with every utterance's audio replaced by its neighbour's (targets unchanged)."""
    moved = {key: torch.roll(batch[key], shift, dims=0) for key in ("audio", "audio_lengths", "audio_padding_mask")}
    return {**batch, **moved}


@torch.no_grad()
def target_nll(model, batch: dict) -> tuple[float, int]:
    """Summed NLL (no smoothing, language-tag prefix excluded) of the batch's ST targets and its token count,
    as the model's own forward pass logs them."""
    logs = model(batch)["logs"]
    return logs["nll_loss"], logs["ntokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory of an ST model")
    parser.add_argument("--manifest", required=True, help="manifest TSV with audio and references")
    parser.add_argument("--max-tokens", type=int, default=1_600_000, help="batch budget (wave samples or frames)")
    args = parser.parse_args()

    model, vocab, config = load_model(args.checkpoint)
    data = config.get("data", {})
    dataset = SpeechTextDataset(
        read_manifest(args.manifest),
        "st",
        vocab,
        manifest=args.manifest,
        features=FeatureConfig(features=data.get("features", "fbank")),
    )
    sums = {"own": 0.0, "other": 0.0}
    tokens = 0
    for indices in length_batches(dataset.sizes, args.max_tokens):
        if len(indices) < 2:
            continue  # nobody to swap audio with
        batch = dataset.collate([dataset[i] for i in indices])
        own, ntokens = target_nll(model, batch)
        other, _ = target_nll(model, rotated(batch))
        sums["own"] += own
        sums["other"] += other
        tokens += ntokens
    result = {
        "checkpoint": args.checkpoint,
        "manifest": args.manifest,
        "tokens": tokens,
        "nll_own": round(sums["own"] / tokens, 4),
        "nll_other": round(sums["other"] / tokens, 4),
    }
    result["gain"] = round(result["nll_other"] - result["nll_own"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
