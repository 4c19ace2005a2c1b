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


def test_per_direction_and_total_stored_columns(tmp_path):
    """A system of several models (recipes/synth/extend.sh stage 5): one BLEU column per decode directory, and
    the elements / bytes of every checkpoint listed in its `needs` file (% of --parent's elements)."""
    import torch
    from safetensors.torch import save_file

    parent = tmp_path / "parent"
    parent.mkdir()
    save_file({"w": torch.zeros(10, 10)}, str(parent / "model.safetensors"))
    delta = tmp_path / "delta.safetensors"
    save_file({"a": torch.zeros(5)}, str(delta))
    system = tmp_path / "exp" / "multi"
    for lang, bleu in (("de", 40.123), ("fr", 20.5)):
        (system / f"decode_{lang}").mkdir(parents=True)
        (system / f"decode_{lang}" / "score.json").write_text(json.dumps({"bleu": bleu, "chrf": 60.04}))
    (system / "needs").write_text(f"{parent / 'model.safetensors'}\n{delta}\n")
    columns = ["bleu@decode_de", "bleu@decode_fr", "chrf@decode_de", "bleu@decode_es", "total_stored", "total_bytes"]
    lines = table(tmp_path / "exp", "--runs", "multi", "--parent", str(parent), "--columns", *columns)
    size = (parent / "model.safetensors").stat().st_size + delta.stat().st_size
    assert lines[0] == (
        "| run | de BLEU | fr BLEU | de chrF | es BLEU | stored params, all it needs (% of parent) "
        "| bytes, all it needs |"
    )
    assert lines[2] == f"| multi | 40.12 | 20.50 | 60.0 | – | 105 (105.0%) | {size:,} |"
    bad = subprocess.run(
        [sys.executable, str(TOOL), "--exp", str(tmp_path), "--runs", "x", "--columns", "bleu@"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown column 'bleu@'" in bad.stderr
