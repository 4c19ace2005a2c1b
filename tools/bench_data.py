"""Data pipeline throughput: one epoch of fbank batches and one of raw-wave batches over a SynthST split.

    python tools/bench_data.py --data /tmp/bd/prep            # a prepared manifest dir (train.tsv, spm.model)
    python tools/bench_data.py --train 300                    # synthesise + prep a SynthST corpus first

Prints ONE JSON line: utterances/s and audio-seconds/s per feature type, their ratio (fbank's extra cost
over loading the wave alone, measured in the same run), and the padding efficiency (non-pad fraction)
of the length-bucketed batches.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from speechxl.data.audio import SAMPLE_RATE
from speechxl.data.batching import (
    DynamicBatchSampler,
    FeatureConfig,
    SpeechTextDataset,
    build_loader,
    padding_efficiency,
)
from speechxl.data.vocab import Vocab


def prepare_synthst(work: Path, n_train: int) -> Path:
    """`speechxl synth --layout mustc --langs de` + `speechxl prep mustc`, returning the manifest dir."""
    from speechxl.data.corpus.mustc import prepare_mustc
    from speechxl.synth.synth import synthesize

    synthesize(out=work / "synth", layout="mustc", langs=["de"], n_train=n_train, n_dev=10, n_test=10)
    prepare_mustc(root=work / "synth", lang="de", out=work / "prep")
    return work / "prep"


def run_epoch(
    data: Path, split: str, vocab: Vocab, features: FeatureConfig, max_tokens: int, num_workers: int
) -> dict[str, float]:
    dataset = SpeechTextDataset.from_manifest(data / f"{split}.tsv", "st", vocab, features=features, train=True)
    sampler = DynamicBatchSampler(dataset.sizes, max_tokens=max_tokens, seed=1)
    loader = build_loader(dataset, sampler, num_workers=num_workers, pin_memory=False)
    utts = audio = 0
    start = time.perf_counter()
    for batch in tqdm(loader, desc=f"{features.features} epoch", unit="batch", leave=False):
        utts += len(batch["ids"])
        audio += int(batch["audio_lengths"].sum())
    seconds = time.perf_counter() - start
    return {
        "utt_per_s": utts / seconds,
        "utts": utts,
        "audio_samples": audio,  # 16 kHz samples for wave, frames for fbank
        "batches": len(sampler.batches),
        "padding_efficiency": padding_efficiency(sampler.batches, dataset.sizes),
        "seconds": seconds,
        "skipped": sum(dataset.skipped.values()) + sampler.skipped_oversize,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        help="prepared manifest dir (from `speechxl prep`); "
        "without it a SynthST corpus is synthesised into a temporary dir",
    )
    parser.add_argument("--train", type=int, default=300, help="utterances to synthesise when --data is not given")
    parser.add_argument("--split", default="train", help="manifest split to iterate")
    parser.add_argument("--max-frames", type=int, default=4000, help="fbank batch budget in frames (padded)")
    parser.add_argument(
        "--max-samples",
        type=int,
        default=1_000_000,
        help="raw-wave batch budget in 16 kHz samples (padded); XSTNet uses 1M",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_data.") as tmp:
        data = args.data or prepare_synthst(Path(tmp), args.train)
        vocab = Vocab.load(data / "spm.model")
        fbank = run_epoch(
            data,
            args.split,
            vocab,
            FeatureConfig(features="fbank", cmvn=True, specaugment="lb"),
            args.max_frames,
            args.num_workers,
        )
        wave = run_epoch(data, args.split, vocab, FeatureConfig(features="wave"), args.max_samples, args.num_workers)
    audio_seconds = wave["audio_samples"] / SAMPLE_RATE  # the wave epoch loaded every utterance once
    print(
        json.dumps(
            {
                "fbank_utt_per_s": round(fbank["utt_per_s"], 1),
                "wave_utt_per_s": round(wave["utt_per_s"], 1),
                "fbank_over_wave_time": round(fbank["seconds"] / wave["seconds"], 2),
                "padding_efficiency": round(fbank["padding_efficiency"], 4),
                "wave_padding_efficiency": round(wave["padding_efficiency"], 4),
                "utts": fbank["utts"],
                "audio_hours": round(audio_seconds / 3600, 4),
                "fbank_x_realtime": round(audio_seconds / fbank["seconds"], 1),
                "wave_x_realtime": round(audio_seconds / wave["seconds"], 1),
                "fbank_batches": fbank["batches"],
                "wave_batches": wave["batches"],
                "skipped": fbank["skipped"],
                "max_frames": args.max_frames,
                "max_samples": args.max_samples,
                "num_workers": args.num_workers,
                "fbank_pipeline": "load+resample+fbank80+utterance CMVN+SpecAugment LB",
                "sample_rate": SAMPLE_RATE,
            }
        )
    )


if __name__ == "__main__":
    main()
