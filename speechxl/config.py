"""Experiment config: dataclass defaults <- YAML file <- dotted `key=value` overrides.

The resolved config is a plain dict once written (run_dir/config.yaml, and inside every checkpoint), so a
checkpoint can be read without this module's classes. `model` stays a free dict: its `arch` picks the model
class and that class's own config dataclass checks the rest.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speechxl.errors import DataError

OVERRIDE_SOURCE = "<command line>"


@dataclass
class DataConfig:
    manifest_dir: str = ""  # where prep wrote <split>.tsv and spm.model
    train_split: str = "train"
    valid_split: str = "dev"
    tasks: list[str] = field(default_factory=lambda: ["st"])  # st, asr, mt, triplet
    ext_mt_split: str = ""  # text-only parallel manifest mixed into training (XSTNet "expand")
    ext_mt_ratio: float = 0.25  # sampling weight of ext_mt batches; every task in `tasks` has weight 1
    features: str = "fbank"  # wave | fbank
    max_tokens: int = 4000  # batch budget: fbank frames (fbank audio tasks) or text tokens (mt)
    max_wave_samples: int = 1_000_000  # batch budget of audio tasks when features=wave (16 kHz samples)
    max_sentences: int = 0  # 0: no limit
    specaugment: str = ""  # SpecAugment policy (lb, ld, sm, ss) for fbank training; "": off
    num_workers: int = 0
    cache_features: bool = False  # keep computed features in memory across epochs (small corpora only)
    vocab: str = ""  # SentencePiece model; "" = <manifest_dir>/spm.model


@dataclass
class TrainConfig:
    seed: int = 1
    lr: float = 5e-4
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    max_update: int = 0  # 0: no limit
    max_epoch: int = 0  # 0: no limit
    update_freq: int = 1  # gradient accumulation steps per update
    clip_norm: float = 10.0  # 0: no clipping
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    ignore_prefix_size: int = 1
    amp: str = "none"  # none | bf16 | fp16 (fp16 adds a GradScaler; CUDA only)
    device: str = "auto"  # auto | cpu | cuda
    validate_every: int = 1000  # updates; 0: only at the end
    save_every: int = 1000  # updates; 0: only at the end
    keep_last: int = 5  # 0: keep every checkpoint
    keep_best: int = 1
    valid_beam: int = 2
    valid_max_sentences: int = 200  # sentences decoded for validation BLEU; 0: all
    log_every: int = 100
    patience: int = 0  # stop after this many validations without a better BLEU; 0: never
    init_from: str = ""  # checkpoint directory whose model weights start training (optimizer fresh)
    find_unused_parameters: bool = False  # DDP: set for multitask models whose tasks skip some weights


@dataclass
class ExperimentConfig:
    run_dir: str = "exp/run"
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "s2t"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: list[dict[str, Any]] = field(default_factory=list)  # progressive schedule; checked by train/stages.py


_CHOICES = {"data.features": ("wave", "fbank"), "train.amp": ("none", "bf16", "fp16"),
            "train.device": ("auto", "cpu", "cuda")}
# PyYAML follows YAML 1.1, where `5e-4` (no dot) is a string; people mean a number.
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_scalar(text: str) -> Any:
    """A value as YAML reads it, with `1e-4`-style floats read as numbers."""
    value = yaml.safe_load(text) if text.strip() else ""
    return _fix_floats(value)


def _fix_floats(value: Any) -> Any:
    if isinstance(value, str) and _FLOAT.match(value):
        return float(value)
    if isinstance(value, dict):
        return {k: _fix_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fix_floats(v) for v in value]
    return value


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """dotted key -> 1-based line of that key in the YAML text, for error messages."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    return lines


def _read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    if not path.is_file():
        raise DataError(path, "config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DataError(path, f"malformed YAML: {getattr(err, 'problem', err)}",
                        mark.line + 1 if mark else None) from err
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise DataError(path, f"expected a mapping of sections, got {type(data).__name__}", 1)
    return _fix_floats(data), _key_lines(node)


def coerce(value: Any, kind: Any, key: str, source: str, line: int | None) -> Any:
    """Check `value` against the dataclass field type `kind` (int, float, bool, str, list[...])."""
    origin = typing.get_origin(kind)
    if origin is list:
        item_kind = typing.get_args(kind)[0]
        items = value if isinstance(value, list) else [value]
        return [coerce(v, item_kind, key, source, line) for v in items]
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        choices = _CHOICES.get(key)
        if choices and value not in choices:
            raise DataError(source, f"{key} must be one of {', '.join(choices)}, got {value!r}", line)
        return value
    raise DataError(source, f"{key} must be {kind.__name__}, got {value!r}", line)


def _section_fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys() -> list[str]:
    keys = ["run_dir", "model.<anything>", "stages", "stages.<name or number>.<key>"]
    for section, cls in (("data", DataConfig), ("train", TrainConfig)):
        keys += [f"{section}.{name}" for name in _section_fields(cls)]
    return keys


