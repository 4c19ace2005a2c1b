"""Parameter-efficient additions to a trained Transformer: bottleneck adapters and LoRA.

Adapters (Houlsby et al. 2019; per language and per task as in Bapna & Firat 2019): after each layer's
feed-forward block, before its residual add, `y + up(relu(down(y)))`. `up` starts at zero, so a new adapter
is the identity and a model with fresh adapters computes exactly what its parent did. A layer holds one
adapter per name (`fr`, `es`, `task_st`); the active names are applied in order (language, then task), so
adapters stack, and switching the active names swaps them at decode time.

A batch that mixes target languages picks each utterance's language adapter by row (`set_row_adapters`): the
rows of utterance b go through its adapter, the other rows past it; the `active` names (a task adapter) then
apply to every row. A layer sees utterance rows as (B, T, D), as its real rows (N, D) with a `RowPacking`
(captured from the layer's call), or as (B·k, t, D) beam rows in search (the caller repeats the choice per row).

They are inserted without touching the layers' code: each layer gets an `adapters` child (its parameters
are named `<layer>.adapters.<name>.down.weight`, the parent's names stay as they were) and a forward hook
on its `ffn` that passes the FFN output through it.

LoRA comes from the `peft` library (optional extra `speechxl[peft]`), injected in place. It serves modules
that are *called*: attention `out_proj` and the FFN's `fc1` / `fc2`. Our attention projects q/k/v through
`F.linear` on the stacked `q_proj/k_proj/v_proj` weights (one GEMM, modules/transformer.py), which reads
`.weight` of a peft layer — its frozen base weight — and so would silently skip a LoRA on q/k/v;
`add_lora` refuses those targets (tests/test_peft.py shows the bypass).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from speechxl.modules.transformer import DecoderLayer, EncoderLayer, RowPacking

SIDES = {"encoder": EncoderLayer, "decoder": DecoderLayer}
LORA_TARGETS = ("out_proj", "fc1", "fc2")  # modules peft's LoRA serves in our layers (called, not read)
_BYPASSED = ("q_proj", "k_proj", "v_proj")


class Bottleneck(nn.Module):
    """One adapter: y + up(relu(down(y))), `up` zero-initialised (a new adapter is the identity)."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(F.relu(self.down(y)))


class LayerAdapters(nn.Module):
    """The adapters of one layer by name. Per utterance row, `row_names[row_choice[row]]` first (-1: none;
    only while `row_choice` is set, for a batch mixing languages), then `active` (a tuple of names) in order."""

    def __init__(self, dim: int, bottleneck: int, names: Sequence[str]):
        super().__init__()
        self.adapters = nn.ModuleDict({name: Bottleneck(dim, bottleneck) for name in names})
        self.active: tuple[str, ...] = ()
        self.row_names: tuple[str, ...] = ()
        self.row_choice: torch.Tensor | None = None  # (rows,) long: an index into row_names, or -1
        self.packing: RowPacking | None = None  # the layer's packing during its forward (set by a hook)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.row_choice is not None:
            y = self._per_row(y)
        for name in self.active:
            y = self.adapters[name](y)
        return y

    def _per_row(self, y: torch.Tensor) -> torch.Tensor:
        choice = self.row_choice.to(y.device)
        if y.dim() == 2 and self.packing is not None and self.packing.batch == choice.numel():
            choice = choice.index_select(0, torch.div(self.packing.index, self.packing.length, rounding_mode="floor"))
        elif y.size(0) != choice.numel():
            raise RuntimeError(
                f"per-utterance adapters chosen for {choice.numel()} rows, the layer got {tuple(y.shape)} "
                "(decode one target language at a time, or pass the choice per beam row)"
            )
        out = y
        for i, name in enumerate(self.row_names):
            rows = (choice == i).nonzero().squeeze(1)
            if rows.numel():
                out = out.index_copy(0, rows, self.adapters[name](y.index_select(0, rows)))
        return out


def _after_ffn(layer: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
    return layer.adapters(output)


def _capture_packing(layer: nn.Module, args: tuple, kwargs: dict) -> None:
    layer.adapters.packing = next((a for a in (*args, *kwargs.values()) if isinstance(a, RowPacking)), None)


def _release_packing(layer: nn.Module, _args, _output) -> None:
    layer.adapters.packing = None


def add_adapters(model: nn.Module, names: Sequence[str], bottleneck: int, sides: Iterable[str]) -> int:
    """Give every Transformer layer of `sides` (encoder, decoder) an adapter per name; returns the number of
    layers. Names must be valid module names (no dots): `fr`, `task_st`."""
    bad = [n for n in names if not n or "." in n]
    if bad or not names:
        raise ValueError(f"adapter names must be non-empty and free of dots, got {list(names)}")
    kinds = tuple(SIDES[side] for side in sides)
    layers = [m for m in model.modules() if isinstance(m, kinds)]
    for layer in layers:
        dim = layer.ffn.fc2.out_features
        layer.adapters = LayerAdapters(dim, bottleneck, names)
        layer.ffn.register_forward_hook(lambda ffn, inputs, out, layer=layer: _after_ffn(layer, inputs, out))
        layer.register_forward_pre_hook(_capture_packing, with_kwargs=True)
        layer.register_forward_hook(_release_packing)
    return len(layers)


def set_active_adapters(model: nn.Module, names: Sequence[str]) -> None:
    """Make `names` (in order) the active adapters of every layer; a name a layer lacks is an error."""
    for module in model.modules():
        if isinstance(module, LayerAdapters):
            missing = [n for n in names if n not in module.adapters]
            if missing:
                raise KeyError(f"no adapter {missing} in this model; it has {sorted(module.adapters)}")
            module.active = tuple(names)
            module.row_names, module.row_choice = (), None


def set_row_adapters(model: nn.Module, names: Sequence[str], choice: torch.Tensor) -> None:
    """Per utterance row, the adapter `names[choice[row]]` (-1: none), applied before the `active` ones;
    `set_active_adapters` clears it."""
    for module in model.modules():
        if isinstance(module, LayerAdapters):
            missing = [n for n in names if n not in module.adapters]
            if missing:
                raise KeyError(f"no adapter {missing} in this model; it has {sorted(module.adapters)}")
            module.row_names, module.row_choice = tuple(names), choice


def adapter_names(model: nn.Module) -> list[str]:
    """The adapter names the model's layers hold (empty without adapters)."""
    for module in model.modules():
        if isinstance(module, LayerAdapters):
            return list(module.adapters)
    return []


def add_lora(model: nn.Module, r: int, alpha: float, targets: Sequence[str], dropout: float = 0.0) -> None:
    """Inject peft LoRA layers (rank r, scale alpha/r) into the modules whose last name is in `targets`."""
    bypassed = sorted(set(targets) & set(_BYPASSED))
    if bypassed:
        raise ValueError(
            f"LoRA on {bypassed} would have no effect: our attention reads q/k/v_proj weights directly "
            f"(one stacked GEMM), past peft's wrapper; LoRA targets that work: {', '.join(LORA_TARGETS)}"
        )
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:  # an optional extra
        raise ImportError("LoRA needs the peft library: pip install 'speechxl[peft]'") from err
    pattern = r".*\.(" + "|".join(re.escape(t) for t in targets) + r")$"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():  # peft freezes the rest; what trains is the trainer's call
        param.requires_grad_(requires_grad.get(name.replace(".base_layer", ""), True))
