"""Running progressive stages: which parameters a stage trains, and the acoustic encoder's freeze phase.

The stage schema (`Stage`, `parse_stages`, the update arithmetic) lives with the config in speechxl/config.py.
"""

from __future__ import annotations

from speechxl.config import Stage
from speechxl.errors import DataError


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def select_parameters(model, items: tuple[str, ...], source: str, where: str) -> set[str]:
    """Parameter names selected by `items`: each a parameter group of the model (`model.parameter_groups()`:
    acoustic, encoder, decoder.cross_attention, embeddings, layer_norms, ...) or a name prefix (`subsampler`
    matches `subsampler.…`). An item that selects nothing is a config error listing the groups."""
    names = [name for name, _ in model.named_parameters()]
    groups = model.parameter_groups()
    selected: set[str] = set()
    for item in items:
        chosen = set(groups[item]) if item in groups else {n for n in names if _matches(n, item)}
        if not chosen:
            raise DataError(
                source,
                f"{where}: trainable {item!r} matches no parameter of {type(model).__name__}; "
                f"its parameter groups: {', '.join(sorted(groups))}",
            )
        selected |= chosen
    return selected


def apply_trainable(model, stage: Stage) -> dict[str, int]:
    """Set requires_grad per the stage (every parameter is decided, so an earlier stage's freeze does not
    carry over); returns parameter counts {trainable, frozen} (elements, not tensors) for the log."""
    where = f"stage {stage.name}"
    frozen = select_parameters(model, stage.freeze, stage.source, where)
    only = select_parameters(model, stage.only, stage.source, where) if stage.only else None
    counts = {"trainable": 0, "frozen": 0}
    for name, param in model.named_parameters():
        train = name in only if only is not None else name not in frozen
        param.requires_grad_(train)
        counts["trainable" if train else "frozen"] += param.numel()
    return counts


def apply_acoustic_freeze(model, freeze_updates: int, update_within_stage: int) -> None:
    """Before each update: the acoustic encoder (`model.acoustic_encoder()`, wav2vec2) computes no gradient for
    the first `freeze_updates` updates of the stage (train.freeze_acoustic_updates)."""
    acoustic = model.acoustic_encoder()
    if acoustic is None:
        if freeze_updates > 0:
            raise DataError(
                "train.freeze_acoustic_updates", f"{type(model).__name__} has no acoustic encoder to freeze"
            )
        return
    acoustic.freeze_updates = freeze_updates
    acoustic.set_update(update_within_stage)