def _unknown(key: str, source: str, line: int | None) -> DataError:
    return DataError(source, f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}", line)


def _apply(raw: dict[str, Any], key: str, value: Any, source: str, line: int | None) -> None:
    """Set dotted `key` in the nested dict `raw`, checking it names a known field."""
    section, _, name = key.partition(".")
    if section == "run_dir" and not name:
        raw["run_dir"] = coerce(value, str, key, source, line)
    elif section == "stages" and not name:
        if not isinstance(value, list):
            raise DataError(source, f"stages must be a list of stages, got {value!r}", line)
        if value:  # an empty list: no progressive schedule
            _check_stages(value, source)
        raw["stages"] = value
    elif section == "stages":
        _set_stage_key(raw, name, value, source, line)
    elif section == "model" and name:
        target = raw.setdefault("model", {})
        *parents, leaf = name.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    elif section in ("data", "train") and name:
        fields = _section_fields(DataConfig if section == "data" else TrainConfig)
        if name not in fields:
            raise _unknown(key, source, line)
        raw.setdefault(section, {})[name] = coerce(value, fields[name], key, source, line)
    else:
        raise _unknown(key, source, line)


def _check_stages(stages: list, source: str) -> None:
    from speechxl.train.stages import parse_stages  # stages.py imports this module

    parse_stages(stages, source)  # errors name the config file and the stage


def _set_stage_key(raw: dict[str, Any], name: str, value: Any, source: str, line: int | None) -> None:
    """`stages.<stage>.<key>[.<key>...]=value`: one field of one stage, the stage named by its `name` or by
    its number counted from 1, as errors and recipes count them (`stages.mt_pretrain.max_update=2000`,
    `stages.2.tasks.ext_mt=0.5`)."""
    stage_ref, _, path = name.partition(".")
    stages = [dict(s) if isinstance(s, dict) else s for s in raw.get("stages", [])]
    names = [s.get("name") if isinstance(s, dict) else None for s in stages]
    if stage_ref in names:
        index = names.index(stage_ref)
    elif stage_ref.isdigit() and 1 <= int(stage_ref) <= len(stages):
        index = int(stage_ref) - 1
    else:
        known = ", ".join(f"{i} ({n})" for i, n in enumerate(names, 1)) or "none: the config has no stages"
        raise DataError(source, f"stages.{name}: no stage {stage_ref!r}; stages: {known}", line)
    if not path:
        raise DataError(source, f"stages.{name}: name a field of the stage, e.g. stages.{stage_ref}.max_update",
                        line)
    stage = stages[index]
    *parents, leaf = path.split(".")
    target = stage
    for parent in parents:  # copy nested mappings on the way down: the YAML's own dicts stay as read
        child = target.get(parent)
        target[parent] = dict(child) if isinstance(child, dict) else {}
        target = target[parent]
    target[leaf] = value
    _check_stages(stages, source)
    raw["stages"] = stages


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in ("model", "stages"):
            items += _flatten(value, dotted + ".")
        elif dotted == "model":
            if not isinstance(value, dict):
                items.append((dotted, value))
            else:
                items += [(f"model.{k}", v) for k, v in value.items()]
        else:
            items.append((dotted, value))
    return items


def _apply_mapping(raw: dict[str, Any], data: dict, source: str, lines: dict[str, int]) -> None:
    for key, value in _flatten(data):
        if key == "model":
            raise DataError(source, "model must be a mapping with at least `arch`", lines.get(key))
        _apply(raw, key, value, source, lines.get(key))


def config_from_dict(data: dict, source: str = "<dict>") -> ExperimentConfig:
    """Build and check an ExperimentConfig from a nested dict (e.g. a checkpoint's config.yaml)."""
    raw: dict[str, Any] = {}
    _apply_mapping(raw, data, source, {})
    return _build(raw)


def _build(raw: dict[str, Any]) -> ExperimentConfig:
    defaults = ExperimentConfig()
    return ExperimentConfig(
        run_dir=raw.get("run_dir", defaults.run_dir),
        model={**defaults.model, **raw.get("model", {})},
        data=DataConfig(**raw.get("data", {})),
        train=TrainConfig(**raw.get("train", {})),
        stages=raw.get("stages", []),
    )


def load_config(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Defaults <- the YAML file at `path` (if any) <- `key=value` overrides (dotted keys)."""
    raw: dict[str, Any] = {}
    if path is not None:
        data, lines = _read_yaml(Path(path))
        _apply_mapping(raw, data, str(path), lines)
    for position, item in enumerate(overrides, 1):
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise DataError(OVERRIDE_SOURCE, f"override {item!r} is not key=value", position)
        try:
            value = parse_scalar(text)
        except yaml.YAMLError as err:
            raise DataError(OVERRIDE_SOURCE, f"cannot parse the value of {key}: {err}", position) from err
        _apply(raw, key.strip(), value, OVERRIDE_SOURCE, position)
    return _build(raw)


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_config(config: ExperimentConfig | dict) -> str:
    data = config_to_dict(config) if isinstance(config, ExperimentConfig) else config
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
