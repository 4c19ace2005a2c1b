"""Experiment config: defaults <- YAML <- key=value overrides, and the errors people will hit."""

from __future__ import annotations

import re

import pytest
import yaml

from speechxl.config import ExperimentConfig, config_from_dict, config_to_dict, dump_config, load_config
from speechxl.errors import DataError


def write(tmp_path, text: str):
    path = tmp_path / "conf.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_then_overrides_win_over_defaults(tmp_path):
    path = write(tmp_path, "run_dir: exp/a\nmodel:\n  arch: s2t\n  size: xs\ntrain:\n  lr: 1e-3\n  update_freq: 2\n")
    cfg = load_config(path, ["train.lr=5e-4", "model.dim=64", "data.tasks=[st, mt]", "train.amp=bf16"])
    assert cfg.run_dir == "exp/a"
    assert cfg.model == {"arch": "s2t", "size": "xs", "dim": 64}
    assert cfg.train.lr == 5e-4 and isinstance(cfg.train.lr, float)  # `5e-4` is a string to YAML 1.1
    assert cfg.train.update_freq == 2
    assert cfg.train.warmup_updates == ExperimentConfig().train.warmup_updates  # untouched default
    assert cfg.data.tasks == ["st", "mt"]
    assert cfg.train.amp == "bf16"


def test_int_given_for_float_field_becomes_float(tmp_path):
    cfg = load_config(None, ["train.clip_norm=5"])
    assert cfg.train.clip_norm == 5.0 and isinstance(cfg.train.clip_norm, float)


def test_unknown_key_in_yaml_names_key_line_and_valid_keys(tmp_path):
    path = write(tmp_path, "model:\n  arch: s2t\ntrain:\n  lr: 0.001\n  warmup_update: 10\n")
    with pytest.raises(DataError) as err:
        load_config(path)
    assert err.value.path == str(path) and err.value.line == 5
    assert "'train.warmup_update'" in str(err.value) and "train.warmup_updates" in str(err.value)


def test_unknown_override_and_unknown_section():
    with pytest.raises(DataError, match=r"<command line>:2: unknown config key 'train.lrr'.*train\.lr,"):
        load_config(None, ["train.lr=1", "train.lrr=1"])
    with pytest.raises(DataError, match="unknown config key 'optim.lr'"):
        load_config(None, ["optim.lr=1"])


def test_wrong_type_and_bad_choice_are_errors():
    with pytest.raises(DataError, match="train.max_update must be int, got 'many'"):
        load_config(None, ["train.max_update=many"])
    with pytest.raises(DataError, match="train.amp must be one of none, bf16, fp16"):
        load_config(None, ["train.amp=fp8"])
    with pytest.raises(DataError, match="not key=value"):
        load_config(None, ["train.lr"])


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "model:\n  arch: s2t\ntrain:\n  lr: [0.1\n  seed: 2\n")
    with pytest.raises(DataError) as err:
        load_config(path)
    assert err.value.path == str(path) and err.value.line is not None and err.value.line >= 4
    assert "malformed YAML" in str(err.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_dumped_config_round_trips(tmp_path):
    cfg = load_config(
        None,
        [
            "model.arch=s2t",
            "model.encoder_layers=2",
            "train.adam_betas=[0.9, 0.99]",
            "stages=[{name: mt, tasks: {mt: 1}, max_update: 5}]",
        ],
    )
    assert cfg.stages == [{"name": "mt", "tasks": {"mt": 1}, "max_update": 5}]  # checked by train/stages.py
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert config_to_dict(again)["train"]["adam_betas"] == [0.9, 0.99]


STAGES_YAML = """stages:
  - name: mt_pretrain
    tasks: {ext_mt: 1, mt: 1}
    max_update: 100
  - name: multitask
    tasks: {st: 1, ext_mt: 0.25}
"""


def test_one_stage_field_is_overridden_by_name_or_number(tmp_path):
    path = write(tmp_path, STAGES_YAML)
    cfg = load_config(path, ["stages.mt_pretrain.max_update=7", "stages.2.tasks.ext_mt=0.5", "stages.2.lr=1e-3"])
    assert cfg.stages == [
        {"name": "mt_pretrain", "tasks": {"ext_mt": 1, "mt": 1}, "max_update": 7},
        {"name": "multitask", "tasks": {"st": 1, "ext_mt": 0.5}, "lr": 1e-3},
    ]
    assert load_config(path).stages[0]["max_update"] == 100  # the file's own stages are untouched


@pytest.mark.parametrize(
    "override, message",
    [
        ("stages.nope.max_update=1", r"no stage 'nope'; stages: 1 \(mt_pretrain\), 2 \(multitask\)"),
        ("stages.3.max_update=1", "no stage '3'"),
        ("stages.1=5", "name a field of the stage"),
        ("stages.1.max_update=0", r"stage 1 \(mt_pretrain\): max_update must be an integer >= 1"),
        ("stages.multitask.bogus=1", "unknown stage key 'bogus'"),
    ],
)
def test_bad_stage_override_is_a_clear_error(tmp_path, override, message):
    with pytest.raises(DataError, match=message):
        load_config(write(tmp_path, STAGES_YAML), [override])


def test_stage_override_without_stages_says_so():
    with pytest.raises(DataError, match="the config has no stages"):
        load_config(None, ["stages.1.max_update=5"])


@pytest.mark.parametrize(
    "key, home",
    [
        ("model.label_smoothing", "train.label_smoothing"),
        ("train.ignore_prefix_size", "data.prepend_lang_tag"),
        ("model.ignore_prefix_size", "data.prepend_lang_tag"),
        ("model.w2v_freeze_updates", "train.freeze_acoustic_updates"),
        ("model.w2v_freeze", "a stage's `trainable: {freeze: [acoustic]}`"),
    ],
)
def test_a_setting_has_one_home_and_a_moved_key_says_where(tmp_path, key, home):
    section, name = key.split(".")
    path = tmp_path / "conf.yaml"
    path.write_text(f"run_dir: x\n{section}:\n  {name}: 1\n")
    with pytest.raises(
        DataError,
        match=rf"conf.yaml:3: {re.escape(key)} is no longer a setting; it lives in "
        rf"{re.escape(home)}",
    ):
        load_config(path)
    with pytest.raises(DataError, match=re.escape(home)):
        load_config(None, [f"{key}=1"])


def test_the_model_config_refuses_a_moved_key_too():
    from speechxl.models.s2t import S2TConfig

    with pytest.raises(
        DataError, match="model.label_smoothing is no longer a setting; it lives in train.label_smoothing"
    ):
        S2TConfig.from_dict({"size": "xs", "label_smoothing": 0.2})


def test_best_metric_and_new_train_settings_parse():
    cfg = load_config(
        None, ["train.best_metric=wer", "train.freeze_acoustic_updates=100", "data.prepend_lang_tag=false"]
    )
    assert (cfg.train.best_metric, cfg.train.freeze_acoustic_updates, cfg.data.prepend_lang_tag) == ("wer", 100, False)
    with pytest.raises(DataError, match="train.freeze_acoustic_updates must be >= 0"):
        load_config(None, ["train.freeze_acoustic_updates=-1"])
