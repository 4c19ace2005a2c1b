"""The MuST-C and CoVoST 2 XSTNet recipes, run as a user runs them (bash, `speechxl` commands) on the SynthST
fixtures with the tiny config, and their paper configs checked against docs/methods.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Model

from speechxl import checkpoint as ckpt
from speechxl.config import load_config, parse_stages
from speechxl.data.manifest import read_manifest
from speechxl.modules.wav2vec2 import wav2vec2_config
from speechxl.train.logs import read_log

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
MT_UPDATES, MULTITASK_UPDATES = 2, 3  # the stages of conf/xstnet_tiny.yaml


def run_recipe(corpus: str, *args: object, check: bool = True, script: str = "run.sh") -> subprocess.CompletedProcess:
    # `speechxl` and `python3` of this interpreter's environment, one thread per process on a shared CPU
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", str(RECIPES / corpus / script), *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def tiny_w2v(directory: Path) -> Path:
    """A wav2vec2 as `speechxl convert fairseq-wav2vec2` writes it (an HF directory), tiny."""
    torch.manual_seed(0)
    Wav2Vec2Model(
        wav2vec2_config(
            "tiny", conv_dim=[32] * 7, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(directory)
    return directory


def assert_every_stage_ran(
    data: Path, exp: Path, *, splits: list[str], test_split: str, pair: str, n_test: int, stdout: str
) -> None:
    # 0 prep: manifests (with the external MT) and the vocabulary
    for split in [*splits, "ext_mt"]:
        assert read_manifest(data / f"{split}.tsv")
    assert (data / "spm.model").is_file()
    # 1-2 one run through both training stages; stage 1's last checkpoint belongs to stage 1
    records = [r for r in read_log(exp) if r["type"] == "train"]
    assert [(r["update"], r["stage"]) for r in records] == (
        [(u, "mt_pretrain") for u in range(1, MT_UPDATES + 1)]
        + [(u, "multitask") for u in range(MT_UPDATES + 1, MT_UPDATES + MULTITASK_UPDATES + 1)]
    )
    boundary = exp / "checkpoints" / f"ckpt-{MT_UPDATES}"
    assert ckpt.load_trainer_state(boundary)["stage"] == 0
    assert ckpt.load_trainer_state(exp / "checkpoints" / "last")["stage"] == 1
    # 3 average of the last 2 checkpoints, self-contained (no path to the wav2vec2 directory)
    averaged = ckpt.load_metrics(exp / "avg")["averaged_from"]
    assert [Path(p).name for p in averaged] == [
        f"ckpt-{MT_UPDATES + MULTITASK_UPDATES - 1}",
        f"ckpt-{MT_UPDATES + MULTITASK_UPDATES}",
    ]
    assert ckpt.load_config_dict(exp / "avg")["model"]["w2v_path"] == ""
    # 4 hypotheses, 5 score, 6 leaderboard row
    decode = exp / f"decode_{test_split}"
    assert len((decode / "hyp.txt").read_text(encoding="utf-8").splitlines()) == n_test
    score = json.loads((exp / "score.json").read_text(encoding="utf-8"))
    assert isinstance(score["bleu"], float) and "case:mixed" in score["signature"] and "tok:13a" in score["signature"]
    decoded = json.loads((decode / "score.json").read_text(encoding="utf-8"))
    # SynthST, found by prep, is its own corpus: its results never share a table with MuST-C's or CoVoST's
    assert (decoded["corpus"], decoded["split"], decoded["direction"]) == ("synthst", test_split, pair)
    assert decoded["bleu"] == score["bleu"]
    assert f"| **{exp.name}** (ours) |" in stdout  # stage 6 printed the leaderboard with our row
    for png in ("leaderboard.png", "curves.png"):  # ... and wrote both pictures
        assert (exp / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mustc_recipe_runs_every_stage(synth_mustc, tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    done = run_recipe(
        "mustc",
        "--root",
        synth_mustc,
        "--lang",
        "de",
        "--ext-mt",
        synth_mustc / "ext_mt",
        "--w2v",
        tiny_w2v(tmp_path / "w2v"),
        "--conf",
        RECIPES / "mustc/conf/xstnet_tiny.yaml",
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
        "--",
        "train.valid_max_sentences=2",
    )
    assert_every_stage_ran(
        data,
        exp,
        splits=["train", "dev", "tst-COMMON"],
        test_split="tst-COMMON",
        pair="en-de",
        n_test=8,
        stdout=done.stdout,
    )
    run_config = load_config(exp / "config.yaml")  # what `speechxl train` ran with: flags and overrides
    assert run_config.train.valid_max_sentences == 2 and run_config.data.manifest_dir == str(data)
    assert run_config.model["w2v_path"] == str(tmp_path / "w2v")


@pytest.mark.slow
def test_covost2_recipe_runs_every_stage_x_to_en(synth_covost2, tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    done = run_recipe(
        "covost2",
        "--root",
        synth_covost2,
        "--src",
        "de",
        "--tgt",
        "en",
        "--ext-mt",
        synth_covost2 / "ext_mt",
        "--conf",
        RECIPES / "covost2/conf/xstnet_tiny.yaml",
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
        "--jobs",
        2,
    )
    assert_every_stage_ran(
        data, exp, splits=["train", "dev", "test"], test_split="test", pair="de-en", n_test=8, stdout=done.stdout
    )


def test_covost2_recipe_prep_stage(synth_covost2, tmp_path):
    """The fast part of the CoVoST 2 recipe that differs from MuST-C: its prep (mp3 clips, X->En)."""
    data = tmp_path / "data"
    run_recipe(
        "covost2",
        "--root",
        synth_covost2,
        "--src",
        "de",
        "--tgt",
        "en",
        "--ext-mt",
        synth_covost2 / "ext_mt",
        "--data",
        data,
        "--vocab-size",
        300,
        "--jobs",
        2,
        "--stop-stage",
        0,
    )
    rows = read_manifest(data / "test.tsv")
    assert len(rows) == 8 and {(r["src_lang"], r["tgt_lang"]) for r in rows} == {("de", "en")}
    assert all(r["audio"] == "" for r in read_manifest(data / "ext_mt.tsv"))


@pytest.mark.parametrize(
    "corpus, args, message",
    [
        ("mustc", ["--method", "fat", "--lang", "de", "--stage", "2"], "--method fat needs FAT-MLM's checkpoint"),
        ("mustc", ["--method", "nope"], "unknown --method nope"),
        ("mustc", ["--lang", "xx"], "--lang xx is not a MuST-C v1 language"),
        ("mustc", ["--lang", "de", "--stop-stage", "0"], "--root .* is required"),
        ("covost2", ["--src", "fr", "--tgt", "de"], "--src fr --tgt de is not a CoVoST 2 pair"),
        ("covost2", ["--src", "en", "--tgt", "fr"], "--src en --tgt fr is not a CoVoST 2 pair"),
        (
            "covost2",
            ["--method", "lut", "--src", "en", "--tgt", "de", "--stage", "1", "--stop-stage", "1"],
            "--method lut needs its text encoder: -- model.teacher_path=DIR",
        ),
        ("mustc", ["--method", "lut", "--lang", "de", "--stage", "2"], "--method lut needs its text encoder"),
        ("covost2", ["--bogus"], "unknown option --bogus"),
    ],
)
def test_bad_flags_are_clear_errors(corpus, args, message):
    done = run_recipe(corpus, *args, check=False)
    assert done.returncode == 2
    assert re.search(message, done.stderr), done.stderr


@pytest.mark.parametrize("corpus", ["mustc", "covost2"])
def test_paper_configs(corpus):
    """base and expand carry docs/methods.md's XSTNet hyper-parameters; expand keeps external MT at 0.25."""
    for variant in ("base", "expand"):
        path = RECIPES / corpus / "conf" / f"xstnet_{variant}.yaml"
        cfg = load_config(path)
        train, data = cfg.train, cfg.data
        assert (
            train.lr,
            train.warmup_updates,
            train.adam_betas,
            train.clip_norm,
            train.update_freq,
            train.label_smoothing,
        ) == (1e-4, 25000, [0.9, 0.98], 10.0, 2, 0.1)
        assert (data.features, data.max_wave_samples, data.max_tokens) == ("wave", 1_000_000, 2000)
        assert cfg.model["arch"] == "xstnet" and cfg.model["size"] == "base"
        assert train.find_unused_parameters  # MT batches leave the acoustic encoder unused under DDP
        mt_pretrain, multitask = parse_stages(cfg.stages, str(path))
        assert multitask.max_update == 500_000 and multitask.reset_optimizer
        assert not multitask.train_overrides  # the multitask stage runs with train.* as above
        assert mt_pretrain.freeze == ("acoustic", "subsampler")
        if variant == "base":
            assert "ext_mt" not in mt_pretrain.tasks and "ext_mt" not in multitask.tasks and not data.ext_mt_split
        else:
            assert data.ext_mt_split == "ext_mt" and "ext_mt" in mt_pretrain.tasks
            assert multitask.tasks == {"st": 1.0, "asr": 1.0, "mt": 1.0, "ext_mt": 0.25}


