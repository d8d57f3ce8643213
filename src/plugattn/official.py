"""``from_official``: build the plugattn module equal to an official class and load its checkpoint.

Each module family registers one converter next to its class (``@official("se")``). A converter takes the
official constructor's keyword arguments and returns ``(module, key_map)``: the plugattn module built with
the equivalent arguments and a function mapping one official state_dict key to ours (or ``None`` to drop it);
it may return a third item, a function applied to the whole official state_dict first (to merge tensors,
e.g. SK's per-branch heads into one layer).
Tensors whose shapes differ only by singleton dims (1×1 conv vs. linear) are reshaped here, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch.nn as nn
from torch import Tensor

__all__ = ["from_official", "official", "list_official"]

KeyMap = Callable[[str], "str | None"]
Converter = Callable[..., "tuple[nn.Module, KeyMap]"]

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


def rename_prefix(*pairs: tuple[str, str]) -> KeyMap:
    """A key map that rewrites the first matching official prefix to ours; unmatched keys pass unchanged."""

    def key_map(key: str) -> str:
        for old, new in pairs:
            if key.startswith(old):
                return new + key[len(old):]
        return key

    return key_map


def from_official(name: str, state_dict: Mapping[str, Tensor] | None = None, **official_kwargs: Any) -> nn.Module:
    """Build the plugattn module equal to official class ``name`` constructed with ``official_kwargs``.

    Args:
        name: one of :func:`list_official` (``"se"``, ``"sk"``, ``"cbam"``, ``"danet_pam"``, ...).
        state_dict: the official module's state_dict; ``None`` keeps our initialisation.
        **official_kwargs: the official constructor's arguments, by their official names. Class-valued
            arguments (activations, norm layers) may be given as classes or by name (``"ReLU6"``).

    Returns:
        The module, with the converted weights loaded (strictly: every key must be used), in the
        checkpoint's floating dtype.
    """
    if name not in _CONVERTERS:
        raise ValueError(f"from_official: unknown name {name!r}; expected one of: {', '.join(list_official())}")
    module, key_map, *prepare = _CONVERTERS[name](**official_kwargs)
    if state_dict is None:
        return module
    if prepare:
        state_dict = prepare[0](state_dict)
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
            raise KeyError(f"from_official({name!r}): official key {key!r} maps to {new_key!r}, "
                           f"which {type(module).__name__} does not have")
        target = ours[new_key]
        if value.shape != target.shape:
            if value.numel() != target.numel():
                raise ValueError(f"from_official({name!r}): {key!r} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(target.shape)} for {new_key!r}")
            value = value.reshape(target.shape)
        converted[new_key] = value
    missing = sorted(set(ours) - set(converted))
    if missing:
        raise KeyError(f"from_official({name!r}): the official state_dict lacks {missing}")
    module.load_state_dict(converted, strict=True)
    return module


def kwarg_check(name: str, kwargs: Mapping[str, Any], allowed: set[str]) -> None:
    """Raise ``TypeError`` for an official keyword argument the official class does not have."""
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"from_official({name!r}): unexpected argument(s) {unknown}; "
                        f"the official constructor takes {sorted(allowed)}")


