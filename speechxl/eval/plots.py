"""Pictures of runs: training / validation curves from `train_log.jsonl`, one PNG for several runs.

matplotlib is an optional extra (`pip install 'speechxl[plots]'`); it is imported only when a picture is asked
for, and its absence is one clear line, not a traceback. Figures are drawn without pyplot (no GUI backend, no
global state), so plotting works on a headless machine and from tests.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechxl.errors import DataError

LOG_FILE = "train_log.jsonl"  # speechxl.train.logs.LOG_FILE; not imported, so plotting never loads torch
# Validation metrics in order of preference: the first one a run's records carry is plotted.
METRICS = ("bleu", "wer", "acc", "accuracy", "ppl")
# Keys that may carry a record's time: absolute (seconds since the epoch) or relative (seconds since the start).
TIME_KEYS = ("time", "wall_time", "timestamp", "elapsed", "elapsed_s", "wall", "seconds")
OURS_COLOUR = "tab:red"

Problem = Callable[[DataError], None]


class PlotsUnavailable(ImportError):
    """matplotlib is missing: the message says how to install it."""


def warn(err: DataError) -> None:
    """Default problem handler: one line on stderr, and carry on with the rest."""
    print(f"warning: {err}", file=sys.stderr)


def require_matplotlib():
    """The matplotlib Figure class, or PlotsUnavailable naming the extra to install."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise PlotsUnavailable("plotting needs matplotlib: pip install 'speechxl[plots]'") from err
    return Figure


