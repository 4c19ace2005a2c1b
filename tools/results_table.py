"""A markdown table of ablation runs: updates (per stage), train time, last dev BLEU, test BLEU and chrF, and the
audio-use probe, one row per run directory. The recipes' ablations (recipes/synth/*.sh) print their results with it.

  python tools/results_table.py --exp exp/ablation --runs st_random base_random --label "st_random=(a) ST only"
      [--decode decode_tst-COMMON] [--columns updates time dev bleu chrf audio_use] [--dev-metric bleu]
      [--out exp/ablation/results.md]

Per run it reads `train_log.jsonl` and `config.yaml` (the trainer's), `train_seconds` (the recipe's `date` diff),
`<decode>/score.json` (`speechxl translate`) and `audio_use.json` (tools/probe_audio_use.py); a missing file
leaves its cell "–". `--columns` picks and orders the columns; besides the default ones:
  memory    Chimera's memory probe (`memory_probe.json`, tools/probe_chimera_memory.py): slot loss own / shuffled
            and the centred cosine same / other utterance
  wer       the first-pass transcript WER of a consecutive decoder (COSTT; score.json's `transcript`)
  decode_s  the decoding wall seconds (score.json)
  shrink    states per transcript token after CTC-guided shrinking (`shrink.json`, tools/shrink_stats.py)
  cpu       the training's CPU time (`train_cpu_seconds`, user + system, written by recipes/synth/chimera.sh):
            on a shared machine it measures compute where wall time does not
  trained   parameters that trained, % of --parent's (the stage's "N of M parameters train" line in
            `<run>.train.out`, recipes/synth/extend.sh; a run without it trained everything)
  stored    tensor elements in `<run>/avg/model.safetensors`, % of --parent's (a delta checkpoint stores only
            what its run trained)
  bytes     the size of `<run>/avg/model.safetensors`
  de_bleu   BLEU of `<run>/decode_de/score.json`: the child decoding the parent's direction (forgetting)
  bleu@DIR, chrf@DIR   BLEU / chrF of `<run>/DIR/score.json` (one column per direction: bleu@decode_fr)
  total_stored, total_bytes   tensor elements (% of --parent's) / bytes of every checkpoint the row needs:
            the model.safetensors files listed in `<run>/needs` (one path a line; a system of several models,
            or a delta with its parent), else `<run>/avg/model.safetensors`
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from speechxl.config import load_config
from speechxl.train.logs import read_log

DEFAULT_COLUMNS = ["updates", "time", "dev", "bleu", "chrf", "audio_use"]
NOTES = {
    "audio_use": "Audio use: dev NLL per target token with another utterance's audio minus with its own (0: the "
    "decoder ignores the audio and writes from its language model).",
    "memory": "Memory (tools/probe_chimera_memory.py, dev): the slot contrastive loss of each utterance's audio "
    "memory against its own text memory / another utterance's (equal: the loss is solved by slot identity "
    "alone), and the cosine of the utterance-specific parts of its audio and text slots (same sentence / other "
    "sentences).",
    "wer": "Transcript WER: the consecutive decoder's first pass (the text before `<ast>`).",
    "shrink": "States/token: acoustic states kept by CTC-guided shrinking per transcript token "
    "(tools/shrink_stats.py).",
}


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@dataclass
class Run:
    """What one run directory holds for the table."""

    path: Path
    decode: str
    log: list[dict] = field(init=False)
    score: dict = field(init=False)

    def __post_init__(self) -> None:
        self.log = read_log(self.path) if (self.path / "train_log.jsonl").is_file() else []
        self.score = _json(self.path / self.decode / "score.json")


def updates_cell(run: Path, log: list[dict]) -> str:
    """e.g. "950 (250 mt_pretrain + 700 multitask)" for a staged run, "800" otherwise."""
    updates = max((r["update"] for r in log if r["type"] == "train"), default=0)
    stages = load_config(run / "config.yaml").stages if (run / "config.yaml").is_file() else []
    if len(stages) < 2:
        return str(updates)
    first = sum(s["max_update"] for s in stages[:-1])
    parts = [f"{s['max_update']} {s['name']}" for s in stages[:-1]] + [f"{updates - first} {stages[-1]['name']}"]
    return f"{updates} ({' + '.join(parts)})"


def time_cell(run: Run, name: str = "train_seconds") -> str:
    file = run.path / name
    seconds = int(file.read_text()) if file.is_file() else None
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds else "–"


def dev_cell(run: Run, metric: str) -> str:
    values = [r[metric] for r in run.log if r["type"] == "valid" and metric in r]
    return "–" if not values else f"{values[-1]:.1f}" if metric == "bleu" else f"{values[-1]:.3f}"


def memory_cell(run: Run) -> str:
    probe = _json(run.path / "memory_probe.json")
    if not probe:
        return "– | –"
    return (
        f"{probe['slot_own']:.3f} / {probe['slot_shuffled']:.3f} | "
        f"{probe['centred_same_utt']:.3f} / {probe['centred_other_utt']:.3f}"
    )


def elements(weights: Path) -> int | None:
    """Tensor elements in a model.safetensors (aliases of tied tensors are stored once and counted once)."""
    if not weights.is_file():
        return None
    with safe_open(str(weights), framework="pt") as f:
        return sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())


def _numel(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def share_cell(value: int | None, parent: int | None) -> str:
    if value is None or not parent:
        return "–"
    return f"{value:,} ({100 * value / parent:.1f}%)"


def trained_elements(run: Run, parent: int | None) -> int | None:
    out = run.path.with_name(run.path.name + ".train.out")
    if not out.is_file():
        return None
    found = re.findall(r"([\d,]+) of ([\d,]+) parameters train", out.read_text(encoding="utf-8"))
    return int(found[-1][0].replace(",", "")) if found else parent


def _number(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def column_headers(name: str, args: argparse.Namespace) -> str:
    """The header cell(s) of a column; ' | ' separates the two cells of `memory`."""
    dev_name = "BLEU" if args.dev_metric == "bleu" else args.dev_metric.replace("_", " ")
    return {
        "updates": "updates",
        "time": "train time",
        "dev": f"dev {dev_name}",
        "bleu": f"{args.test_name} BLEU",
        "chrf": "chrF",
        "audio_use": "audio use (nats/token)",
        "memory": "slot loss own / shuffled | centred cos same / other",
        "wer": "transcript WER",
        "decode_s": "decode s",
        "shrink": "states / transcript token",
        "cpu": "train CPU time",
        "trained": "trained params (% of parent)",
        "stored": "stored params (% of parent)",
        "bytes": "checkpoint bytes",
        "de_bleu": "its En→De BLEU",
        "total_stored": "stored params, all it needs (% of parent)",
        "total_bytes": "bytes, all it needs",
    }.get(name) or _per_decode_header(name)


def _per_decode_header(name: str) -> str:
    metric, decode = name.split("@", 1)
    return f"{decode.removeprefix('decode_')} {'BLEU' if metric == 'bleu' else 'chrF'}"


def needed_weights(run: Path) -> list[Path]:
    """The model.safetensors files a row needs: those listed in `<run>/needs`, else its averaged checkpoint."""
    listed = run / "needs"
    if listed.is_file():
        return [Path(line.strip()) for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [run / "avg" / "model.safetensors"]


def cell(name: str, run: Run, args: argparse.Namespace) -> str:
    if name == "updates":
        return updates_cell(run.path, run.log)
    if name == "time":
        return time_cell(run)
    if name == "dev":
        return dev_cell(run, args.dev_metric)
    if name == "bleu":
        return _number(run.score.get("bleu"), ".2f")
    if name == "chrf":
        return _number(run.score.get("chrf"), ".1f")
    if name == "audio_use":
        return _number(_json(run.path / "audio_use.json").get("gain"), ".3f")
    if name == "memory":
        return memory_cell(run)
    if name == "wer":
        return _number(run.score.get("transcript", {}).get("wer"), ".1f")
    if name == "decode_s":
        return _number(run.score.get("decode_seconds"), ".1f")
    if name == "shrink":
        return _number(_json(run.path / "shrink.json").get("states_per_token_after"), ".2f")
    if name == "cpu":
        return time_cell(run, "train_cpu_seconds")
    parent = elements(Path(args.parent) / "model.safetensors") if args.parent else None
    if name == "trained":
        return share_cell(trained_elements(run, parent), parent)
    if name == "stored":
        return share_cell(elements(run.path / "avg" / "model.safetensors"), parent)
    if name == "bytes":
        weights = run.path / "avg" / "model.safetensors"
        return f"{weights.stat().st_size:,}" if weights.is_file() else "–"
    if name == "de_bleu":
        return _number(_json(run.path / "decode_de" / "score.json").get("bleu"), ".2f")
    if name in ("total_stored", "total_bytes"):
        files = needed_weights(run.path)
        if not all(f.is_file() for f in files):
            return "–"
        if name == "total_bytes":
            return f"{sum(f.stat().st_size for f in files):,}"
        return share_cell(sum(elements(f) for f in files), parent)
    if "@" in name:
        metric, decode = name.split("@", 1)
        value = _json(run.path / decode / "score.json").get(metric)
        return _number(value, ".2f" if metric == "bleu" else ".1f")
    raise ValueError(f"unknown column {name}")


def row(run: Path, label: str, decode: str, args: argparse.Namespace) -> tuple[str, dict]:
    loaded = Run(run, decode)
    cells = [label] + [cell(name, loaded, args) for name in args.columns]
    return "| " + " | ".join(cells) + " |", loaded.score


COLUMNS = DEFAULT_COLUMNS + [
    "memory",
    "wer",
    "decode_s",
    "shrink",
    "cpu",
    "trained",
    "stored",
    "bytes",
    "de_bleu",
    "total_stored",
    "total_bytes",
]


def _column(name: str) -> str:
    metric, _, decode = name.partition("@")
    if name in COLUMNS or (metric in ("bleu", "chrf") and decode):
        return name
    raise argparse.ArgumentTypeError(f"unknown column {name!r}; columns: {', '.join(COLUMNS)}, bleu@DIR, chrf@DIR")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawTextHelpFormatter,
    )
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
    parser.add_argument(
        "--columns",
        nargs="+",
        default=DEFAULT_COLUMNS,
        type=_column,
        metavar="COLUMN",
        help=f"the columns after the label, in order (default: {' '.join(DEFAULT_COLUMNS)}; see below)",
    )
    parser.add_argument(
        "--dev-metric", default="bleu", help="the last validation record's field in the dev column, e.g. st_loss"
    )
    parser.add_argument("--parent", default=None, help="the parent checkpoint of trained / stored (percentages)")
    parser.add_argument("--out", default=None, help="also write the table here")
    args = parser.parse_args()
    labels = dict(item.split("=", 1) for item in args.label)
    header = " | ".join([args.label_header] + [column_headers(name, args) for name in args.columns])
    lines = [f"| {header} |", "|" + "---|" * (header.count("|") + 1)]
    signature = None
    for name in args.runs:
        line, score = row(Path(args.exp) / name, labels.get(name, name), args.decode, args)
        lines.append(line)
        signature = score.get("signature", signature)
    notes = [NOTES[name] for name in args.columns if name in NOTES]
    table = "\n".join(lines) + "\n\n" + " ".join([f"sacreBLEU {signature or '(no score yet)'}."] + notes) + "\n"
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
