"""Our BLEU scores beside the published ones, in tables that only hold numbers that can be compared.

A BLEU score is comparable to another only on the same test set with the same references, computed the same way:
same corpus, corpus version (MuST-C v1 and v2 have different references), split (tst-COMMON vs tst-HE) and BLEU
type (sacreBLEU 13a on detokenized cased text vs tokenized lower-cased BLEU differ by points). Each such key gets
its own table: one row per system, one column per direction. A result with an unknown key field goes to a table
whose title says what is unknown, never beside numbers it may not match.

Published numbers live in `published.yaml` (package data, every record with its source). Ours come from
`speechxl translate`'s score.json, run directories (their `decode_*/score.json`, else `score.json`) and the
recipes' `leaderboard.jsonl` rows. The BLEU type of ours is read from the sacreBLEU signature they carry.
When several of ours were scored against the same references, sacreBLEU's paired bootstrap resampling gives a
p-value for each pair.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from speechxl.errors import DataError
from speechxl.eval.plots import OURS_COLOUR, Problem, check_png, read_jsonl, require_matplotlib, warn

CORPUS_NAMES = {
    "mustc": "MuST-C",
    "covost2": "CoVoST 2",
    "librispeech-aug": "Augmented LibriSpeech",
    "synthst": "SynthST",
    "iwslt-simul": "IWSLT simultaneous",
}
CORPUS_ORDER = list(CORPUS_NAMES)
# Spellings of corpus names (letters and digits only, lower-cased) -> our name.
_CORPUS_ALIASES = {
    "mustc": "mustc",
    "covost2": "covost2",
    "covost": "covost2",
    "librispeech": "librispeech-aug",
    "librispeechaug": "librispeech-aug",
    "augmentedlibrispeech": "librispeech-aug",
    "librispeechaugmented": "librispeech-aug",
    "synthst": "synthst",
    "synth": "synthst",
}
# Corpora with a single release: their version is never what makes two results incomparable.
SINGLE_VERSION = {"covost2", "librispeech-aug"}
NO_VERSION = "-"
_SPLITS = {"tst-common": "tst-COMMON", "tst-he": "tst-HE", "test": "test", "dev": "dev", "valid": "valid"}
_VERSION = re.compile(r"^v?(\d+)(?:\.\d+)?$", re.IGNORECASE)
UNKNOWN = "?"


# ----------------------------------------------------------------------------------------------- records


@dataclass
class Result:
    """One BLEU number: a system on one direction of one test set. None marks an unknown field."""

    system: str
    direction: str | None
    bleu: float
    corpus: str | None
    corpus_version: str | None
    split: str | None
    bleu_type: str | None
    source: str  # published: the citation; ours: the file (and line) it was read from
    ours: bool = False
    note: str | None = None
    signature: str | None = None
    hyp_file: str | None = None
    ref_file: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # chrf, checkpoint, beam, lenpen when recorded

    def unknown_fields(self) -> list[str]:
        fields = {
            "corpus": self.corpus,
            "corpus version": self.corpus_version,
            "split": self.split,
            "direction": self.direction,
            "BLEU type": self.bleu_type,
        }
        return [name for name, value in fields.items() if value is None]

    def key(self) -> TableKey:
        missing = self.unknown_fields()
        reason = ""
        if missing == ["BLEU type"] and not self.ours:
            reason = "the source does not state its BLEU type"
        elif missing:
            reason = "unknown " + ", ".join(missing) + ("" if self.bleu_type or not self.ours else " (no signature)")
        return TableKey(self.corpus, self.corpus_version, self.split, self.bleu_type, reason)


class TableKey(NamedTuple):
    corpus: str | None
    corpus_version: str | None
    split: str | None
    bleu_type: str | None
    reason: str  # "" when every field is known: the table is comparable with the published numbers

    def title(self) -> str:
        corpus = CORPUS_NAMES.get(self.corpus, self.corpus) if self.corpus else f"corpus {UNKNOWN}"
        version = "" if self.corpus_version == NO_VERSION else f" {self.corpus_version or 'version ' + UNKNOWN}"
        split = self.split or f"split {UNKNOWN}"
        title = f"{corpus}{version} {split}, BLEU: {self.bleu_type or UNKNOWN}"
        return title if not self.reason else f"{title} (not comparable: {self.reason})"

    def order(self) -> tuple:
        corpus_rank = CORPUS_ORDER.index(self.corpus) if self.corpus in CORPUS_ORDER else len(CORPUS_ORDER)
        return (
            bool(self.reason),
            corpus_rank,
            self.corpus or "~",
            self.corpus_version or "~",
            self.split or "~",
            self.bleu_type or "~",
            self.reason,
        )


# ----------------------------------------------------------------------------------------------- normalising


def _compact(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def parse_corpus(label: str) -> tuple[str | None, str | None, str | None]:
    """(corpus, version, split) from a name such as "MuST-C v1 tst-COMMON", "CoVoST 2 test" or "mustc"."""
    rest, version, split = [], None, None
    for token in label.split():
        if token.lower() in _SPLITS:
            split = _SPLITS[token.lower()]
        elif _VERSION.match(token) and token.lower().startswith("v"):
            version = token
        else:
            rest.append(token)
    name = _compact(" ".join(rest))
    glued = re.match(r"^(mustc)v?(\d)$", name)  # "MuST-C_v2", "mustcv1"
    if glued:
        name, version = glued.group(1), version or glued.group(2)
    corpus = _CORPUS_ALIASES.get(name, name or None)
    return corpus, version, split


def normalise_version(corpus: str | None, version: Any) -> str | None:
    """MuST-C versions as v1 / v2; "-" for single-release corpora; None when a versioned corpus does not say."""
    if corpus in SINGLE_VERSION:
        return NO_VERSION
    if version is None or str(version).strip() == "":
        return None if corpus in (None, "mustc") else NO_VERSION
    match = _VERSION.match(str(version).strip())
    return f"v{match.group(1)}" if match else str(version).strip()


def normalise_split(split: Any) -> str | None:
    if split is None or str(split).strip() == "":
        return None
    return _SPLITS.get(str(split).strip().lower(), str(split).strip())


def normalise_direction(direction: Any) -> str | None:
    """ "En-De", "en_de", "en->de" -> "en-de"; None when absent or not a language pair."""
    if direction is None:
        return None
    parts = [p for p in re.split(r"[-_>→\s]+", str(direction).strip().lower()) if p]
    return "-".join(parts) if len(parts) == 2 else None


def signature_fields(signature: str) -> dict[str, str]:
    """Fields of a sacreBLEU signature, 2.x (`nrefs:1|case:mixed|tok:13a|...`) or 1.x (`BLEU+case.mixed+...`)."""
    if "|" in signature or ":" in signature:
        pairs = [part.split(":", 1) for part in signature.split("|") if ":" in part]
    else:
        pairs = [part.split(".", 1) for part in signature.split("+") if "." in part]
    fields = {k.strip(): v.strip() for k, v in pairs}
    if "numrefs" in fields:  # 1.x spelling
        fields.setdefault("nrefs", fields["numrefs"])
    return fields


def bleu_type(signature: str | None) -> str | None:
    """`sacrebleu-<tok>-detok-<cased|uncased>` from a BLEU signature (+ any non-default nrefs / smoothing /
    effective order); None when it is not a BLEU signature. tok:none means sacreBLEU did not tokenize (the text
    may have been tokenized before), so that type does not claim detokenized text."""
    if not signature:
        return None
    fields = signature_fields(signature)
    if "tok" not in fields or "case" not in fields:
        return None
    case = "uncased" if fields["case"] == "lc" else "cased"
    name = f"sacrebleu-none-{case}" if fields["tok"] == "none" else f"sacrebleu-{fields['tok']}-detok-{case}"
    if fields.get("nrefs", "1") != "1":
        name += f"-nrefs{fields['nrefs']}"
    if fields.get("smooth", "exp") != "exp":
        name += f"-smooth-{fields['smooth']}"
    if fields.get("eff", "no") == "yes":
        name += "-eff"
    return name


# ----------------------------------------------------------------------------------------------- published


def published_path() -> Path:
    return Path(str(resources.files("speechxl.eval").joinpath("published.yaml")))


def _published_result(entry: dict[str, Any], path: Path, index: int) -> Result:
    try:
        return Result(
            system=str(entry["system"]),
            direction=normalise_direction(entry["direction"]),
            bleu=float(entry["bleu"]),
            corpus=entry["corpus"],
            corpus_version=normalise_version(entry["corpus"], entry["corpus_version"]),
            split=normalise_split(entry["split"]),
            bleu_type=entry["bleu_type"],
            source=str(entry["source"]),
            note=entry.get("note"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(path, f"results[{index}]: bad or missing field {err}") from err


def load_published(path: str | Path | None = None) -> list[Result]:
    """The offline results of published.yaml (or `path`), in file order."""
    path = Path(path) if path is not None else published_path()
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [_published_result(entry, path, i) for i, entry in enumerate(data["results"])]


def load_simultaneous(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The simultaneous (BLEU at a latency) records, kept apart: they are not ranked beside offline numbers."""
    path = Path(path) if path is not None else published_path()
    return list(yaml.safe_load(path.read_text(encoding="utf-8")).get("simultaneous", []))


