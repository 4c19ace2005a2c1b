"""COSTT (consecutive decoding with CTC-guided shrinking) and LUT (triple supervision with a frozen text teacher):
the consecutive target and its split, the search constraint, padded batches, the teacher kept out of the
checkpoint, and both trained, decoded and scored end to end on SynthST at a tiny size."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import make_corpus

from speechxl import checkpoint as ckpt
from speechxl.config import config_from_dict
from speechxl.data.dataset import load_datasets
from speechxl.data.vocab import Vocab
from speechxl.errors import TrainingError
from speechxl.inference.decode import DecodeOptions
from speechxl.inference.search import SearchStep, beam_search
from speechxl.inference.translate import translate
from speechxl.models import build_model
from speechxl.models.costt import ConsecutiveConstraint, consecutive_target
from speechxl.tasks import get_task
from speechxl.train.loop import train

TINY = {
    "size": "tiny",
    "dim": 32,
    "acoustic_layers": 1,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_heads": 2,
    "decoder_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "dropout": 0.0,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = make_corpus(tmp_path_factory.mktemp("costt") / "corpus")
    vocab = Vocab.load(root / "spm.model")
    return root, vocab, load_datasets(root / "train.tsv", ["triplet", "asr", "mt", "st"], vocab)


def _batch(datasets, task, n=4):
    return datasets[task].collate([datasets[task][i] for i in range(n)])


def test_consecutive_target_is_asr_transcript_ast_translation_eos(corpus):
    _, vocab, datasets = corpus
    batch = _batch(datasets, "triplet")
    asr, ast = vocab.tag("asr"), vocab.tag("ast")
    target, prev = consecutive_target(batch, asr, ast, vocab.eos, vocab.pad)
    for i in range(4):
        x = batch["transcript"][i, 1 : int(batch["transcript_lengths"][i]) - 1].tolist()  # no <en>, no </s>
        y = batch["target"][i, 1 : int(batch["target_lengths"][i])].tolist()  # no <de>, with </s>
        row = [t for t in target[i].tolist() if t != vocab.pad]
        assert row == [asr] + x + [ast] + y
        assert prev[i, : len(row)].tolist() == [vocab.eos] + row[:-1]
        assert prev[i, len(row) :].eq(vocab.pad).all()


def test_output_splits_into_transcript_and_translation_exactly(corpus):
    root, vocab, datasets = corpus
    model = build_model({"arch": "costt", **TINY}, vocab)
    batch = _batch(datasets, "triplet")
    target, _ = consecutive_target(batch, vocab.tag("asr"), vocab.tag("ast"), vocab.eos, vocab.pad)
    for i in range(4):
        hyp = [t for t in target[i].tolist() if t not in (vocab.pad, vocab.eos)]  # as search returns it
        texts = model.output_texts(hyp, vocab, get_task("st"))
        assert texts == {
            "transcript": vocab.decode(batch["transcript"][i].tolist()),
            "translation": vocab.decode(batch["target"][i].tolist()),
        }
    rows = [line.split("\t") for line in (root / "train.tsv").read_text().splitlines()[1:5]]
    header = (root / "train.tsv").read_text().splitlines()[0].split("\t")
    for i, row in enumerate(rows):
        record = dict(zip(header, row))
        hyp = [t for t in target[i].tolist() if t not in (vocab.pad, vocab.eos)]
        texts = model.output_texts(hyp, vocab, get_task("st"))
        assert texts == {"transcript": record["src_text"], "translation": record["tgt_text"]}
    # no <ast> (the length limit ended it): all transcript, empty translation
    assert model.output_texts([vocab.tag("asr")] + vocab.encode("the cat"), vocab, get_task("st")) == {
        "transcript": "the cat",
        "translation": "",
    }


def test_search_may_not_end_before_ast():
    asr, ast, eos, v = 4, 5, 2, 8
    constraint = ConsecutiveConstraint(asr=asr, ast=ast, eos=eos)
    tokens = torch.tensor([[eos, asr, 7], [eos, asr, ast]])
    lp = constraint(torch.zeros(2, v), SearchStep(step=2, tokens=tokens, raw_eos=torch.zeros(2)))
    assert lp[0, eos] == -math.inf and lp[0, ast] == 0  # before <ast>: no </s>
    assert lp[1, eos] == 0 and lp[1, ast] == -math.inf  # after it: </s> allowed, no second <ast>
    assert lp[:, asr].eq(-math.inf).all() and lp[:, 7].eq(0).all()
    first = constraint(torch.zeros(2, v), SearchStep(step=0, tokens=tokens[:, :1], raw_eos=torch.zeros(2)))
    assert first.eq(0).all()  # the forced prefix step is left to ForcePrefix


def test_untrained_model_never_ends_before_ast(corpus, monkeypatch):
    _, vocab, datasets = corpus
    torch.manual_seed(1)
    model = build_model({"arch": "costt", **TINY}, vocab).eval()
    step = model.decode_step

    def eager_to_end(tokens, enc, cache):  # </s> the most likely token everywhere: the constraint must hold
        lp, cache = step(tokens, enc, cache)
        lp[:, vocab.eos] += 50.0
        return lp, cache

    monkeypatch.setattr(model, "decode_step", eager_to_end)
    batch = _batch(datasets, "st", 3)
    results = beam_search(model, batch, beam=3, max_len_b=12, prefix=model.decode_prefix(batch))
    for nbest in results:  # it writes <ast> before </s>, or runs to the length limit
        tokens = nbest[0].tokens
        assert tokens[0] == vocab.tag("asr") and (vocab.tag("ast") in tokens or len(tokens) == 12)
    monkeypatch.setattr(model, "logit_processors", lambda batch: [])
    unconstrained = beam_search(model, batch, beam=3, max_len_b=12, prefix=model.decode_prefix(batch))
    assert [nbest[0].tokens for nbest in unconstrained] == [[vocab.tag("asr")]] * 3  # </s> right after <asr>


@pytest.mark.parametrize("extra", [{}, {"shrink": "average", "front_end": "conv2d"}, {"shrink": "none"}])
def test_padded_batch_equals_each_utterance_alone(corpus, extra):
    _, vocab, datasets = corpus
    torch.manual_seed(0)
    model = build_model({"arch": "costt", **TINY, **extra}, vocab).eval()
    with torch.no_grad():  # a CTC head that emits runs of blank, 7 and 9 (by the sign of two features)
        head = model.front.ctc_head
        head.weight.zero_(), head.bias.zero_()
        head.weight[vocab.bos, 0], head.weight[7, 0], head.weight[9, 1] = 10.0, -10.0, 15.0
    batch = _batch(datasets, "st", 4)
    with torch.no_grad():
        enc = model.encode(batch)
        lengths = (~enc["memory_padding_mask"]).sum(1)
        assert lengths.tolist() == enc["memory_lengths"].tolist() and int(lengths.min()) >= 1
        if extra.get("shrink") != "none":
            assert (lengths < enc["acoustic_lengths"]).any()
        for i in range(4):
            alone = model.encode(datasets["st"].collate([datasets["st"][i]]))
            n = int(lengths[i])
            assert alone["memory"].size(1) == n
            assert torch.allclose(enc["memory"][i, :n], alone["memory"][0], atol=1e-5)


def test_losses_per_task_and_their_weights(corpus):
    _, vocab, datasets = corpus
    torch.manual_seed(0)
    model = build_model({"arch": "costt", **TINY, "ctc_weight": 0.3, "ce_weight": 0.7}, vocab).eval()
    out = model(_batch(datasets, "triplet"))
    logs = out["logs"]
    assert math.isclose(out["loss"].item(), 0.7 * logs["st_loss"] + 0.3 * logs["ctc_loss"], rel_tol=1e-5)
    assert set(model(_batch(datasets, "asr"))["logs"]) >= {"ctc_loss"}
    assert "ctc_loss" not in model(_batch(datasets, "mt"))["logs"]
    with pytest.raises(Exception, match="no transcript"):
        model(_batch(datasets, "st"))


def _teacher(tmp_path: Path, spm: Path) -> Path:
    """A COSTT model's MT side as the LUT teacher, written as a speechxl checkpoint."""
    vocab = Vocab.load(spm)
    torch.manual_seed(5)
    teacher = build_model({"arch": "costt", **TINY}, vocab)
    ckpt.write_checkpoint(
        tmp_path / "teacher",
        model_state=teacher.state_dict(),
        config={"model": teacher.checkpoint_config(), "data": {}},
        vocab_files=[spm],
    )
    return tmp_path / "teacher"


