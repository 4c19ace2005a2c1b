"""The manifest TSV (fairseq S2T format): read, validate, write.

fairseq reads manifests with `csv.QUOTE_NONE` and a tab delimiter, so nothing is ever quoted or escaped:
a tab or line break inside a field cannot be represented and is rejected with the row it came from.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from speechxl.errors import DataError

COLUMNS = ["id", "audio", "n_frames", "tgt_text", "speaker", "src_text", "src_lang", "tgt_lang"]
# A plain fairseq S2T manifest has only these; the others are filled with "" on reading.
REQUIRED_COLUMNS = ["id", "audio", "n_frames", "tgt_text"]
SAMPLE_RATE = 16000
_FORBIDDEN = {"\t": "a tab", "\n": "a line break", "\r": "a carriage return"}


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`.

    A reader never sees a half-written file, and an interrupted run leaves the previous version intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def split_audio_slice(audio: str) -> tuple[str, int | None, int | None]:
    """`path:offset:frames` -> (path, offset, frames); a plain path -> (path, None, None)."""
    parts = audio.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return audio, None, None


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read and validate a manifest; every row has at least the `COLUMNS` keys (missing ones are "")."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None:
                raise DataError(path, "empty manifest: no header row", 1)
            _check_header(path, header)
            rows = [_parse_row(path, reader.line_num, header, fields) for fields in reader]
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 ({err.reason} at byte {err.start})") from err
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if row["id"] in seen:
            raise DataError(path, f"duplicate id {row['id']!r} (first on line {seen[row['id']]})", line)
        seen[row["id"]] = line
    return rows


def _check_header(path: Path, header: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(path, f"header lacks column(s) {', '.join(missing)}; found {', '.join(header)}", 1)
    if len(set(header)) != len(header):
        raise DataError(path, "header repeats a column name", 1)


def _parse_row(path: Path, line: int, header: list[str], fields: list[str]) -> dict[str, str]:
    if len(fields) != len(header):
        raise DataError(path, f"expected {len(header)} tab-separated columns, found {len(fields)}", line)
    row = dict.fromkeys(COLUMNS, "")
    row.update(zip(header, fields))
    if not row["id"]:
        raise DataError(path, "empty id", line)
    n_frames = row["n_frames"]
    if not n_frames.isdigit():
        raise DataError(path, f"n_frames must be a non-negative integer, not {n_frames!r}", line)
    if (row["audio"] == "") != (int(n_frames) == 0):
        raise DataError(path, "text-only rows have an empty audio and n_frames 0; audio rows need both", line)
    return row


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping[str, object]]) -> None:
    """Write rows (dicts with the `COLUMNS` keys; extra keys become extra columns) atomically."""
    path = Path(path)
    rows = list(rows)
    extra = [k for k in (rows[0] if rows else {}) if k not in COLUMNS]
    header = COLUMNS + extra
    lines = ["\t".join(header)]
    for line, row in enumerate(rows, start=2):
        fields = []
        for column in header:
            value = "" if row.get(column) is None else str(row[column])
            for char, name in _FORBIDDEN.items():
                if char in value:
                    raise DataError(
                        path,
                        f"row id {row.get('id')!r}: column {column} contains {name}, "
                        "which a fairseq TSV cannot hold; clean the source text",
                        line,
                    )
            fields.append(value)
        lines.append("\t".join(fields))
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