# ----------------------------------------------------------------------------------------------- ours


def _existing(value: Any, base: Path) -> str | None:
    """A recorded hyp/ref path: as written (relative to where the command ran), else relative to the file that
    records it, else a file of that name beside it (a run directory moved since)."""
    if not value:
        return None
    path = Path(str(value))
    for candidate in ([path] if path.is_absolute() else [path, base / path]) + [base / path.name]:
        if candidate.is_file():
            return str(candidate)
    return None


def _run_name(score_file: Path) -> str:
    """exp/run/decode_tst-COMMON/score.json -> "run"; exp/run/score.json -> "run"."""
    folder = score_file.resolve().parent
    return folder.parent.name if folder.name.startswith("decode") else folder.name


def our_result(
    data: dict[str, Any],
    where: str,
    base: Path,
    default_system: str,
    on_problem: Problem,
    path: Path,
    line: int | None = None,
) -> Result | None:
    """One of our results from a score.json object or a leaderboard.jsonl row; None (reported) without BLEU."""
    bleu = data.get("bleu")
    if isinstance(bleu, bool) or not isinstance(bleu, (int, float)) or not math.isfinite(bleu):
        hint = " (a WER score of an ASR run?)" if "wer" in data else ""
        on_problem(DataError(path, f"no numeric `bleu`{hint}; skipped", line))
        return None
    corpus, version, split = parse_corpus(str(data["corpus"])) if data.get("corpus") else (None, None, None)
    signature = data.get("signature")
    result = Result(
        system=str(data.get("system") or default_system),
        direction=normalise_direction(data.get("direction") or data.get("pair") or data.get("lang_pair")),
        bleu=float(bleu),
        corpus=corpus,
        corpus_version=normalise_version(corpus, data.get("corpus_version") or version),
        split=normalise_split(data.get("split") or split),
        bleu_type=data.get("bleu_type") or bleu_type(signature),
        source=where,
        ours=True,
        signature=signature,
        hyp_file=_existing(data.get("hyp_file") or data.get("hyp"), base),
        ref_file=_existing(data.get("ref_file") or data.get("ref"), base),
        details={k: data[k] for k in ("chrf", "checkpoint", "beam", "lenpen", "n") if k in data},
    )
    _report_missing(result, data, path, line, on_problem)
    return result


