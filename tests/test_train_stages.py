"""Progressive training in the loop: a tiny XSTNet (its wav2vec2 loaded from an HF directory) trained through
an MT pre-training stage on in-domain + external MT and a multitask stage, on a tiny on-disk corpus."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tiny_run import PAIRS, make_corpus
from transformers import Wav2Vec2Model

from speechxl import checkpoint as ckpt
from speechxl.config import config_from_dict, load_config
from speechxl.data.manifest import write_manifest
from speechxl.errors import DataError
from speechxl.models import load_model
from speechxl.modules.wav2vec2 import wav2vec2_config
from speechxl.train.logs import read_log
from speechxl.train.loop import train

MT_UPDATES, MULTITASK_UPDATES = 3, 4
STAGES = [
    {
        "name": "mt_pretrain",
        "tasks": {"mt": 1.0, "ext_mt": 1.0},
        "max_update": MT_UPDATES,
        "trainable": {"freeze": ["acoustic"]},
        "lr": 3e-3,
    },
    {
        "name": "multitask",
        "tasks": {"st": 1.0, "asr": 1.0, "mt": 1.0, "ext_mt": 0.25},
        "max_update": MULTITASK_UPDATES,
        "reset_optimizer": True,
        "freeze_acoustic_updates": 2,
        "warmup_updates": 2,
    },
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matrices: extra threads only add contention on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = make_corpus(tmp_path_factory.mktemp("stages_corpus"), n_train=8, n_dev=2)
    rows = [
        dict(id=f"ext{i}", audio="", n_frames=0, tgt_text=de, speaker="", src_text=en, src_lang="en", tgt_lang="de")
        for i, (en, de) in enumerate(reversed(PAIRS))
    ]
    write_manifest(root / "ext_mt.tsv", rows)
    return root


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory) -> Path:
    """A pre-trained wav2vec2 as `speechxl convert fairseq-wav2vec2` writes it (an HF directory)."""
    directory = tmp_path_factory.mktemp("w2v") / "w2v"
    torch.manual_seed(5)
    Wav2Vec2Model(
        wav2vec2_config(
            "tiny", conv_dim=[32] * 7, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(directory)
    return directory


def stage_config(corpus: Path, run_dir: Path, w2v: Path, **train: object) -> dict:
    return {
        "run_dir": str(run_dir),
        "model": {
            "arch": "xstnet",
            "size": "tiny",
            "w2v_path": str(w2v),
            "conv_channels": 32,
            "dim": 32,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "encoder_heads": 2,
            "decoder_heads": 2,
            "encoder_ffn_dim": 32,
            "decoder_ffn_dim": 32,
        },
        "data": {
            "manifest_dir": str(corpus),
            "features": "wave",
            "tasks": ["st"],
            "ext_mt_split": "ext_mt",
            "max_wave_samples": 24000,
            "max_tokens": 60,
            "max_sentences": 4,
        },
        "train": {
            "seed": 2,
            "lr": 2e-3,
            "warmup_updates": 3,
            "device": "cpu",
            "log_every": 1,
            "validate_every": 0,
            "save_every": 1,
            "keep_last": 0,
            "valid_beam": 1,
            "valid_max_sentences": 2,
            **train,
        },
        "stages": STAGES,
    }


def weights(run_dir: Path, update: int) -> dict[str, torch.Tensor]:
    return ckpt.load_weights(run_dir / "checkpoints" / f"ckpt-{update}" / ckpt.MODEL_FILE)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> bool:
    keys = [k for k in a if k.startswith(prefix + ".")]
    assert keys
    return all(torch.equal(a[k], b[k]) for k in keys)


def train_records(run_dir: Path) -> list[dict]:
    """The train records, without their wall-clock time (the one field a resumed run cannot repeat)."""
    return [{k: v for k, v in r.items() if k != "time"} for r in read_log(run_dir) if r["type"] == "train"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, w2v_dir) -> Path:
    """The uninterrupted two-stage run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    state = train(config_from_dict(stage_config(corpus, run, w2v_dir)))
    assert state.num_updates == MT_UPDATES + MULTITASK_UPDATES
    return run


