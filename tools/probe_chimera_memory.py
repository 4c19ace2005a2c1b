"""Does Chimera's memory align speech and text per utterance, or only per slot? On the triplets of a manifest:

    python tools/probe_chimera_memory.py --checkpoint exp/synth_chimera/chimera/avg \
        --manifest data/synth_ablation/en-de/dev.tsv

Prints ONE JSON line (means over the manifest's length-sorted batches, eval mode):
- `slot_own`, `slot_shuffled`: the slot contrastive loss (τ of the model) of each utterance's audio memory
  against its own text memory, and against another utterance's (the batch rotated by one). Equal values mean
  the loss is solved by slot identity alone (each slot has its own learned query) and says nothing about
  whether the audio and the text of one sentence meet.
- `batch_own`: the batch variant (negatives: the same slot of the other utterances, τ of the model), with its
  chance level `batch_chance` = 2·ln(B) averaged over batches.
- `cos_same_utt`, `cos_other_utt`: mean cosine of slot j of the audio memory with slot j of the text memory
  of the same utterance and of the other utterances of the batch; `centred_*`: the same after removing each
  slot's batch mean (per modality), i.e. of the part of the memory that depends on the utterance.
- `release_padding_change`: what the release's unmasked padding does to the audio memory (its slots also
  attend to the padded frames of H): ||memory(padding seen) - memory(padding masked)|| / ||memory(masked)||,
  mean over the utterances that have padding in their length-sorted batch (`padded_utterances`, of
  `utterances`), with `padded_frame_share` the mean share of padded frames of those utterances.
- `pooled_{audio,text}_{norm,cos}`: ConST's view (the sentence loss): the encoder inputs mean-pooled over real
  positions, their mean norm and the mean cosine between different utterances (1: all pool to one direction).
"""

from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F

from speechxl.data.batching import length_batches
from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
from speechxl.data.manifest import read_manifest
from speechxl.losses import batch_contrastive_loss, masked_mean, slot_contrastive_loss
from speechxl.models import load_model


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="Chimera checkpoint directory")
    parser.add_argument("--manifest", required=True, help="manifest with audio, src_text and tgt_text")
    parser.add_argument("--max-tokens", type=int, default=1_600_000, help="wave samples per batch")
    args = parser.parse_args()
    model, vocab, _ = load_model(args.checkpoint)
    model.eval()
    tau = model.config.contrastive_temperature
    dataset = SpeechTextDataset(
        read_manifest(args.manifest), "triplet", vocab, manifest=args.manifest, features=FeatureConfig(features="wave")
    )
    sums = {
        key: 0.0
        for key in (
            "slot_own",
            "slot_shuffled",
            "batch_own",
            "batch_chance",
            "cos_same_utt",
            "cos_other_utt",
            "centred_same_utt",
            "centred_other_utt",
            "pooled_audio_norm",
            "pooled_audio_cos",
            "pooled_text_norm",
            "pooled_text_cos",
        )
    }
    n = utterances = padded = 0
    padding_change = padded_share = 0.0
    for indices in length_batches(dataset.sizes, args.max_tokens):
        if len(indices) < 2:
            continue
        batch = dataset.collate([dataset[i] for i in indices])
        audio_enc, text_enc = model.encode_source("audio", batch), model.encode_source("text", batch)
        audio, text = audio_enc["memory"], text_enc["memory"]
        b = audio.size(0)
        for source, enc in (("audio", audio_enc), ("text", text_enc)):
            norm, cos = pooled_spread(enc["inputs"], enc["input_padding_mask"])
            sums[f"pooled_{source}_norm"] += norm
            sums[f"pooled_{source}_cos"] += cos
        sums["slot_own"] += slot_contrastive_loss(audio, text, tau).mean().item()
        sums["slot_shuffled"] += slot_contrastive_loss(audio, text.roll(1, dims=0), tau).mean().item()
        sums["batch_own"] += batch_contrastive_loss(audio, text, tau).mean().item()
        sums["batch_chance"] += 2 * math.log(b)
        same = torch.eye(b, dtype=torch.bool)
        for prefix, (a, t) in (("cos", (audio, text)), ("centred", (audio - audio.mean(0), text - text.mean(0)))):
            cos = torch.einsum("imd,kmd->mik", F.normalize(a, dim=-1), F.normalize(t, dim=-1))  # (M, B, B)
            sums[f"{prefix}_same_utt"] += cos[:, same].mean().item()
            sums[f"{prefix}_other_utt"] += cos[:, ~same].mean().item()
        n += 1
        change, share = release_padding_change(model, batch, audio_enc)
        utterances += b
        padded += len(change)
        padding_change += sum(change)
        padded_share += sum(share)
    result = {"checkpoint": args.checkpoint, "batches": n, "temperature": tau}
    result.update({key: round(value / max(n, 1), 4) for key, value in sums.items()})
    result.update(
        utterances=utterances,
        padded_utterances=padded,
        padded_frame_share=round(padded_share / max(padded, 1), 4),
        release_padding_change=round(padding_change / max(padded, 1), 4),
    )
    print(json.dumps(result))


def pooled_spread(inputs: torch.Tensor, padding: torch.Tensor) -> tuple[float, float]:
    """ConST's view of a batch: the encoder inputs mean-pooled over real positions; their mean norm and the mean
    cosine between different utterances (1: every utterance pools to the same direction)."""
    pooled = masked_mean(inputs, padding)
    unit = F.normalize(pooled, dim=-1)
    other = ~torch.eye(len(unit), dtype=torch.bool)
    return pooled.norm(dim=-1).mean().item(), (unit @ unit.T)[other].mean().item()


def release_padding_change(model, batch, audio_enc: dict) -> tuple[list[float], list[float]]:
    """Per utterance with padding in `batch`: the relative change of its audio memory when the slots also see
    the padded frames (the release) instead of not, and its share of padded frames. `audio_enc` is the audio
    encoding under the model's own setting; only the other setting is encoded here."""
    own = model.memory.mask_padding
    model.memory.mask_padding = not own
    try:
        other = model.encode_source("audio", batch)["memory"]
    finally:
        model.memory.mask_padding = own
    masked, seen = (audio_enc["memory"], other) if own else (other, audio_enc["memory"])
    padding = audio_enc["input_padding_mask"]
    change = (seen - masked).flatten(1).norm(dim=1) / masked.flatten(1).norm(dim=1).clamp_min(1e-12)
    rows = padding.any(dim=1)
    return change[rows].tolist(), padding.float().mean(dim=1)[rows].tolist()


if __name__ == "__main__":
    main()