def _report_missing(result: Result, data: dict[str, Any], path: Path, line: int | None, on_problem: Problem) -> None:
    missing = [
        name
        for name, value in (
            ("corpus", result.corpus),
            ("corpus_version", result.corpus_version),
            ("split", result.split),
            ("direction", result.direction),
        )
        if value is None
    ]
    if result.bleu_type is None:
        missing.append("signature" if not data.get("signature") else "BLEU signature (`signature` is not one)")
    if missing:
        on_problem(
            DataError(
                path,
                f"no {', '.join(missing)} (written by an older speechxl?): listed in a 'not comparable' table",
                line,
            )
        )


def load_score_json(path: Path, on_problem: Problem = warn) -> list[Result]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        on_problem(DataError(path, f"not valid JSON ({err.msg}, line {err.lineno}); skipped"))
        return []
    if not isinstance(data, dict):
        on_problem(DataError(path, "not a JSON object; skipped"))
        return []
    result = our_result(data, str(path), path.parent, _run_name(path), on_problem, path)
    if result is not None:  # translate writes hyp.txt / ref.txt beside score.json
        result.hyp_file = result.hyp_file or _existing(path.parent / "hyp.txt", path.parent)
        result.ref_file = result.ref_file or _existing(path.parent / "ref.txt", path.parent)
    return [result] if result is not None else []


