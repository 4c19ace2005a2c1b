"""Models: one file per method (s2t.py, xstnet.py, ...) on the protocol and shared pieces of base.py."""

from speechxl.models.base import (
    ARCHS,
    Seq2SeqConfig,
    SpeechModel,
    build_encoder_decoder,
    build_model,
    config_from_preset,
    config_to_dict,
    load_model,
    model_class,
    prefix_size,
    register_model,
)

__all__ = [
    "ARCHS",
    "Seq2SeqConfig",
    "SpeechModel",
    "build_encoder_decoder",
    "build_model",
    "config_from_preset",
    "config_to_dict",
    "load_model",
    "model_class",
    "prefix_size",
    "register_model",
]
