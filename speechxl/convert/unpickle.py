"""Read pickled PyTorch checkpoints without running code from the file.

`torch.load(weights_only=True)` refuses fairseq checkpoints because they pickle their config as an
`argparse.Namespace` or an omegaconf `DictConfig`. Plain `pickle` would import and call whatever the
file names, so this module is a drop-in `pickle_module` for `torch.load` whose `find_class` allows only
tensor rebuilding and a few containers; config objects come back as plain dicts through inert
stand-in classes, and any other global raises `CheckpointError` before it is looked up.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
from typing import Any

import torch

from speechxl.errors import CheckpointError

# Re-exported so that torch.load can use this module as its `pickle_module`.
Pickler = pickle.Pickler
dump = pickle.dump
UnpicklingError = pickle.UnpicklingError

# What torch.save itself writes for tensors (storage classes are resolved by torch's own wrapper).
_TORCH_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
}


class _StandIn:
    """An inert object that records how pickle tried to build it: constructor args and state."""

    # class-level defaults: pickle's NEWOBJ builds instances with __new__ alone, skipping __init__
    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # pickle's SETITEMS / APPENDS on a stand-in (e.g. a defaultdict) keep the items.
    def __setitem__(self, key: Any, value: Any) -> None:
        if not isinstance(self.state, dict):
            self.state = {}
        self.state[key] = value

    def append(self, value: Any) -> None:
        if not isinstance(self.state, list):
            self.state = []
        self.state.append(value)

    def extend(self, values: Any) -> None:
        for value in values:
            self.append(value)


class _Namespace(_StandIn):
    """argparse.Namespace: its state is the attribute dict."""


class _DictConfig(_StandIn):
    """omegaconf DictConfig: state["_content"] maps keys to nodes."""


class _ListConfig(_StandIn):
    """omegaconf ListConfig: state["_content"] is a list of nodes."""


class _ValueNode(_StandIn):
    """omegaconf leaf node (AnyNode, StringNode, …): the value is state["_val"]."""


class _DefaultDict(_StandIn):
    """collections.defaultdict: the items arrive through __setitem__; the factory is dropped."""


class _Ignored(_StandIn):
    """Metadata that only describes types (omegaconf ContainerMetadata, typing.Any, enum classes)."""


_OMEGACONF_CONTAINERS = {"DictConfig": _DictConfig, "ListConfig": _ListConfig}
# Type references that omegaconf's metadata pickles; they are never called with data we keep.
_TYPE_REFERENCES = {
    ("typing", "Any"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "object"),
    ("builtins", "str"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "bool"),
    ("builtins", "tuple"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only an allow-list of globals; everything else is refused unseen."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol-2 pickles spell builtins the Python 2 way
            module, name = "builtins", {"long": "int"}.get(name, name)
        if (module, name) in _TORCH_GLOBALS:
            return _TORCH_GLOBALS[(module, name)]
        if (module, name) == ("argparse", "Namespace"):
            return _Namespace
        if module.startswith("omegaconf"):
            if name in _OMEGACONF_CONTAINERS:
                return _OMEGACONF_CONTAINERS[name]
            if name.endswith("Node"):
                return _ValueNode
            if name in ("ContainerMetadata", "Metadata"):
                return _Ignored
        if (module, name) == ("collections", "defaultdict"):
            return _DefaultDict
        if (module, name) in _TYPE_REFERENCES:
            return _Ignored
        raise CheckpointError(
            f"refusing to load {module}.{name}: checkpoints may only contain tensors and plain configs"
        )


Unpickler = RestrictedUnpickler


def load(file: Any, **kwargs: Any) -> Any:
    """`pickle.load` through the restricted unpickler (torch's legacy format calls this)."""
    return RestrictedUnpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    return load(io.BytesIO(data), **kwargs)


def to_plain(obj: Any) -> Any:
    """Replace stand-ins by plain dicts / lists / values, recursively."""
    if isinstance(obj, _Namespace):
        return {k: to_plain(v) for k, v in (obj.state or {}).items()}
    if isinstance(obj, _DictConfig):
        content = (obj.state or {}).get("_content")
        return None if content is None else {k: to_plain(v) for k, v in content.items()}
    if isinstance(obj, _ListConfig):
        content = (obj.state or {}).get("_content")
        return None if content is None else [to_plain(v) for v in content]
    if isinstance(obj, _ValueNode):
        state = obj.state or {}
        return to_plain(state.get("_val", obj.args[0] if obj.args else None))
    if isinstance(obj, _DefaultDict):
        return {k: to_plain(v) for k, v in (obj.state or {}).items()}
    if isinstance(obj, _StandIn):
        return None
    if isinstance(obj, dict):
        return type(obj)((k, to_plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a pickled torch checkpoint on CPU; configs become plain dicts. Raises CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", pickle_module=sys.modules[__name__], weights_only=False)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from err
    obj = to_plain(obj)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict at the top of the checkpoint, found {type(obj).__name__}")
    return obj
