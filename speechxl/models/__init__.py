"""Model registry: `config["arch"]` picks the class; the rest of the dict is that class's own config.

Each model module registers its class with `@register_model("<arch>")`; the class provides
`from_config(config: dict, vocab) -> nn.Module`. `_ARCH_MODULES` says where each arch lives so that
`build_model` imports only the module it needs.
"""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from speechxl.errors import DataError

_ARCH_MODULES = {"s2t": "speechxl.models.s2t", "xstnet": "speechxl.models.xstnet"}
MODELS: dict[str, type] = {}


def register_model(arch: str):
    def register(cls: type) -> type:
        MODELS[arch] = cls
        return cls

    return register


def build_model(config: dict[str, Any], vocab) -> nn.Module:
    arch = config.get("arch")
    if arch not in _ARCH_MODULES:
        raise DataError("model config", f"unknown arch {arch!r}; known: {', '.join(sorted(_ARCH_MODULES))}")
    importlib.import_module(_ARCH_MODULES[arch])
    return MODELS[arch].from_config({k: v for k, v in config.items() if k != "arch"}, vocab)