def check_png(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(path, "the picture is written as PNG: give a file name ending in .png")
    return path


# ----------------------------------------------------------------------------------------------- reading logs


@dataclass
class RunCurves:
    """The records of one run's log, split by type."""

    name: str
    path: Path
    train: list[dict[str, Any]] = field(default_factory=list)
    valid: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        return sorted(self.train + self.valid, key=lambda r: r["update"])


def read_jsonl(path: Path, on_problem: Problem) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of every readable line; a bad line (often the last one of a killed run, cut
    mid-write) is reported with its number and skipped."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            on_problem(DataError(path, "not valid JSON (a truncated line?); skipped", number))
            continue
        if not isinstance(obj, dict):
            on_problem(DataError(path, "not a JSON object; skipped", number))
            continue
        rows.append((number, obj))
    return rows


def read_run(run: str | Path, on_problem: Problem = warn) -> RunCurves | None:
    """A run directory's (or a log file's) train and valid records; None, reported, when it has none."""
    run = Path(run)
    is_log = run.suffix == ".jsonl" and not run.is_dir()
    path = run if is_log else run / LOG_FILE
    if not path.is_file():
        on_problem(DataError(path, "no training log here; run skipped"))
        return None
    name = (run.parent if is_log else run).resolve().name
    curves = RunCurves(name=name, path=path)
    for number, record in read_jsonl(path, on_problem):
        if not isinstance(record.get("update"), (int, float)):
            on_problem(DataError(path, "record without a numeric `update`; skipped", number))
        elif record.get("type") == "train":
            curves.train.append(record)
        elif record.get("type") == "valid":
            curves.valid.append(record)
    if not curves.train and not curves.valid:
        on_problem(DataError(path, "no train or valid records; run skipped"))
        return None
    if not curves.valid:
        on_problem(DataError(path, "no validation records: only the training curves are plotted"))
    return curves


# ----------------------------------------------------------------------------------------------- what to plot


def time_key(records: list[dict[str, Any]]) -> str | None:
    """The first TIME_KEYS entry every record of the run carries, if any."""
    for key in TIME_KEYS:
        if records and all(isinstance(r.get(key), (int, float)) for r in records):
            return key
    return None


def metric_of(valid: list[dict[str, Any]]) -> str | None:
    for key in METRICS:
        if any(isinstance(r.get(key), (int, float)) for r in valid):
            return key
    return None


def stage_boundaries(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """(last record of a stage, name of the next stage) wherever the `stage` tag changes: a stage's last
    validation is logged at its final update, so that record marks the boundary."""
    bounds = []
    for before, after in zip(records, records[1:]):
        if before.get("stage") != after.get("stage"):
            bounds.append((before, str(after.get("stage"))))
    return bounds


def hours_or_minutes(seconds: float) -> tuple[float, str]:
    return (3600.0, "hours") if seconds > 2 * 3600 else (60.0, "minutes")


@dataclass
class Axis:
    """How one x axis reads a record: the update, or the time since the run's first record."""

    label: str
    value: Callable[[RunCurves, dict[str, Any]], float | None]


def update_axis() -> Axis:
    return Axis("update", lambda run, r: float(r["update"]))


def time_axis(runs: list[RunCurves]) -> Axis | None:
    """A wall-time axis when every record of at least one run carries a time; None otherwise."""
    keys = {run.name: time_key(run.records) for run in runs}
    if not any(keys.values()):
        return None
    starts = {run.name: float(run.records[0][keys[run.name]]) for run in runs if keys[run.name]}
    span = max(float(run.records[-1][keys[run.name]]) - starts[run.name] for run in runs if keys[run.name])
    scale, unit = hours_or_minutes(span)

    def value(run: RunCurves, record: dict[str, Any]) -> float | None:
        key = keys[run.name]
        return None if key is None else (float(record[key]) - starts[run.name]) / scale

    return Axis(f"wall time ({unit})", value)


# ----------------------------------------------------------------------------------------------- drawing


def _series(run: RunCurves, records: list[dict[str, Any]], key: str, axis: Axis) -> tuple[list, list]:
    points = [(axis.value(run, r), r[key]) for r in records if isinstance(r.get(key), (int, float))]
    points = [(x, y) for x, y in points if x is not None and math.isfinite(y)]
    return [x for x, _ in points], [y for _, y in points]


def _plot(ax, xy: tuple[list, list], **style) -> None:
    """A line only where there are points: a run without times gets no empty legend entry on the time axis."""
    if xy[0]:
        ax.plot(*xy, **style)


def _draw_panel(ax, runs: list[RunCurves], axis: Axis, panel: str, colours: dict[str, str]) -> None:
    for run in runs:
        colour = colours[run.name]
        if panel == "loss":
            _plot(ax, _series(run, run.train, "loss", axis), color=colour, label=f"{run.name} train")
            _plot(
                ax,
                _series(run, run.valid, "loss", axis),
                color=colour,
                linestyle="--",
                marker="o",
                markersize=3,
                label=f"{run.name} valid",
            )
        elif panel == "metric":
            metric = metric_of(run.valid)
            if metric is not None:
                _plot(
                    ax,
                    _series(run, run.valid, metric, axis),
                    color=colour,
                    marker="o",
                    markersize=3,
                    label=f"{run.name} {metric}",
                )
        else:
            _plot(ax, _series(run, run.train, "lr", axis), color=colour, label=run.name)
        _draw_stages(ax, run, axis, colour)
    ax.set_xlabel(axis.label)
    ax.grid(alpha=0.3)


def _draw_stages(ax, run: RunCurves, axis: Axis, colour: str) -> None:
    for record, name in stage_boundaries(run.records):
        x = axis.value(run, record)
        if x is None:
            continue
        ax.axvline(x, color=colour, linestyle=":", linewidth=1)
        ax.annotate(
            name,
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color=colour,
        )


PANELS = (("loss", "loss (train solid, valid dashed)"), ("metric", "validation metric"), ("lr", "learning rate"))


def plot_runs(run_dirs: Sequence[str | Path], out_png: str | Path, on_problem: Problem = warn) -> Path:
    """Loss, validation metric and learning rate of every run (overlaid), against update and, when the records
    carry a time, against wall time; stage boundaries as dotted lines. Unreadable runs and lines are reported
    through `on_problem` and left out; DataError when no run has anything to plot."""
    Figure = require_matplotlib()
    out_png = check_png(out_png)
    runs = [run for run in (read_run(d, on_problem) for d in run_dirs) if run is not None]
    if not runs:
        raise DataError(out_png, "nothing to plot: no run had a readable train_log.jsonl")
    _unique_names(runs)
    axes_x = [update_axis()] + [a for a in [time_axis(runs)] if a is not None]
    fig = Figure(figsize=(7 * len(axes_x), 10), layout="constrained")
    grid = fig.subplots(len(PANELS), len(axes_x), squeeze=False)
    colours = {run.name: f"C{i % 10}" for i, run in enumerate(runs)}
    for row, (panel, title) in enumerate(PANELS):
        for col, axis in enumerate(axes_x):
            ax = grid[row][col]
            _draw_panel(ax, runs, axis, panel, colours)
            ax.set_title(f"{title} vs {axis.label}", fontsize=10)
            if panel == "metric":
                ax.set_ylabel(" / ".join(sorted({m for m in (metric_of(r.valid) for r in runs) if m})) or "none")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    if len(axes_x) == 1:
        fig.suptitle("the logs carry no time: curves against update only", fontsize=9)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png


def _unique_names(runs: list[RunCurves]) -> None:
    """Runs in different folders with the same name are told apart by their log's path."""
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = str(run.path.parent)


def has_time(run_dirs: Sequence[str | Path]) -> bool:
    """Whether any run's records carry a time (the CLI says so when they do not)."""
    runs = [run for run in (read_run(d, lambda err: None) for d in run_dirs) if run is not None]
    return time_axis(runs) is not None if runs else False
