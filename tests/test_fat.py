"""FAT-MLM / FAT-ST: masks as configured and never on padding, a padded batch equal to each utterance alone,
exactly the losses each field subset allows, the decoder copied from the encoder, and FAT-MLM -> FAT-ST
trained, decoded and scored end to end on SynthST at a tiny size."""

from __future__ import annotations

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
from speechxl.errors import CheckpointError
from speechxl.inference.decode import DecodeOptions
from speechxl.inference.translate import translate
from speechxl.models import build_model, load_model
from speechxl.models.fat import special_ids
from speechxl.modules.mlm import KEEP, MASK, RANDOM, span_mask, token_mask, utterance_generator
from speechxl.train.loop import train

TINY = {
    "size": "tiny",
    "dim": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_heads": 2,
    "decoder_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "conv_channels": 8,
    "dropout": 0.0,
}
MLM_TASKS = ["mlm_speech", "mlm_asr", "mlm_triplet", "mlm_bitext", "mlm_text", "mt", "triplet", "st"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = make_corpus(tmp_path_factory.mktemp("fat") / "corpus")
    vocab = Vocab.load(root / "spm.model")
    return root, vocab, load_datasets(root / "train.tsv", MLM_TASKS, vocab)


def _batch(datasets, task, indices=range(4)):
    return datasets[task].collate([datasets[task][i] for i in indices])


def _mlm(vocab, **extra):
    torch.manual_seed(0)
    return build_model({"arch": "fat_mlm", **TINY, **extra}, vocab)


# ---------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("length", [7, 20, 33, 100, 257, 1000])
def test_span_mask_masks_whole_spans_at_the_configured_rate(length):
    for seed in range(20):
        mask = span_mask(length, 0.3, 20, utterance_generator(seed, "u"))
        span = min(20, length)
        k = min(max(1, round(0.3 * length / span)), length // span)
        assert int(mask.sum()) == k * span
        # every run of masked frames is a whole number of spans (adjacent spans may touch)
        edges = torch.diff(torch.cat([torch.tensor([0]), mask.int(), torch.tensor([0])])).nonzero().squeeze(1)
        assert all(int(end - start) % span == 0 for start, end in edges.view(-1, 2))


def test_span_mask_rate_over_a_corpus_is_the_ratio():
    masks = [span_mask(n, 0.3, 20, utterance_generator(1, str(n))) for n in range(200, 600)]
    assert abs(sum(int(m.sum()) for m in masks) / sum(len(m) for m in masks) - 0.3) < 0.01


def test_token_mask_is_bert_15_percent_80_10_10_on_maskable_positions_only():
    maskable = torch.rand(20000, generator=torch.Generator().manual_seed(0)) < 0.9
    chosen, action = token_mask(maskable, 0.15, 0.1, 0.1, utterance_generator(1, "u"))
    assert not (chosen & ~maskable).any()
    assert int(chosen.sum()) == round(0.15 * int(maskable.sum()))
    shares = [float((action[chosen] == a).float().mean()) for a in (MASK, RANDOM, KEEP)]
    assert abs(shares[0] - 0.8) < 0.02 and abs(shares[1] - 0.1) < 0.015 and abs(shares[2] - 0.1) < 0.015
    one = token_mask(torch.tensor([False, True, True, False]), 0.15, 0.1, 0.1, utterance_generator(1, "v"))[0]
    assert int(one.sum()) == 1  # at least one token of a short sequence


def test_model_masks_never_touch_padding_or_tags_and_follow_the_seed(corpus):
    _, vocab, datasets = corpus
    model = _mlm(vocab).eval()
    batch = _batch(datasets, "mlm_triplet")
    with torch.no_grad():
        out = model.masked_pass(batch)
        again = model.masked_pass(batch)
    frame_mask = out["speech"]["frame_mask"]
    lengths = batch["audio_lengths"]
    assert not frame_mask[torch.arange(frame_mask.size(1))[None, :] >= lengths[:, None]].any()
    for i, n in enumerate(lengths.tolist()):
        assert abs(int(frame_mask[i].sum()) / n - 0.3) <= 20 / n  # whole 20-frame spans
    assert torch.equal(out["speech"]["masked_input"][frame_mask], torch.zeros_like(batch["audio"][frame_mask]))
    special = special_ids(vocab)
    for key in ("transcript", "target"):
        chosen = out[key]["chosen"]
        assert chosen.any(dim=1).all()  # every sequence has a masked token
        assert not (chosen & special[batch[key]]).any()  # never padding, </s> or language tags
        assert torch.equal(chosen, again[key]["chosen"])  # evaluation: the same masks every time
    assert torch.equal(frame_mask, again["speech"]["frame_mask"])
    model.train()
    model.set_update(5)
    first = model.masked_pass(batch)["speech"]["frame_mask"]
    model.set_update(6)
    assert not torch.equal(first, model.masked_pass(batch)["speech"]["frame_mask"])  # new masks per update
    model.set_update(5)
    assert torch.equal(first, model.masked_pass(batch)["speech"]["frame_mask"])  # ... reproducible from the seed


def test_a_segments_masks_do_not_depend_on_the_other_segments(corpus):
    _, vocab, datasets = corpus
    model = _mlm(vocab).eval()
    with torch.no_grad():
        triplet, bitext = (model.masked_pass(_batch(datasets, task)) for task in ("mlm_triplet", "mlm_bitext"))
    for key in ("transcript", "target"):  # with and without the speech segment: the same text masks
        assert torch.equal(triplet[key]["chosen"], bitext[key]["chosen"])


# ---------------------------------------------------------------------------------------------- the model


def test_padded_batch_equals_each_utterance_alone(corpus):
    _, vocab, datasets = corpus
    model = _mlm(vocab).eval()
    batch = _batch(datasets, "mlm_triplet")
    assert len(set(batch["audio_lengths"].tolist())) > 1 and len(set(batch["transcript_lengths"].tolist())) > 1
    with torch.no_grad():
        together = model.masked_pass(batch)
        logs = model(batch)["logs"]
        sums = {"text_loss": 0.0, "speech_loss": 0.0}
        for i in range(4):
            alone = model.masked_pass(_batch(datasets, "mlm_triplet", [i]))
            n = int(batch["audio_lengths"][i])
            rec = together["speech"]["reconstruction"][i, :n]
            assert torch.allclose(rec, alone["speech"]["reconstruction"][0], atol=1e-5)
            for key in ("transcript", "target"):
                assert torch.equal(together[key]["chosen"][i, : alone[key]["chosen"].size(1)], alone[key]["chosen"][0])
            one = model(_batch(datasets, "mlm_triplet", [i]))["logs"]
            for key in sums:
                sums[key] += one[key]
    for key, value in sums.items():
        assert math.isclose(logs[key], value, rel_tol=1e-4)
    st = build_model({"arch": "fat_st", **TINY}, vocab).eval()
    batch = _batch(datasets, "st")
    with torch.no_grad():
        enc = st.encode(batch)
        for i in range(4):
            alone = st.encode(_batch(datasets, "st", [i]))
            n = alone["memory"].size(1)
            assert torch.allclose(enc["memory"][i, :n], alone["memory"][0], atol=1e-5)
            assert not enc["memory_padding_mask"][i, :n].any() and enc["memory_padding_mask"][i, n:].all()


@pytest.mark.parametrize(
    "task, losses",
    [
        ("mlm_speech", {"speech"}),  # speech only (an unlabelled manifest): ℓ_s
        ("mlm_asr", {"speech", "text"}),  # speech + transcript: ℓ_{s,x}
        ("mlm_triplet", {"speech", "text"}),  # speech + transcript + translation: ℓ_{s,x,y}
        ("mlm_bitext", {"text"}),  # bitext: translation LM
        ("mt", {"text"}),  # external MT arrives as mt batches: the same
        ("mlm_text", {"text"}),  # monolingual text: MLM
    ],
)
def test_each_field_subset_gives_exactly_the_losses_it_allows(corpus, task, losses):
    _, vocab, datasets = corpus
    model = _mlm(vocab).eval()
    batch = _batch(datasets, task)
    out = model(batch)
    logs = out["logs"]
    assert {key[: -len("_loss")] for key in logs if key.endswith("_loss")} == losses | {task}
    with torch.no_grad():
        passed = model.masked_pass(batch)
    segments = {key for key in ("speech", "transcript", "target") if key in passed}
    expected = {"mlm_speech": {"speech"}, "mlm_asr": {"speech", "transcript"}, "mlm_text": {"transcript"}}
    assert segments == expected.get(task, {"transcript", "target"} | ({"speech"} if "speech" in losses else set()))
    text = sum(int(passed[k]["chosen"].sum()) for k in ("transcript", "target") if k in passed)
    frames = int(passed["speech"]["frame_mask"].sum()) if "speech" in passed else 0
    assert logs.get("text_ntokens", 0) == text and logs.get("speech_ntokens", 0) == frames
    assert math.isclose(out["sample_size"], text + 0.1 * frames)  # speech_weight 0.1
    expected_loss = logs.get("text_loss", 0.0) + 0.1 * logs.get("speech_loss", 0.0)
    assert math.isclose(out["loss"].item(), expected_loss, rel_tol=1e-5)


def _mlm_checkpoint(model, vocab_dir: Path, out: Path) -> Path:
    config = {"model": model.checkpoint_config(), "data": {}, "train": {}}
    return ckpt.write_checkpoint(
        out, model_state=model.state_dict(), config=config, vocab_files=[vocab_dir / "spm.model"]
    )


def test_fat_st_decoder_is_a_copy_of_the_mlm_encoder_layers(corpus, tmp_path):
    root, vocab, datasets = corpus
    mlm = _mlm(vocab, encoder_layers=3)
    directory = _mlm_checkpoint(mlm, root, tmp_path / "mlm")
    st = build_model({"arch": "fat_st", **TINY, "encoder_layers": 3, "mlm_checkpoint": str(directory)}, vocab)
    for i in range(2):
        enc, dec = mlm.encoder.layers[i], st.decoder.layers[i]
        for part in ("self_attn", "self_attn_norm", "ffn", "ffn_norm"):
            for (name, theirs), (_, ours) in zip(
                getattr(enc, part).named_parameters(), getattr(dec, part).named_parameters()
            ):
                assert torch.equal(theirs, ours), f"decoder layer {i} {part}.{name}"
    assert torch.equal(st.decoder.final_norm.weight, mlm.encoder.final_norm.weight)
    assert torch.equal(st.embed_tokens.weight, mlm.embed_tokens.weight)  # the one token embedding, tied
    for (name, theirs), (_, ours) in zip(mlm.encoder.named_parameters(), st.encoder.named_parameters()):
        assert torch.equal(theirs, ours), name
    for (name, theirs), (_, ours) in zip(mlm.front.named_parameters(), st.front.named_parameters()):
        assert torch.equal(theirs, ours), name
    # cross-attention is new, and the copies are copies (training the decoder leaves the encoder alone)
    assert not torch.equal(st.decoder.layers[0].cross_attn.q_proj.weight, mlm.encoder.layers[0].self_attn.q_proj.weight)
    assert (
        st.decoder.layers[0].self_attn.q_proj.weight.data_ptr()
        != st.encoder.layers[0].self_attn.q_proj.weight.data_ptr()
    )
    assert st.checkpoint_config()["mlm_checkpoint"] == ""  # its checkpoints hold every weight
    with pytest.raises(CheckpointError, match="differ"):
        build_model({"arch": "fat_st", **TINY, "mlm_checkpoint": str(directory)}, vocab)  # 2 vs 3 encoder layers


# ---------------------------------------------------------------------------------------------- end to end


def _prep(synth_root: Path, out: Path) -> Path:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = ["speechxl", "prep", "mustc", "--root", str(synth_root), "--lang", "de", "--out", str(out)]
    command += ["--vocab-size", "300", "--ext-mt", str(synth_root / "ext_mt")]
    subprocess.run(command, check=True, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=300)
    return out


def _config(data: Path, run_dir: Path, model: dict, stages: list) -> dict:
    return {
        "run_dir": str(run_dir),
        "model": model,
        "data": {
            "manifest_dir": str(data),
            "features": "fbank",
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
            "best_metric": "loss",
        },
        "stages": stages,
    }


def test_fat_mlm_then_fat_st_trains_decodes_and_scores_end_to_end(synth_mustc, tmp_path):
    data = _prep(synth_mustc, tmp_path / "en-de")
    mlm_stages = [{"name": "fat_mlm", "tasks": {"mlm_speech": 1.0, "mlm_triplet": 1.0, "ext_mt": 0.5}, "max_update": 3}]
    train(config_from_dict(_config(data, tmp_path / "mlm", {"arch": "fat_mlm", **TINY}, mlm_stages)))
    best = tmp_path / "mlm" / "checkpoints" / "best"
    metrics = ckpt.load_metrics(best)
    assert metrics["best_metric"]["name"] == "loss" and math.isfinite(metrics["loss"])  # the dev masked loss
    assert {"mlm_speech_loss", "mlm_triplet_loss", "speech_loss", "text_loss"} <= set(metrics)

    st_stages = [
        {"name": "st_mt", "tasks": {"triplet": 1.0, "ext_mt": 0.5}, "max_update": 2},
        {"name": "st", "tasks": {"st": 1.0}, "max_update": 2},
    ]
    model = {"arch": "fat_st", **TINY, "mlm_checkpoint": str(best)}
    train(config_from_dict(_config(data, tmp_path / "st", model, st_stages)))
    last = tmp_path / "st" / "checkpoints" / "last"
    assert ckpt.load_config_dict(last)["model"]["mlm_checkpoint"] == ""
    (tmp_path / "mlm").rename(tmp_path / "gone")  # decoding needs nothing of the pre-training run
    score = translate(
        last, out=tmp_path / "decode", manifest=data / "tst-COMMON.tsv", options=DecodeOptions(beam=2, max_len_b=10)
    )
    assert len((tmp_path / "decode" / "hyp.txt").read_text(encoding="utf-8").splitlines()) == 8
    assert isinstance(score["bleu"], float) and isinstance(score["chrf"], float)
    loaded, _, _ = load_model(last)
    assert type(loaded).__name__ == "FatST"


@pytest.mark.slow  # ~45 s alone: prep, FAT-MLM, both FAT-ST stages, average, decode, score, leaderboard
def test_mustc_recipe_runs_fat_pretraining_then_fat_st(synth_mustc, tmp_path):
    from test_recipes import run_recipe  # the recipes as a user runs them (bash + speechxl commands)

    from speechxl.train.logs import read_log

    data, exp = tmp_path / "data", tmp_path / "exp"
    tiny = ["model.size=tiny", "train.max_update=2", "train.log_every=1", "data.max_tokens=3000", "data.num_workers=0"]
    tiny += ["train.validate_every=0", "train.save_every=0", "train.valid_max_sentences=2", "train.valid_beam=1"]
    run_recipe(
        "mustc",
        *("--method", "fat", "--root", synth_mustc, "--lang", "de", "--ext-mt", synth_mustc / "ext_mt"),
        *("--data", data, "--exp", exp, "--vocab-size", 300, "--avg-last", 1, "--max-len-b", 8, "--stop-stage", 5),
        "--",
        *tiny,
    )
    log = read_log(exp / "fat_mlm")
    assert [r["stage"] for r in log if r["type"] == "train"] == ["fat_mlm"] * 2
    valid = [r for r in log if r["type"] == "valid"][-1]  # the dev masked loss: speech and text
    assert valid["best_metric"]["name"] == "loss" and {"speech_loss", "text_loss"} <= set(valid)
    assert ckpt.load_config_dict(exp / "checkpoints" / "last")["model"]["arch"] == "fat_st"
    decode = exp / "decode_tst-COMMON"
    assert len((decode / "hyp.txt").read_text(encoding="utf-8").splitlines()) == 8
