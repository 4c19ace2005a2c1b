"""Experiment config: dataclass defaults <- YAML file <- dotted `key=value` overrides.

The resolved config is a plain dict once written (run_dir/config.yaml, and inside every checkpoint), so a
checkpoint can be read without this module's classes. `model` stays a free dict: its `arch` picks the model
class and that class's own config dataclass checks the rest.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speechxl.errors import DataError
from speechxl.tasks import source_names

OVERRIDE_SOURCE = "<command line>"


@dataclass
class DataConfig:
    manifest_dir: str = ""  # where prep wrote <split>.tsv and spm.model
    train_split: str = "train"
    valid_split: str = "dev"
    tasks: list[str] = field(default_factory=lambda: ["st"])  # names in the task table (speechxl/tasks.py)
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
    # Token sequences start with their language tag (<de> ...): the loss ignores it and search forces it.
    # false for vocabularies without tags (fairseq's bilingual models).
    prepend_lang_tag: bool = True
    # fbank normalisation: utterance | utterance_fairseq (fairseq's float32 arithmetic, for its models) | global
    # (with global_cmvn_stats) | none
    cmvn: str = "utterance"
    global_cmvn_stats: str = ""  # fairseq's global CMVN .npz (mean, std) when cmvn is global
    # Languages of manifests without src_lang / tgt_lang columns (fairseq's bilingual manifests); "": from the rows
    src_lang: str = ""
    tgt_lang: str = ""


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
    amp: str = "none"  # none | bf16 | fp16 (fp16 adds a GradScaler; CUDA only)
    # torch.compile the model for training (CUDA only: on CPU the data-dependent shapes of packed rows and
    # per-utterance attention break the graph into pieces, and compiling costs more than it saves)
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda
    validate_every: int = 1000  # updates; 0: only at the end
    save_every: int = 1000  # updates; 0: only at the end
    keep_last: int = 5  # 0: keep every checkpoint
    keep_best: int = 1
    valid_beam: int = 2
    valid_max_sentences: int = 200  # sentences decoded for validation BLEU; 0: all
    log_every: int = 100
    # The validation figure that picks the best checkpoint, drives patience and `average --best-around`:
    # bleu, chrf (higher is better), wer, loss, <task>_loss, ... (lower is better); auto: the decoded task's
    # first metric (bleu, or wer for ASR), else loss.
    best_metric: str = "auto"
    patience: int = 0  # stop after this many validations without a better best_metric; 0: never
    freeze_acoustic_updates: int = 0  # the wav2vec2 encoder trains no gradient for the first K updates (of a stage)
    max_bad_updates: int = 10  # stop after this many updates in a row skipped for a non-finite loss/gradient
    init_from: str = ""  # checkpoint directory whose model weights start training (optimizer fresh)
    find_unused_parameters: bool = False  # DDP: set for multitask models whose tasks skip some weights


@dataclass
class ExperimentConfig:
    run_dir: str = "exp/run"
    model: dict[str, Any] = field(default_factory=lambda: {"arch": "s2t"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: list[dict[str, Any]] = field(default_factory=list)  # progressive schedule; checked by parse_stages


# Settings that moved or were removed: one home per setting. Keys as written in a config -> where it lives now.
MOVED_KEYS = {
    "model.label_smoothing": "train.label_smoothing",
    "model.ignore_prefix_size": "data.prepend_lang_tag (the ignored and forced prefix is the language tag)",
    "train.ignore_prefix_size": "data.prepend_lang_tag (the ignored and forced prefix is the language tag)",
    "model.w2v_freeze_updates": "train.freeze_acoustic_updates (per stage: a stage's freeze_acoustic_updates)",
    "model.w2v_freeze": "a stage's `trainable: {freeze: [acoustic]}` (or train.freeze_acoustic_updates=K)",
    "model.prepend_lang_tag": "data.prepend_lang_tag",
}
_MINIMUMS = {"train.freeze_acoustic_updates": 0, "train.max_bad_updates": 1}
_CHOICES = {
    "data.features": ("wave", "fbank"),
    "data.cmvn": ("utterance", "utterance_fairseq", "global", "none"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
}
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
        raise DataError(
            path, f"malformed YAML: {getattr(err, 'problem', err)}", mark.line + 1 if mark else None
        ) from err
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
        if key in _MINIMUMS and value < _MINIMUMS[key]:
            raise DataError(source, f"{key} must be >= {_MINIMUMS[key]}, got {value!r}", line)
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
    if key in MOVED_KEYS:
        raise DataError(source, f"{key} is no longer a setting; it lives in {MOVED_KEYS[key]}", line)
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
        raise DataError(source, f"stages.{name}: name a field of the stage, e.g. stages.{stage_ref}.max_update", line)
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


# ------------------------------------------------------------------------------ progressive stages
# Progressive training: an ordered list of stages in the experiment config (XSTNet, Chimera, COSTT).
#
# ```yaml
# stages:
#   - name: mt_pretrain
#     tasks: {mt: 1.0, ext_mt: 1.0}      # task -> sampling ratio (MultitaskSampler)
#     max_update: 2000                   # updates in THIS stage (not cumulative)
#     lr: 5e-4                           # any other key: a per-stage override of train.*
#     trainable: {freeze: [acoustic]}    # or {only: [...]}: parameter groups or name prefixes
#   - name: multitask
#     tasks: {st: 1, asr: 1, mt: 1, ext_mt: 0.25}
#     max_update: 4000
#     init: previous                     # or a checkpoint directory whose weights start the stage
#     reset_optimizer: true              # fresh optimizer, and the LR schedule restarts (warmup again)
#     freeze_acoustic_updates: 1000      # a train.* override: wav2vec2 frozen for the stage's first K updates
# ```
#
# Stages run back to back on one global update count: stage i covers the updates
# [start_i, start_i + max_update_i). Only the last stage may have `max_update: 0` (run until train.max_update
# or train.max_epoch ends the run). A stage without `trainable` trains every parameter. On the command line,
# `stages.<name or number>.<key>=value` changes one field of one stage (`stages.mt_pretrain.max_update=500`).

INIT_PREVIOUS = "previous"
_STAGE_KEYS = ("name", "tasks", "max_update", "init", "reset_optimizer", "trainable")
# train.* keys a stage may not override: the stage's own max_update is its length, and the rest are
# properties of the whole run (its start, its device, its epochs).
_RUN_WIDE = ("max_update", "max_epoch", "init_from", "seed", "device")


@dataclass(frozen=True)
class Stage:
    name: str
    tasks: dict[str, float]  # task (st, asr, mt, triplet, ext_mt) -> sampling ratio > 0, in config order
    max_update: int  # updates in this stage; 0 only for the last stage: no stage limit
    init: str = INIT_PREVIOUS  # "previous": the weights as the previous stage left them; else a checkpoint dir
    reset_optimizer: bool = False
    freeze: tuple[str, ...] = ()  # parameter-name prefixes frozen in this stage
    only: tuple[str, ...] = ()  # if set, only these prefixes train
    train_overrides: dict[str, Any] = field(default_factory=dict)  # train.* values for this stage
    source: str = "<stages>"  # the config file, for errors found later (e.g. a prefix matching nothing)


def _error(source: str, where: str, message: str) -> DataError:
    return DataError(source, f"{where}: {message}")


def _int(value: Any, source: str, where: str, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _error(source, where, f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _bool(value: Any, source: str, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise _error(source, where, f"{key} must be true or false, got {value!r}")
    return value


def _tasks(value: Any, source: str, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise _error(source, where, f"tasks must be a non-empty mapping task -> ratio, got {value!r}")
    ratios: dict[str, float] = {}
    for task, ratio in value.items():
        if task not in source_names():
            raise _error(source, where, f"unknown task {task!r}; known: {', '.join(source_names())}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
            raise _error(
                source,
                where,
                f"ratio of task {task!r} must be a number > 0 (leave a task out to not train it), got {ratio!r}",
            )
        ratios[task] = float(ratio)
    return ratios


def _prefixes(value: Any, source: str, where: str, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(p, str) and p for p in items):
        raise _error(
            source, where, f"trainable.{key} must be a non-empty list of parameter-name prefixes, got {value!r}"
        )
    return tuple(items)


def _trainable(value: Any, source: str, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """{freeze: [...]} or {only: [...]} -> (freeze, only)."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("freeze", "only"):
        raise _error(source, where, f"trainable must be {{freeze: [prefixes]}} or {{only: [prefixes]}}, got {value!r}")
    key, prefixes = next(iter(value.items()))
    prefixes = _prefixes(prefixes, source, where, key)
    return (prefixes, ()) if key == "freeze" else ((), prefixes)


