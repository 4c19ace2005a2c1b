"""Simultaneous ST table on a manifest split through SimulEval 1.1.4 and speechxl's agent: BLEU and latency
(AL, LAAL, DAL: non-computation-aware from instances.log, and CA) per policy, beside offline BLEU.

    python tools/simul_table.py --checkpoint exp/run/avg --manifest data/synth/en-de/tst-COMMON.tsv \\
        --out exp/simul --limit 100 --policies "waitk:--waitk 3" "waitk:--waitk 5" "la:--la-n 2" \\
        "alignatt:--frames 2"

SimulEval reads wav paths, not `talk.wav:offset:frames` slices: each utterance is written to OUT/wav first.
Needs `pip install '.[streaming]'`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from speechxl.data.audio import load_audio
from speechxl.data.manifest import read_manifest, write_manifest
from speechxl.inference.simuleval_agent import non_ca_scores


def prepare(manifest: Path, out: Path, limit: int | None) -> tuple[Path, Path, int]:
    rows = read_manifest(manifest)[:limit]
    (out / "wav").mkdir(parents=True, exist_ok=True)
    sources = []
    for row in rows:
        path = out / "wav" / f"{row['id']}.wav"
        if not path.exists():
            sf.write(path, load_audio(row["audio"], manifest.parent), 16000)
        sources.append(str(path.resolve()))
    (out / "source.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (out / "target.txt").write_text("\n".join(row["tgt_text"] for row in rows) + "\n", encoding="utf-8")
    return out / "source.txt", out / "target.txt", len(rows)


def run_policy(args, name: str, extra: str, source: Path, target: Path) -> dict:
    out = args.out / name
    cmd = [
        sys.executable,
        "-m",
        "simuleval.cli",
        "--agent-class",
        "speechxl.inference.simuleval_agent.SpeechXLAgent",
        "--checkpoint",
        str(args.checkpoint),
        "--policy",
        name.split("_")[0],
        *shlex.split(extra),
        "--source",
        str(source),
        "--target",
        str(target),
        "--source-segment-size",
        str(args.segment_ms),
        "--output",
        str(out),
        "--computation-aware",
        "--quality-metrics",
        "BLEU",
    ]
    start = time.time()
    subprocess.run(
        cmd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
    )
    with open(out / "scores.tsv", encoding="utf-8") as f:
        simuleval = next(csv.DictReader(f, delimiter="\t"))
    scores = non_ca_scores(out)
    return {
        "policy": name,
        "options": extra,
        "BLEU": round(float(simuleval["BLEU"]), 2),
        **{k: round(v, 1) for k, v in scores.items() if k != "n_scored"},
        "seconds": round(time.time() - start),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=None, help="first N utterances")
    p.add_argument("--segment-ms", type=int, default=280, help="SimulEval --source-segment-size")
    p.add_argument(
        "--policies",
        nargs="+",
        default=["waitk:--waitk 3", "la:--la-n 2", "alignatt:--frames 2"],
        help="name:options; the name's part before _ is the policy (waitk_5:--waitk 5)",
    )
    p.add_argument("--offline-beam", type=int, default=5)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source, target, n = prepare(args.manifest, args.out, args.limit)
    rows = []
    from speechxl.inference.translate import DecodeOptions, translate

    sub = args.out / "offline.tsv"  # the same utterances for offline decoding, audio paths made absolute
    subset = read_manifest(args.manifest)[: args.limit]
    for row in subset:
        path, sep, rest = row["audio"].partition(":")
        row["audio"] = str((args.manifest.parent / path).resolve()) + sep + rest
    write_manifest(sub, subset)
    offline = translate(
        args.checkpoint, out=args.out / "offline", manifest=sub, options=DecodeOptions(beam=args.offline_beam)
    )
    greedy = translate(args.checkpoint, out=args.out / "offline_greedy", manifest=sub, options=DecodeOptions(beam=1))
    rows.append({"policy": f"offline beam {args.offline_beam}", "BLEU": offline["bleu"]})
    rows.append({"policy": "offline greedy", "BLEU": greedy["bleu"]})
    for spec in args.policies:
        name, _, extra = spec.partition(":")
        rows.append(run_policy(args, name, extra, source, target))
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "table.json").write_text(json.dumps({"n": n, "segment_ms": args.segment_ms, "rows": rows}, indent=2))
    keys = ["policy", "options", "BLEU", "AL", "LAAL", "DAL", "AL_CA", "LAAL_CA", "DAL_CA", "seconds"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
