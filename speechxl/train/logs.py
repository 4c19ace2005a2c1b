"""Training logs: JSONL (run_dir/train_log.jsonl), TensorBoard when installed, and the tqdm bar's numbers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

LOG_FILE = "train_log.jsonl"


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Averages from summed model logs: `loss` per `sample_size`; `X_loss` per `X_ntokens` when the model
    logs that, else per `ntokens`, else per `sample_size`; `ppl` from `nll_loss` (natural log)."""
    sample_size = max(sums.get("sample_size", 0.0), 1e-9)
    ntokens = sums.get("ntokens")
    out: dict[str, float] = {}
    for key, value in sorted(sums.items()):
        if key == "loss":
            out[key] = value / sample_size
        elif key.endswith("_loss"):
            task = key[: -len("_loss")]
            denominator = sums.get(f"{task}_ntokens") or ntokens or sample_size
            out[key] = value / denominator
        elif key.endswith("ntokens") or key in ("sample_size", "nsentences"):
            out[key] = value
    if "nll_loss" in out:
        out["ppl"] = math.exp(min(out["nll_loss"], 50.0))
    return out


class RunLog:
    """Appends records to the JSONL log (and TensorBoard scalars); only the main rank makes one."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOG_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tensorboard = _open_tensorboard(Path(run_dir) / "tensorboard")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("update", "epoch"):
                    self._tensorboard.add_scalar(f"{record['type']}/{key}", value, record["update"])

    def truncate_after(self, update: int) -> None:
        """Drop records past `update`: a resumed run rewrites them, and the log must read as one run."""
        if not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("update", 0) <= update
        ]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _open_tensorboard(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is an optional extra
        return None
    return SummaryWriter(str(directory))


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
