"""``capture()``: record the attention weights every plugattn module in a model applies.

Every module applies its weights through a :class:`plugattn._layers.Gate` submodule, so one forward hook per
gate records them all, whatever the module. Hooks exist only inside the ``with`` block, so capturing costs
nothing otherwise. Each map is given one layout per kind, N being the batch of the module's input
(:func:`as_map`): channel weights (N, C); one spatial map (N, H, W); several (N, K, H, W); axial weights
(N, C, H) or (N, C, W) (Coordinate attention's ``gate_h`` / ``gate_w``); weights over M branches (N, M, C).
Groups folded into the batch (EMA, Shuffle: (N·G, ...)) are unfolded into the channel axis.

Position attention (DANet's PAM, any module with an ``attention_rows(x, index)`` method) builds an
(H·W) × (H·W) matrix, far too big to keep; its gate is not recorded. Instead a hook on the module itself
computes, after each forward, the attention rows of a few chosen query positions (``query``), and records them
under its gate's path as (N, Q, H, W): one map over all key positions per query (a module whose keys are
pooled, like the non-local block's, gives maps of the pooled size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Union, cast

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import Gate

__all__ = ["capture", "query_indices", "as_map", "overlay"]

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


def as_map(w: Tensor, batch: int) -> Tensor:
    """A gate's output in the documented layout (module docstring), given the batch N of the module's input.

    Examples:
        >>> as_map(torch.rand(2, 8, 1, 1), 2).shape, as_map(torch.rand(2, 1, 5, 7), 2).shape
        (torch.Size([2, 8]), torch.Size([2, 5, 7]))
        >>> as_map(torch.rand(6, 4, 1, 1), 2).shape  # 3 groups folded into the batch: (N, G·C')
        torch.Size([2, 12])
    """
    if w.dim() == 3 and w.shape[1] == 1:  # a row of weights (N, 1, C), e.g. a softmax over channels
        w = w[:, 0]
    if w.dim() >= 2 and w.shape[0] != batch and batch > 0 and w.shape[0] % batch == 0:
        w = w.reshape(batch, -1, *w.shape[2:])  # unfold groups (adjacent channels) into dim 1
    if w.dim() < 3:
        return w
    if w.shape[-2:] == (1, 1) and not (w.dim() == 4 and w.shape[1] == 1):
        return w.flatten(-3) if w.dim() == 4 else w[..., 0, 0]  # channel (N, C) or branch (N, M, C) weights
    if w.dim() == 4 and w.shape[1] == 1:
        return w[:, 0]  # one spatial map (N, H, W)
    if w.dim() == 4 and w.shape[-1] == 1:
        return w[..., 0]  # axial along H: (N, C, H)
    if w.dim() == 4 and w.shape[-2] == 1:
        return w[:, :, 0]  # axial along W: (N, C, W)
    return w


def overlay(image: Tensor, attention: Tensor, *, alpha: float = 0.5) -> Tensor:
    """A spatial attention map laid over an image, as an RGB float image in [0, 1] (what ``plugattn viz`` draws).

    Args:
        image: (C, H, W) with C = 1 or 3, values in [0, 1] (float) or [0, 255] (uint8).
        attention: (h, w), any size: bilinearly resized to (H, W) and scaled to [0, 1] per image.
        alpha: weight of the attention colours (the jet colour map: blue low, red high).

    Returns:
        (3, H, W) float tensor in [0, 1].

    Examples:
        >>> overlay(torch.rand(1, 28, 28), torch.rand(7, 7)).shape
        torch.Size([3, 28, 28])
    """
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"overlay: image must be (1 or 3, H, W), got {tuple(image.shape)}")
    if attention.dim() != 2:
        raise ValueError(f"overlay: attention must be one (h, w) map, got {tuple(attention.shape)}")
    img = image.float() / 255 if not image.is_floating_point() else image.float()
    img = img.expand(3, -1, -1)
    up = torch.nn.functional.interpolate(attention[None, None].float(), size=img.shape[1:], mode="bilinear",
                                         align_corners=False)[0, 0]
    up = (up - up.min()) / (up.max() - up.min()).clamp_min(1e-12)
    jet = torch.stack([(1.5 - (4 * up - 3).abs()), (1.5 - (4 * up - 2).abs()), (1.5 - (4 * up - 1).abs())]).clamp(0, 1)
    return ((1 - alpha) * img + alpha * jet).clamp(0, 1)


@contextmanager
def capture(model: nn.Module, query: Query = None) -> Iterator[dict[str, Tensor]]:
    """Record the attention weights of every plugattn module in ``model`` while the block runs.

    Args:
        model: any module containing plugattn modules (a single module, or a network after :func:`insert`).
        query: query positions for position attention (see :func:`query_indices`); default: the centre.

    Yields:
        A dict, filled by each forward pass of ``model``: path of each ``Gate`` → its detached output in the
        layout of :func:`as_map`. A gate called several times in one forward pass (EMA) keeps every call:
        ``path``, ``path#2``, ``path#3``, ... Paths skip the wrapper that ``insert(..., zero_init=True)`` adds
        (``layer1.0.attn.gate``, not ``layer1.0.attn.attn.gate``). For position attention the value is the
        (N, Q, H, W) attention of the Q query positions over every key position. Outputs are unchanged.

    Examples:
        >>> import plugattn
        >>> net = nn.Sequential(plugattn.create("se", 8), plugattn.create("eca", 8))
        >>> with capture(net) as maps:
        ...     y = net(torch.randn(2, 8, 5, 5))
        >>> {k: tuple(v.shape) for k, v in maps.items()}
        {'0.gate': (2, 8), '1.gate': (2, 8)}
    """
    from ..integrate import ZeroInit

    if not isinstance(model, nn.Module):
        raise TypeError(f"capture: model must be an nn.Module, got {type(model).__name__}")
    if query is not None:
        query_indices(query, 4, 4)  # validate eagerly, not in the first forward
    maps: dict[str, Tensor] = {}
    named = list(model.named_modules())
    wrappers = tuple(p + ".attn." for p, m in named if isinstance(m, ZeroInit))

    def short(path: str) -> str:
        for w in wrappers:
            if path.startswith(w):
                return path[: len(w) - len("attn.")] + path[len(w):]
        return path

    row_owners = [(p, m) for p, m in named if callable(getattr(m, "attention_rows", None))]
    row_prefixes = tuple(p + "." if p else "" for p, _ in row_owners)
    state = {"batch": 0, "calls": {}}
    handles = [model.register_forward_pre_hook(lambda m, args: state.update(batch=_batch(args), calls={}))]
    try:
        for path, m in named:
            if isinstance(m, Gate) and not any(path.startswith(pre) for pre in row_prefixes):
                handles.append(m.register_forward_hook(_gate_hook(maps, short(path), state)))
        for path, m in row_owners:
            gates = [p for p, sub in m.named_modules() if isinstance(sub, Gate)]
            key = ".".join(filter(None, (path, gates[0] if gates else "")))
            handles.append(m.register_forward_hook(_rows_hook(maps, short(key), query)))
        yield maps
    finally:
        for h in handles:
            h.remove()


def _batch(args: tuple) -> int:
    x = args[0] if args else None
    return x.shape[0] if isinstance(x, Tensor) and x.dim() > 0 else 0


def _gate_hook(maps: dict[str, Tensor], key: str, state: dict):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        calls = state["calls"]
        calls[key] = calls.get(key, 0) + 1
        maps[key if calls[key] == 1 else f"{key}#{calls[key]}"] = as_map(output.detach(), state["batch"])

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
            attention_rows = cast("Callable[[Tensor, list[int]], Tensor]", module.attention_rows)
            rows = attention_rows(x, idx).detach()  # (N, Q, S): S keys, H·W or a pooled grid
        maps[key] = _as_maps(rows, h, w)

    return hook