def test_synth_ablation_runs_every_stage(tmp_path):
    """recipes/synth/ablation.sh end to end at toy size: both corpora, prep, wav2vec2 pre-training, the three
    variants from pre-trained and random wav2vec2 (expand through both of its stages), decode, the table."""
    data, exp = tmp_path / "data", tmp_path / "exp"
    run_recipe(
        "synth",
        "--train",
        16,
        "--dev",
        4,
        "--test",
        4,
        "--ext-mt",
        40,
        "--unlabelled",
        12,
        "--vocab-size",
        200,
        "--w2v-updates",
        2,
        "--w2v-max-tokens",
        32000,
        "--mt-updates",
        2,
        "--jobs",
        2,
        "--data",
        data,
        "--exp",
        exp,
        "--",
        "train.max_update=4",
        "train.save_every=2",
        "train.valid_max_sentences=2",
        "train.log_every=1",
        "model.encoder_layers=1",
        "model.decoder_layers=1",
        script="ablation.sh",
    )
    # the unlabelled audio never speaks a sentence that dev or tst-COMMON evaluate
    evaluated = {r["src_text"] for split in ("dev", "tst-COMMON") for r in read_manifest(data / f"en-de/{split}.tsv")}
    unlabelled = read_manifest(data / "unlabelled/train.tsv")
    assert unlabelled and not evaluated & {r["src_text"] for r in unlabelled}
    w2v = exp / "w2v_pretrain/checkpoints/last"
    runs = [f"{v}_{i}" for v in ("st", "base", "expand") for i in ("pretrained", "random")]
    for run in runs:
        config = load_config(exp / run / "config.yaml")
        assert config.model.get("w2v_path", "") == (str(w2v.resolve()) if run.endswith("pretrained") else "")
        records = [r for r in read_log(exp / run) if r["type"] == "train"]
        assert records[-1]["update"] == 4
        assert int((exp / run / "train_seconds").read_text()) >= 0
        assert len((exp / run / "decode_tst-COMMON/hyp.txt").read_text(encoding="utf-8").splitlines()) == 4
        probe = json.loads((exp / run / "audio_use.json").read_text(encoding="utf-8"))
        assert probe["tokens"] > 0 and probe["gain"] == pytest.approx(probe["nll_other"] - probe["nll_own"], abs=2e-4)
    expand = [r for r in read_log(exp / "expand_random") if r["type"] == "train"]
    assert [r["stage"] for r in expand] == ["mt_pretrain"] * 2 + ["multitask"] * 2
    table = (exp / "results.md").read_text(encoding="utf-8").splitlines()
    assert [line.split("|")[1:3] for line in table[2:8]] == [
        [f" {name} ", f" {init} "]
        for name in ("(a) ST only", "(b) XSTNet base", "(c) XSTNet expand")
        for init in ("pretrained", "random")
    ]
    assert "4 (2 mt_pretrain + 2 multitask)" in table[6] and "case:mixed" in table[-1]


def test_synth_ablation_bad_flags():
    for args, message in [
        (["--variants", "st nope"], "unknown variant nope"),
        (["--inits", "warm"], "unknown init warm"),
    ]:
        done = run_recipe("synth", *args, check=False, script="ablation.sh")
        assert done.returncode == 2 and message in done.stderr, done.stderr
