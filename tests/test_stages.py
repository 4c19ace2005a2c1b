"""Progressive-training stages: parsing, errors, position after N updates, what trains."""

from __future__ import annotations

import pytest
import torch
import yaml

from speechxl.config import (
    Stage,
    TrainConfig,
    parse_stages,
    schedule_updates,
    stage_at,
    stage_finished,
    stage_starts,
    stage_train_config,
    total_updates,
)
from speechxl.errors import DataError
from speechxl.models.xstnet import XSTNet, XSTNetConfig
from speechxl.train.stages import apply_acoustic_freeze, apply_trainable

SOURCE = "conf/xstnet.yaml"
EXAMPLE = yaml.safe_load("""
- name: mt_pretrain
  tasks: {mt: 1.0, ext_mt: 1.0}
  max_update: 2000
  lr: 5.0e-4
  trainable: {freeze: [acoustic]}
- name: multitask
  tasks: {st: 1, asr: 1, mt: 1, ext_mt: 0.25}
  max_update: 4000
  init: previous
  reset_optimizer: true
  freeze_acoustic_updates: 1000
  warmup_updates: 500
""")


def test_parse_the_example():
    first, second = parse_stages(EXAMPLE, SOURCE)
    assert first == Stage(
        name="mt_pretrain",
        tasks={"mt": 1.0, "ext_mt": 1.0},
        max_update=2000,
        freeze=("acoustic",),
        train_overrides={"lr": 5e-4},
        source=SOURCE,
    )
    assert second.tasks == {"st": 1.0, "asr": 1.0, "mt": 1.0, "ext_mt": 0.25}
    assert list(second.tasks) == ["st", "asr", "mt", "ext_mt"]  # config order: the first is the epoch task
    assert (second.init, second.reset_optimizer) == ("previous", True)
    assert stage_train_config(TrainConfig(), second).freeze_acoustic_updates == 1000  # a train.* override
    assert second.freeze == second.only == ()
    assert second.train_overrides == {"freeze_acoustic_updates": 1000, "warmup_updates": 500}
    train = stage_train_config(TrainConfig(lr=1e-4), first)
    assert (train.lr, train.warmup_updates) == (5e-4, TrainConfig().warmup_updates)


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"name": "a", "tasks": {"st": 1}, "max_update": 5, "lrr": 1.0}], "stage 1 \\(a\\): unknown stage key 'lrr'"),
        ([{"name": "a", "tasks": {"speech": 1}}], "unknown task 'speech'"),
        ([{"name": "a", "tasks": {"st": 0}}], "ratio of task 'st' must be a number > 0"),
        ([{"name": "a", "tasks": {"st": -1.0}}], "ratio of task 'st'"),
        ([{"name": "a", "tasks": {"st": "1"}}], "ratio of task 'st'"),
        ([{"name": "a", "tasks": {}}], "tasks must be a non-empty mapping"),
        ([{"name": "a", "max_update": 3}], "`tasks` .* is required"),
        ([{"tasks": {"st": 1}}], "stage 1: every stage needs a `name`"),
        ([{"name": "a", "tasks": {"mt": 1}}, {"name": "b", "tasks": {"st": 1}}], "stage 1 \\(a\\): max_update must be"),
        ([{"name": "a", "tasks": {"mt": 1}, "max_update": 2}, {"name": "a", "tasks": {"st": 1}}], "stage 2 .*unique"),
        ([{"name": "a", "tasks": {"st": 1}, "trainable": {"freeze": "acoustic", "only": ["x"]}}], "trainable must be"),
        ([{"name": "a", "tasks": {"st": 1}, "trainable": {"only": []}}], "trainable.only must be a non-empty list"),
        ([{"name": "a", "tasks": {"st": 1}, "reset_optimizer": "yes"}], "reset_optimizer must be true or false"),
        ([{"name": "a", "tasks": {"st": 1}, "freeze_acoustic_updates": -1}], "freeze_acoustic_updates must be"),
        ([{"name": "a", "tasks": {"st": 1}, "lr": "fast"}], "train.lr must be float"),
        ([{"name": "a", "tasks": {"st": 1}, "seed": 3}], "unknown stage key 'seed'"),
        ([], "non-empty list"),
    ],
)
def test_bad_stages_name_the_file_and_the_stage(entries, message):
    with pytest.raises(DataError, match=message) as caught:
        parse_stages(entries, SOURCE)
    assert caught.value.path == SOURCE


def test_stage_at_boundaries_and_resume_position():
    stages = parse_stages(EXAMPLE, SOURCE)
    assert stage_starts(stages) == [0, 2000] and total_updates(stages) == 6000
    assert stage_at(stages, 0)[0::2] == (0, 0)
    assert stage_at(stages, 1999)[0::2] == (0, 1999)
    assert stage_at(stages, 2000)[0::2] == (1, 0)  # boundary: the next stage, its set-up still to do
    assert stage_at(stages, 2001)[0::2] == (1, 1)
    index, stage, within = stage_at(stages, 6000)
    assert (index, within) == (1, 4000) and stage_finished(stage, within)
    assert (index, within) == stage_at(stages, 9999)[0::2]  # past the end stays finished
    assert not stage_finished(*stage_at(stages, 5999)[1:])
    with pytest.raises(ValueError):
        stage_at(stages, -1)


