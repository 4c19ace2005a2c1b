"""The training loop on a tiny real s2t model and a tiny on-disk ST corpus: what a run writes, that it
learns, gradient normalisation across micro-batches, patience, and exact resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_run import make_corpus, tiny_config, write_config

from speechxl import checkpoint as ckpt
from speechxl.config import config_from_dict, config_to_dict, load_config
from speechxl.data.batching import SpeechTextDataset, collate
from speechxl.data.vocab import Vocab
from speechxl.errors import CheckpointError, DataError, TrainingError
from speechxl.models import build_model, load_model
from speechxl.train.distributed import DistEnv
from speechxl.train.logs import read_log
from speechxl.train.loop import train, train_step
from speechxl.train.optim import InverseSqrtSchedule


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_run_writes_logs_checkpoints_and_learns(tmp_path, corpus):
    cfg = config_from_dict(
        tiny_config(corpus, tmp_path / "run", max_update=12, validate_every=8, save_every=4, keep_last=2, lr=3e-3)
    )
    state = train(cfg)
    run = tmp_path / "run"
    assert state.num_updates == 12
    records = read_log(run)
    train_losses = [r["loss"] for r in records if r["type"] == "train"]
    assert [r["update"] for r in records if r["type"] == "train"] == list(range(1, 13))
    assert sum(train_losses[-3:]) < sum(train_losses[:3])  # it learns
    valid = [r for r in records if r["type"] == "valid"]
    assert [r["update"] for r in valid] == [8, 12]  # every 8 updates, and at the end
    assert all("bleu" in r and r["decoded_sentences"] == 4 and "tok:13a" in r["bleu_signature"] for r in valid)
    assert valid[1]["loss"] < valid[0]["loss"]
    # checkpoints: saved at 4, 8, 12 and on each better BLEU; keep_last 2 plus the best
    names = [p.name for p in ckpt.list_checkpoints(run)]
    assert names[-2:] == ["ckpt-8", "ckpt-12"] and "ckpt-4" not in names
    assert os.readlink(run / "checkpoints" / "last") == "ckpt-12"
    assert (run / "checkpoints" / "best").resolve().name in names
    assert load_config(run / "config.yaml") == cfg
    assert ckpt.load_config_dict(run / "checkpoints" / "last") == config_to_dict(cfg)
    trainer_state = ckpt.load_trainer_state(run / "checkpoints" / "last")
    assert trainer_state["num_updates"] == 12 and trainer_state["sampler"]["epoch"] >= 3
    assert {"python", "numpy", "torch", "cuda"} <= set(trainer_state["rng"][0])
    model, vocab, _ = load_model(run / "checkpoints" / "last")
    assert len(vocab) == len(Vocab.load(corpus / "spm.model")) and not model.training


def test_split_of_a_batch_into_micro_batches_does_not_change_the_update(corpus):
    """fairseq's normalisation: gradients are divided by the sample size of the whole update."""
    vocab = Vocab.load(corpus / "spm.model")
    dataset = SpeechTextDataset.from_manifest(corpus / "train.tsv", "st", vocab)
    examples = [dataset[i] for i in range(4)]
    cfg = config_from_dict(tiny_config(corpus, "unused")).train
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    results = []
    for groups in ([examples], [examples[:1], examples[1:]]):
        torch.manual_seed(0)
        model = build_model({**config_from_dict(tiny_config(corpus, "x")).model, "dropout": 0.0}, vocab)
        model.label_smoothing = cfg.label_smoothing
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        logs = train_step(
            model, model, [collate(g, "st", vocab.pad, vocab.eos) for g in groups], optimizer, None, cfg, env
        )
        results.append((torch.nn.utils.parameters_to_vector(model.parameters()).detach(), logs))
    (whole, whole_logs), (split, split_logs) = results
    assert whole_logs["sample_size"] == split_logs["sample_size"]
    assert torch.allclose(whole, split, rtol=1e-5, atol=1e-6)


