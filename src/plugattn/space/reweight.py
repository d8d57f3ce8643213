"""Reweight: (input, weights) → output; and the two ways to combine a channel and a spatial attention.

``Multiply``, ``Add`` and ``Residual`` take ``(x, w)``; ``w`` broadcasts against ``x`` and may be a tuple
(Coordinate Attention's H and W weights), applied one after the other. ``Series`` (CBAM) and
``Parallel`` (scSE, BAM) combine whole attention modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import LayerType, check_input, check_positive
from .gate import Gate, make_gate

__all__ = ["Reweight", "Multiply", "Add", "Residual", "Series", "Parallel"]

Weights = Tensor | tuple[Tensor, ...]


def _scale(x: Tensor, w: Weights) -> Tensor:
    if isinstance(w, (tuple, list)):
        for t in w:
            x = x * t
        return x
    return x * w


class Reweight(nn.Module):
    """Base class of the reweights: ``forward(x, w)`` → y, the shape of ``x``."""


class Multiply(Reweight):
    r""":math:`y = x \odot w` (SE, ECA, CBAM, Coordinate Attention: x·a_h·a_w).

    Shape:
        x (N, C, H, W) and w broadcasting against it (or a tuple of such) → (N, C, H, W).

    Examples:
        >>> x = torch.randn(2, 4, 3, 3)
        >>> torch.equal(Multiply()(x, torch.ones(2, 4, 1, 1)), x)
        True
    """

    def forward(self, x: Tensor, w: Weights) -> Tensor:
        return _scale(x, w)


class Add(Reweight):
    r""":math:`y = x + w`: the weights are an additive term (GCNet's ``channel_add`` fusion).

    Shape:
        x (N, C, H, W) and w broadcasting against it (or a tuple of such) → (N, C, H, W).
    """

    def forward(self, x: Tensor, w: Weights) -> Tensor:
        if isinstance(w, (tuple, list)):
            for t in w:
                x = x + t
            return x
        return x + w


class Residual(Reweight):
    r""":math:`y = x + \gamma\,(x \odot w)`, γ a learnable scalar (DANet) or a constant.

    With γ = 1 fixed it is BAM's :math:`x \odot (1 + w)`.

    Args:
        gamma_init: initial γ (DANet: 0, so the module starts as the identity). Default: 0.
        learnable: γ is a parameter (else a buffer). Default: True.

    Shape:
        x (N, C, H, W) and w broadcasting against it (or a tuple of such) → (N, C, H, W).
    """

    def __init__(self, *, gamma_init: float = 0.0, learnable: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.gamma_init = float(gamma_init)
        self.learnable = learnable
        g = torch.empty(1, device=device, dtype=dtype)
        if learnable:
            self.gamma = nn.Parameter(g)
        else:
            self.register_buffer("gamma", g)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.gamma.fill_(self.gamma_init)

    def forward(self, x: Tensor, w: Weights) -> Tensor:
        return x + self.gamma * _scale(x, w)

    def extra_repr(self) -> str:
        return f"gamma_init={self.gamma_init}, learnable={self.learnable}"


def _module_list(owner: str, attns: tuple[nn.Module, ...]) -> nn.ModuleList:
    if not attns or not all(isinstance(a, nn.Module) for a in attns):
        raise TypeError(f"{owner}: expected one or more attention modules, got {attns!r}")
    return nn.ModuleList(attns)


class Series(nn.Module):
    r"""Attention modules applied one after the other (CBAM: channel, then spatial on the refined tensor).

    Args:
        *attns: the modules, each (N, C, H, W) → (N, C, H, W).
        channels: C, checked at the input; None accepts any. Default: None.

    Examples:
        >>> from plugattn.space import compose
        >>> m = Series(compose(16, squeeze="avg+max"), compose(16, squeeze="max+avg", axes="c", excite="conv2d"))
        >>> m(torch.randn(2, 16, 5, 5)).shape
        torch.Size([2, 16, 5, 5])
    """

    def __init__(self, *attns: nn.Module, channels: int | None = None) -> None:
        super().__init__()
        if channels is not None:
            check_positive(type(self).__name__, channels=channels)
        self.channels = channels
        self.attns = _module_list(type(self).__name__, attns)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        for a in self.attns:
            x = a(x)
        return x

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class Parallel(nn.Module):
    r"""Attention modules applied to the same input, combined (scSE, BAM).

    ``combine``:

    - ``"add"``: :math:`\sum_i a_i(x)` (scSE paper, concurrent spatial and channel SE);
    - ``"max"``: elementwise max of the outputs (scSE's official ``ChannelSpatialSELayer``);
    - ``"mean"``: their average;
    - ``"logits_sum"``: the branches' logits are summed (broadcast: a channel branch's (N, C, 1, 1) and a
      spatial branch's (N, 1, H, W) give (N, C, H, W)), gated by this module's ``gate`` and applied by its
      ``reweight`` — BAM's paper is ``gate="sigmoid"``, ``reweight=Residual(gamma_init=1, learnable=False)``:
      :math:`x \odot (1 + \sigma(M_c(x) + M_s(x)))`. The branches must have a ``logits(x)`` method
      (composed modules do);
    - ``"logits_prod"``: the same with the logits multiplied (BAM's official code, σ(M_c · M_s)).

    Args:
        *attns: the branches.
        combine: see above. Default: ``"add"``.
        gate: the gate for the ``logits_*`` combines. Default: sigmoid.
        reweight: the reweight for the ``logits_*`` combines. Default: :class:`Multiply`.
        channels: C, checked at the input; None accepts any. Default: None.
    """

    COMBINES = ("add", "max", "mean", "logits_sum", "logits_prod")

    def __init__(self, *attns: nn.Module, combine: str = "add", gate: Gate | LayerType = "sigmoid",
                 reweight: Reweight | None = None, channels: int | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        if channels is not None:
            check_positive(name, channels=channels)
        if combine not in self.COMBINES:
            raise ValueError(f"{name}: combine must be one of {self.COMBINES}, got {combine!r}")
        self.channels = channels
        self.combine = combine
        self.attns = _module_list(name, attns)
        if combine.startswith("logits"):
            missing = [type(a).__name__ for a in attns if not callable(getattr(a, "logits", None))]
            if missing:
                raise TypeError(f"{name}: combine={combine!r} needs branches with a logits(x) method; "
                                f"{missing} have none")
            self.gate = make_gate(gate)
            self.reweight = Multiply() if reweight is None else reweight

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        if self.combine.startswith("logits"):
            ls = [cast("Callable[[Tensor], Tensor]", a.logits)(x) for a in self.attns]  # checked in __init__
            fused = ls[0]
            for t in ls[1:]:
                fused = fused * t if self.combine == "logits_prod" else fused + t
            return self.reweight(x, self.gate(fused))
        ys = [a(x) for a in self.attns]
        if self.combine == "max":
            out = ys[0]
            for y in ys[1:]:
                out = torch.maximum(out, y)
            return out
        out = sum(ys[1:], ys[0])
        return out * (1.0 / len(ys)) if self.combine == "mean" else out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, combine={self.combine!r}"
