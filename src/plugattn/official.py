"""``from_official``: build the plugattn module equal to an official class and load its checkpoint.

Each module family registers one converter next to its class (``@official("se")``). A converter takes the
official constructor's keyword arguments and returns ``(module, key_map)``: the plugattn module built with
the equivalent arguments and a function mapping one official state_dict key to ours (or ``None`` to drop it);
it may return a third item, a function applied to the whole official state_dict first (to merge tensors,
e.g. SK's per-branch heads into one layer).
Tensors whose shapes differ only by size-1 dims (1×1 conv vs. linear) are reshaped in :func:`load_converted`,
the one loading loop (the design-space presets use it too).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn as nn
from torch import Tensor

try:
    import numpy as np
except ImportError:  # numpy is optional: without it, arrays are not accepted
    np = None  # type: ignore[assignment]

__all__ = ["from_official", "official", "list_official", "official_converter", "load_converted", "unwrap_state_dict"]

_log = logging.getLogger("plugattn")

KeyMap = Callable[[str], "str | None"]
Prepare = Callable[[dict[str, Tensor]], Mapping[str, Tensor]]
Converter = Callable[..., "tuple[nn.Module, KeyMap] | tuple[nn.Module, KeyMap, Prepare]"]

_CONVERTERS: dict[str, Converter] = {}


def official(name: str) -> Callable[[Converter], Converter]:
    """Register a converter for the official class known as ``name``; a duplicate name raises."""

    def deco(fn: Converter) -> Converter:
        if name in _CONVERTERS:
            raise ValueError(f"official: converter {name!r} is already registered")
        _CONVERTERS[name] = fn
        return fn

    return deco


def list_official() -> list[str]:
    """Sorted names accepted by :func:`from_official`."""
    return sorted(_CONVERTERS)


def official_converter(name: str, **official_kwargs: Any) -> tuple[nn.Module, KeyMap]:
    """The module :func:`from_official` would build for ``name`` and its official-key → our-key map, unloaded.

    For composing converters (a network whose blocks hold an official module) and inspecting key layouts.
    """
    if name not in _CONVERTERS:
        raise ValueError(f"official_converter: unknown name {name!r}; expected one of: {', '.join(list_official())}")
    module, key_map, *_ = _CONVERTERS[name](**official_kwargs)
    return module, key_map


def rename_prefix(*pairs: tuple[str, str]) -> Callable[[str], str]:
    """A key map that rewrites the first matching official prefix to ours; unmatched keys pass unchanged."""

    def key_map(key: str) -> str:
        for old, new in pairs:
            if key.startswith(old):
                return new + key[len(old):]
        return key

    return key_map


def from_official(name: str, state_dict: Mapping[str, Any] | None = None, **official_kwargs: Any) -> nn.Module:
    """Build the plugattn module equal to official class ``name`` constructed with ``official_kwargs``.

    Args:
        name: one of :func:`list_official` (``"se"``, ``"sk"``, ``"cbam"``, ``"danet_pam"``, ...).
        state_dict: the official module's state_dict (tensors or numpy arrays); a checkpoint that wraps it
            as ``{"state_dict": ...}`` or ``{"model": ...}``, or with DataParallel's ``module.`` prefix, is
            unwrapped (logged). ``None`` keeps our initialisation.
        **official_kwargs: the official constructor's arguments, by their official names. Class-valued
            arguments (activations, norm layers) may be given as classes or by name (``"ReLU6"``).

    Returns:
        The module, with the converted weights loaded (strictly: every key used, every shape equal up to
        size-1 dimensions), in the checkpoint's floating dtype.

    Examples:
        >>> m = from_official("se", None, channels=64)
        >>> type(m).__name__
        'SqueezeExcite'
    """
    if name not in _CONVERTERS:
        raise ValueError(f"from_official: unknown name {name!r}; expected one of: {', '.join(list_official())}")
    converter = _CONVERTERS[name]
    try:
        inspect.signature(converter).bind(**official_kwargs)
    except TypeError as e:
        raise TypeError(f"from_official({name!r}): {e}; the official constructor takes "
                        f"{_signature_text(converter)}") from None
    module, key_map, *prepare = converter(**official_kwargs)
    if state_dict is None:
        return module
    prepare_fn = prepare[0] if prepare else None
    return load_converted(module, state_dict, key_map, prepare_fn, owner=f"from_official({name!r})")


def _signature_text(fn: Callable[..., Any]) -> str:
    return "(" + ", ".join(str(p) for p in inspect.signature(fn).parameters.values()) + ")"


def unwrap_state_dict(state_dict: Mapping[str, Any], owner: str = "from_official") -> dict[str, Tensor]:
    """The tensors of a checkpoint as saved by the usual training scripts.

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"model_state": ...}`` containers and a ``module.``
    prefix on every key (DataParallel), converting numpy arrays to tensors; each unwrapping is logged. A value
    that is neither a tensor nor an array raises ``TypeError`` naming its key.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{owner}: expected a state_dict (a mapping of names to tensors), "
                        f"got {type(state_dict).__name__}")
    for wrapper in ("state_dict", "model", "model_state", "model_state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            _log.info("%s: using the checkpoint's %r entry", owner, wrapper)
            state_dict = state_dict[wrapper]
            break
    keys = list(state_dict)
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
        _log.info("%s: dropping the 'module.' prefix of every key (DataParallel)", owner)
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if isinstance(value, np.ndarray if np is not None else ()):
            value = torch.from_numpy(value)
        if not isinstance(value, Tensor):
            raise TypeError(f"{owner}: state_dict entry {key!r} is a {type(value).__name__}, expected a tensor")
        out[key] = value
    return out


def load_converted(
    module: nn.Module,
    state_dict: Mapping[str, Any],
    key_map: KeyMap,
    prepare: Prepare | None = None,
    *,
    owner: str = "from_official",
) -> nn.Module:
    """Load a foreign ``state_dict`` into ``module`` through ``key_map`` (strict) and return the module.

    ``prepare`` transforms the whole (unwrapped) state_dict first. A tensor may differ from ours only by
    size-1 dimensions (a 1×1 conv stored as a linear layer); any other shape difference, an unknown key or a
    missing one raises, naming the foreign key. A checkpoint of one floating dtype converts the module to it.
    """
    state_dict = unwrap_state_dict(state_dict, owner)
    if prepare is not None:
        state_dict = dict(prepare(state_dict))
    dtypes = {v.dtype for v in state_dict.values() if v.is_floating_point()}
    if len(dtypes) == 1:  # float64 checkpoints load without rounding through float32
        module = module.to(dtypes.pop())
    ours = module.state_dict()
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new_key = key_map(key)
        if new_key is None:
            continue
        if new_key not in ours:
            raise KeyError(f"{owner}: key {key!r} maps to {new_key!r}, which {type(module).__name__} does not have")
        target = ours[new_key]
        if value.shape != target.shape:
            if _squeezed(value.shape) != _squeezed(target.shape):
                raise ValueError(f"{owner}: {key!r} has shape {tuple(value.shape)}, expected {tuple(target.shape)} "
                                 f"(size-1 dimensions aside) for {new_key!r}")
            value = value.reshape(target.shape)
        converted[new_key] = value
    missing = sorted(set(ours) - set(converted))
    if missing:
        raise KeyError(f"{owner}: the state_dict lacks the tensors for {missing}")
    module.load_state_dict(converted, strict=True)
    return module


def _squeezed(shape: torch.Size) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def kwarg_check(name: str, kwargs: Mapping[str, Any], allowed: set[str]) -> None:
    """Raise ``TypeError`` for an official keyword argument the official class does not have."""
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"from_official({name!r}): unexpected argument(s) {unknown}; "
                        f"the official constructor takes {sorted(allowed)}")


