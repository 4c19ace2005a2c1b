"""Checkpoint directories: round trip, clear errors, atomic save / crash clean-up, pruning, averaging."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import save_file
from tiny_run import TINY_MODEL, make_corpus

from speechxl import checkpoint as ckpt
from speechxl.cli import main
from speechxl.data.vocab import Vocab
from speechxl.errors import CheckpointError
from speechxl.models import build_model, load_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=2, n_dev=1)


@pytest.fixture(scope="module")
def vocab(corpus):
    return Vocab.load(corpus / "spm.model")


def new_model(vocab, seed: int, **overrides):
    torch.manual_seed(seed)
    return build_model({**TINY_MODEL, **overrides}, vocab)


def write(directory, model, corpus, trainer_state=None, metrics=None):
    config = {"model": dict(TINY_MODEL), "run_dir": "x"}
    return ckpt.write_checkpoint(
        directory,
        model_state=model.state_dict(),
        config=config,
        vocab_files=[corpus / "spm.model"],
        trainer_state=trainer_state,
        metrics=metrics,
    )


def test_round_trip_translates_alone(tmp_path, corpus, vocab):
    model = new_model(vocab, 0)
    state = {"num_updates": 7, "rng": torch.get_rng_state(), "nested": {"a": [1, 2.5, "x"]}}
    directory = write(tmp_path / "ckpt-7", model, corpus, trainer_state=state)
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.yaml",
        "model.safetensors",
        "spm.model",
        "trainer.pt",
    ]
    loaded, loaded_vocab, config = load_model(directory)
    assert config["model"] == TINY_MODEL and len(loaded_vocab) == len(vocab)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    restored = ckpt.load_trainer_state(directory)
    assert restored["num_updates"] == 7 and torch.equal(restored["rng"], state["rng"])
    assert restored["nested"] == {"a": [1, 2.5, "x"]}


def test_tied_weights_stored_once_and_stay_tied(tmp_path):
    embed = torch.nn.Embedding(50, 8)
    tied = torch.nn.ModuleDict({"embed": embed, "out": torch.nn.Linear(8, 50, bias=False)})
    tied["out"].weight = embed.weight
    ckpt.save_weights(tied.state_dict(), tmp_path / "w.safetensors")
    assert (tmp_path / "w.safetensors").stat().st_size < 50 * 8 * 4 * 2  # one copy of the 50x8 table
    stored = ckpt.load_weights(tmp_path / "w.safetensors")
    assert set(stored) == {"embed.weight", "out.weight"}
    assert stored["embed.weight"].data_ptr() == stored["out.weight"].data_ptr()
    assert torch.equal(stored["out.weight"], embed.weight.detach())


def test_checkpoints_are_never_overwritten(tmp_path, corpus, vocab):
    directory = write(tmp_path / "c", new_model(vocab, 0), corpus)
    with pytest.raises(CheckpointError, match="already exists"):
        write(directory, new_model(vocab, 1), corpus)


def test_not_a_checkpoint_errors_say_what_was_expected(tmp_path, corpus, vocab):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_model(tmp_path / "missing")
    fairseq_file = tmp_path / "checkpoint_best.pt"
    torch.save({"model": {}, "args": None}, fairseq_file)
    with pytest.raises(CheckpointError, match="is a file, but a speechxl checkpoint is a directory"):
        load_model(fairseq_file)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.yaml").write_text("model: {arch: s2t}\n")
    with pytest.raises(CheckpointError, match=r"spm.model is missing; found: \['config.yaml'\]"):
        load_model(partial)
    with pytest.raises(CheckpointError, match="trainer.pt is missing"):
        ckpt.load_trainer_state(write(tmp_path / "no_trainer", new_model(vocab, 0), corpus))


def test_weights_that_do_not_fit_the_model(tmp_path, corpus, vocab):
    directory = write(tmp_path / "c", new_model(vocab, 0, dim=24), corpus)  # config.yaml says dim 16
    with pytest.raises(CheckpointError, match="weights do not fit the model S2TTransformer; wrong shape"):
        load_model(directory)
    foreign = tmp_path / "foreign"
    shutil.copytree(directory, foreign)
    save_file({"encoder.w2v.weight": torch.zeros(2)}, str(foreign / ckpt.MODEL_FILE))
    with pytest.raises(CheckpointError, match=r"missing: .*unexpected: encoder.w2v.weight"):
        load_model(foreign)
    (foreign / ckpt.MODEL_FILE).write_bytes(b"PK\x03\x04 not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(foreign)


def test_interrupted_save_leaves_previous_checkpoint_usable(tmp_path, corpus, vocab):
    run = tmp_path / "run"
    good = write(run / "checkpoints" / "ckpt-2", new_model(vocab, 0), corpus, trainer_state={"num_updates": 2})
    ckpt.point_link(run, "last", good)
    # what a crash during the save of update 4 leaves: a half-written temporary directory
    junk = run / "checkpoints" / f"{ckpt.TMP_PREFIX}ckpt-4-12345"
    junk.mkdir()
    (junk / ckpt.MODEL_FILE).write_bytes(b"\x00" * 10)
    assert ckpt.latest_checkpoint(run) == good.resolve()
    assert ckpt.clean_incomplete(run) == [junk]
    assert not junk.exists() and ckpt.load_trainer_state(ckpt.latest_checkpoint(run))["num_updates"] == 2
    # a `last` link whose target vanished falls back to the newest complete checkpoint
    newer = write(run / "checkpoints" / "ckpt-3", new_model(vocab, 1), corpus, trainer_state={"num_updates": 3})
    shutil.rmtree(good)
    assert ckpt.latest_checkpoint(run) == newer


def test_point_link_replaces_atomically(tmp_path, corpus, vocab):
    run = tmp_path / "run"
    a = write(run / "checkpoints" / "ckpt-1", new_model(vocab, 0), corpus)
    b = write(run / "checkpoints" / "ckpt-2", new_model(vocab, 1), corpus)
    ckpt.point_link(run, "best", a)
    ckpt.point_link(run, "best", b)
    link = run / "checkpoints" / "best"
    assert link.is_symlink() and os.readlink(link) == "ckpt-2"  # relative: the run dir can move
    assert not [p for p in link.parent.iterdir() if p.name.startswith(ckpt.TMP_PREFIX)]


def test_prune_keeps_last_best_and_link_targets(tmp_path, corpus, vocab):
    run = tmp_path / "run"
    model = new_model(vocab, 0)
    bleus = {1: 5.0, 2: 9.0, 3: 7.0, 4: 3.0, 5: 4.0, 6: 1.0}
    for update, score in bleus.items():
        write(run / "checkpoints" / f"ckpt-{update}", model, corpus, metrics={"bleu": score})
    ckpt.point_link(run, "last", run / "checkpoints" / "ckpt-6")
    ckpt.point_link(run, "best", run / "checkpoints" / "ckpt-2")
    removed = ckpt.prune_checkpoints(run, keep_last=2, keep_best=2)
    assert sorted(p.name for p in removed) == ["ckpt-1", "ckpt-4"]
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["ckpt-2", "ckpt-3", "ckpt-5", "ckpt-6"]
    assert [p.name for p in ckpt.select_last(run, 3)] == ["ckpt-3", "ckpt-5", "ckpt-6"]
    assert [p.name for p in ckpt.select_around_best(run, 3)] == ["ckpt-2", "ckpt-3", "ckpt-5"]


def test_prune_and_best_follow_the_runs_best_metric_and_its_direction(tmp_path, corpus, vocab):
    """A pre-training run ranked by a loss keeps its lowest-loss checkpoints (higher BLEU is not better here)."""
    run = tmp_path / "run"
    model = new_model(vocab, 0)
    losses = {1: 3.0, 2: 1.5, 3: 2.0, 4: 2.5, 5: 4.0}
    for update, loss in losses.items():
        write(
            run / "checkpoints" / f"ckpt-{update}",
            model,
            corpus,
            metrics={
                "mlm_loss": loss,
                "bleu": 10.0 * update,
                "best_metric": {"name": "mlm_loss", "higher_is_better": False},
            },
        )
    assert ckpt.best_checkpoint(run).name == "ckpt-2"  # no `best` link: ranked from metrics.json
    removed = ckpt.prune_checkpoints(run, keep_last=1, keep_best=2)
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["ckpt-2", "ckpt-3", "ckpt-5"]
    assert sorted(p.name for p in removed) == ["ckpt-1", "ckpt-4"]
    assert [p.name for p in ckpt.select_around_best(run, 2)] == ["ckpt-2", "ckpt-3"]


def test_average_is_elementwise_mean_and_loads(tmp_path, corpus, vocab):
    models = [new_model(vocab, seed) for seed in (0, 1, 2)]
    dirs = [write(tmp_path / f"ckpt-{i}", m, corpus, trainer_state={"x": 1}) for i, m in enumerate(models)]
    out = ckpt.average_checkpoints(dirs, tmp_path / "avg")
    assert not (out / ckpt.TRAINER_FILE).exists()
    averaged, _, _ = load_model(out)
    for key, value in averaged.state_dict().items():
        expected = sum(m.state_dict()[key].double() for m in models) / 3
        assert torch.allclose(value.double(), expected, atol=1e-6), key


def test_average_rejects_mismatched_checkpoints(tmp_path, corpus, vocab):
    a = write(tmp_path / "a", new_model(vocab, 0), corpus)
    b = write(tmp_path / "b", new_model(vocab, 0, dim=24), corpus)
    with pytest.raises(CheckpointError, match="has shape"):
        ckpt.average_checkpoints([a, b], tmp_path / "avg")


def test_cli_average_last_n(tmp_path, corpus, vocab, capsys):
    run = tmp_path / "run"
    models = {u: new_model(vocab, u) for u in (10, 20, 30)}
    for update, model in models.items():
        write(run / "checkpoints" / f"ckpt-{update}", model, corpus)
    main(["average", "--run-dir", str(run), "--last", "2", "--out", str(tmp_path / "avg")])
    assert "averaged 2 checkpoint(s)" in capsys.readouterr().out
    averaged, _, _ = load_model(tmp_path / "avg")
    key = next(iter(averaged.state_dict()))
    expected = (models[20].state_dict()[key] + models[30].state_dict()[key]) / 2
    assert torch.allclose(averaged.state_dict()[key], expected, atol=1e-6)
    with pytest.raises(SystemExit):
        main(["average", "--run-dir", str(run), "--out", str(tmp_path / "avg2")])
