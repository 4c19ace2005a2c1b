"""Data pipeline throughput: one epoch of fbank batches and one of raw-wave batches over a SynthST split,
per number of DataLoader worker processes; and how long the training loop waits for its batches.

    python tools/bench_data.py --data /tmp/bd/prep            # a prepared manifest dir (train.tsv, spm.model)
    python tools/bench_data.py --train 300                    # synthesise + prep a SynthST corpus first
    python tools/bench_data.py --config exp/demo/config.yaml --steps 30   # the loop's wait share

Epochs: one JSON line per worker count (--num-workers 0 1 2): utterances/s and audio-seconds/s per feature
type, their ratio (fbank's extra cost over loading the wave alone, measured in the same run), and the padding
efficiency (non-pad fraction) of the length-bucketed batches.
--config: one JSON line per worker count: the experiment's own training batches and update (`train_step`)
for --steps updates, the seconds spent waiting for the next batch and their share of the step time (the
first batch, which waits for the workers to start, is reported apart).
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
    parser.add_argument(
        "--num-workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker processes (one run each)"
    )
    parser.add_argument("--config", help="experiment config: measure the training loop's wait for batches")
    parser.add_argument("--steps", type=int, default=30, help="updates timed per worker count with --config")
    args = parser.parse_args()
    if args.config:
        for workers in args.num_workers:
            print(json.dumps(loop_wait(args.config, workers, args.steps)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="bench_data.") as tmp:
        data = args.data or prepare_synthst(Path(tmp), args.train)
        for workers in args.num_workers:
            print(json.dumps(epochs(args, data, workers)), flush=True)


def loop_wait(config_path: str, workers: int, steps: int) -> dict:
    """`steps` training updates of the experiment at `config_path` (one micro-batch each) on CPU: the seconds
    the loop waits in `next(batches)` and their share of the whole step (wait + update)."""
    import torch

    from speechxl.config import load_config
    from speechxl.models import build_model
    from speechxl.train.batches import build_train_data
    from speechxl.train.distributed import DistEnv
    from speechxl.train.loop import load_vocab_from_config, train_step
    from speechxl.train.optim import build_optimizer

    cfg = load_config(config_path, [f"data.num_workers={workers}"])
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    vocab, _ = load_vocab_from_config(cfg)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, vocab)
    model.label_smoothing = cfg.train.label_smoothing
    optimizer = build_optimizer(model.parameters(), cfg.train)
    batches = iter(build_train_data(cfg, vocab, env).train)
    start = time.perf_counter()
    first = next(batches)
    first_wait = time.perf_counter() - start
    train_step(model, model, [first], optimizer, None, cfg.train, env)
    wait = compute = 0.0
    utts = 0
    for _ in tqdm(range(steps), desc=f"{workers} workers", unit="upd", leave=False):
        start = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        waited = time.perf_counter() - start
        train_step(model, model, [batch], optimizer, None, cfg.train, env)
        wait, compute = wait + waited, compute + time.perf_counter() - start - waited
        utts += len(batch["ids"])
    return {
        "bench": "loop_wait",
        "config": config_path,
        "num_workers": workers,
        "steps": steps,
        "wait_share": round(wait / (wait + compute), 4),
        "wait_s_per_step": round(wait / steps, 4),
        "step_s": round((wait + compute) / steps, 4),
        "utt_per_s": round(utts / (wait + compute), 1),
        "first_batch_wait_s": round(first_wait, 2),
        "threads": torch.get_num_threads(),
    }


def epochs(args: argparse.Namespace, data: Path, workers: int) -> dict:
    """One fbank epoch and one raw-wave epoch over `args.split` with `workers` loader processes."""
    vocab = Vocab.load(data / "spm.model")
    fbank_features = FeatureConfig(features="fbank", cmvn=True, specaugment="lb")
    fbank = run_epoch(data, args.split, vocab, fbank_features, args.max_frames, workers)
    wave = run_epoch(data, args.split, vocab, FeatureConfig(features="wave"), args.max_samples, workers)
    audio_seconds = wave["audio_samples"] / SAMPLE_RATE  # the wave epoch loaded every utterance once
    return {
        "bench": "data_epoch",
        "num_workers": workers,
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
        "fbank_pipeline": "load+resample+fbank80+utterance CMVN+SpecAugment LB",
        "sample_rate": SAMPLE_RATE,
    }


if __name__ == "__main__":
    main()
