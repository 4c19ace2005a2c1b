"""A markdown table of ablation runs: updates (per stage), train time, last dev BLEU, test BLEU and chrF, and the
audio-use probe, one row per run directory. The recipes' ablations (recipes/synth/*.sh) print their results with it.

  python tools/results_table.py --exp exp/ablation --runs st_random base_random --label "st_random=(a) ST only"
      [--decode decode_tst-COMMON] [--out exp/ablation/results.md]

Per run it reads `train_log.jsonl` and `config.yaml` (the trainer's), `train_seconds` (the recipe's `date` diff),
`<decode>/score.json` (`speechxl translate`) and `audio_use.json` (tools/probe_audio_use.py); a missing file
leaves its cell "–".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speechxl.config import load_config
from speechxl.train.logs import read_log


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def updates_cell(run: Path, log: list[dict]) -> str:
    """e.g. "950 (250 mt_pretrain + 700 multitask)" for a staged run, "800" otherwise."""
    updates = max((r["update"] for r in log if r["type"] == "train"), default=0)
    stages = load_config(run / "config.yaml").stages if (run / "config.yaml").is_file() else []
    if len(stages) < 2:
        return str(updates)
    first = sum(s["max_update"] for s in stages[:-1])
    parts = [f"{s['max_update']} {s['name']}" for s in stages[:-1]] + [f"{updates - first} {stages[-1]['name']}"]
    return f"{updates} ({' + '.join(parts)})"


def row(run: Path, label: str, decode: str) -> tuple[str, dict]:
    log = read_log(run) if (run / "train_log.jsonl").is_file() else []
    seconds = int((run / "train_seconds").read_text()) if (run / "train_seconds").is_file() else None
    dev = [r["bleu"] for r in log if r["type"] == "valid" and "bleu" in r]
    score = _json(run / decode / "score.json")
    gain = _json(run / "audio_use.json").get("gain")
    cells = [
        label,
        updates_cell(run, log),
        f"{seconds // 60} min {seconds % 60:02d} s" if seconds else "–",
        f"{dev[-1]:.1f}" if dev else "–",
        f"{score['bleu']:.2f}" if "bleu" in score else "–",
        f"{score['chrf']:.1f}" if "chrf" in score else "–",
        f"{gain:.3f}" if gain is not None else "–",
    ]
    return "| " + " | ".join(cells) + " |", score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", required=True, help="directory holding the run directories")
    parser.add_argument("--runs", nargs="+", required=True, help="run directory names under --exp, in table order")
    parser.add_argument(
        "--label",
        nargs="*",
        default=[],
        metavar="RUN=LABEL",
        help="row label of a run; ' | ' in it makes several columns (see --label-header)",
    )
    parser.add_argument("--label-header", default="run", help="header of the label column(s), e.g. 'variant | init'")
    parser.add_argument("--decode", default="decode_tst-COMMON", help="decode directory inside each run")
    parser.add_argument("--test-name", default="tst-COMMON", help="the test set's name in the header")
    parser.add_argument("--out", default=None, help="also write the table here")
    args = parser.parse_args()
    labels = dict(item.split("=", 1) for item in args.label)
    header = [
        args.label_header,
        "updates",
        "train time",
        "dev BLEU",
        f"{args.test_name} BLEU",
        "chrF",
        "audio use (nats/token)",
    ]
    header = " | ".join(header)
    lines = [f"| {header} |", "|" + "---|" * (header.count("|") + 1)]
    signature = None
    for name in args.runs:
        line, score = row(Path(args.exp) / name, labels.get(name, name), args.decode)
        lines.append(line)
        signature = score.get("signature", signature)
    table = "\n".join(lines) + (
        f"\n\nsacreBLEU {signature or '(no score yet)'}. Audio use: dev NLL per target token with another "
        "utterance's audio minus with its own (0: the decoder ignores the audio and writes from its language "
        "model).\n"
    )
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