def load_jsonl(path: Path, on_problem: Problem = warn) -> list[Result]:
    results = []
    for number, row in read_jsonl(path, on_problem):
        default = Path(str(row["exp"])).name if row.get("exp") else path.resolve().parent.name
        result = our_result(row, f"{path}:{number}", path.parent, default, on_problem, path, number)
        if result is not None:
            results.append(result)
    return results


def run_dir_scores(run_dir: Path) -> list[Path]:
    """A run's decode_*/score.json files; its top-level score.json only when it has none (the recipes' stage 5
    re-scores the decode directory's files into it, so reading both would list one result twice)."""
    decoded = sorted(run_dir.glob("decode*/score.json"))
    top = run_dir / "score.json"
    return decoded or ([top] if top.is_file() else [])


def load_results(paths: list[str | Path], on_problem: Problem = warn) -> list[Result]:
    """Our results from score.json files, run directories and leaderboard.jsonl files; bad inputs are reported
    through `on_problem` and the rest still loaded."""
    results: list[Result] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = run_dir_scores(path)
            if not files:
                on_problem(DataError(path, "no score.json or decode_*/score.json in this directory"))
            for file in files:
                results += load_score_json(file, on_problem)
        elif not path.is_file():
            on_problem(DataError(path, "not found"))
        elif path.suffix == ".jsonl":
            results += load_jsonl(path, on_problem)
        elif path.suffix == ".json":
            results += load_score_json(path, on_problem)
        else:
            on_problem(DataError(path, "not a score.json, a leaderboard.jsonl or a run directory"))
    return results


# ----------------------------------------------------------------------------------------------- tables


@dataclass
class Row:
    system: str
    ours: bool
    scores: dict[str, float] = field(default_factory=dict)  # direction -> BLEU
    sources: list[str] = field(default_factory=list)
    mean: float | None = None  # over the table's mean_directions; None when the row lacks one
    rank: int | None = None
    direction_ranks: dict[str, int] = field(default_factory=dict)  # among the rows with that direction


@dataclass
class Table:
    key: TableKey
    directions: list[str]
    rows: list[Row]
    mean_directions: list[str]  # what `Row.mean` averages (see mean_directions)

    @property
    def title(self) -> str:
        return self.key.title()

    @property
    def comparable(self) -> bool:
        return not self.key.reason


def _label_ours(results: list[Result]) -> dict[int, str]:
    """Row names for our results: the system name, or the file it came from when two of ours would otherwise
    claim the same cell (same name, same direction, same table)."""
    cells: dict[tuple, int] = {}
    for r in results:
        cells[(r.key(), r.system, r.direction)] = cells.get((r.key(), r.system, r.direction), 0) + 1
    return {
        id(r): (f"{r.system} [{r.source}]" if cells[(r.key(), r.system, r.direction)] > 1 else r.system)
        for r in results
    }


def _rows(results: list[Result], labels: dict[int, str]) -> list[Row]:
    rows: dict[tuple[bool, str], Row] = {}
    for r in results:
        name = labels.get(id(r), r.system)
        row = rows.setdefault((r.ours, name), Row(system=name, ours=r.ours))
        direction = r.direction or UNKNOWN
        if direction not in row.scores:
            row.scores[direction] = r.bleu
        if r.source not in row.sources:
            row.sources.append(r.source)
    return list(rows.values())


