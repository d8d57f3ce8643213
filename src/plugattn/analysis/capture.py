"""``capture()``: record the attention weights every plugattn module in a model applies.

Every module applies its weights through a :class:`plugattn._layers.Gate` submodule, so one forward hook per
gate records them all, whatever the module: channel weights (N, C, 1, 1), spatial maps (N, 1, H, W), axial
maps, softmax rows. Hooks exist only inside the ``with`` block, so capturing costs nothing otherwise.

Position attention (DANet's PAM, any module with an ``attention_rows(x, index)`` method) builds an
(H·W) × (H·W) matrix, far too big to keep; its gate is not recorded. Instead a hook on the module itself
computes, after each forward, the attention rows of a few chosen query positions (``query``), and records them
under its gate's path as (N, Q, H, W): one map over all key positions per query (a module whose keys are
pooled, like the non-local block's, gives maps of the pooled size).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate

__all__ = ["capture", "query_indices"]

Position = tuple[Union[int, float], Union[int, float]]
Query = Union[None, Position, Sequence[Position]]


def _coord(v: int | float, size: int, axis: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"capture: query {axis} must be an int (pixel) or a float in [0, 1] (fraction), got {v!r}")
    if isinstance(v, float):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"capture: query {axis} fraction must be in [0, 1], got {v}")
        return min(size - 1, int(v * size))
    return min(max(v if v >= 0 else size + v, 0), size - 1)  # negative ints count from the end; clamp to the map


def query_indices(query: Query, height: int, width: int) -> list[int]:
    """Flat indices (h·W + w) of the query positions on an H × W map.

    ``query``: ``None`` for the centre (H // 2, W // 2); one ``(row, col)``; or a list of them. An int is a
    pixel index (negative counts from the end; clamped to the map, since maps differ in size across a
    network); a float in [0, 1] is a fraction of the height or width (``(0.5, 0.5)`` is the centre).
    """
    if query is None:
        points: list[Position] = [(height // 2, width // 2)]
    elif isinstance(query, tuple) and len(query) == 2 and not isinstance(query[0], (tuple, list)):
        points = [query]  # type: ignore[list-item]
    elif isinstance(query, Sequence) and not isinstance(query, str):
        points = list(query)  # type: ignore[arg-type]
        if not points or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in points):
            raise ValueError(f"capture: query must be (row, col) or a non-empty list of (row, col), got {query!r}")
    else:
        raise TypeError(f"capture: query must be None, (row, col) or a list of (row, col), got {query!r}")
    return [_coord(r, height, "row") * width + _coord(c, width, "col") for r, c in points]


@contextmanager
def capture(model: nn.Module, query: Query = None) -> Iterator[dict[str, Tensor]]:
    """Record the attention weights of every plugattn module in ``model`` while the block runs.

    Args:
        model: any module containing plugattn modules (a single module, or a network after :func:`insert`).
        query: query positions for position attention (see :func:`query_indices`); default: the centre.

    Yields:
        A dict, filled by each forward pass: dotted path of each ``Gate`` submodule → detached output of its
        last call (the weights applied). For position attention, the value is the (N, Q, H, W) attention
        of the Q query positions over every key position. Outputs of the model are unchanged.

    Examples:
        >>> import plugattn
        >>> net = nn.Sequential(plugattn.create("se", 8), plugattn.create("eca", 8))
        >>> with capture(net) as maps:
        ...     y = net(torch.randn(2, 8, 5, 5))
        >>> {k: tuple(v.shape) for k, v in maps.items()}
        {'0.gate': (2, 8, 1, 1), '1.gate': (2, 8, 1, 1)}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"capture: model must be an nn.Module, got {type(model).__name__}")
    if query is not None:
        query_indices(query, 4, 4)  # validate eagerly, not in the first forward
    maps: dict[str, Tensor] = {}
    named = list(model.named_modules())
    row_owners = [(p, m) for p, m in named if callable(getattr(m, "attention_rows", None))]
    row_prefixes = tuple(p + "." if p else "" for p, _ in row_owners)
    handles = []
    try:
        for path, m in named:
            if isinstance(m, Gate) and not any(path.startswith(pre) for pre in row_prefixes):
                handles.append(m.register_forward_hook(_gate_hook(maps, path)))
        for path, m in row_owners:
            gates = [p for p, sub in m.named_modules() if isinstance(sub, Gate)]
            key = ".".join(filter(None, (path, gates[0] if gates else "")))
            handles.append(m.register_forward_hook(_rows_hook(maps, key, query)))
        yield maps
    finally:
        for h in handles:
            h.remove()


def _gate_hook(maps: dict[str, Tensor], key: str):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        maps[key] = output.detach()

    return hook


def _as_maps(rows: Tensor, h: int, w: int) -> Tensor:
    """(N, Q, S) rows as (N, Q, H/f, W/f) maps, f the pooling factor of the keys (1 for DANet); else unchanged."""
    n, q, s = rows.shape
    for f in range(1, max(h, w) + 1):
        if (h // f) * (w // f) == s:
            return rows.reshape(n, q, h // f, w // f)
    return rows


def _rows_hook(maps: dict[str, Tensor], key: str, query: Query):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        x = args[0]
        n, _, h, w = x.shape
        idx = query_indices(query, h, w)
        with torch.no_grad():
            rows = module.attention_rows(x, idx).detach()  # (N, Q, S): S keys, H·W or a pooled grid
        maps[key] = _as_maps(rows, h, w)

    return hook
