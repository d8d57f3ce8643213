"""Name → module class, with metadata. Filled once, when ``plugattn`` is imported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import torch.nn as nn

__all__ = ["ModuleInfo", "register", "list_modules", "info", "get", "create"]

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class ModuleInfo:
    """What the registry knows about one module.

    Attributes:
        name: registry key (short lowercase paper acronym).
        cls: the module class; ``cls(channels, **kwargs)`` builds it.
        paper: paper title.
        year: publication year.
        url: paper link (arXiv or proceedings).
        kind: ``"channel"``, ``"spatial"``, ``"channel+spatial"``, ``"self-attention"``, ``"block"``, ``"head"``.
        official: the official (or reference) implementation the module reproduces.
        preserves_shape: whether output shape equals input shape (False for heads and strided convs).
    """

    name: str
    cls: type[nn.Module]
    paper: str
    year: int
    url: str
    kind: str
    official: str
    preserves_shape: bool = True


_REGISTRY: dict[str, ModuleInfo] = {}


def register(
    name: str,
    *,
    paper: str,
    year: int,
    url: str,
    kind: str,
    official: str = "",
    preserves_shape: bool = True,
) -> Callable[[T], T]:
    """Class decorator that registers a module under ``name``; a duplicate name raises."""

    def deco(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"register: module name {name!r} is already registered")
        _REGISTRY[name] = ModuleInfo(name, cls, paper, year, url, kind, official, preserves_shape)
        return cls

    return deco


def list_modules() -> list[str]:
    """Sorted names of every registered module."""
    return sorted(_REGISTRY)


def info(name: str) -> ModuleInfo:
    """Metadata of a registered module; an unknown name raises ``ValueError`` listing valid names."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown module name {name!r}; expected one of: {', '.join(list_modules())}")
    return _REGISTRY[name]


def get(name: str) -> type[nn.Module]:
    """The class registered as ``name`` (usable as timm's ``attn_layer``)."""
    return info(name).cls


def create(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the module registered as ``name`` for ``channels`` input channels."""
    return get(name)(channels, **kwargs)