def test_open_ended_last_stage_and_schedule_restarts():
    stages = parse_stages(
        [
            {"name": "a", "tasks": {"mt": 1}, "max_update": 10},
            {"name": "b", "tasks": {"st": 1}, "max_update": 10, "reset_optimizer": True},
            {"name": "c", "tasks": {"st": 1, "mt": 1}},  # no max_update: runs until train.max_update
        ],
        SOURCE,
    )
    assert total_updates(stages) == 0
    index, stage, within = stage_at(stages, 1234)
    assert (index, within) == (2, 1214) and not stage_finished(stage, within)
    # the LR schedule restarts where an optimizer reset happened and keeps counting after it
    assert [schedule_updates(stages, n) for n in (0, 9, 10, 19, 20, 25)] == [0, 9, 0, 9, 10, 15]


def tiny_xstnet() -> XSTNet:
    torch.manual_seed(0)
    return XSTNet(XSTNetConfig.from_dict({"size": "tiny"}), vocab_size=40, pad=1, eos=2, audio_tag_id=4)


def test_apply_trainable_by_prefix():
    model = tiny_xstnet()
    total = sum(p.numel() for p in model.parameters())
    acoustic = sum(p.numel() for p in model.acoustic.parameters())
    freeze, only, everything = parse_stages(
        [
            {"name": "f", "tasks": {"mt": 1}, "max_update": 1, "trainable": {"freeze": ["acoustic", "subsampler"]}},
            {"name": "o", "tasks": {"st": 1}, "max_update": 1, "trainable": {"only": ["decoder.layers.0.cross_attn"]}},
            {"name": "all", "tasks": {"st": 1}},
        ],
        SOURCE,
    )
    subsampler = sum(p.numel() for p in model.subsampler.parameters())
    assert apply_trainable(model, freeze) == {
        "trainable": total - acoustic - subsampler,
        "frozen": acoustic + subsampler,
    }
    assert not any(p.requires_grad for p in model.acoustic.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())

    counts = apply_trainable(model, only)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(n.startswith("decoder.layers.0.cross_attn.") for n in trained)
    assert counts["trainable"] == sum(p.numel() for p in model.decoder.layers[0].cross_attn.parameters())
    # a stage without `trainable` trains everything again: earlier freezes do not carry over
    assert apply_trainable(model, everything) == {"trainable": total, "frozen": 0}


def test_apply_trainable_rejects_a_prefix_that_matches_nothing():
    model = tiny_xstnet()
    # "decoder.layer" is a prefix of a name but not a dotted component: it must not match
    (stage,) = parse_stages([{"name": "x", "tasks": {"st": 1}, "trainable": {"freeze": ["decoder.layer"]}}], SOURCE)
    with pytest.raises(
        DataError,
        match="stage x: trainable 'decoder.layer' matches no parameter of XSTNet; "
        "its parameter groups: acoustic, decoder, decoder.cross_attention",
    ):
        apply_trainable(model, stage)


def test_apply_trainable_by_parameter_group():
    model = tiny_xstnet()
    groups = model.parameter_groups()
    (stage,) = parse_stages(
        [{"name": "x", "tasks": {"st": 1}, "trainable": {"only": ["decoder.cross_attention", "layer_norms"]}}], SOURCE
    )
    apply_trainable(model, stage)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == set(groups["decoder.cross_attention"]) | set(groups["layer_norms"])
    assert "decoder.layers.0.cross_attn.q_proj.weight" in trained
    assert "decoder.layers.0.cross_attn_norm.weight" in trained and "encoder.layers.0.ffn_norm.bias" in trained
    assert "decoder.layers.0.self_attn.q_proj.weight" not in trained
    assert groups["embeddings"] == ["decoder.embed_tokens.weight"]
    assert set(groups["acoustic"]) == {f"acoustic.{n}" for n, _ in model.acoustic.named_parameters()}


def test_acoustic_freeze_counts_updates_within_the_stage():
    model = tiny_xstnet()
    first, second = parse_stages(EXAMPLE, SOURCE)
    freeze = stage_train_config(TrainConfig(), second).freeze_acoustic_updates
    for within, frozen in ((0, True), (999, True), (1000, False)):
        apply_acoustic_freeze(model, freeze, within)
        assert model.acoustic.is_frozen is frozen
    apply_acoustic_freeze(model, stage_train_config(TrainConfig(), first).freeze_acoustic_updates, 0)
    assert model.acoustic.is_frozen is False  # the stage does not set it: train.freeze_acoustic_updates, 0
    from speechxl.models.s2t import S2TConfig, S2TTransformer

    fbank_model = S2TTransformer(
        S2TConfig.from_dict({"size": "xs", "encoder_layers": 1, "decoder_layers": 1}), 20, 1, 2
    )
    apply_acoustic_freeze(fbank_model, 0, 0)  # nothing to freeze, nothing asked
    with pytest.raises(DataError, match="S2TTransformer has no acoustic encoder to freeze"):
        apply_acoustic_freeze(fbank_model, 5, 0)