def mean_directions(rows: list[Row], directions: list[str]) -> list[str]:
    """The directions the mean is taken over: the largest direction set of any row, the one most rows cover
    when several are as large. A mean over fewer or other directions would not be comparable (En-Ru is harder
    than En-Fr), so rows without all of these directions are not ranked by it."""
    sets = {frozenset(row.scores) for row in rows}
    size = max(len(s) for s in sets)
    best = max((s for s in sets if len(s) == size), key=lambda s: sum(s <= set(r.scores) for r in rows))
    return [d for d in directions if d in best]


def _rank(rows: list[Row], directions: list[str]) -> list[Row]:
    """Rows with every mean direction by their mean, best first (ties share a rank); the others follow,
    unranked, with the most directions first."""
    for row in rows:
        if all(d in row.scores for d in directions):
            row.mean = sum(row.scores[d] for d in directions) / len(directions)
        for d in row.scores:
            row.direction_ranks[d] = 1 + sum(other.scores.get(d, -math.inf) > row.scores[d] for other in rows)
    complete = sorted((r for r in rows if r.mean is not None), key=lambda r: (-r.mean, r.ours, r.system))
    for row in complete:
        row.rank = 1 + sum(other.mean > row.mean for other in complete)
    partial = sorted(
        (r for r in rows if r.mean is None),
        key=lambda r: (-len(r.scores), -sum(r.scores.values()) / len(r.scores), r.system),
    )
    return complete + partial


def build_tables(results: list[Result]) -> list[Table]:
    """One table per (corpus, corpus version, split, BLEU type), plus one per reason a key is unknown."""
    groups: dict[TableKey, list[Result]] = {}
    for r in results:
        groups.setdefault(r.key(), []).append(r)
    labels = _label_ours([r for r in results if r.ours])
    tables = []
    for key in sorted(groups, key=TableKey.order):
        directions = list(dict.fromkeys(r.direction or UNKNOWN for r in groups[key]))
        rows = _rows(groups[key], labels)
        averaged = mean_directions(rows, directions)
        tables.append(Table(key, directions, _rank(rows, averaged), averaged))
    return tables


# ----------------------------------------------------------------------------------------------- significance


@dataclass
class PairResult:
    """sacreBLEU's paired bootstrap resampling test of two of our results on the same references."""

    a: str
    b: str
    bleu_a: float
    bleu_b: float
    p_value: float
    references: str
    samples: int
    note: str = ""


def _bleu_settings(result: Result) -> tuple[str, bool]:
    """(tokenizer, lowercase) the result was scored with; sacreBLEU's defaults (also ours) without a signature."""
    fields = signature_fields(result.signature) if result.signature else {}
    return fields.get("tok", "13a"), fields.get("case") == "lc"


def _read(path: str) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def paired_bootstrap(
    hyps_a: list[str],
    hyps_b: list[str],
    refs: list[str],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
    samples: int = 1000,
) -> float:
    """p-value of sacreBLEU's paired bootstrap resampling test (sacrebleu.significance.PairedTest, test_type
    "bs", seeded by SACREBLEU_SEED, default 12345) for system B against baseline A.

    Identical hypotheses give p = 1 here: there is no difference to test, while sacreBLEU's bootstrap would
    report its smallest p-value, 1 / (samples + 1), for a zero difference."""
    import sacrebleu
    from sacrebleu.significance import PairedTest

    if hyps_a == hyps_b:
        return 1.0
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # it logs every step at INFO
    metric = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase)
    test = PairedTest([("a", hyps_a), ("b", hyps_b)], {"BLEU": metric}, [refs], test_type="bs", n_samples=samples)
    _, scores = test()
    return float(scores["BLEU"][1].p_value)


