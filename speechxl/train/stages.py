"""Running progressive stages: which parameters a stage trains, and the acoustic encoder's freeze phase.

The stage schema (`Stage`, `parse_stages`, the update arithmetic) lives with the config in speechxl/config.py.
"""

from __future__ import annotations

from speechxl.config import Stage
from speechxl.errors import DataError
from speechxl.train import peft


def select_parameters(model, items: tuple[str, ...], source: str, where: str) -> set[str]:
    """Parameter names selected by `items`: presets (`xattn`, `lna`, `adapters`, `lora`, `full`), parameter
    groups of the model (`model.parameter_groups()`: acoustic, encoder, decoder.cross_attention, embeddings,
    layer_norms, ...), `embeddings.new`, globs (`decoder.*.cross_attn.*`) or name prefixes (`subsampler`
    matches `subsampler.…`); speechxl/train/peft.py. An item that selects nothing is a config error listing
    the groups and the closest names."""
    return peft.resolve(model, items, source, where).names


def apply_trainable(model, stage: Stage) -> dict[str, int]:
    """Set requires_grad per the stage (every parameter is decided, so an earlier stage's freeze does not
    carry over); returns parameter counts {trainable, frozen} (elements, not tensors) for the log, which
    also gets a line with the share that trains. Embeddings selected only as `embeddings.new` train their
    appended rows alone."""
    where = f"stage {stage.name}"
    frozen = peft.resolve(model, stage.freeze, stage.source, where)
    only = peft.resolve(model, stage.only, stage.source, where) if stage.only else None
    counts = {"trainable": 0, "frozen": 0}
    for name, param in model.named_parameters():
        train = name in only.names if only is not None else name not in frozen.names
        param.requires_grad_(train)
        counts["trainable" if train else "frozen"] += param.numel()
    peft.limit_rows(model, only.rows if only is not None else {})
    peft.log_trainable(model, where)
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
