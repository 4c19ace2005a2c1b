"""Chimera: the shared semantic memory (slots see only the encoder states, never each other or padding), the
three contrastive losses against hand computations, the triplet loss and its ramp, the recipe end to end on
SynthST at a tiny size, and the MT -> triplet stage switch resumed exactly after an interruption."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from test_recipes import RECIPES, run_recipe, tiny_w2v
from test_train_stages import corpus, one_thread, same, train_records, w2v_dir, weights  # noqa: F401 (fixtures)
from tiny_run import make_corpus

from speechxl import checkpoint as ckpt
from speechxl.config import config_from_dict
from speechxl.data.batching import FeatureConfig, load_datasets
from speechxl.data.vocab import Vocab
from speechxl.losses import batch_contrastive_loss, sentence_contrastive_loss, slot_contrastive_loss
from speechxl.models import build_model
from speechxl.modules.memory import SemanticMemory
from speechxl.train.logs import read_log
from speechxl.train.loop import train

# --------------------------------------------------------------------------------------------------- memory


def tiny_memory(**kw) -> SemanticMemory:
    torch.manual_seed(0)
    return SemanticMemory(5, 16, 2, 32, 3, dropout=0.1, attention_dropout=0.1, **kw).eval()


def test_padded_batch_gives_each_utterance_its_own_memory():
    memory = tiny_memory()
    torch.manual_seed(1)
    lengths = [7, 3, 5]
    alone = [torch.randn(1, n, 16) for n in lengths]
    states = torch.zeros(3, 7, 16)
    states[:, :, :] = 100.0  # whatever sits in the padding must not matter
    for i, x in enumerate(alone):
        states[i, : lengths[i]] = x[0]
    padding = torch.arange(7)[None, :] >= torch.tensor(lengths)[:, None]
    batched = memory(states, padding)
    assert batched.shape == (3, 5, 16)
    for i, x in enumerate(alone):
        torch.testing.assert_close(batched[i], memory(x)[0], atol=1e-5, rtol=0)
    # the release's behaviour (mask_padding=False): the slots read the padding too
    faithful = tiny_memory(mask_padding=False)
    assert (faithful(states, padding)[1] - faithful(alone[1])[0]).abs().max() > 1e-2


def test_slots_never_see_each_other():
    memory = tiny_memory()
    states = torch.randn(2, 6, 16)
    before = memory(states)
    with torch.no_grad():
        memory.queries[2] += torch.randn(16)
    after = memory(states)
    others = [0, 1, 3, 4]
    torch.testing.assert_close(after[:, others], before[:, others], atol=0, rtol=0)
    assert (after[:, 2] - before[:, 2]).abs().max() > 1e-3


def test_memory_layer_is_the_release_computation():
    """One layer equals a pre-norm Transformer layer over cat(H, Q) whose attention sees only H (the release)."""
    memory = tiny_memory()
    layer = memory.layers[0]
    h, q = torch.randn(2, 6, 16), torch.randn(2, 5, 16)
    x = torch.cat([h, q], dim=1)
    n = layer.attn_norm(x)
    heads, hd = 2, 8

    def split(t):
        return t.view(2, -1, heads, hd).transpose(1, 2)

    a = layer.attn
    scores = split(a.q_proj(n)) @ split(a.k_proj(n)).transpose(-1, -2) / math.sqrt(hd)
    scores[..., 6:] = float("-inf")  # the release's mask: no position attends to the query slots
    out = a.out_proj((scores.softmax(-1) @ split(a.v_proj(n))).transpose(1, 2).reshape(2, 11, 16))
    x = x + out
    x = x + layer.ffn(layer.ffn_norm(x))
    torch.testing.assert_close(layer(q, h, None), x[:, 6:], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- contrastive


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_slot_contrastive_by_hand():
    torch.manual_seed(0)
    audio, text = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    tau = 0.1
    expected = []
    for b in range(2):
        total = 0.0
        for j in range(3):
            logits = [cos(audio[b, j], text[b, k]) / tau for k in range(3)]
            total += -(logits[j] - math.log(sum(math.exp(v) for v in logits)))
        expected.append(total / 3)
    torch.testing.assert_close(slot_contrastive_loss(audio, text, tau), torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_batch_contrastive_by_hand():
    torch.manual_seed(1)
    audio, text = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    tau = 0.5
    expected = []
    for b in range(3):
        total = 0.0
        for j in range(2):
            a2t = [cos(audio[b, j], text[c, j]) / tau for c in range(3)]
            t2a = [cos(audio[c, j], text[b, j]) / tau for c in range(3)]
            for logits in (a2t, t2a):
                total += -(logits[b] - math.log(sum(math.exp(v) for v in logits)))
        expected.append(total / 2)
    torch.testing.assert_close(batch_contrastive_loss(audio, text, tau), torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_sentence_contrastive_by_hand():
    torch.manual_seed(2)
    audio, text = torch.randn(3, 5, 4), torch.randn(3, 4, 4)
    audio_lengths, text_lengths = [5, 2, 4], [3, 4, 1]
    audio_pad = torch.arange(5)[None, :] >= torch.tensor(audio_lengths)[:, None]
    text_pad = torch.arange(4)[None, :] >= torch.tensor(text_lengths)[:, None]
    pooled_a = [audio[i, :n].mean(0) for i, n in enumerate(audio_lengths)]
    pooled_t = [text[i, :n].mean(0) for i, n in enumerate(text_lengths)]
    tau = 0.02
    expected = []
    for b in range(3):  # the text of b picks its audio among the batch's (ConST: log_softmax over dim 0)
        logits = [cos(pooled_a[i], pooled_t[b]) / tau for i in range(3)]
        top = max(logits)
        expected.append(-(logits[b] - top - math.log(sum(math.exp(v - top) for v in logits))))
    got = sentence_contrastive_loss(audio, audio_pad, text, text_pad, tau)
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- the model

TINY = {
    "arch": "chimera",
    "size": "tiny",
    "memory_slots": 4,
    "memory_layers": 2,
    "conv_channels": 32,
    "dim": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_heads": 2,
    "decoder_heads": 2,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("chimera_corpus"), n_train=4, n_dev=1)


def batches(corpus: Path, rows):  # noqa: F811 (a path, not the fixture)
    vocab = Vocab.load(corpus / "spm.model")
    data = load_datasets(corpus / "train.tsv", ("st", "mt", "triplet"), vocab, features=FeatureConfig(features="wave"))
    return vocab, {task: data[task].collate([data[task][i] for i in rows]) for task in data}


@pytest.mark.parametrize("kind", ["slot", "batch", "sentence", "none"])
def test_triplet_is_st_plus_mt_plus_the_scaled_contrastive_loss(small_corpus, kind):
    vocab, b = batches(small_corpus, [0, 1, 2])
    torch.manual_seed(0)
    model = build_model({**TINY, "contrastive": kind, "loss_weights": [1.0, 0.5, 2.0]}, vocab).eval()
    st, mt, triplet = model(b["st"]), model(b["mt"]), model(b["triplet"])
    n = st["sample_size"]
    assert triplet["sample_size"] == mt["sample_size"] == n == int(b["st"]["target"][:, 1:].ne(vocab.pad).sum())
    assert mt["loss"].item() == pytest.approx(0.5 * mt["logs"]["mt_loss"], rel=1e-6)  # weights apply to any batch
    ce = st["logs"]["st_loss"] + 0.5 * mt["logs"]["mt_loss"]
    if kind == "none":
        assert "ctr_loss" not in triplet["logs"]
        assert triplet["loss"].item() == pytest.approx(ce, rel=1e-5)
        return
    ctr = triplet["logs"]["ctr_loss"]
    assert triplet["logs"]["ctr_ntokens"] == 3 and ctr > 0
    # divided by the sample size, the contrastive term is the weighted per-utterance mean
    assert triplet["loss"].item() / n == pytest.approx(ce / n + 2.0 * ctr / 3, rel=1e-5)


def test_contrastive_ramp_and_temperatures(small_corpus):
    vocab, _ = batches(small_corpus, [0])
    model = build_model({**TINY, "contrastive_ramp": 4, "contrastive_ramp_start": 10}, vocab)
    weights = []
    for update in (0, 9, 10, 11, 13, 20):
        model.set_update(update)
        weights.append(model.contrastive_weight())
    assert weights == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert model.config.contrastive_temperature == 0.1
    assert build_model({**TINY, "contrastive": "sentence"}, vocab).config.contrastive_temperature == 0.02
    with pytest.raises(Exception, match="contrastive 'token'"):
        build_model({**TINY, "contrastive": "token"}, vocab)


def test_padded_audio_batch_encodes_each_utterance_alone(small_corpus):
    vocab, b = batches(small_corpus, [0, 1, 2, 3])
    torch.manual_seed(0)
    model = build_model(TINY, vocab).eval()
    with torch.no_grad():
        memory = model.encode_audio(b["st"])["memory"]
        assert memory.shape[1] == 4  # M slots whatever the input length
        for i in range(4):
            _, one = batches(small_corpus, [i])
            torch.testing.assert_close(memory[i], model.encode_audio(one["st"])["memory"][0], atol=1e-5, rtol=0)


def test_probe_measures_the_release_padding_change(small_corpus):
    """tools/probe_chimera_memory.py: the release's unmasked padding changes exactly the padded utterances' memory."""
    tool = Path(__file__).parents[1] / "tools" / "probe_chimera_memory.py"
    spec = importlib.util.spec_from_file_location("probe", tool)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    vocab, b = batches(small_corpus, [0, 1, 2, 3])
    torch.manual_seed(0)
    model = build_model(TINY, vocab).eval()
    lengths = b["st"]["audio_lengths"]
    with torch.no_grad():
        change, share = probe.release_padding_change(model, b["st"], model.encode_source("audio", b["st"]))
        assert len(change) == len(share) == int((lengths < lengths.max()).sum())  # every utterance but the longest
        assert all(c > 1e-4 for c in change) and all(0 < s < 1 for s in share)
        assert model.memory.mask_padding  # restored
        _, one = batches(small_corpus, [0])
        alone = model.encode_source("audio", one["st"])
        assert probe.release_padding_change(model, one["st"], alone) == ([], [])  # no padding, nothing to change
    # ConST's pooled view, by hand: utterance 0 pools [3, 4] over its one real position, utterance 1 [0, 2]
    inputs = torch.tensor([[[3.0, 4.0], [9.0, 9.0]], [[0.0, 1.0], [0.0, 3.0]]])
    norm, cos = probe.pooled_spread(inputs, torch.tensor([[False, True], [False, False]]))
    assert norm == pytest.approx((5.0 + 2.0) / 2) and cos == pytest.approx(4.0 / 5.0)


# ---------------------------------------------------------------------------------------------- end to end


def test_mustc_recipe_trains_averages_decodes_and_scores_chimera(synth_mustc, tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    run_recipe(
        "mustc",
        "--method",
        "chimera",
        "--root",
        synth_mustc,
        "--lang",
        "de",
        "--ext-mt",
        synth_mustc / "ext_mt",
        "--w2v",
        tiny_w2v(tmp_path / "w2v"),
        "--conf",
        RECIPES / "mustc/conf/chimera_tiny.yaml",
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
        "--",
        "train.valid_max_sentences=2",
    )
    records = [r for r in read_log(exp) if r["type"] == "train"]
    assert [r["stage"] for r in records] == ["mt_pretrain"] * 2 + ["triplet"] * 3
    assert all("ctr_loss" not in r for r in records[:2]) and all("ctr_loss" in r for r in records[2:])
    valid = [r for r in read_log(exp) if r["type"] == "valid"]
    assert valid[-1]["best_metric"]["name"] == "st_loss"
    averaged = ckpt.load_metrics(exp / "avg")["averaged_from"]
    assert len(averaged) == 2  # the 2 checkpoints around the best by dev ST loss
    assert ckpt.load_config_dict(exp / "avg")["model"]["arch"] == "chimera"
    assert len((exp / "decode_tst-COMMON" / "hyp.txt").read_text(encoding="utf-8").splitlines()) == 8
    score = json.loads((exp / "score.json").read_text(encoding="utf-8"))
    assert isinstance(score["bleu"], float) and "tok:13a" in score["signature"]


# ---------------------------------------------------------------------------------------------- stage switch

MT_UPDATES, TRIPLET_UPDATES = 2, 3
STAGES = [
    {
        "name": "mt_pretrain",
        "tasks": {"mt": 1.0, "ext_mt": 1.0},
        "max_update": MT_UPDATES,
        "lr": 3e-3,
        "best_metric": "mt_loss",
        "trainable": {"freeze": ["acoustic", "subsampler"]},
    },
    {
        "name": "triplet",
        "tasks": {"triplet": 1.0},
        "max_update": TRIPLET_UPDATES,
        "reset_optimizer": True,
        "warmup_updates": 2,
    },
]


def chimera_config(corpus: Path, run_dir: Path, w2v: Path) -> dict:  # noqa: F811
    return {
        "run_dir": str(run_dir),
        "model": {**TINY, "w2v_path": str(w2v), "contrastive_ramp": 2, "contrastive_ramp_start": MT_UPDATES},
        "data": {
            "manifest_dir": str(corpus),
            "features": "wave",
            "tasks": ["triplet"],
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
            "best_metric": "st_loss",
        },
        "stages": STAGES,
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, w2v_dir) -> Path:  # noqa: F811 (fixtures from test_train_stages)
    run = tmp_path_factory.mktemp("chimera_reference") / "run"
    assert train(config_from_dict(chimera_config(corpus, run, w2v_dir))).num_updates == MT_UPDATES + TRIPLET_UPDATES
    return run


def test_stages_mt_then_triplet(reference):
    records = train_records(reference)
    assert [r["stage"] for r in records] == ["mt_pretrain"] * MT_UPDATES + ["triplet"] * TRIPLET_UPDATES
    assert all("mt_loss" in r and "st_loss" not in r for r in records[:MT_UPDATES])
    assert all({"st_loss", "mt_loss", "ctr_loss"} <= set(r) for r in records[MT_UPDATES:])
    assert same(weights(reference, 1), weights(reference, MT_UPDATES), "acoustic")
    assert not same(weights(reference, 1), weights(reference, MT_UPDATES), "memory")
    valid = [r for r in read_log(reference) if r["type"] == "valid"]
    assert valid[-1]["best_metric"] == {"name": "st_loss", "higher_is_better": False}


@pytest.mark.parametrize("stop_at", [MT_UPDATES, MT_UPDATES + 1], ids=["at_the_boundary", "inside_triplet"])
def test_stage_switch_resumes_exactly(reference, corpus, w2v_dir, tmp_path, stop_at):  # noqa: F811
    run = tmp_path / "run"
    config = chimera_config(corpus, run, w2v_dir)
    train(config_from_dict({**config, "train": {**config["train"], "max_update": stop_at}}))
    assert ckpt.latest_checkpoint(run).name == f"ckpt-{stop_at}"
    assert train(config_from_dict(config)).num_updates == MT_UPDATES + TRIPLET_UPDATES
    assert train_records(run) == train_records(reference)
    final, expected = weights(run, MT_UPDATES + TRIPLET_UPDATES), weights(reference, MT_UPDATES + TRIPLET_UPDATES)
    assert all(torch.equal(final[k], expected[k]) for k in expected)


@pytest.mark.parametrize("corpus", ["mustc", "covost2"])
def test_paper_configs(corpus):  # noqa: F811
    """chimera_expand / chimera_base carry METHODS.md's Chimera hyper-parameters."""
    from speechxl.config import load_config, parse_stages

    for variant in ("base", "expand"):
        path = RECIPES / corpus / "conf" / f"chimera_{variant}.yaml"
        cfg = load_config(path)
        model = cfg.model
        assert (model["arch"], model["size"], model["memory_slots"], model["memory_layers"]) == (
            "chimera",
            "base",
            64,
            3,
        )
        assert (model["contrastive"], model["contrastive_temperature"], model["loss_weights"]) == (
            "slot",
            0.1,
            [1, 1, 1],
        )
        assert cfg.train.best_metric == "st_loss"
        mt, triplet = parse_stages(cfg.stages, str(path))
        assert (mt.train_overrides["lr"], mt.train_overrides["warmup_updates"]) == (5e-4, 4000)
        assert (cfg.train.lr, cfg.train.warmup_updates, triplet.max_update) == (1e-4, 4000, 150_000)
        assert triplet.reset_optimizer and triplet.tasks == {"triplet": 1.0}
        assert model["contrastive_ramp_start"] == mt.max_update
        if variant == "expand":
            assert mt.max_update == 500_000 and mt.tasks == {"ext_mt": 1.0, "mt": 1.0}
        else:
            assert "ext_mt" not in mt.tasks and not cfg.data.ext_mt_split


def test_synth_chimera_recipe_bad_rows():
    done = run_recipe("synth", "--rows", "chimera nope", check=False, script="chimera.sh")
    assert done.returncode == 2 and "unknown row nope" in done.stderr, done.stderr
