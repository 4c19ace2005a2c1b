"""Checkpoint directories: write atomically, load to translate or to resume, pick, prune, average.

Layout of a run: `run_dir/checkpoints/ckpt-<update>/` (immutable once renamed into place), and `last` /
`best` symlinks beside them, each replaced with one `os.replace`. A directory is written under a
`.tmp-` name, every file fsync'd, then renamed: a crash leaves at worst a `.tmp-` directory, which
`clean_incomplete` removes, and never touches a finished checkpoint.

A *delta* checkpoint (parameter-efficient fine-tuning) is written when the config's `model.peft` names a
`parent` and the tensors its run `stored`: model.safetensors then holds only those tensors (rows appended to
the parent's vocabulary: only the new rows), and its metadata the parent's path and the SHA-256 of the
parent's model.safetensors. `load_weights` returns it as a `DeltaState`; `load_state_into` loads the parent
(refusing one that is missing or changed) and the delta on top.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from speechxl.errors import CheckpointError

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
METRICS_FILE = "metrics.json"
VOCAB_FILE = "spm.model"
PIECES_FILE = "vocab.json"
CHECKPOINTS = "checkpoints"
TMP_PREFIX = ".tmp-"
_CKPT_NAME = re.compile(r"^ckpt-(\d+)$")
# safetensors stores each storage once; tied weights (shared embeddings) are saved under one key
# and this metadata entry maps the other names back to it.
_ALIASES_KEY = "speechxl_aliases"
_DELTA_KEY = "speechxl_delta"  # metadata of a delta checkpoint: {"parent", "parent_sha256", "rows"}


class DeltaState(dict):
    """The tensors of a delta checkpoint (name -> tensor), with its parent: `parent` (a checkpoint directory),
    `parent_sha256` (of the parent's model.safetensors) and `rows` (name -> first row stored: rows appended
    to the parent's vocabulary; 0 for a whole tensor)."""

    def __init__(self, tensors: dict, parent: str, parent_sha256: str, rows: dict[str, int]):
        super().__init__(tensors)
        self.parent, self.parent_sha256, self.rows = parent, parent_sha256, dict(rows)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, value in state.items():
        value = value.detach()
        identity = (
            value.untyped_storage().data_ptr(),
            value.storage_offset(),
            tuple(value.shape),
            tuple(value.stride()),
            value.dtype,
            value.device,
        )
        if value.numel() and identity in seen:
            aliases[key] = seen[identity]
            continue
        seen[identity] = key
        tensors[key] = value.to("cpu").contiguous()
    return tensors, aliases


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    tensors, aliases = _dedupe(state)
    metadata = {"format": "pt", _ALIASES_KEY: json.dumps(aliases)}
    if isinstance(state, DeltaState):
        metadata[_DELTA_KEY] = json.dumps(
            {"parent": state.parent, "parent_sha256": state.parent_sha256, "rows": state.rows}
        )
    save_file(tensors, str(path), metadata=metadata)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def delta_state(state: dict[str, torch.Tensor], peft: dict) -> DeltaState:
    """The part of a full state dict that a delta checkpoint stores, per the model config's `peft` section
    (`stored`: name -> first row; `parent`, `parent_sha256`). A DeltaState (averaged deltas) passes as is."""
    if isinstance(state, DeltaState):
        return state
    stored = peft["stored"]
    missing = sorted(set(stored) - set(state))
    if missing:
        raise CheckpointError(f"delta checkpoint: stored tensors {missing[:8]} are not in the model's weights")
    return DeltaState(
        {name: state[name][row:] for name, row in stored.items()}, peft["parent"], peft["parent_sha256"], stored
    )


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a model.safetensors, tied names restored; a `DeltaState` for a delta checkpoint."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    for alias, key in json.loads(metadata.get(_ALIASES_KEY, "{}")).items():
        tensors[alias] = tensors[key]
    if _DELTA_KEY in metadata:
        delta = json.loads(metadata[_DELTA_KEY])
        return DeltaState(tensors, delta["parent"], delta["parent_sha256"], delta["rows"])
    return tensors


def parent_weights(parent: str | Path, sha256: str | None, child: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The full weights of a delta's parent and their SHA-256, refusing a parent that is missing, changed
    (`sha256` given and different) or itself a delta (merge it first: `speechxl merge`)."""
    parent = Path(parent)
    weights = parent / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(f"{child}: its parent checkpoint {parent} is missing ({weights} not found)")
    digest = sha256_file(weights)
    if sha256 is not None and digest != sha256:
        raise CheckpointError(
            f"{child}: its parent {parent} has changed: {weights} has SHA-256 {digest}, the child was trained "
            f"on {sha256}; use the parent it was trained from (or `speechxl merge` the child while you still can)"
        )
    state = load_weights(weights)
    if isinstance(state, DeltaState):
        raise CheckpointError(
            f"{child}: its parent {parent} is itself a delta checkpoint; `speechxl merge` the parent and train "
            "from the merged one"
        )
    return state, digest


def load_parent_state(model: torch.nn.Module, parent: dict[str, torch.Tensor], source: Path | str) -> dict[str, int]:
    """Load a parent's full weights into a child model that may add to it: new tensors (adapters, LoRA) keep
    their initial values, peft's LoRA wrappers hold the parent's `x.weight` as `x.base_layer.weight`, and
    tensors over a vocabulary grown by appended pieces take the parent's rows first. Returns the grown
    tensors (name -> the parent's row count) and puts the child's new tensor names in `model.peft_new`."""
    expected = model.state_dict()
    used: set[str] = set()
    rows: dict[str, int] = {}
    new: list[str] = []
    wrong: list[str] = []
    with torch.no_grad():
        for name, target in expected.items():
            key = name.replace(".base_layer", "")
            if key not in parent:
                new.append(name)
                continue
            used.add(key)
            value = parent[key]
            if value.shape == target.shape:
                target.copy_(value)
            elif value.dim() and value.shape[1:] == target.shape[1:] and value.shape[0] < target.shape[0]:
                target[: value.shape[0]].copy_(value)
                rows[name] = value.shape[0]
            else:
                wrong.append(f"{name} {tuple(value.shape)} -> {tuple(target.shape)}")
    unused = sorted(set(parent) - used)
    if unused or wrong:
        raise CheckpointError(
            f"{source}: the parent's weights do not fit the child model {type(model).__name__}: "
            + "; ".join(f"{label}: {items[:8]}" for label, items in (("unused", unused), ("shape", wrong)) if items)
        )
    model.peft_new = new
    return rows


def write_checkpoint(
    directory: str | Path,
    *,
    model_state: dict[str, torch.Tensor],
    config: dict,
    vocab_files: list[Path],
    trainer_state: dict | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write a checkpoint directory atomically; `directory` must not exist yet (checkpoints are immutable)."""
    directory = Path(directory)
    if directory.exists():
        raise CheckpointError(f"{directory}: already exists; checkpoints are never overwritten")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f"{TMP_PREFIX}{directory.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    peft = config.get("model", {}).get("peft") or {}
    if peft.get("parent"):  # a parameter-efficient child: only what it trained, on top of its parent
        model_state = delta_state(model_state, peft)
    try:
        tmp.mkdir()
        save_weights(model_state, tmp / MODEL_FILE)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        for vocab_file in vocab_files:
            shutil.copyfile(vocab_file, tmp / Path(vocab_file).name)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_FILE)
        if metrics is not None:
            (tmp / METRICS_FILE).write_text(json.dumps(metrics) + "\n", encoding="utf-8")
        for file in tmp.iterdir():
            _fsync(file)
        _fsync(tmp)
        os.rename(tmp, directory)
    except BaseException:  # a failed or interrupted save leaves nothing half-written behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(directory.parent)
    return directory


def require_file(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        raise CheckpointError(
            f"{directory}: not a speechxl checkpoint: expected a directory with {CONFIG_FILE}, {MODEL_FILE} "
            f"and {VOCAB_FILE} (+ {TRAINER_FILE} to resume); {name} is missing; found: {found or 'nothing'}"
        )
    return path


def _check_is_directory(directory: Path) -> None:
    if directory.is_file():
        raise CheckpointError(
            f"{directory}: is a file, but a speechxl checkpoint is a directory ({CONFIG_FILE}, {MODEL_FILE}, "
            f"{VOCAB_FILE}); import fairseq / HF checkpoints with `speechxl convert`"
        )
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")


def load_config_dict(directory: str | Path) -> dict:
    directory = Path(directory)
    _check_is_directory(directory)
    try:
        config = yaml.safe_load(require_file(directory, CONFIG_FILE).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CheckpointError(f"{directory / CONFIG_FILE}: malformed YAML ({err})") from err
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{directory / CONFIG_FILE}: expected a config with a `model` section")
    return config


def load_vocab(directory: Path):
    from speechxl.data.vocab import Vocab

    pieces = None
    if (directory / PIECES_FILE).is_file():
        pieces = json.loads((directory / PIECES_FILE).read_text(encoding="utf-8"))
    return Vocab.load(require_file(directory, VOCAB_FILE), pieces=pieces)


def load_delta_into(model: torch.nn.Module, delta: DeltaState, source: Path) -> None:
    """Load a delta checkpoint: its parent's weights (checked by SHA-256), then its own tensors on top."""
    parent, _ = parent_weights(delta.parent, delta.parent_sha256, source)
    load_parent_state(model, parent, delta.parent)
    overlay_delta(model, delta, source)


def overlay_delta(model: torch.nn.Module, delta: DeltaState, source: Path) -> None:
    """A delta's own tensors into a model that holds its parent's weights."""
    expected = model.state_dict()
    unknown = sorted(set(delta) - set(expected))
    if unknown:
        raise CheckpointError(f"{source}: delta tensors {unknown[:8]} are not in the model {type(model).__name__}")
    with torch.no_grad():
        for name, value in delta.items():
            target = expected[name][delta.rows.get(name, 0) :]
            if target.shape != value.shape:
                raise CheckpointError(
                    f"{source}: delta tensor {name} has shape {tuple(value.shape)}, "
                    f"the model's has {tuple(target.shape)}"
                )
            target.copy_(value)


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load `state` strictly, turning key / shape mismatches into a CheckpointError that lists them; a
    `DeltaState` loads its parent first (`load_delta_into`)."""
    if isinstance(state, DeltaState):
        load_delta_into(model, state, source)
        return
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" … ({len(keys)} in all)" if len(keys) > 8 else "")

        problems = [
            f"{label}: {show(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        ]
        raise CheckpointError(f"{source}: weights do not fit the model {type(model).__name__}; " + "; ".join(problems))
    model.load_state_dict(state)


# Model keys of checkpoints written before settings got one home each (docs/internals.md): dropped on load,
# since the model never reads them (label smoothing is a training setting, the prefix is the data's).
_LEGACY_MODEL_KEYS = ("label_smoothing", "ignore_prefix_size", "w2v_freeze", "w2v_freeze_updates")


def upgrade_config(config: dict) -> dict:
    """A checkpoint config from an older speechxl, in today's form."""
    model = dict(config["model"])
    if model.get("ignore_prefix_size") == 0:  # it trained and decoded without a language-tag prefix
        config.setdefault("data", {}).setdefault("prepend_lang_tag", False)
    for key in _LEGACY_MODEL_KEYS:
        model.pop(key, None)
    config["train"] = {k: v for k, v in config.get("train", {}).items() if k != "ignore_prefix_size"}
    return {**config, "model": model}


def load_trainer_state(directory: str | Path) -> dict:
    directory = Path(directory)
    _check_is_directory(directory)
    path = require_file(directory, TRAINER_FILE)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt or foreign pickle
        raise CheckpointError(f"{path}: cannot read trainer state with weights_only=True ({err})") from err


def load_metrics(directory: Path) -> dict:
    path = directory / METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def checkpoint_update(directory: Path) -> int | None:
    match = _CKPT_NAME.match(directory.name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Finished `ckpt-<update>` directories of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and checkpoint_update(p) is not None]
    return sorted(found, key=checkpoint_update)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest resumable checkpoint of a run (`last`, or the highest update with trainer.pt)."""
    last = Path(run_dir) / CHECKPOINTS / "last"
    if last.is_symlink() and (last / TRAINER_FILE).is_file():
        return last.resolve()
    resumable = [p for p in list_checkpoints(run_dir) if (p / TRAINER_FILE).is_file()]
    return resumable[-1] if resumable else None


def point_link(run_dir: str | Path, name: str, target: Path) -> None:
    """Make `checkpoints/<name>` point at `target`, replacing any old link in one atomic step."""
    root = Path(run_dir) / CHECKPOINTS
    tmp = root / f"{TMP_PREFIX}link-{name}-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target.name, tmp)
    os.replace(tmp, root / name)
    _fsync(root)


def clean_incomplete(run_dir: str | Path) -> list[Path]:
    """Remove what an interrupted save left behind (`.tmp-*`); returns what was removed."""
    root = Path(run_dir) / CHECKPOINTS
    removed = []
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(TMP_PREFIX):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


def ranking_value(metrics: dict) -> float | None:
    """How good a checkpoint is by the metric its run ranked with (`best_metric` in metrics.json, as the
    trainer writes it), as a number where higher is better; None when it was not validated."""
    best = metrics.get("best_metric")
    if not isinstance(best, dict):  # written before best_metric existed: checkpoints were ranked by BLEU
        best = {"name": "bleu", "higher_is_better": True}
    if not isinstance(metrics.get(best.get("name")), (int, float)):
        return None
    value = float(metrics[best["name"]])
    return value if best.get("higher_is_better", True) else -value


def _ranked(checkpoints: list[Path]) -> list[Path]:
    """Validated checkpoints, best first (earlier wins ties)."""
    scored = [(ranking_value(load_metrics(p)), checkpoint_update(p), p) for p in checkpoints]
    return [p for _, _, p in sorted((s for s in scored if s[0] is not None), key=lambda s: (-s[0], s[1]))]


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint `best` points at, else the best by the metric the run ranked with (train.best_metric)."""
    best = Path(run_dir) / CHECKPOINTS / "best"
    if best.is_symlink() and best.is_dir():
        return best.resolve()
    ranked = _ranked(list_checkpoints(run_dir))
    return ranked[0] if ranked else None


def prune_checkpoints(run_dir: str | Path, *, keep_last: int, keep_best: int) -> list[Path]:
    """Delete checkpoints that are neither among the last `keep_last` nor the best `keep_best` by the run's
    best_metric, nor the target of `last` / `best`. keep_last 0 keeps everything."""
    checkpoints = list_checkpoints(run_dir)
    if keep_last <= 0:
        return []
    keep = set(checkpoints[-keep_last:])
    keep.update(_ranked(checkpoints)[: max(keep_best, 0)])
    root = Path(run_dir) / CHECKPOINTS
    keep.update(link.resolve() for link in (root / "last", root / "best") if link.is_symlink())
    removed = [p for p in checkpoints if p.resolve() not in {k.resolve() for k in keep}]
    for path in removed:
        shutil.rmtree(path)
    return removed


def select_last(run_dir: str | Path, n: int) -> list[Path]:
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise CheckpointError(f"{run_dir}: no checkpoints under {CHECKPOINTS}/")
    return checkpoints[-n:]


def select_around_best(run_dir: str | Path, n: int) -> list[Path]:
    """The best checkpoint and the n-1 saved checkpoints nearest to it in updates (earlier wins ties)."""
    best = best_checkpoint(run_dir)
    if best is None:
        raise CheckpointError(f"{run_dir}: no `best` link and no validated checkpoint")
    centre = checkpoint_update(best)
    nearest = sorted(
        list_checkpoints(run_dir), key=lambda p: (abs(checkpoint_update(p) - centre), checkpoint_update(p))
    )
    return sorted(nearest[:n], key=checkpoint_update)


def average_checkpoints(inputs: list[str | Path], out: str | Path) -> Path:
    """Average model weights (fp32 accumulation) into a translate-only checkpoint (no trainer.pt).

    Config and vocabulary come from the last input. Integer buffers (counters) are taken from it too.
    Delta checkpoints of one parent average into a delta of that parent (their frozen tensors are its).
    """
    inputs = [Path(p).resolve() if Path(p).is_symlink() else Path(p) for p in inputs]
    if not inputs:
        raise CheckpointError("average: no input checkpoints")
    sums: dict[str, torch.Tensor] = {}
    reference: dict[str, torch.Tensor] = {}
    for index, directory in enumerate(inputs):
        _check_is_directory(directory)
        state = load_weights(require_file(directory, MODEL_FILE))
        if index == 0:
            reference = state
            sums = {k: v.to(torch.float32).clone() for k, v in state.items() if v.is_floating_point()}
            continue
        if isinstance(state, DeltaState) != isinstance(reference, DeltaState) or (
            isinstance(state, DeltaState) and state.parent_sha256 != reference.parent_sha256
        ):
            raise CheckpointError(f"{directory}: not a delta of the same parent as {inputs[0]}; cannot average them")
        if set(state) != set(reference):
            diff = sorted(set(state) ^ set(reference))[:8]
            raise CheckpointError(f"{directory}: weights differ in their names from {inputs[0]}: {diff}")
        for key, total in sums.items():
            if state[key].shape != total.shape:
                raise CheckpointError(
                    f"{directory}: {key} has shape {tuple(state[key].shape)}, {inputs[0]} has {tuple(total.shape)}"
                )
            total += state[key].to(torch.float32)
        reference = state
    averaged = {k: (sums[k] / len(inputs)).to(v.dtype) if k in sums else v for k, v in reference.items()}
    if isinstance(reference, DeltaState):  # deltas of one parent average into a delta of it
        averaged = DeltaState(averaged, reference.parent, reference.parent_sha256, reference.rows)
    last = inputs[-1]
    vocab_files = [last / name for name in (VOCAB_FILE, PIECES_FILE) if (last / name).is_file()]
    return write_checkpoint(
        out,
        model_state=averaged,
        config=load_config_dict(last),
        vocab_files=vocab_files,
        metrics={"averaged_from": [str(p) for p in inputs]},
    )
