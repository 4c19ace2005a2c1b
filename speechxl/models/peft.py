"""A parameter-efficient child model: a trained parent's weights plus what the child adds and trains.

The model config's `peft` section describes the child (build_model hands it here):

```yaml
model:
  peft:
    parent: exp/demo/avg          # its weights start the child; the child's checkpoints are deltas of it
    adapters: {names: [fr, es], bottleneck: 64, sides: [encoder, decoder]}   # optional
    lora: {r: 8, alpha: 16, targets: [out_proj, fc1, fc2]}                   # optional (needs peft)
    reinit: [cross_attn, cross_attn_norm]   # optional: modules (by last name) drawn afresh after the parent loads
    new_rows: spelled             # rows of appended pieces start as the mean of the parent's rows that spell
                                  # them (a new tag: of its language tags); `random`: their fresh initial values
```

With a `parent`, the child's model config is the parent's (its arch too) with the keys the child sets.
The child's vocabulary may be the parent's with pieces appended (`speechxl extend-vocab`): tensors over the
vocabulary then take the parent's rows first. `build_model` records the SHA-256 of the parent's weights;
what the child trained is named in its checkpoints' `peft.stored` (name -> first row stored), written as a
delta (speechxl/checkpoint.py).

Adapters are chosen per batch: the adapter named after the batch's target language tag (its `prefix`), then
`task_<task>` when there is one; a batch whose language has no adapter runs the parent's path unchanged.
A batch that mixes target languages (a multilingual manifest) picks each utterance's adapter by its own tag.
Because search calls `model.encode(batch)` directly, the choice is made by wrapping `encode` (and by a
forward pre-hook for training); for a mixed batch the encoder output carries the per-utterance choice
(`adapter_rows`, reordered with it as utterances finish) and the wrapped `decode_step` repeats it per beam
row. The model's `checkpoint_config` is wrapped to add the `peft` section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from speechxl import checkpoint as ckpt
from speechxl.data.vocab import parent_spelling
from speechxl.errors import DataError
from speechxl.modules.adapters import (
    LORA_TARGETS,
    adapter_names,
    add_adapters,
    add_lora,
    set_active_adapters,
    set_row_adapters,
)

PEFT_KEYS = ("parent", "parent_sha256", "adapters", "lora", "reinit", "new_rows", "stored")
NEW_ROWS = ("spelled", "random")
_ADAPTER_KEYS = {"names": None, "bottleneck": 64, "sides": ["encoder", "decoder"]}
_LORA_KEYS = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": list(LORA_TARGETS)}
_WHERE = "model config peft"
ROW_ADAPTERS = "adapter_rows"  # the encoder output's key of a mixed batch's per-utterance adapter choice


def _options(value: Any, defaults: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(_WHERE, f"{where} must be a mapping, got {value!r}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise DataError(_WHERE, f"unknown {where} keys {unknown}; valid: {', '.join(defaults)}")
    options = {**defaults, **value}
    missing = [k for k, v in options.items() if v is None]
    if missing:
        raise DataError(_WHERE, f"{where} needs {missing}")
    return options


def check_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise DataError(_WHERE, f"peft must be a mapping, got {spec!r}")
    unknown = sorted(set(spec) - set(PEFT_KEYS))
    if unknown:
        raise DataError(_WHERE, f"unknown peft keys {unknown}; valid: {', '.join(PEFT_KEYS)}")
    spec = dict(spec)
    if spec.get("adapters") is not None:
        spec["adapters"] = _options(spec["adapters"], _ADAPTER_KEYS, "peft.adapters")
    if spec.get("lora") is not None:
        spec["lora"] = _options(spec["lora"], _LORA_KEYS, "peft.lora")
    if spec.setdefault("new_rows", NEW_ROWS[0]) not in NEW_ROWS:
        raise DataError(_WHERE, f"new_rows must be one of {', '.join(NEW_ROWS)}, got {spec['new_rows']!r}")
    return spec


def parent_model_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The parent checkpoint's model section (a child config without `arch` inherits it)."""
    if not spec.get("parent"):
        raise DataError(_WHERE, "peft needs a parent checkpoint")
    if not Path(spec["parent"]).is_dir():
        raise ckpt.CheckpointError(f"its parent checkpoint {spec['parent']} is missing (no such directory)")
    model = ckpt.upgrade_config(ckpt.load_config_dict(spec["parent"]))["model"]
    return {k: v for k, v in model.items() if k != "peft"}


def attach(model: torch.nn.Module, spec: dict[str, Any], vocab) -> None:
    """Add the child's adapters / LoRA to `model` and load its parent's weights (checked by SHA-256)."""
    spec = check_spec(spec)
    if spec.get("adapters"):
        options = spec["adapters"]
        add_adapters(model, options["names"], options["bottleneck"], options["sides"])
        _choose_adapters_per_batch(model, vocab)
    if spec.get("lora"):
        options = spec["lora"]
        add_lora(model, options["r"], options["alpha"], options["targets"], options["dropout"])
    model.peft_rows, model.peft_new, model.peft_row_limits = {}, [], {}
    if spec.get("parent"):
        parent = Path(spec["parent"]).resolve()
        state, digest = ckpt.parent_weights(parent, spec.get("parent_sha256"), _WHERE)
        parent_vocab = ckpt.load_vocab(parent)
        _check_vocab_extends(parent_vocab, vocab, parent)
        model.peft_rows = ckpt.load_parent_state(model, state, parent)
        if spec["new_rows"] == "spelled":
            _spell_new_rows(model, parent_vocab, vocab)
        spec.update(parent=str(parent), parent_sha256=digest)
        _reinit(model, spec.get("reinit") or [])
    spec.pop("stored", None)
    model.peft_spec = spec
    own_config = model.checkpoint_config
    model.checkpoint_config = lambda: {**own_config(), "peft": _saved_spec(model)}