def test_stages_run_in_order_with_their_tasks_and_trainable_sets(reference):
    records = train_records(reference)
    assert [r["update"] for r in records] == list(range(1, 8))
    assert [r["stage"] for r in records] == ["mt_pretrain"] * 3 + ["multitask"] * 4
    assert all("mt_loss" in r and "st_loss" not in r and "asr_loss" not in r for r in records[:3])
    multitask = {key for r in records[3:] for key in r if key.endswith("_loss") and key != "nll_loss"}
    assert multitask <= {"st_loss", "asr_loss", "mt_loss"} and multitask & {"st_loss", "asr_loss"}
    # The rate logged at update n is the one update n+1 uses. Stage 1: its own lr (3e-3) over train's warmup
    # (3 updates); stage 2 resets the optimizer: the schedule restarts with the stage's warmup (2) and train.lr.
    lrs = [r["lr"] for r in records]
    assert lrs[:2] == pytest.approx([1e-3, 2e-3], rel=1e-3)
    assert lrs[2:5] == pytest.approx([1e-7, 1e-3, 2e-3], rel=1e-3)
    # Validation at the boundary (MT BLEU) and at the end (ST BLEU), each stage on its own tasks.
    valid = [r for r in read_log(reference) if r["type"] == "valid"]
    assert [(r["update"], r["stage"]) for r in valid] == [(3, "mt_pretrain"), (7, "multitask")]
    assert "mt_loss" in valid[0] and "st_loss" not in valid[0] and "st_loss" in valid[1]
    assert all("bleu" in r for r in valid)

    initial, boundary = weights(reference, 1), weights(reference, 3)
    assert same(initial, boundary, "acoustic")  # stage 1 freezes wav2vec2 ...
    assert not same(initial, boundary, "encoder")  # ... and trains the rest
    assert same(boundary, weights(reference, 5), "acoustic")  # stage 2: wav2vec2 frozen for 2 updates,
    assert not same(boundary, weights(reference, 7), "acoustic")  # then trained
    assert ckpt.load_trainer_state(reference / "checkpoints" / "ckpt-3")["stage"] == 0
    assert ckpt.load_trainer_state(reference / "checkpoints" / "last")["stage"] == 1


def test_checkpoints_are_self_contained(reference, w2v_dir, tmp_path):
    shutil.copytree(reference / "checkpoints" / "ckpt-7", tmp_path / "ckpt")
    config = ckpt.load_config_dict(tmp_path / "ckpt")
    assert config["model"]["w2v_path"] == "" and config["model"]["w2v_config"]["hidden_size"] == 64
    moved = tmp_path / "w2v_moved"
    w2v_dir.rename(moved)  # the pre-trained wav2vec2 directory is no longer where the config said
    try:
        model, _, _ = load_model(tmp_path / "ckpt")
    finally:
        moved.rename(w2v_dir)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights(reference, 7).items())


@pytest.mark.parametrize("stop_at", [MT_UPDATES, MT_UPDATES + 2], ids=["at_the_boundary", "inside_stage_2"])
def test_resume_gives_the_same_updates_as_the_uninterrupted_run(reference, corpus, w2v_dir, tmp_path, stop_at):
    run = tmp_path / "run"
    config = stage_config(corpus, run, w2v_dir)
    train(config_from_dict({**config, "train": {**config["train"], "max_update": stop_at}}))
    assert ckpt.latest_checkpoint(run).name == f"ckpt-{stop_at}"
    state = train(config_from_dict(config))  # resumes from ckpt-<stop_at>
    assert state.num_updates == MT_UPDATES + MULTITASK_UPDATES
    assert train_records(run) == train_records(reference)  # losses, gradient norms, rates: every update
    final, expected = weights(run, 7), weights(reference, 7)
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_stage_errors_name_the_config(tmp_path, corpus, w2v_dir):
    config = stage_config(corpus, tmp_path / "run", w2v_dir)
    conf = tmp_path / "conf.yaml"
    bad = [{**STAGES[0], "tasks": {"speech": 1}}]
    conf.write_text(yaml.safe_dump({**config, "stages": bad}), encoding="utf-8")
    with pytest.raises(DataError, match="conf.yaml: stage 1 \\(mt_pretrain\\): unknown task 'speech'"):
        load_config(conf)
    without_ext_mt = config_from_dict({**config, "data": {**config["data"], "ext_mt_split": ""}})
    with pytest.raises(DataError, match="ext_mt_split is not set"):
        train(without_ext_mt)


def test_two_processes_run_both_stages(tmp_path, corpus, w2v_dir):
    """DDP (gloo, 2 processes): each stage re-wraps the model, since stage 1 trains fewer parameters."""
    conf = tmp_path / "conf.yaml"
    conf.write_text(
        yaml.safe_dump(stage_config(corpus, tmp_path / "run", w2v_dir, find_unused_parameters=True)), encoding="utf-8"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            "-m",
            "speechxl.cli",
            "train",
            "--config",
            str(conf),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = train_records(tmp_path / "run")
    assert [r["stage"] for r in records] == ["mt_pretrain"] * MT_UPDATES + ["multitask"] * MULTITASK_UPDATES
    assert ckpt.load_trainer_state(tmp_path / "run" / "checkpoints" / "last")["world_size"] == 2
