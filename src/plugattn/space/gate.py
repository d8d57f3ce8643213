"""Gate: logits → attention weights.

The gate is always :class:`plugattn._layers.Gate` (re-exported here), the one hook point of
:func:`plugattn.capture`; this file adds the gate layers the space needs and the names ``compose`` knows.

=================  ==============================================  =====================================
name               weights                                         range
=================  ==============================================  =====================================
``sigmoid``        σ(ℓ)                                            (0, 1)
``hard_sigmoid``   ReLU6(ℓ + 3)/6                                  [0, 1]
``softmax``        softmax over dim 1 (channels, or branches)      (0, 1), sums to 1 over dim 1
``softmax_hw``     softmax over all H·W positions of each map      (0, 1), sums to 1 over H·W
``tanh``           tanh(ℓ); with the ``residual`` reweight         (−1, 1)
                   (γ = 1) it gives x·(1 + tanh ℓ)
``identity``       ℓ (GCNet's ``channel_add``)                     ℝ
=================  ==============================================  =====================================
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from .._layers import Gate, LayerType

__all__ = ["Gate", "SpatialSoftmax", "GATES", "make_gate"]


class SpatialSoftmax(nn.Module):
    """Softmax over all positions of each (n, c) map: (N, C, H, W) → same shape, each map summing to 1."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).softmax(-1).reshape(x.shape)  # (N, C, H·W) → (N, C, H, W)


GATES: dict[str, LayerType] = {
    "sigmoid": "sigmoid",
    "hard_sigmoid": "hard_sigmoid",
    "softmax": "softmax",
    "softmax_hw": SpatialSoftmax,
    "tanh": "tanh",
    "identity": "identity",
}
"""Gate names of :func:`make_gate` → the layer the :class:`Gate` wraps."""


def make_gate(spec: Gate | LayerType = "sigmoid") -> Gate:
    """A :class:`Gate` from a name in :data:`GATES` (or any name ``get_layer`` knows), a class or factory.

    A :class:`Gate` instance is returned as is; any other module instance raises ``TypeError``.
    """
    if isinstance(spec, Gate):
        return spec
    if isinstance(spec, nn.Module):
        raise TypeError(f"gate must be a Gate, a name, a class or a factory, not a {type(spec).__name__} instance; "
                        f"wrap it: Gate(type(m))")
    if isinstance(spec, str):
        spec = GATES.get(spec, spec)
    return Gate(spec)