def test_inverse_sqrt_schedule_matches_fairseq():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    schedule = InverseSqrtSchedule(optimizer, lr=1e-3, warmup_updates=10, warmup_init_lr=1e-7)
    assert schedule.step_update(0) == pytest.approx(1e-7)
    assert schedule.step_update(5) == pytest.approx(1e-7 + 5 * (1e-3 - 1e-7) / 10)
    assert schedule.step_update(10) == pytest.approx(1e-3)
    assert schedule.step_update(40) == pytest.approx(1e-3 * (10 / 40) ** 0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_patience_stops_when_bleu_stops_improving(tmp_path, corpus):
    # An untrained model scores BLEU 0 every time: the first validation sets the best, then two misses.
    cfg = config_from_dict(
        tiny_config(
            corpus,
            tmp_path / "run",
            max_update=50,
            validate_every=1,
            save_every=0,
            patience=2,
            lr=1e-7,
            warmup_updates=0,
        )
    )
    state = train(cfg)
    assert state.stop and state.num_updates == 3
    valid = [r for r in read_log(tmp_path / "run") if r["type"] == "valid"]
    assert [r["bleu"] for r in valid] == [0.0, 0.0, 0.0]
    assert os.readlink(tmp_path / "run" / "checkpoints" / "best") == "ckpt-1"


def test_amp_on_cpu_is_a_clear_error(tmp_path, corpus):
    cfg = config_from_dict(tiny_config(corpus, tmp_path / "run", amp="fp16"))
    with pytest.raises(RuntimeError, match="train.amp=fp16 needs a CUDA device"):
        train(cfg)


def _speechxl(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "speechxl.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _records(run_dir) -> list[tuple]:
    """Everything deterministic in the log: all fields but wall-clock ones."""
    return [tuple(sorted((k, v) for k, v in r.items() if k != "time")) for r in read_log(run_dir)]


def test_sigkill_then_resume_logs_the_same_losses(tmp_path, corpus):
    conf = write_config(
        tmp_path / "conf.yaml", tiny_config(corpus, tmp_path / "unused", max_update=9, save_every=2, validate_every=5)
    )
    train(load_config(conf, [f"run_dir={tmp_path / 'ref'}"]))  # the uninterrupted run, in this process

    run = tmp_path / "run"
    killed = _speechxl("train", "--config", str(conf), f"run_dir={run}")
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "ckpt-4").is_dir() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"

    resumed = _speechxl("train", "--config", str(conf), f"run_dir={run}")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(ckpt.TMP_PREFIX)]
    assert _records(run) == _records(tmp_path / "ref")
    assert [r["update"] for r in read_log(run) if r["type"] == "train"] == list(range(1, 10))


def test_best_metric_picks_the_best_checkpoint_by_its_direction(tmp_path, corpus):
    """train.best_metric=loss (lower is better): `best` follows the lowest validation loss, not BLEU."""
    cfg = config_from_dict(
        tiny_config(
            corpus,
            tmp_path / "run",
            max_update=12,
            validate_every=3,
            save_every=0,
            keep_last=0,
            lr=3e-3,
            best_metric="loss",
        )
    )
    train(cfg)
    valid = [r for r in read_log(tmp_path / "run") if r["type"] == "valid"]
    best = min(valid, key=lambda r: r["loss"])
    assert os.readlink(tmp_path / "run" / "checkpoints" / "best") == f"ckpt-{best['update']}"
    assert all(r["best_metric"] == {"name": "loss", "higher_is_better": False} for r in valid)
    assert ckpt.select_around_best(tmp_path / "run", 1)[0].name == f"ckpt-{best['update']}"
    with pytest.raises(
        DataError, match="train.best_metric: 'accuracy' is not a figure of this validation; figures: .*bleu.*loss"
    ):
        train(
            config_from_dict(
                tiny_config(corpus, tmp_path / "other", max_update=2, validate_every=1, best_metric="accuracy")
            )
        )


