"""What trains, by name: parameter groups, name prefixes, glob patterns and named presets.

A stage's `trainable: {only: [...]}` (or `{freeze: [...]}`) lists items; each is

- a preset (below): `full`, `xattn`, `lna`, `adapters`, `lora`;
- a parameter group of the model (`model.parameter_groups()`): `decoder.cross_attention`, `layer_norms`, ...;
- `embeddings.new`: only the rows a child appended to its parent's vocabulary (its new language's pieces);
- a glob over parameter names (`decoder.*.cross_attn.*`), or a name prefix (`subsampler` = `subsampler.…`).

An item that selects nothing is an error that lists the closest names. Presets are built from groups, so they
work on every architecture; the parts of a preset an architecture lacks (a length adaptor) are skipped.

- `full`: everything;
- `xattn`: decoder cross-attention q/k/v/out + its LayerNorm, and the new language's embeddings (Gheini et al.
  2021);
- `lna`: encoder-side LayerNorms and self-attention, decoder LayerNorms and cross-attention, the length adaptor,
  the new embeddings (Li et al. 2021);
- `adapters`: the bottleneck adapters and the new embeddings; `lora`: the LoRA matrices and the new embeddings.

Training only appended embedding rows keeps the parent's rows bit-identical: a gradient hook zeroes their
gradient, and Adam with no weight decay then leaves them as they are (weight decay would shrink them).
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from speechxl.errors import DataError

NEW_EMBEDDINGS = "embeddings.new"
PRESETS: dict[str, tuple[str, ...]] = {
    "full": ("*",),
    "xattn": ("decoder.cross_attention", NEW_EMBEDDINGS),
    "lna": (
        "encoder.layer_norms",
        "encoder.self_attention",
        "decoder.layer_norms",
        "decoder.cross_attention",
        "length_adaptor",
        NEW_EMBEDDINGS,
    ),
    "adapters": ("adapters", NEW_EMBEDDINGS),
    "lora": ("lora", NEW_EMBEDDINGS),
}


@dataclass
class Selection:
    """Parameter names, and for those selected only through `embeddings.new` the first row that trains."""

    names: set[str] = field(default_factory=set)
    rows: dict[str, int] = field(default_factory=dict)

    def add(self, other: Selection) -> None:
        for name in other.names:
            if name in self.names and name not in other.rows:
                self.rows.pop(name, None)  # selected whole somewhere: every row trains
            elif name not in self.names and name in other.rows:
                self.rows[name] = other.rows[name]
        self.names |= other.names


def _is_glob(item: str) -> bool:
    return any(c in item for c in "*?[")


def _new_embeddings(model, groups: dict[str, list[str]]) -> Selection:
    grown = getattr(model, "peft_rows", {})
    names = [n for n in groups.get("embeddings", []) if n in grown]
    return Selection(set(names), {n: grown[n] for n in names})


def _item(model, item: str, names: list[str], groups: dict[str, list[str]]) -> Selection:
    if item == NEW_EMBEDDINGS:
        return _new_embeddings(model, groups)
    if item in groups:
        return Selection(set(groups[item]))
    if _is_glob(item):
        return Selection({n for n in names if fnmatch.fnmatchcase(n, item)})
    return Selection({n for n in names if n == item or n.startswith(item + ".")})


def resolve(model, items: tuple[str, ...] | list[str], source: str, where: str) -> Selection:
    """The parameters `items` select; an item (or a whole preset) that selects nothing is an error."""
    names = [name for name, _ in model.named_parameters()]
    groups = model.parameter_groups()
    selected = Selection()
    for item in items:
        if item in PRESETS:
            chosen = Selection()
            for part in PRESETS[item]:
                chosen.add(_item(model, part, names, groups))
        else:
            chosen = _item(model, item, names, groups)
        if not chosen.names:
            vocabulary = list(PRESETS) + sorted(groups) + [NEW_EMBEDDINGS] + names
            close = difflib.get_close_matches(item, vocabulary, n=6, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise DataError(
                source,
                f"{where}: trainable {item!r} matches no parameter of {type(model).__name__}; its parameter "
                f"groups: {', '.join(sorted(groups))}; presets: {', '.join(PRESETS)}{hint}",
            )
        selected.add(chosen)
    return selected


def limit_rows(model, rows: dict[str, int]) -> None:
    """Train only rows >= rows[name] of those parameters (a gradient hook zeroes the others); clears earlier
    limits. `model.peft_row_limits` tells the checkpoint writer which rows a delta stores."""
    for handle in getattr(model, "_peft_row_hooks", []):
        handle.remove()
    params = dict(model.named_parameters())
    hooks = []
    for name, first in rows.items():
        hooks.append(params[name].register_hook(lambda grad, first=first: _zero_rows(grad, first)))
    model._peft_row_hooks = hooks
    model.peft_row_limits = dict(rows)


def _zero_rows(grad: torch.Tensor, first: int) -> torch.Tensor:
    grad = grad.clone()
    grad[:first] = 0
    return grad


def trainable_count(model) -> tuple[int, int]:
    """(parameters that train, all parameters), elements; row-limited tensors count their trained rows."""
    limits = getattr(model, "peft_row_limits", {})
    trained = total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            first = limits.get(name, 0)
            trained += param.numel() - first * (param[0].numel() if param.dim() else 1)
    return trained, total


def log_trainable(model, where: str) -> None:
    trained, total = trainable_count(model)
    rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    if rank0:
        tqdm.write(f"{where}: {trained:,} of {total:,} parameters train ({100 * trained / max(total, 1):.2f}%)")