def test_lut_teacher_is_frozen_and_never_in_the_checkpoint(corpus, tmp_path):
    root, vocab, datasets = corpus
    teacher_dir = _teacher(tmp_path, root / "spm.model")
    torch.manual_seed(0)
    alone = build_model({"arch": "lut", **TINY}, vocab)
    torch.manual_seed(0)
    model = build_model({"arch": "lut", **TINY, "teacher_path": str(teacher_dir)}, vocab)
    assert model.teacher is not None
    assert sorted(model.state_dict()) == sorted(alone.state_dict())
    assert not any(k.startswith("teacher") for k in model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in alone.parameters())
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    out = model(_batch(datasets, "triplet"))
    out["loss"].backward()
    logs = out["logs"]
    assert logs["mse_loss"] > 0
    assert math.isclose(
        out["loss"].item(), 0.5 * logs["ctc_loss"] + 0.05 * logs["mse_loss"] + 0.45 * logs["st_loss"], rel_tol=1e-5
    )
    assert all(p.grad is None for p in model.teacher.parameters())
    assert (
        model.semantic_attn.in_proj_weight.grad is not None
        if hasattr(model.semantic_attn, "in_proj_weight")
        else model.semantic_attn.q_proj_weight.grad is not None
    )
    assert all(torch.equal(before[k], v) for k, v in model.teacher.state_dict().items())
    assert model.checkpoint_config()["teacher_path"] == ""
    with pytest.raises(TrainingError, match="teacher_path"):
        alone(_batch(datasets, "triplet"))


