"""tools/results_table.py: the recipes' results tables, cell by cell, from run directories written by hand in the
formats the trainer, `speechxl translate` and the probes write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from speechxl.config import dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "results_table.py"
SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def make_run(run: Path, *, score: dict, files: dict[str, object], log: list[dict]) -> None:
    """A run of recipes/synth/conf/chimera.yaml (stages mt_pretrain 250 + triplet) as the recipes leave it."""
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(load_config(ROOT / "recipes/synth/conf/chimera.yaml")))
    (run / "train_log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in log))
    (run / "decode_tst-COMMON").mkdir()
    (run / "decode_tst-COMMON" / "score.json").write_text(json.dumps({"signature": SIGNATURE, **score}))
    for name, content in files.items():
        (run / name).write_text(content if isinstance(content, str) else json.dumps(content))


def table(exp: Path, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(TOOL), "--exp", str(exp), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


def test_default_and_extra_columns(tmp_path):
    log = [
        {"type": "train", "update": 250, "stage": "mt_pretrain"},
        {"type": "valid", "update": 250, "bleu": 6.25, "mt_loss": 2.5},
        {"type": "train", "update": 950, "stage": "triplet"},
        {"type": "valid", "update": 950, "bleu": 7.04, "st_loss": 3.14159},
    ]
    make_run(
        tmp_path / "a",
        score={"bleu": 7.004, "chrf": 25.64, "decode_seconds": 12.34, "transcript": {"wer": 90.62}},
        files={
            "train_seconds": "927\n",
            "train_cpu_seconds": "1805\n",
            "audio_use.json": {"gain": 0.9351},
            "memory_probe.json": {
                "slot_own": 0.0051,
                "slot_shuffled": 0.0049,
                "centred_same_utt": 0.1234,
                "centred_other_utt": -0.0141,
            },
            "shrink.json": {"states_per_token_after": 0.292},
        },
        log=log,
    )
    make_run(tmp_path / "b", score={}, files={}, log=log[:1])  # nothing decoded or probed yet

    lines = table(tmp_path, "--runs", "a", "b", "--label", "a=Row A | x")
    assert lines[0] == "| run | updates | train time | dev BLEU | tst-COMMON BLEU | chrF | audio use (nats/token) |"
    assert lines[2] == "| Row A | x | 950 (250 mt_pretrain + 700 triplet) | 15 min 27 s | 7.0 | 7.00 | 25.6 | 0.935 |"
    assert lines[3] == "| b | 250 (250 mt_pretrain + 0 triplet) | – | – | – | – | – |"
    assert lines[5].startswith(f"sacreBLEU {SIGNATURE}. Audio use:")

    columns = ["cpu", "dev", "memory", "wer", "decode_s", "shrink"]
    lines = table(tmp_path, "--runs", "a", "b", "--columns", *columns, "--dev-metric", "st_loss")
    assert lines[0] == (
        "| run | train CPU time | dev st loss | slot loss own / shuffled | centred cos same / other "
        "| transcript WER | decode s | states / transcript token |"
    )
    assert lines[1] == "|" + "---|" * 8
    assert lines[2] == "| a | 30 min 05 s | 3.142 | 0.005 / 0.005 | 0.123 / -0.014 | 90.6 | 12.3 | 0.29 |"
    assert lines[3] == "| b | – | – | – | – | – | – | – |"
    assert "Memory (tools/probe_chimera_memory.py" in lines[5] and "Audio use" not in lines[5]