def significance(results: list[Result], samples: int = 1000, on_problem: Problem = warn) -> list[PairResult]:
    """A p-value for every pair of our results whose references are the same file content (same test set, same
    order) and that were scored the same way; results without readable hyp/ref files are left out."""
    groups: dict[tuple, list[tuple[Result, list[str]]]] = {}
    labels = _label_ours(results)
    for r in results:
        if not r.ours or r.hyp_file is None or r.ref_file is None:
            continue
        hyps, refs = _read(r.hyp_file), _read(r.ref_file)
        if len(hyps) != len(refs):
            on_problem(
                DataError(
                    r.hyp_file,
                    f"{len(hyps)} lines but {r.ref_file} has {len(refs)}; left out of the significance tests",
                )
            )
            continue
        digest = hashlib.sha256("\n".join(refs).encode("utf-8")).hexdigest()
        groups.setdefault((digest, _bleu_settings(r)), []).append((r, hyps))
    pairs = []
    for (_, (tokenize, lowercase)), members in groups.items():
        refs = _read(members[0][0].ref_file)
        for i, (a, hyps_a) in enumerate(members):
            for b, hyps_b in members[i + 1 :]:
                p = paired_bootstrap(hyps_a, hyps_b, refs, tokenize=tokenize, lowercase=lowercase, samples=samples)
                note = "identical hypotheses" if hyps_a == hyps_b else ""
                pairs.append(
                    PairResult(
                        _pair_name(a, labels),
                        _pair_name(b, labels),
                        a.bleu,
                        b.bleu,
                        p,
                        members[0][0].ref_file,
                        samples,
                        note,
                    )
                )
    return pairs


def _pair_name(result: Result, labels: dict[int, str]) -> str:
    name = labels[id(result)]
    return f"{name} ({result.direction})" if result.direction else name


# ----------------------------------------------------------------------------------------------- the board


@dataclass
class Leaderboard:
    tables: list[Table]
    pairs: list[PairResult]
    results: list[Result]


def build_leaderboard(
    paths: list[str | Path], *, published: bool = True, bootstrap: int = 1000, on_problem: Problem = warn
) -> Leaderboard:
    """Everything `speechxl leaderboard` shows: the tables and, with `bootstrap` > 0, the paired tests."""
    ours = load_results(paths, on_problem)
    results = (load_published() if published else []) + ours
    pairs = significance(ours, bootstrap, on_problem) if bootstrap > 0 else []
    return Leaderboard(build_tables(results), pairs, results)


# ----------------------------------------------------------------------------------------------- output