def _train_overrides(entry: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    overridable = sorted(set(hints) - set(_RUN_WIDE))
    overrides = {}
    for key, value in entry.items():
        if key in _STAGE_KEYS:
            continue
        if key not in overridable:
            raise _error(
                source,
                where,
                f"unknown stage key {key!r}; stage keys: {', '.join(_STAGE_KEYS)}; "
                f"train overrides: {', '.join(overridable)}",
            )
        try:
            overrides[key] = coerce(value, hints[key], f"train.{key}", source, None)
        except DataError as err:
            raise _error(source, where, err.reason) from err
    return overrides


def _parse_stage(entry: Any, index: int, is_last: bool, names: set[str], source: str) -> Stage:
    where = f"stage {index + 1}"
    if not isinstance(entry, dict):
        raise _error(source, where, f"a stage must be a mapping, got {entry!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _error(source, where, "every stage needs a `name`")
    where = f"stage {index + 1} ({name})"
    if name in names:
        raise _error(source, where, "stage names must be unique")
    names.add(name)
    if "tasks" not in entry:
        raise _error(source, where, "`tasks` (task -> sampling ratio) is required")
    max_update = _int(entry.get("max_update", 0), source, where, "max_update", minimum=0 if is_last else 1)
    init = entry.get("init", INIT_PREVIOUS)
    if not isinstance(init, str) or not init:
        raise _error(source, where, f"init must be 'previous' or a checkpoint directory, got {init!r}")
    freeze, only = _trainable(entry["trainable"], source, where) if "trainable" in entry else ((), ())
    return Stage(
        name=name,
        tasks=_tasks(entry["tasks"], source, where),
        max_update=max_update,
        init=init,
        reset_optimizer=_bool(entry.get("reset_optimizer", False), source, where, "reset_optimizer"),
        freeze=freeze,
        only=only,
        train_overrides=_train_overrides(entry, source, where),
        source=source,
    )


def parse_stages(entries: Any, source: str = "<stages>") -> list[Stage]:
    """The `stages:` list of a config -> checked Stages; errors name the config file and the stage."""
    if not isinstance(entries, list) or not entries:
        raise DataError(source, f"stages must be a non-empty list of stages, got {entries!r}")
    names: set[str] = set()
    return [_parse_stage(entry, i, i == len(entries) - 1, names, source) for i, entry in enumerate(entries)]


def stage_starts(stages: list[Stage]) -> list[int]:
    """Global update count at which each stage begins."""
    starts, total = [], 0
    for stage in stages:
        starts.append(total)
        total += stage.max_update
    return starts


def total_updates(stages: list[Stage]) -> int:
    """Updates of the whole schedule; 0 when the last stage is open-ended (max_update 0)."""
    return 0 if stages[-1].max_update == 0 else sum(s.max_update for s in stages)


def stage_at(stages: list[Stage], global_update: int) -> tuple[int, Stage, int]:
    """(index, stage, updates done within it) after `global_update` updates in total.

    At a boundary the next stage is returned with 0 updates done (its set-up is still to do); past the end
    of the schedule, the last stage with all its updates done (`stage_finished` is then true).
    """
    if global_update < 0:
        raise ValueError(f"global_update must be >= 0, got {global_update}")
    for index, (start, stage) in enumerate(zip(stage_starts(stages), stages)):
        if stage.max_update == 0 or global_update < start + stage.max_update or index == len(stages) - 1:
            return index, stage, min(global_update - start, stage.max_update or global_update - start)
    raise AssertionError("unreachable: the last stage always matches")


def stage_finished(stage: Stage, update_within_stage: int) -> bool:
    return stage.max_update > 0 and update_within_stage >= stage.max_update


def schedule_updates(stages: list[Stage], global_update: int) -> int:
    """The update count the LR schedule should see: counted from the start of the latest stage (up to the
    current one) that reset the optimizer, else from the start of training."""
    index, _, _ = stage_at(stages, global_update)
    starts = stage_starts(stages)
    origin = max((starts[i] for i in range(1, index + 1) if stages[i].reset_optimizer), default=0)
    return global_update - origin


def stage_train_config(train: TrainConfig, stage: Stage) -> TrainConfig:
    """train.* with the stage's overrides applied (lr, warmup_updates, update_freq, ...)."""
    return dataclasses.replace(train, **stage.train_overrides)
