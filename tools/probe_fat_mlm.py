"""Does FAT-MLM fuse the modalities? On the spoken triples of a manifest, its masked-token cross-entropy with the
utterance's own speech, with another utterance's speech (each length-sorted batch rotated by one) and with no
speech; and its masked-frame L2 with and without the texts, and that of predicting the utterance mean (the
floor a reconstruction must beat). The masks are the evaluation masks, drawn per
utterance and segment, so each comparison scores the same masked positions.

    python tools/probe_fat_mlm.py --checkpoint exp/fat_synth/mlm/checkpoints/best \
        --manifest data/fat_synth/en-de/dev.tsv

Prints ONE JSON line (nats per masked token, L2 per masked frame). `text_gain` = text CE with another's speech
minus with its own: near 0, the text predictions ignore the speech (nothing cross-modal was learnt for an ST
model to inherit); `speech_gain` = L2 without the texts minus with them; `speech_l2_mean` the mean's L2.
"""

from __future__ import annotations

import argparse
import json

import torch

from speechxl.data.batching import length_batches
from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
from speechxl.data.manifest import read_manifest
from speechxl.models import load_model

AUDIO_KEYS = ("audio", "audio_lengths", "audio_padding_mask")
TEXT_KEYS = ("transcript", "prev_transcript", "transcript_lengths", "target", "prev_target", "target_lengths")


@torch.no_grad()
def sums(model, batch: dict) -> dict[str, float]:
    logs = model(batch)["logs"]
    return {key: logs.get(key, 0.0) for key in ("text_loss", "text_ntokens", "speech_loss", "speech_ntokens")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a FAT-MLM checkpoint directory")
    parser.add_argument("--manifest", required=True, help="manifest TSV of spoken triples (audio, src_text, tgt_text)")
    parser.add_argument("--max-tokens", type=int, default=20000, help="fbank frames per batch")
    args = parser.parse_args()

    model, vocab, config = load_model(args.checkpoint)
    features = FeatureConfig.from_data(config.get("data", {}))
    dataset = SpeechTextDataset(
        read_manifest(args.manifest), "mlm_triplet", vocab, manifest=args.manifest, features=features
    )
    totals: dict[str, dict[str, float]] = {}
    for indices in length_batches(dataset.sizes, args.max_tokens):
        if len(indices) < 2:
            continue  # nobody to swap speech with
        batch = dataset.collate([dataset[i] for i in indices])
        variants = {
            "own": batch,
            "other": {**batch, **{key: torch.roll(batch[key], 1, dims=0) for key in AUDIO_KEYS}},
            "no_speech": {**batch, **dict.fromkeys(AUDIO_KEYS)},
            "no_text": {**batch, **dict.fromkeys(TEXT_KEYS)},
        }
        for name, variant in variants.items():
            for key, value in sums(model, variant).items():
                totals.setdefault(name, {}).setdefault(key, 0.0)
                totals[name][key] += value
        with torch.no_grad():  # the floor to beat: every masked frame predicted as the utterance mean (0 after CMVN)
            speech = model.masked_pass(batch)["speech"]
        mean = totals.setdefault("mean", {"speech_loss": 0.0, "speech_ntokens": 0.0})
        mean["speech_loss"] += float(speech["input"][speech["frame_mask"]].pow(2).mean(dim=-1).sum())
        mean["speech_ntokens"] += int(speech["frame_mask"].sum())

    def per(name: str, kind: str) -> float:
        return round(totals[name][f"{kind}_loss"] / max(totals[name][f"{kind}_ntokens"], 1), 4)

    result = {"checkpoint": args.checkpoint, "manifest": args.manifest}
    result.update({f"text_ce_{name}": per(name, "text") for name in ("own", "other", "no_speech")})
    result.update({f"speech_l2_{name}": per(name, "speech") for name in ("own", "no_text", "mean")})
    result["text_gain"] = round(result["text_ce_other"] - result["text_ce_own"], 4)
    result["speech_gain"] = round(result["speech_l2_no_text"] - result["speech_l2_own"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
