"""Simultaneous ST table on a manifest split through SimulEval 1.1.4 and speechxl's agent: BLEU and latency
(AL, LAAL, DAL, AP: non-computation-aware from instances.log, and CA) and the real-time factor per policy,
beside offline BLEU; a PNG of BLEU against LAAL, one line per policy.

    python tools/simul_table.py --checkpoint exp/run/avg --manifest data/synth/en-de/tst-COMMON.tsv \\
        --out exp/simul --limit 100 --policies "waitk_3:--waitk 3" "waitk_5:--waitk 5" "la:--la-n 2" \\
        "alignatt_2:--frames 2" --plot docs/img/simul.png
    python tools/simul_table.py --replot exp/simul/table.json --plot docs/img/simul.png   # the PNG again

RTF: per utterance, the wall time from SimulEval's first chunk to the agent's last write (`elapsed` − `delays`
of the last word in instances.log: the agent's compute plus SimulEval's own small overhead), summed over
utterances and divided by their audio duration. SimulEval reads wav paths, not `talk.wav:offset:frames` slices:
each utterance is written to OUT/wav first. Needs `pip install '.[streaming]'` (and matplotlib for --plot).
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
        **{k: round(v, 3 if k.startswith("AP") else 1) for k, v in scores.items() if k != "n_scored"},
        "RTF": round(real_time_factor(out), 3),
        "seconds": round(time.time() - start),
    }


def real_time_factor(output_dir: Path) -> float:
    """Σ (elapsed − delay of the last word) / Σ source length over the utterances of OUT/instances.log."""
    compute = audio = 0.0
    for line in (output_dir / "instances.log").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("elapsed"):
            compute += row["elapsed"][-1] - row["delays"][-1]
            audio += row["source_length"]
    return compute / audio if audio else float("nan")


def plot(table: dict, path: Path) -> None:
    """BLEU against non-CA LAAL, one line per policy family (the policy name's part before _), offline BLEU
    as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    families: dict[str, list[dict]] = {}
    for row in table["rows"]:
        if "LAAL" in row:
            families.setdefault(row["policy"].split("_")[0], []).append(row)
    names = {"waitk": "wait-k", "la": "LA-n", "alignatt": "AlignAtt"}
    for family, rows in families.items():
        rows = sorted(rows, key=lambda r: r["LAAL"])
        label = names.get(family, family)
        ax.plot([r["LAAL"] / 1000 for r in rows], [r["BLEU"] for r in rows], marker="o", label=label)
        for r in rows:
            where = (r["LAAL"] / 1000, r["BLEU"])
            ax.annotate(r["policy"].partition("_")[2], where, fontsize=7, xytext=(3, 3), textcoords="offset points")
    for style, row in zip(("--", ":"), (r for r in table["rows"] if r["policy"].startswith("offline"))):
        ax.axhline(row["BLEU"], color="gray", linestyle=style, label=row["policy"])
    ax.set_xlabel("LAAL (s, non-computation-aware)")
    ax.set_ylabel("BLEU")
    ax.set_title(table.get("title") or f"{table['n']} utterances, {table['segment_ms']} ms chunks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


KEYS = ["policy", "options", "BLEU", "AL", "LAAL", "DAL", "AP", "AL_CA", "LAAL_CA", "DAL_CA", "AP_CA", "RTF"]


def markdown(table: dict) -> str:
    lines = ["| " + " | ".join(KEYS) + " |", "|" + "---|" * len(KEYS)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in KEYS) + " |" for row in table["rows"]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--manifest", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--limit", type=int, default=None, help="first N utterances")
    p.add_argument("--segment-ms", type=int, default=280, help="SimulEval --source-segment-size")
    p.add_argument(
        "--policies",
        nargs="+",
        default=["waitk:--waitk 3", "la:--la-n 2", "alignatt:--frames 2"],
        help="name:options; the name's part before _ is the policy (waitk_5:--waitk 5)",
    )
    p.add_argument("--offline-beam", type=int, default=5)
    p.add_argument("--plot", type=Path, default=None, help="write the BLEU-LAAL PNG here")
    p.add_argument("--title", default="", help="title of the PNG")
    p.add_argument("--replot", type=Path, default=None, help="only print and redraw --plot from a table.json")
    args = p.parse_args()
    if args.replot:
        table = json.loads(args.replot.read_text())
        table["title"] = args.title or table.get("title", "")
        print(markdown(table))
        if args.plot:
            plot(table, args.plot)
        return
    if not (args.checkpoint and args.manifest and args.out):
        p.error("--checkpoint, --manifest and --out are required (or --replot)")
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
    table = {"n": n, "segment_ms": args.segment_ms, "checkpoint": str(args.checkpoint), "title": args.title}
    for spec in args.policies:
        name, _, extra = spec.partition(":")
        rows.append(run_policy(args, name, extra, source, target))
        print(json.dumps(rows[-1]), flush=True)
        # written after every policy: a long table that is stopped keeps the rows it has
        (args.out / "table.json").write_text(json.dumps({**table, "rows": rows}, indent=2))
    table["rows"] = rows
    (args.out / "table.json").write_text(json.dumps(table, indent=2))
    print(markdown(table))
    if args.plot:
        plot(table, args.plot)


if __name__ == "__main__":
    main()
