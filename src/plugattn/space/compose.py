"""``compose``: squeeze → excite → gate → reweight in one line.

A composed module runs::

    d = squeeze(x)          # a descriptor, or a tuple of descriptors
    l = excite(d)           # shared squeezes: excite(d_1) + excite(d_2) + ...; tuples: one per descriptor
    w = gate(l)             # plugattn._layers.Gate, once per logit tensor
    y = reweight(x, w)

The named modules built from parts are in :mod:`.presets`, the registered variants in :mod:`.variants`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import LayerType, check_input, check_positive, factory_kwargs
from .excite import (
    MLP,
    AxialMLP,
    ChannelConv,
    ChannelSelfAttention,
    ChannelwiseFC,
    Excite,
    Identity,
    MultiScale,
    SpatialConv,
)
from .gate import Gate, make_gate
from .reweight import Add, Multiply, Residual
from .squeeze import AttentionPool, ClusterPool, ConvPool, DCTPool, GeMPool, LinearPool, Pool, Squeeze

__all__ = ["ComposedAttention", "compose", "EXCITES", "REWEIGHTS"]

_Descriptor = Tensor | tuple[Tensor, ...]


class ComposedAttention(nn.Module):
    r"""Four parts in a row: :math:`y = \mathrm{reweight}(x, \mathrm{gate}(\mathrm{excite}(\mathrm{squeeze}(x))))`.

    A squeeze that returns several descriptors has them excited one by one: with ``squeeze.shared`` (one
    excitation shared by the statistics, CBAM) the logits are summed, else each gives its own weights
    (Coordinate Attention's H and W), unless the excite takes the tuple whole (``excite.takes_tuple``).
    Follows the module contract: input checked (``channels``), weights through a :class:`Gate`, output in
    the input's dtype and memory format (the reweights are elementwise on x). Build it with :func:`compose`.

    Args:
        channels: C, input channels.
        squeeze: a squeeze module (:mod:`plugattn.space.squeeze`).
        excite: an excite module (:mod:`plugattn.space.excite`).
        gate: a :class:`Gate`.
        reweight: a reweight module (:mod:`plugattn.space.reweight`).

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> from plugattn.space import MLP, Multiply, Pool, make_gate
        >>> m = ComposedAttention(16, Pool(16), MLP(16, rd_channels=4), make_gate("sigmoid"), Multiply())
        >>> m(torch.randn(2, 16, 5, 3)).shape
        torch.Size([2, 16, 5, 3])
    """

    def __init__(self, channels: int, squeeze: nn.Module, excite: nn.Module, gate: Gate, reweight: nn.Module) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels)
        for arg, value in (("squeeze", squeeze), ("excite", excite), ("reweight", reweight)):
            if not isinstance(value, nn.Module):
                raise TypeError(f"{name}: {arg} must be an nn.Module, got {type(value).__name__}")
        if not isinstance(gate, Gate):
            raise TypeError(f"{name}: gate must be a plugattn Gate (so capture() sees it), got {type(gate).__name__}")
        self.channels = channels
        self.squeeze = squeeze
        self.excite = excite
        self.gate = gate
        self.reweight = reweight

    def _excite(self, d: _Descriptor) -> _Descriptor:
        """The excitation of a descriptor; of each descriptor of a tuple, summed for a shared squeeze."""
        if not isinstance(d, (tuple, list)) or getattr(self.excite, "takes_tuple", False):
            return self.excite(d)
        ls = [self.excite(t) for t in d]
        if getattr(self.squeeze, "shared", False):
            return sum(ls[1:], ls[0])  # one excitation shared by the statistics, logits summed (CBAM)
        return tuple(ls)

    def _gate(self, logits: _Descriptor) -> _Descriptor:
        if isinstance(logits, (tuple, list)):
            return tuple(self.gate(t) for t in logits)
        return self.gate(logits)

    def descriptor(self, x: Tensor) -> _Descriptor:
        """The squeezed descriptor of ``x``."""
        check_input(self, x, self.channels)
        return self.squeeze(x)

    def logits(self, x: Tensor) -> _Descriptor:
        """Attention logits: the excitation of the descriptor (summed over a shared squeeze's descriptors)."""
        return self._excite(self.descriptor(x))

    def weights(self, x: Tensor) -> _Descriptor:
        """Attention weights: the gated logits."""
        return self._gate(self.logits(x))

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        d = self.squeeze(x)  # descriptor(s)
        w = self._gate(self._excite(d))  # attention weights
        return self.reweight(x, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


# --- compose ----------------------------------------------------------------------------------------------------

_SQUEEZES: dict[str, type[Squeeze]] = {
    "gem": GeMPool, "dct": DCTPool, "conv": ConvPool, "linear": LinearPool, "attn": AttentionPool,
    "cluster": ClusterPool,
}
EXCITES = ("mlp", "conv1d", "attention", "multiscale", "conv2d", "axial", "cfc", "identity")
REWEIGHTS = ("multiply", "add", "residual")


def _make_squeeze(channels: int, spec: str | nn.Module, axes: str | None, merge: str | None, kw: dict,
                  dd: dict) -> nn.Module:
    if isinstance(spec, nn.Module):
        if axes is not None or merge is not None or kw:
            raise ValueError("compose: axes, merge and squeeze_kw apply to a squeeze given by name, not to an instance")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"compose: squeeze must be a name or a module, got {type(spec).__name__}")
    cls = _SQUEEZES.get(spec)
    if cls is None:  # statistics: "avg", "max+avg", "avg+std", ...
        return Pool(channels, stats=spec, axes=axes or "hw", merge=merge, **kw)
    kw = dict(kw)
    if axes is not None:
        if cls is not GeMPool:
            raise ValueError(f"compose: axes does not apply to squeeze={spec!r}")
        kw["axes"] = axes
    if merge is not None:
        if cls is not ClusterPool:
            raise ValueError(f"compose: merge does not apply to squeeze={spec!r}")
        kw["merge"] = merge
    return cls(channels, **{**kw, **dd})


def _make_excite(channels: int, spec: str | nn.Module, sq: nn.Module, kw: dict, dd: dict) -> nn.Module:
    if isinstance(spec, nn.Module):
        if kw:
            raise ValueError("compose: excite_kw applies to an excite given by name, not to an instance")
        return spec
    if spec not in EXCITES:
        raise ValueError(f"compose: excite must be a module or one of {EXCITES}, got {spec!r}")
    axes = getattr(sq, "axes", "hw")
    c_in = getattr(sq, "out_channels", channels)
    c_out = 1 if axes == "c" else channels
    kw = dict(kw)

    def need_same(what: str) -> None:
        if c_in != c_out:
            raise ValueError(f"compose: excite={what!r} maps {c_out} channels to themselves, but the squeeze gives "
                             f"{c_in} (concatenated statistics? use merge='shared' or excite='mlp')")

    if spec == "mlp":
        return MLP(c_in, c_out, **kw, **dd)
    if spec == "conv1d":
        need_same(spec)
        return ChannelConv(c_in, **kw, **dd)
    if spec == "attention":
        need_same(spec)
        return ChannelSelfAttention(c_in, **kw, **dd)
    if spec == "multiscale":
        sizes = kw.pop("kernel_sizes", (3, 5, 7) if axes != "c" else (3, 7))
        fuse = kw.pop("fuse", "sum")
        branches: list[Excite]
        if axes == "c":
            branches = [SpatialConv(c_in, c_out, kernel_size=k, **kw, **dd) for k in sizes]
        else:
            need_same(spec)
            branches = [ChannelConv(c_in, kernel_size=k, **kw, **dd) for k in sizes]
        return MultiScale(branches, fuse=fuse)
    if spec == "conv2d":
        return SpatialConv(c_in, c_out, **kw, **dd)
    if spec == "axial":
        if axes != "h+w":
            raise ValueError(f"compose: excite='axial' needs a squeeze with axes='h+w', got axes={axes!r}")
        return AxialMLP(c_in, c_out, **kw, **dd)
    if spec == "cfc":
        if c_in % c_out:
            raise ValueError(f"compose: excite='cfc' needs concatenated statistics (K·{c_out} channels), got {c_in}")
        return ChannelwiseFC(c_out, num_stats=c_in // c_out, **kw, **dd)
    return Identity(c_in)


def _make_reweight(spec: str | nn.Module, kw: dict, dd: dict) -> nn.Module:
    if isinstance(spec, nn.Module):
        if kw:
            raise ValueError("compose: reweight_kw applies to a reweight given by name, not to an instance")
        return spec
    if spec == "multiply":
        return Multiply(**kw)
    if spec == "add":
        return Add(**kw)
    if spec == "residual":
        return Residual(**kw, **dd)
    raise ValueError(f"compose: reweight must be a module or one of {REWEIGHTS}, got {spec!r}")


def compose(
    channels: int,
    squeeze: str | nn.Module = "avg",
    excite: str | nn.Module = "mlp",
    gate: Gate | LayerType = "sigmoid",
    reweight: str | nn.Module = "multiply",
    *,
    axes: str | None = None,
    merge: str | None = None,
    squeeze_kw: Mapping[str, Any] | None = None,
    excite_kw: Mapping[str, Any] | None = None,
    reweight_kw: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ComposedAttention:
    """Build an attention module from its four parts, each by name or as a module.

    Args:
        channels: C, input channels.
        squeeze: statistics (``"avg"``, ``"max"``, ``"std"``, ``"lp"``, ``"lse"``, joined by ``+``: ``"avg+max"``,
            ``"avg+std"``), or ``"gem"``, ``"dct"``, ``"conv"``, ``"linear"`` (over C), ``"attn"`` (GCNet),
            ``"cluster"``; or a :class:`~plugattn.space.squeeze.Squeeze` instance.
        excite: ``"mlp"``, ``"conv1d"`` (ECA), ``"attention"`` (global, across channels), ``"multiscale"``
            (``kernel_sizes``, ``fuse`` in ``excite_kw``), ``"conv2d"`` (over a pooled map), ``"axial"``
            (Coordinate Attention), ``"cfc"`` (SRM), ``"identity"``; or an instance. Its input and output
            widths follow from the squeeze (output 1 map for ``axes="c"``, else C).
        gate: ``"sigmoid"``, ``"hard_sigmoid"``, ``"softmax"``, ``"softmax_hw"``, ``"tanh"``, ``"identity"``,
            any layer name, class or factory, or a :class:`Gate`.
        reweight: ``"multiply"``, ``"add"``, ``"residual"`` (x + γ·x·w, γ learnable from 0), or an instance.
        axes: for statistics and ``"gem"``: ``"hw"`` (default), ``"h"``, ``"w"``, ``"c"``, ``"h+w"``.
        merge: for several statistics or ``"cluster"``: ``"shared"``, ``"concat"``, ``"mean"``
            (default ``"concat"`` over C, else ``"shared"``).
        squeeze_kw: keyword arguments of the squeeze class (e.g. ``{"num_clusters": 8}``).
        excite_kw: keyword arguments of the excite class (e.g. ``{"rd_ratio": 1/8}``, ``{"kernel_size": 5}``).
        reweight_kw: keyword arguments of the reweight class (e.g. ``{"gamma_init": 1.0}``).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Returns:
        A :class:`ComposedAttention`.

    Examples:
        >>> se = compose(64, squeeze="avg", excite="mlp", gate="sigmoid")
        >>> eca_max = compose(64, squeeze="max", excite="conv1d", excite_kw={"kernel_size": 5})
        >>> spatial = compose(64, squeeze="max+avg", axes="c", excite="conv2d")
        >>> x = torch.randn(2, 64, 7, 5)
        >>> [m(x).shape == x.shape for m in (se, eca_max, spatial)]
        [True, True, True]
    """
    check_positive("compose", channels=channels)
    dd = factory_kwargs(device, dtype)
    sq = _make_squeeze(channels, squeeze, axes, merge, dict(squeeze_kw or {}), dd)
    ex = _make_excite(channels, excite, sq, dict(excite_kw or {}), dd)
    return ComposedAttention(channels, sq, ex, make_gate(gate), _make_reweight(reweight, dict(reweight_kw or {}), dd))
