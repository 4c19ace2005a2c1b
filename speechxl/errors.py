"""Errors that point a person at the exact place in their data."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data: the message names the file (and line, where there is one)."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, or from somewhere we cannot read."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many updates in a row with a non-finite loss); the message says why."""