# ---------------------------------------------------------------------------------------------- end to end


def _prep(synth_root: Path, out: Path) -> Path:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    subprocess.run(
        [
            "speechxl",
            "prep",
            "mustc",
            "--root",
            str(synth_root),
            "--lang",
            "de",
            "--out",
            str(out),
            "--vocab-size",
            "300",
            "--ext-mt",
            str(synth_root / "ext_mt"),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def synth_data(synth_mustc, tmp_path_factory):
    return _prep(synth_mustc, tmp_path_factory.mktemp("costt_synth") / "en-de")


def _config(data: Path, run_dir: Path, model: dict, stages: list) -> dict:
    return {
        "run_dir": str(run_dir),
        "model": model,
        "data": {
            "manifest_dir": str(data),
            "features": "fbank",
            "specaugment": "costt",
            "tasks": ["triplet"],
            "ext_mt_split": "ext_mt",
            "max_tokens": 3000,
            "max_sentences": 8,
            "cache_features": True,
        },
        "train": {
            "seed": 1,
            "lr": 3e-3,
            "warmup_updates": 2,
            "device": "cpu",
            "log_every": 1,
            "validate_every": 0,
            "save_every": 0,
            "keep_last": 1,
            "keep_best": 1,
            "valid_beam": 1,
            "valid_max_sentences": 2,
            "label_smoothing": 0.1,
        },
        "stages": stages,
    }


COSTT_STAGES = [  # the three steps of the paper, each two updates
    {"name": "mt_pretrain", "tasks": {"ext_mt": 1.0}, "max_update": 2, "trainable": {"freeze": ["front"]}},
    {"name": "ctc", "tasks": {"asr": 1.0}, "max_update": 2, "trainable": {"only": ["front"]}, "reset_optimizer": True},
    {"name": "st", "tasks": {"triplet": 1.0}, "max_update": 2, "reset_optimizer": True},
]


def _translate_and_check(run_dir: Path, data: Path, out: Path) -> dict:
    score = translate(
        run_dir / "checkpoints" / "last",
        out=out,
        manifest=data / "tst-COMMON.tsv",
        options=DecodeOptions(beam=2, max_len_b=10),
    )
    assert len((out / "hyp.txt").read_text(encoding="utf-8").splitlines()) == 8
    assert isinstance(score["bleu"], float) and isinstance(score["chrf"], float)
    return score


def test_costt_trains_decodes_and_scores_end_to_end(synth_data, tmp_path):
    cfg = config_from_dict(_config(synth_data, tmp_path / "run", {"arch": "costt", **TINY}, COSTT_STAGES))
    train(cfg)
    score = _translate_and_check(tmp_path / "run", synth_data, tmp_path / "decode")
    # both outputs: the translation in hyp.txt, the transcript in hyp.transcript.txt, WER in score.json
    assert len((tmp_path / "decode" / "hyp.transcript.txt").read_text(encoding="utf-8").splitlines()) == 8
    assert isinstance(score["transcript"]["wer"], float)


def test_lut_trains_decodes_and_scores_end_to_end_without_its_teacher(synth_data, tmp_path):
    teacher_dir = _teacher(tmp_path, synth_data / "spm.model")
    model = {"arch": "lut", **TINY, "teacher_path": str(teacher_dir)}
    stages = [{"name": "st", "tasks": {"triplet": 1.0}, "max_update": 3}]
    train(config_from_dict(_config(synth_data, tmp_path / "run", model, stages)))
    last = tmp_path / "run" / "checkpoints" / "last"
    assert ckpt.load_config_dict(last)["model"]["teacher_path"] == ""
    weights = ckpt.load_weights(last / ckpt.MODEL_FILE)
    assert weights and not any("teacher" in k for k in weights)
    teacher_dir.rename(tmp_path / "gone")  # translate must not need the teacher
    _translate_and_check(tmp_path / "run", synth_data, tmp_path / "decode")


@pytest.mark.slow  # ~40 s alone, minutes on a loaded machine: prep, three `speechxl train` runs, decode, score
def test_mustc_recipe_runs_costt_with_its_three_steps(synth_mustc, tmp_path):
    from test_recipes import run_recipe  # the recipes as a user runs them (bash + speechxl commands)

    from speechxl.train.logs import read_log

    data, exp = tmp_path / "data", tmp_path / "exp"
    run_recipe(
        "mustc",
        "--method",
        "costt",
        "--root",
        synth_mustc,
        "--lang",
        "de",
        "--ext-mt",
        synth_mustc / "ext_mt",
        "--conf",
        Path(__file__).parents[1] / "recipes/mustc/conf/costt_tiny.yaml",
        "--data",
        data,
        "--exp",
        exp,
        "--vocab-size",
        300,
        "--avg-last",
        2,
        "--max-len-b",
        8,
        "--stop-stage",
        5,
    )
    records = [r for r in read_log(exp) if r["type"] == "train"]
    assert [r["stage"] for r in records] == ["mt_pretrain"] * 2 + ["ctc"] * 2 + ["st"] * 3
    decode = exp / "decode_tst-COMMON"
    assert len((decode / "hyp.txt").read_text(encoding="utf-8").splitlines()) == 8
    assert len((decode / "hyp.transcript.txt").read_text(encoding="utf-8").splitlines()) == 8
    score = json.loads((decode / "score.json").read_text(encoding="utf-8"))
    assert isinstance(score["bleu"], float) and isinstance(score["transcript"]["wer"], float)
