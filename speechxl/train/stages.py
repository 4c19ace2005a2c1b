"""Progressive training: an ordered list of stages in the experiment config (XSTNet, Chimera, COSTT).

```yaml
stages:
  - name: mt_pretrain
    tasks: {mt: 1.0, ext_mt: 1.0}      # task -> sampling ratio (MultitaskSampler)
    max_update: 2000                   # updates in THIS stage (not cumulative)
    lr: 5e-4                           # any other key: a per-stage override of train.*
    trainable: {freeze: [acoustic]}    # or {only: [...]}: parameter-name prefixes
  - name: multitask
    tasks: {st: 1, asr: 1, mt: 1, ext_mt: 0.25}
    max_update: 4000
    init: previous                     # or a checkpoint directory whose weights start the stage
    reset_optimizer: true              # fresh optimizer, and the LR schedule restarts (warmup again)
    freeze_acoustic_updates: 1000      # wav2vec2 without gradients for the first K updates of the stage
```

Stages run back to back on one global update count: stage i covers the updates
[start_i, start_i + max_update_i). Only the last stage may have `max_update: 0` (run until train.max_update
or train.max_epoch ends the run). A stage without `trainable` trains every parameter. On the command line,
`stages.<name or number>.<key>=value` changes one field of one stage (`stages.mt_pretrain.max_update=500`).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from speechxl.config import TrainConfig, coerce
from speechxl.data.dataset import TASKS
from speechxl.errors import DataError
from speechxl.train.batches import EXT_MT  # the external text-only MT set

STAGE_TASKS = (*TASKS, EXT_MT)
INIT_PREVIOUS = "previous"
_STAGE_KEYS = ("name", "tasks", "max_update", "init", "reset_optimizer", "trainable", "freeze_acoustic_updates")
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
    freeze_acoustic_updates: int | None = None  # None: leave the model's own wav2vec2 freeze setting
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
        if task not in STAGE_TASKS:
            raise _error(source, where, f"unknown task {task!r}; known: {', '.join(STAGE_TASKS)}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
            raise _error(source, where, f"ratio of task {task!r} must be a number > 0 (leave a task out to "
                                        f"not train it), got {ratio!r}")
        ratios[task] = float(ratio)
    return ratios


def _prefixes(value: Any, source: str, where: str, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(p, str) and p for p in items):
        raise _error(source, where, f"trainable.{key} must be a non-empty list of parameter-name prefixes, "
                                    f"got {value!r}")
    return tuple(items)


def _trainable(value: Any, source: str, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """{freeze: [...]} or {only: [...]} -> (freeze, only)."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("freeze", "only"):
        raise _error(source, where, f"trainable must be {{freeze: [prefixes]}} or {{only: [prefixes]}}, "
                                    f"got {value!r}")
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
            raise _error(source, where, f"unknown stage key {key!r}; stage keys: {', '.join(_STAGE_KEYS)}; "
                                        f"train overrides: {', '.join(overridable)}")
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
    freeze_acoustic = entry.get("freeze_acoustic_updates")
    return Stage(
        name=name,
        tasks=_tasks(entry["tasks"], source, where),
        max_update=max_update,
        init=init,
        reset_optimizer=_bool(entry.get("reset_optimizer", False), source, where, "reset_optimizer"),
        freeze=freeze,
        only=only,
        freeze_acoustic_updates=(None if freeze_acoustic is None
                                 else _int(freeze_acoustic, source, where, "freeze_acoustic_updates")),
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


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def apply_trainable(model: nn.Module, stage: Stage) -> dict[str, int]:
    """Set requires_grad per the stage (every parameter is decided, so an earlier stage's freeze does not
    carry over); returns parameter counts {trainable, frozen} (elements, not tensors) for the log.

    A prefix matches a parameter name equal to it or beginning with it plus a dot (`acoustic` matches
    `acoustic.model.…`); a prefix that matches nothing is a config error.
    """
    named = list(model.named_parameters())
    for prefix in stage.freeze + stage.only:
        if not any(_matches(name, prefix) for name, _ in named):
            raise DataError(stage.source, f"stage {stage.name}: trainable prefix {prefix!r} matches no "
                                          f"parameter of {type(model).__name__}")
    counts = {"trainable": 0, "frozen": 0}
    for name, param in named:
        if stage.only:
            train = any(_matches(name, p) for p in stage.only)
        else:
            train = not any(_matches(name, p) for p in stage.freeze)
        param.requires_grad_(train)
        counts["trainable" if train else "frozen"] += param.numel()
    return counts


def apply_acoustic_freeze(model: nn.Module, stage: Stage, update_within_stage: int) -> None:
    """Before each update: keep the wav2vec2 encoder (`model.acoustic`) gradient-free for the stage's first
    `freeze_acoustic_updates` updates. Stages that do not set it leave the model's own setting alone."""
    if stage.freeze_acoustic_updates is None:
        return
    acoustic = getattr(model, "acoustic", None)
    if acoustic is None or not hasattr(acoustic, "freeze_updates"):
        raise DataError(stage.source, f"stage {stage.name}: freeze_acoustic_updates needs a model with a "
                                      f"wav2vec2 `acoustic` encoder; {type(model).__name__} has none")
    acoustic.freeze_updates = stage.freeze_acoustic_updates
    acoustic.set_update(update_within_stage)
