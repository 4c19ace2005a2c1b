"""Real multi-process DDP (torchrun, gloo on CPU): 2 processes × update_freq 1 make the same updates as
1 process × update_freq 2. The sampler deals batch i of an epoch to rank i mod 2, so the two micro-batches
of update k are the same two batches either way; dropout is off so both runs compute the same thing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch
from tiny_run import make_corpus, tiny_config, write_config

from speechxl import checkpoint as ckpt
from speechxl.train.logs import read_log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str]) -> None:
    # One thread per process in both runs, so the two compute with the same kernels.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_match_one_process_with_accumulation(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    config = tiny_config(corpus, tmp_path / "unused", max_update=4, save_every=0, validate_every=0)
    config["model"]["dropout"] = 0.0
    config["data"]["max_sentences"] = 2
    conf = write_config(tmp_path / "conf.yaml", config)
    train = ["-m", "speechxl.cli", "train", "--config", str(conf)]
    _run([sys.executable, *train, f"run_dir={tmp_path / 'one'}", "train.update_freq=2"])
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            *train,
            f"run_dir={tmp_path / 'two'}",
            "train.update_freq=1",
        ]
    )

    one = ckpt.load_weights(tmp_path / "one" / "checkpoints" / "last" / ckpt.MODEL_FILE)
    two = ckpt.load_weights(tmp_path / "two" / "checkpoints" / "last" / ckpt.MODEL_FILE)
    initial = torch.cat([v.flatten() for v in one.values()]).abs().max()
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-5, atol=1e-6 * float(initial)), key
    logs = [[r for r in read_log(tmp_path / run) if r["type"] == "train"] for run in ("one", "two")]
    assert [r["update"] for r in logs[1]] == [1, 2, 3, 4]  # only rank 0 writes the log
    for a, b in zip(*logs):
        assert a["sample_size"] == b["sample_size"] and abs(a["loss"] - b["loss"]) < 1e-5
        # Adam hides a constant gradient scale; the gradient norm shows it
        assert abs(a["gnorm"] - b["gnorm"]) < 1e-5 * a["gnorm"]