def _fmt(value: float | None) -> str:
    """BLEU as published: 22.7, 21.77, 28.0 (two decimals at most, at least one)."""
    if value is None:
        return ""
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(table: Table) -> str:
    multi = len(table.directions) > 1
    header = ["#", "system", *table.directions] + (["mean"] if multi else []) + ["source"]
    lines = [f"### {table.title}", ""]
    if multi:
        n = len(table.mean_directions)
        over = (
            f"all {n} directions"
            if n == len(table.directions)
            else f"{', '.join(table.mean_directions)} ({n} of {len(table.directions)} directions)"
        )
        lines += [
            f"Ranked by the mean over {over}; rows without all of them follow, unranked. "
            "Ours in bold, with its rank among the systems that have that direction.",
            "",
        ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = [str(row.rank or "")]
        cells.append(f"**{_md_cell(row.system)}** (ours)" if row.ours else _md_cell(row.system))
        for d in table.directions:
            score = row.scores.get(d)
            text = _fmt(score) if score is not None else "–"
            if row.ours and score is not None:
                n = sum(d in other.scores for other in table.rows)
                text = f"**{text}** ({row.direction_ranks[d]}/{n})" if multi or n > 1 else f"**{text}**"
            cells.append(text)
        if multi:
            cells.append(_fmt(row.mean) if row.mean is not None else "–")
        cells.append(_md_cell("; ".join(row.sources)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_pairs(pairs: list[PairResult]) -> str:
    lines = [
        f"### Paired bootstrap resampling (sacreBLEU, {pairs[0].samples} resamples)",
        "",
        "| system A | BLEU A | system B | BLEU B | p | references |",
        "|---|---|---|---|---|---|",
    ]
    for p in pairs:
        value = f"{p.p_value:.4f}" + (f" ({p.note})" if p.note else "")
        lines.append(
            f"| {_md_cell(p.a)} | {_fmt(p.bleu_a)} | {_md_cell(p.b)} | {_fmt(p.bleu_b)} | {value} | "
            f"{_md_cell(p.references)} |"
        )
    return "\n".join(lines)


def to_markdown(board: Leaderboard) -> str:
    parts = [_md_table(t) for t in board.tables]
    if board.pairs:
        parts.append(_md_pairs(board.pairs))
    return "\n\n".join(parts) + "\n"


def to_csv(board: Leaderboard) -> str:
    """Long format, one line per (table, system, direction): tables with different columns fit one CSV file.
    The paired tests are not in it (see md or json)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["table", "comparable", "rank", "system", "ours", "direction", "bleu", "direction_rank", "mean", "source"]
    )
    for table in board.tables:
        for row in table.rows:
            for d in table.directions:
                if d in row.scores:
                    writer.writerow(
                        [
                            table.title,
                            table.comparable,
                            row.rank or "",
                            row.system,
                            row.ours,
                            d,
                            row.scores[d],
                            row.direction_ranks[d],
                            "" if row.mean is None else round(row.mean, 2),
                            "; ".join(row.sources),
                        ]
                    )
    return out.getvalue()


def to_json(board: Leaderboard) -> str:
    tables = [
        {
            "title": t.title,
            "comparable": t.comparable,
            "key": t.key._asdict(),
            "directions": t.directions,
            "rows": [asdict(r) for r in t.rows],
        }
        for t in board.tables
    ]
    return json.dumps({"tables": tables, "pairs": [asdict(p) for p in board.pairs]}, indent=2) + "\n"


FORMATS = {"md": to_markdown, "csv": to_csv, "json": to_json}


def render(board: Leaderboard, fmt: str = "md") -> str:
    return FORMATS[fmt](board)


# ----------------------------------------------------------------------------------------------- picture


def _panels(board: Leaderboard) -> list[tuple[Table, str]]:
    """(table, direction) of every bar chart: where one of ours is, or everything when none of ours is."""
    with_ours = [(t, d) for t in board.tables for d in t.directions if any(r.ours and d in r.scores for r in t.rows)]
    return with_ours or [(t, d) for t in board.tables for d in t.directions]


def plot_leaderboard(board: Leaderboard, out_png: str | Path) -> Path:
    """One horizontal bar chart per (table, direction) holding one of ours (all of them when there are none of
    ours), best on top, ours in red."""
    Figure = require_matplotlib()
    out_png = check_png(out_png)
    panels = _panels(board)
    if not panels:
        raise DataError(out_png, "nothing to plot: no results")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    tallest = max(sum(d in r.scores for r in t.rows) for t, d in panels)
    fig = Figure(figsize=(6.5 * cols, rows * (1.2 + 0.3 * tallest)), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    for ax, (table, direction) in zip(grid.flat, panels):
        _bars(ax, table, direction)
    for ax in list(grid.flat)[len(panels) :]:
        ax.set_visible(False)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def _bars(ax, table: Table, direction: str) -> None:
    rows = sorted((r for r in table.rows if direction in r.scores), key=lambda r: r.scores[direction])
    names = [(r.system if len(r.system) <= 45 else r.system[:44] + "…") + (" (ours)" if r.ours else "") for r in rows]
    values = [r.scores[direction] for r in rows]
    bars = ax.barh(range(len(rows)), values, color=[OURS_COLOUR if r.ours else "tab:gray" for r in rows])
    ax.bar_label(bars, labels=[_fmt(v) for v in values], fontsize=7, padding=2)
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    for label, row in zip(ax.get_yticklabels(), rows):
        if row.ours:
            label.set_color(OURS_COLOUR)
            label.set_fontweight("bold")
    ax.set_ylim(-0.5, max(len(rows), 4) - 0.5)  # a lone bar stays a bar, not a block
    ax.set_xlabel("BLEU")
    ax.set_xlim(0, max(values) * 1.15 if max(values) > 0 else 1)
    ax.set_title(f"{direction}: {table.title}", fontsize=8, wrap=True)
