"""Shrink ratio of a COSTT checkpoint on a manifest: acoustic encoder length before and after CTC-guided
shrinking, against the transcript's token count (COSTT expects about one shrunk state per token).

    python tools/shrink_stats.py CHECKPOINT_DIR MANIFEST [--out stats.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from speechxl.data.batching import length_batches
from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
from speechxl.data.manifest import read_manifest
from speechxl.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("manifest")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model, vocab, config = load_model(args.checkpoint)
    rows = read_manifest(args.manifest)
    dataset = SpeechTextDataset(
        rows, "st", vocab, manifest=args.manifest, features=FeatureConfig(features="fbank"), decoding=True
    )
    frames = acoustic = shrunk = tokens = exact = 0
    per_token = []
    with torch.no_grad():
        for indices in length_batches(dataset.sizes, 20000, 32):
            batch = dataset.collate([dataset[i] for i in indices])
            enc = model.encode(batch)
            for j, i in enumerate(indices):
                n_tokens = len(vocab.encode(rows[dataset.row_index[i]]["src_text"]))
                a, s = int(enc["acoustic_lengths"][j]), int(enc["memory_lengths"][j])
                frames += int(batch["audio_lengths"][j])
                acoustic, shrunk, tokens = acoustic + a, shrunk + s, tokens + n_tokens
                exact += int(s == n_tokens)
                per_token.append(s / n_tokens)
    per_token.sort()
    stats = {
        "utterances": len(per_token),
        "fbank_frames": frames,
        "acoustic_states": acoustic,
        "shrunk_states": shrunk,
        "transcript_tokens": tokens,
        "states_per_token_before": round(acoustic / tokens, 3),
        "states_per_token_after": round(shrunk / tokens, 3),
        "shrink_factor": round(acoustic / shrunk, 3),
        "median_states_per_token_after": round(per_token[len(per_token) // 2], 3),
        "utterances_with_one_state_per_token": exact,
    }
    text = json.dumps(stats, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