def _spell_new_rows(model: torch.nn.Module, parent_vocab, vocab) -> None:
    """Start each appended row (embeddings, an untied output projection) as the mean of the parent's rows of
    the pieces that spell it (`parent_spelling`), so a new piece begins where the parent's model already puts
    its letters rather than at a random point the frozen layers have never seen. A delta loads its trained
    rows over these, so this only decides where training starts."""
    spelled = {i: parent_spelling(parent_vocab, vocab.piece(i)) for i in range(len(parent_vocab), len(vocab))}
    state = model.state_dict()
    with torch.no_grad():
        for name in model.peft_rows:
            rows = state[name]
            for i, ids in spelled.items():
                if ids and i < rows.size(0):
                    rows[i] = rows[ids].mean(0)


def _reinit(model: torch.nn.Module, names: list[str]) -> None:
    """Draw the modules whose last name is in `names` afresh (the control of Gheini et al.: cross-attention
    re-initialised instead of the parent's); their tensors then differ from the parent's and are stored."""
    chosen = [(n, m) for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in names]
    if names and not chosen:
        raise DataError(_WHERE, f"reinit {names} names no module of {type(model).__name__}")
    for name, module in chosen:
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        model.peft_new += [f"{name}.{p}" for p, _ in module.named_parameters()]


def _saved_spec(model) -> dict[str, Any]:
    spec = dict(model.peft_spec)
    if spec.get("parent"):
        spec["stored"] = stored_tensors(model)
    return spec


def stored_tensors(model) -> dict[str, int]:
    """What a delta checkpoint of `model` holds, name -> first row: the parameters it trains (only their new
    rows when training is limited to them), tensors its parent lacks, and the rows it appended to the parent's."""
    stored = {}
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    for name in model.state_dict():
        if name in trained:
            stored[name] = model.peft_row_limits.get(name, 0)
        elif name in model.peft_new:
            stored[name] = 0
        elif name in model.peft_rows:
            stored[name] = model.peft_rows[name]
    return stored


def _check_vocab_extends(parent_vocab, vocab, parent: Path) -> None:
    if len(vocab) < len(parent_vocab):
        raise DataError(_WHERE, f"the child's vocabulary ({len(vocab)}) is smaller than its parent's {parent}")
    for i in range(len(parent_vocab)):
        if vocab.piece(i) != parent_vocab.piece(i):
            raise DataError(
                _WHERE,
                f"the child's vocabulary is not its parent's ({parent}) with pieces appended: id {i} is "
                f"{vocab.piece(i)!r}, the parent's {parent_vocab.piece(i)!r} (extend it with speechxl extend-vocab)",
            )


def _choose_adapters_per_batch(model, vocab) -> None:
    names = adapter_names(model)
    tags = {vocab.tag(name): name for name in names if vocab.has_tag(name)}
    languages = sorted(set(tags.values()))

    def choose(batch: dict[str, Any]) -> torch.Tensor | None:
        """Set the batch's adapters; for a batch mixing languages, returns each utterance's choice (an index
        into `languages`, -1 for a language without an adapter)."""
        active, rows = [], None
        prefix = batch.get("prefix")
        if prefix is not None:
            row_langs = [tags.get(i) for i in prefix[:, 0].tolist()]
            if len(set(row_langs)) == 1:
                active += [lang for lang in row_langs[:1] if lang is not None]
            else:  # each utterance its own language's adapter
                index = {lang: i for i, lang in enumerate(languages)}
                rows = torch.tensor([index.get(lang, -1) for lang in row_langs], device=prefix.device)
        if f"task_{batch.get('task')}" in names:
            active.append(f"task_{batch['task']}")
        set_active_adapters(model, active)
        if rows is not None:
            set_row_adapters(model, languages, rows)
        return rows

    def choose_on_forward(module, args) -> None:
        choose(args[0])

    model.register_forward_pre_hook(choose_on_forward)
    encode, decode_step = model.encode, model.decode_step

    def encode_choosing(batch, *args, **kwargs):
        rows = choose(batch)
        enc = encode(batch, *args, **kwargs)
        if rows is not None:  # search keeps it in step with the running utterances (reorder_encoder_out)
            enc[ROW_ADAPTERS] = rows
        return enc

    def decode_step_choosing(tokens, enc, *args, **kwargs):
        rows = enc.get(ROW_ADAPTERS)
        if rows is not None:  # N = utterances x beam rows, grouped per utterance
            set_row_adapters(model, languages, rows.repeat_interleave(tokens.size(0) // rows.numel()))
        return decode_step(tokens, enc, *args, **kwargs)

    model.encode, model.decode_step = encode_choosing, decode_step_choosing
