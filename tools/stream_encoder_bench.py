"""What encoder-state reuse buys in streaming: per-chunk time of the features and of `model.encode` over a long
utterance, pushed in chunks, with the chunk-causal encoder's state cache (EncoderStateCache) and without.

    python tools/stream_encoder_bench.py --checkpoint exp/demo/avg --manifest data/demo/en-de/tst-COMMON.tsv \\
        --seconds 20 --chunk-ms 280 --chunk-frames 4

The model is the checkpoint's architecture and weights with `encoder_chunk_frames` set to --chunk-frames (a
model trained without the option translates worse with it, but it costs the same: this measures time only).
The utterance is the manifest's first utterances joined up to --seconds; global CMVN stats are those of that
audio (with utterance CMVN every input changes at every chunk and nothing could be reused). Both paths are
checked to give the same encoder output (1e-4) at every chunk. One thread.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from speechxl.data.audio import compute_fbank, load_audio
from speechxl.data.manifest import read_manifest
from speechxl.inference.streaming import PolicyOptions, StreamingTranslator, chunks_of
from speechxl.models import load_model
from speechxl.models.base import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=20.0, help="length of the streamed utterance")
    p.add_argument("--chunk-ms", type=float, default=280.0)
    p.add_argument("--chunk-frames", type=int, default=4, help="encoder chunk (encoder frames)")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)

    trained, vocab, config = load_model(args.checkpoint)
    model = build_model({**config["model"], "encoder_chunk_frames": args.chunk_frames}, vocab).eval()
    model.load_state_dict(trained.state_dict())
    waves, total = [], 0
    for row in read_manifest(args.manifest):
        waves.append(load_audio(row["audio"], args.manifest.parent))
        total += len(waves[-1])
        if total >= args.seconds * 16000:
            break
    wave = np.concatenate(waves)[: int(args.seconds * 16000)]
    feats = compute_fbank(wave)
    stats = Path(tempfile.mkdtemp()) / "stats.npz"
    np.savez(stats, mean=feats.mean(0), std=feats.std(0))
    data = {**config["data"], "cmvn": "global", "global_cmvn_stats": str(stats)}

    translator = StreamingTranslator(model, vocab, data, PolicyOptions())
    encoder, cache = translator.cached_encoders[0], translator.encoder_caches[0]
    rows = []
    with torch.inference_mode():
        for piece in chunks_of(wave, args.chunk_ms):
            start = time.perf_counter()
            translator.features.push(piece)
            batch = translator._batch()
            t_features = time.perf_counter() - start
            start = time.perf_counter()
            full_features = translator.features(translator.wave)  # the old path: fbank of the whole prefix
            t_features_full = time.perf_counter() - start
            start = time.perf_counter()
            full = model.encode(batch)["memory"]
            t_full = time.perf_counter() - start
            encoder.stream_cache = cache
            start = time.perf_counter()
            cached = model.encode(batch)["memory"]
            t_cached = time.perf_counter() - start
            encoder.stream_cache = None
            assert torch.equal(full_features, batch["audio"][0])
            torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)
            rows.append((t_features, t_features_full, t_full, t_cached, cache.reused, cache.computed))
    t = np.array([r[:4] for r in rows]) * 1000
    last = t[-10:].mean(0)
    audio = len(wave) / 16000
    result = {
        "checkpoint": str(args.checkpoint),
        "seconds": round(audio, 2),
        "chunk_ms": args.chunk_ms,
        "chunk_frames": args.chunk_frames,
        "chunks": len(rows),
        "encoder_frames": rows[-1][4] + rows[-1][5],
        "recomputed_frames_per_chunk": round(float(np.mean([r[5] for r in rows])), 2),
        "ms_per_chunk_mean": {
            "features_incremental": round(float(t[:, 0].mean()), 2),
            "features_whole_prefix": round(float(t[:, 1].mean()), 2),
            "encode_full": round(float(t[:, 2].mean()), 2),
            "encode_cached": round(float(t[:, 3].mean()), 2),
        },
        "ms_per_chunk_last10": {
            "features_incremental": round(float(last[0]), 2),
            "features_whole_prefix": round(float(last[1]), 2),
            "encode_full": round(float(last[2]), 2),
            "encode_cached": round(float(last[3]), 2),
        },
        "rtf_features_plus_encode": {
            "before (whole-prefix fbank, full encode)": round(float((t[:, 1] + t[:, 2]).sum() / 1000 / audio), 3),
            "after (incremental fbank, cached encode)": round(float((t[:, 0] + t[:, 3]).sum() / 1000 / audio), 3),
        },
        "encode_speedup": round(float(t[:, 2].sum() / t[:, 3].sum()), 2),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