def nan_on(model, calls: set[int]):
    """Make the model's training forward return a NaN loss on the given (1-based) calls."""
    forward, count = model.forward, [0]

    def patched(batch):
        out = forward(batch)
        if model.training:
            count[0] += 1
            if count[0] in calls:
                out["loss"] = out["loss"] * float("nan")
        return out

    model.forward = patched
    return model


def test_a_non_finite_loss_skips_the_update_and_leaves_everything_untouched(corpus):
    vocab = Vocab.load(corpus / "spm.model")
    dataset = SpeechTextDataset.from_manifest(corpus / "train.tsv", "st", vocab)
    batch = collate([dataset[i] for i in range(3)], "st", vocab.pad, vocab.eos)
    cfg = config_from_dict(tiny_config(corpus, "unused")).train
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    model = nan_on(build_model(config_from_dict(tiny_config(corpus, "x")).model, vocab), {2})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert "skipped" not in train_step(model, model, [batch], optimizer, None, cfg, env)  # a real update
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    logs = train_step(model, model, [batch], optimizer, None, cfg, env)  # the NaN
    assert logs == {"skipped": 1.0, "reason": "non-finite loss"}
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(moments[k], v) for k, v in optimizer.state_dict()["state"][0].items())
    assert all(p.grad is None for p in model.parameters())


def test_non_finite_updates_are_logged_with_their_utterances_and_a_run_of_them_stops(tmp_path, corpus):
    vocab = Vocab.load(corpus / "spm.model")
    config = tiny_config(corpus, tmp_path / "run", max_update=6, validate_every=0, save_every=0)
    model = nan_on(build_model(config["model"], vocab), {3})
    state = train(config_from_dict(config), model=model, vocab=vocab, vocab_files=[corpus / "spm.model"])
    assert (state.num_updates, state.skipped_updates) == (6, 1)
    records = read_log(tmp_path / "run")
    (skipped,) = [r for r in records if r["type"] == "skipped"]
    assert skipped["update"] == 2 and skipped["reason"] == "non-finite loss" and skipped["ids"]
    assert all(i.startswith("train") for i in skipped["ids"])
    assert [r["update"] for r in records if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]

    config = tiny_config(corpus, tmp_path / "run2", max_update=20, validate_every=0, save_every=0, max_bad_updates=3)
    model = nan_on(build_model(config["model"], vocab), {2, 3, 4, 5})
    with pytest.raises(TrainingError, match=r"3 updates in a row were skipped .*\(train.max_bad_updates=3"):
        train(config_from_dict(config), model=model, vocab=vocab, vocab_files=[corpus / "spm.model"])


def test_a_failed_save_keeps_the_previous_checkpoint_and_links(tmp_path, corpus, monkeypatch):
    """Disk full while writing ckpt-4: the run stops with an error naming it; ckpt-2 and `last` stay intact,
    nothing half-written is left, and the run resumes from ckpt-2."""
    import errno

    real_save, calls = ckpt.save_weights, [0]

    def disk_full_on_second_save(state, path):
        calls[0] += 1
        if calls[0] == 2:
            path.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(state, path)

    monkeypatch.setattr(ckpt, "save_weights", disk_full_on_second_save)
    config = tiny_config(corpus, tmp_path / "run", max_update=6, validate_every=0, save_every=2)
    with pytest.raises(CheckpointError, match=r"ckpt-4: cannot save .*No space left on device.*previous checkpoint"):
        train(config_from_dict(config))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["ckpt-2", "last"]
    assert os.readlink(checkpoints / "last") == "ckpt-2"
    monkeypatch.setattr(ckpt, "save_weights", real_save)
    state = train(config_from_dict(config))  # resumes from ckpt-2
    assert state.num_updates == 6 and os.readlink(checkpoints / "last") == "ckpt-6"
