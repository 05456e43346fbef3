"""Reading reference `torch.save` checkpoints without running code from the file.

A lighthouse / DCASE baseline checkpoint is `{"model": state_dict, "optimizer": ...,
"lr_scheduler": ..., "epoch": int, "opt": EasyDict(...)}` with tensors tagged
`cuda:0`. `torch.load(weights_only=True)` refuses the `EasyDict` (a dict subclass
rebuilt with BUILD, even when allow-listed), and `weights_only=False` would run any
callable the pickle names. This loader unpickles with an allow list instead:
tensor and storage rebuilding, `OrderedDict`, a few inert value types, and
`easydict.EasyDict` mapped to a plain dict (so `easydict` need not be installed).
Any other global raises `UnsafeCheckpointError` naming it before it is called.
Tensors are mapped to the CPU.
"""

from __future__ import annotations

import os
import pickle
import types
from typing import Any

from amr_jax.data.errors import DataError


class UnsafeCheckpointError(DataError):
    """The pickle names a global outside the allow list."""

    hint = ("only torch.save files of tensors, dicts and plain options load; re-save the "
            "checkpoint's state dict alone if it carries other objects")


class _PlainDict(dict):
    """Stands in for `easydict.EasyDict`: keeps the items, ignores attribute state."""

    def __setstate__(self, state):
        # EasyDict pickles its items (SETITEMS) and the same values as attributes
        # (BUILD); the items are all that is needed.
        if isinstance(state, dict):
            for key, value in state.items():
                self.setdefault(key, value)


_EASYDICT = {("easydict", "EasyDict")}
# (module, name) pairs resolved by import; each is inert to construct.
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "device"),
    ("torch", "Size"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


def _allowed_torch_dtype(module: str, name: str) -> bool:
    if module != "torch":
        return False
    import torch  # noqa: PLC0415

    return isinstance(getattr(torch, name, None), torch.dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only allow-listed globals (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _EASYDICT:
            return _PlainDict
        if (module, name) in _ALLOWED or _allowed_torch_dtype(module, name):
            return super().find_class(module, name)
        if module.startswith("numpy") and name.endswith("DType"):  # numpy >= 1.25 dtype classes
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"checkpoint refers to {module}.{name}, which is not on the allow list of "
            "checkpoint contents (tensors, plain containers, easydict.EasyDict); refusing to "
            "load it. Re-save the state dict alone with torch.save(ckpt['model'], path)")


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# The `pickle_module` handed to torch.load: torch subclasses its `Unpickler` (adding
# storage handling) and calls its `load` for the legacy format's headers.
_PICKLE_MODULE = types.SimpleNamespace(Unpickler=RestrictedUnpickler, load=_restricted_load,
                                       __name__="amr_jax_restricted_pickle")


def _to_plain(obj):
    """Replaces `_PlainDict` by `dict` throughout nested containers."""
    if isinstance(obj, dict):
        items = {k: _to_plain(v) for k, v in obj.items()}
        return items if type(obj) in (dict, _PlainDict) else type(obj)(items)
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    return obj


def load_torch_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a `torch.save` file on the CPU with the restricted unpickler.

    Returns:
      The saved object (a dict for checkpoints), `EasyDict` entries as plain dicts.

    Raises:
      UnsafeCheckpointError: the file names a global outside the allow list.
      FileNotFoundError: no such file.
    """
    import torch  # noqa: PLC0415

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    obj = torch.load(path, map_location="cpu", pickle_module=_PICKLE_MODULE, weights_only=False)
    return _to_plain(obj)
