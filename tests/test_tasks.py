"""The task table: adding a task is one entry plus, where a model's defaults do not fit, that model's code.

A toy `copy` task (read the transcript, write it back) is added with one `register_task`; XSTNet trains it
through the shared dataset, batching, stages, validation (WER, its output's metric) and `speechxl translate`,
with no other change anywhere.
"""

from __future__ import annotations

import json

import pytest
from tiny_run import make_corpus, tiny_config

from speechxl import checkpoint as ckpt
from speechxl.config import config_from_dict, parse_stages
from speechxl.data.manifest import read_manifest
from speechxl.inference.translate import translate
from speechxl.tasks import TASKS, Task, decoded_task, get_task, register_task
from speechxl.train.logs import read_log
from speechxl.train.loop import train

COPY = Task(
    "copy",
    fields=("src_text",),
    budget="tokens",
    encoder_input="text",
    decoder_target="transcript",
    output="transcript",
)
TINY_XSTNET = {
    "arch": "xstnet",
    "size": "tiny",
    "dim": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "conv_channels": 32,
    "dropout": 0.0,
}


@pytest.fixture
def copy_task():
    register_task(COPY)
    yield COPY
    del TASKS["copy"]


def test_the_builtin_tasks_say_what_they_read_learn_and_score():
    st, asr, mt, triplet = (get_task(name) for name in ("st", "asr", "mt", "triplet"))
    assert (st.fields, st.budget, st.encoder_input, st.decoder_target) == (
        ("audio", "tgt_text"),
        "audio",
        "audio",
        "target",
    )
    assert (asr.decoder_target, asr.prefix_lang, asr.reference, asr.metrics) == (
        "transcript",
        "src_lang",
        "src_text",
        ("wer",),
    )
    assert (mt.encoder_input, mt.budget, mt.metrics) == ("text", "tokens", ("bleu", "chrf"))
    assert triplet.texts == ("transcript", "target") and st.texts == ("target",)
    assert decoded_task(["asr", "mt", "triplet", "st"]).name == "st"
    assert decoded_task(["ext_mt"]).name == "mt" and decoded_task(["asr"]).name == "asr"
    with pytest.raises(ValueError, match="budget must be one of"):
        register_task(
            Task("bad", fields=(), budget="seconds", encoder_input="audio", decoder_target="target", output=None)
        )


def test_a_new_task_is_one_entry(tmp_path, copy_task):
    corpus = make_corpus(tmp_path / "corpus", n_train=8, n_dev=3)
    (stage,) = parse_stages([{"name": "copying", "tasks": {"copy": 1.0}}], "conf.yaml")  # stages know it too
    assert stage.tasks == {"copy": 1.0}
    config = tiny_config(corpus, tmp_path / "run", max_update=150, lr=5e-3, validate_every=0, save_every=0)
    config["model"] = dict(TINY_XSTNET)
    config["data"].update(tasks=["copy"], features="wave")
    state = train(config_from_dict(config))
    assert state.num_updates == 150
    (valid,) = [r for r in read_log(tmp_path / "run") if r["type"] == "valid"]
    assert "copy_loss" in valid and "wer" in valid and "bleu" not in valid  # its output's metric
    last = tmp_path / "run" / "checkpoints" / "last"
    # best_metric auto: the decoded task's first metric, WER, where lower is better
    assert ckpt.load_metrics(last)["best_metric"] == {"name": "wer", "higher_is_better": False}

    result = translate(last, manifest=corpus / "dev.tsv", task="copy", out=tmp_path / "decode")
    rows = read_manifest(corpus / "dev.tsv")
    assert (tmp_path / "decode" / "ref.txt").read_text().splitlines() == [r["src_text"] for r in rows]
    assert len((tmp_path / "decode" / "hyp.txt").read_text().splitlines()) == len(rows)
    assert result["wer"] == json.loads((tmp_path / "decode" / "score.json").read_text())["wer"]
    assert result["wer"] < 100.0  # it learned something of copying
