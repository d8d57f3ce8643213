"""Squeeze: reduce axes of the input, (N, C, H, W) → descriptor.

A descriptor is a tensor, or a tuple of tensors when the squeeze gives several descriptors that the next
part treats separately (one per statistic for an excitation shared across them, as CBAM's avg and max;
one per axis for Coordinate Attention). Axes, by name:

======  ==========================  ============================
axes    reduces                     descriptor per statistic
======  ==========================  ============================
hw      H and W (channel attention)  (N, C, 1, 1)
h       H only                       (N, C, 1, W)
w       W only                       (N, C, H, 1)
c       C (spatial attention)        (N, 1, H, W)
h+w     H and W separately           tuple ((N, C, H, 1), (N, C, 1, W))
======  ==========================  ============================

Every squeeze has ``out_channels`` (dim 1 of each descriptor tensor), ``axes`` and ``shared`` (True when
it returns one descriptor per statistic, to be excited by one shared excitation whose logits are summed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.fx
import torch.nn as nn
from torch import Tensor

from .._layers import FREQ_METHODS, ConvNormAct, Gate, LayerType, adaptive_avg_pool2d, check_positive, dct_filters

__all__ = [
    "Squeeze", "Pool", "GeMPool", "DCTPool", "ConvPool", "LinearPool", "AttentionPool", "ClusterPool",
    "AXES", "STATS", "MERGES", "parse_stats",
]

AXES = ("hw", "h", "w", "c", "h+w")
STATS = ("avg", "max", "std", "lp", "lse")
"""Statistics of :class:`Pool`: mean, max, std (unbiased), L2 norm √Σx² (CBAM's ``lp``), log-sum-exp."""
MERGES = ("concat", "shared", "mean")
"""How several statistics (or clusters) combine: concatenated along dim 1 (stat-major), kept apart for a
shared excitation (logits summed, CBAM), or averaged into one descriptor (timm ``add_maxpool``)."""

_DIMS = {"hw": (2, 3), "h": (2,), "w": (3,), "c": (1,)}
_STAT_ALIASES = {"mean": "avg", "average": "avg"}


def parse_stats(stats: str | Sequence[str], owner: str = "Pool") -> tuple[str, ...]:
    """``"avg+max"`` or ``("avg", "max")`` → ``("avg", "max")``, validated (``"mean"`` is ``"avg"``)."""
    if isinstance(stats, str):
        stats = stats.split("+")
    if isinstance(stats, (str, bytes)) or not isinstance(stats, Sequence) or len(stats) == 0:
        raise ValueError(f"{owner}: stats must be a non-empty sequence of {STATS} (or 'a+b'), got {stats!r}")
    out = tuple(_STAT_ALIASES.get(s, s) for s in stats)
    bad = [s for s in out if s not in STATS]
    if bad:
        raise ValueError(f"{owner}: unknown statistic(s) {bad}; expected names from {STATS}")
    return out


def _check_axes(owner: str, axes: str, allowed: Sequence[str] = AXES) -> str:
    if axes not in allowed:
        raise ValueError(f"{owner}: axes must be one of {tuple(allowed)}, got {axes!r}")
    return axes


def _check_merge(owner: str, merge: str) -> str:
    if merge not in MERGES:
        raise ValueError(f"{owner}: merge must be one of {MERGES}, got {merge!r}")
    return merge


def _std(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Unbiased standard deviation over ``dims`` (dims kept), 0 for a single element (not NaN).

    The divisor max(n − 1, 1) is a tensor built from the shape at call time, so a traced or exported graph
    follows the input size. The square root is taken only where the variance is positive, so the gradient
    is 0 (not NaN) there, as with ``torch.std``.
    """
    n = 1
    for d in dims:  # the number of reduced elements
        n = n * x.shape[d]
    divisor = torch.full((), n - 1, dtype=x.dtype, device=x.device).clamp(min=1)
    var = (x - x.mean(dims, keepdim=True)).square().sum(dims, keepdim=True) / divisor
    positive = var > 0
    return torch.where(positive, torch.where(positive, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))


def _stat(x: Tensor, stat: str, dims: tuple[int, ...]) -> Tensor:
    """One statistic of ``x`` over ``dims``, dims kept (size 1)."""
    if stat == "avg":
        return x.mean(dims, keepdim=True)
    if stat == "max":
        return x.amax(dims, keepdim=True)
    if stat == "std":
        return _std(x, dims)
    if stat == "lp":
        return torch.linalg.vector_norm(x, 2, dim=dims, keepdim=True)
    return torch.logsumexp(x, dim=dims, keepdim=True)  # "lse"


def _merge(ds: list[Tensor], merge: str) -> Tensor | tuple[Tensor, ...]:
    if len(ds) == 1:
        return ds[0]
    if merge == "concat":
        return torch.cat(ds, dim=1)
    if merge == "shared":
        return tuple(ds)
    return sum(ds[1:], ds[0]) * (1.0 / len(ds))  # "mean"


class Squeeze(nn.Module):
    """Base class of the squeezes: ``forward(x)`` maps (N, C, H, W) to a descriptor (see the module docstring).

    Attributes:
        channels: C, the input channels.
        axes: the reduced axes (``"hw"``, ``"h"``, ``"w"``, ``"c"``, ``"h+w"``).
        out_channels: dim 1 of each descriptor tensor.
        shared: True when ``forward`` returns one descriptor per statistic for a shared excitation.
    """

    channels: int
    axes: str = "hw"
    out_channels: int
    shared: bool = False


class Pool(Squeeze):
    r"""Fixed statistics over ``axes``: mean, max, standard deviation, L2 norm or log-sum-exp, or several.

    With several statistics, ``merge`` says how they combine: ``"concat"`` along dim 1 in the given order
    (CBAM's spatial [max; mean] over C: ``Pool(C, stats="max+avg", axes="c")``), ``"shared"`` to keep them
    apart for one excitation shared by all (CBAM's channel gate: ``stats="avg+max"``), ``"mean"`` to
    average them (timm's ``add_maxpool``). SRM's style pooling is ``stats="avg+std"`` concatenated.

    Args:
        channels: C, input channels.
        stats: names from :data:`STATS`, as a sequence or ``"a+b"``. Default: ``"avg"``.
        axes: reduced axes, see the module docstring. Default: ``"hw"``.
        merge: ``"concat"``, ``"shared"`` or ``"mean"``; None picks ``"concat"`` for ``axes="c"`` and
            ``"shared"`` otherwise. Ignored for a single statistic. ``axes="h+w"`` takes one statistic
            or ``merge="mean"``.

    Shape:
        (N, C, H, W) → descriptor (see the module docstring), stat-major when concatenated.

    Examples:
        >>> Pool(8, stats="max+avg", axes="c")(torch.randn(2, 8, 5, 4)).shape
        torch.Size([2, 2, 5, 4])
        >>> [d.shape for d in Pool(8, axes="h+w")(torch.randn(2, 8, 5, 4))]
        [torch.Size([2, 8, 5, 1]), torch.Size([2, 8, 1, 4])]
    """

    def __init__(self, channels: int, *, stats: str | Sequence[str] = "avg", axes: str = "hw",
                 merge: str | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels)
        self.channels = channels
        self.axes = _check_axes(name, axes)
        self.stats = parse_stats(stats, name)
        k = len(self.stats)
        if merge is None:
            merge = "concat" if axes == "c" else "shared"
        self.merge = _check_merge(name, merge) if k > 1 else "concat"
        if axes == "h+w" and k > 1 and self.merge != "mean":
            raise ValueError(f"{name}: axes='h+w' takes one statistic or merge='mean', got {self.stats} "
                             f"with merge={self.merge!r}")
        self.shared = self.merge == "shared"
        per_stat = 1 if axes == "c" else channels
        self.out_channels = per_stat * k if self.merge == "concat" else per_stat

    def _pool(self, x: Tensor, dims: tuple[int, ...]) -> Tensor | tuple[Tensor, ...]:
        return _merge([_stat(x, s, dims) for s in self.stats], self.merge)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if self.axes == "h+w":
            # one statistic or merge='mean' (checked in __init__): each pool is a single tensor
            return cast(Tensor, self._pool(x, (3,))), cast(Tensor, self._pool(x, (2,)))  # (N, C, H, 1), (N, C, 1, W)
        return self._pool(x, _DIMS[self.axes])

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stats={self.stats}, axes={self.axes!r}, merge={self.merge!r}"


class GeMPool(Squeeze):
    r"""Generalised mean :math:`\big(\mathrm{mean}(\max(x, \epsilon)^p)\big)^{1/p}` over ``axes``, p learnable.

    p = 1 is the mean of the clamped input, p → ∞ the max. Radenović, Tolias, Chum, "Fine-tuning CNN Image
    Retrieval with No Human Annotation", TPAMI 2018 (https://arxiv.org/abs/1711.02512).

    Args:
        channels: C, input channels.
        axes: ``"hw"``, ``"h"``, ``"w"`` or ``"c"``. Default: ``"hw"``.
        p: initial exponent. Default: 3.
        eps: the clamp ε (inputs below it count as ε). Default: 1e-6.
        learnable: p is a parameter (else a buffer). Default: True.

    Shape:
        (N, C, H, W) → one descriptor (see the module docstring).

    Examples:
        >>> GeMPool(8)(torch.rand(2, 8, 5, 4)).shape
        torch.Size([2, 8, 1, 1])
    """

    def __init__(self, channels: int, *, axes: str = "hw", p: float = 3.0, eps: float = 1e-6, learnable: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels)
        self.channels = channels
        self.axes = _check_axes(name, axes, ("hw", "h", "w", "c"))
        self.out_channels = 1 if axes == "c" else channels
        if not p > 0:
            raise ValueError(f"{name}: p must be > 0, got {p!r}")
        self.eps = eps
        self.p_init = float(p)
        p_t = torch.empty(1, device=device, dtype=dtype)
        if learnable:
            self.p = nn.Parameter(p_t)
        else:
            self.register_buffer("p", p_t)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.p.fill_(self.p_init)

    def forward(self, x: Tensor) -> Tensor:
        p = self.p.to(x.dtype)
        return x.clamp(min=self.eps).pow(p).mean(_DIMS[self.axes], keepdim=True).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, axes={self.axes!r}, p_init={self.p_init}, eps={self.eps}"


class DCTPool(Squeeze):
    r"""2-D DCT coefficients as the channel descriptor (FcaNet's multi-spectral squeeze), (N, C, 1, 1).

    Channel group i is reduced by the orthonormal DCT-II basis of frequency :math:`(u_i, v_i)` on a
    ``dct_h × dct_w`` grid, after adaptive average pooling of the input to that grid (exactly the
    identity at that size). See :func:`plugattn._layers.dct_filters` for the frequency tables and the size rule.

    Args:
        channels: C, input channels; divisible by the number of frequencies.
        dct_h: grid height. Default: 7.
        dct_w: grid width. Default: 7.
        freq_sel_method: ``{top,low,bot}{1,2,4,8,16,32}``. Default: ``"top16"``.

    Shape:
        (N, C, H, W) → (N, C, 1, 1).

    Examples:
        >>> DCTPool(16)(torch.randn(2, 16, 14, 9)).shape
        torch.Size([2, 16, 1, 1])
    """

    dct_weight: Tensor  # non-persistent buffer, registered in __init__

    def __init__(self, channels: int, *, dct_h: int = 7, dct_w: int = 7, freq_sel_method: str = "top16",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels, dct_h=dct_h, dct_w=dct_w)
        if freq_sel_method not in FREQ_METHODS:
            raise ValueError(f"{name}: freq_sel_method must be one of {list(FREQ_METHODS)}, got {freq_sel_method!r}")
        if channels % int(freq_sel_method[3:]):
            raise ValueError(f"{name}: channels ({channels}) must be divisible by the number of frequencies "
                             f"of freq_sel_method={freq_sel_method!r}")
        self.channels = self.out_channels = channels
        self.dct_h, self.dct_w = dct_h, dct_w
        self.freq_sel_method = freq_sel_method
        filters = dct_filters(channels, dct_h, dct_w, freq_sel_method)
        self.register_buffer("dct_weight", filters.to(device=device, dtype=dtype or torch.get_default_dtype()),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = adaptive_avg_pool2d(x, (self.dct_h, self.dct_w))  # (N, C, dct_h, dct_w)
        return (pooled * self.dct_weight).sum((2, 3), keepdim=True)  # (N, C, 1, 1)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, dct_h={self.dct_h}, dct_w={self.dct_w}, "
                f"freq_sel_method={self.freq_sel_method!r}")


class ConvPool(Squeeze):
    r"""A learned squeeze by strided (by default depthwise) convolutions, then the mean over H·W.

    ``num_layers`` blocks of conv k×k (stride s, groups C when depthwise, no bias) → norm, with the
    activation between blocks, as in Gather-Excite's parametric gather; the remaining map is averaged.

    Args:
        channels: C, input channels.
        kernel_size: k. Default: 3.
        stride: s. Default: 2.
        num_layers: number of conv blocks. Default: 1.
        depthwise: one filter per channel (else a full conv C → C). Default: True.
        norm_layer: norm after each conv. Default: BatchNorm2d.
        act_layer: activation between blocks. Default: ReLU.

    Shape:
        (N, C, H, W) → (N, C, 1, 1).

    Examples:
        >>> ConvPool(8, num_layers=2)(torch.randn(2, 8, 9, 7)).shape
        torch.Size([2, 8, 1, 1])
    """

    def __init__(self, channels: int, *, kernel_size: int = 3, stride: int = 2, num_layers: int = 1,
                 depthwise: bool = True, norm_layer: LayerType = "batchnorm", act_layer: LayerType = "relu",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels, kernel_size=kernel_size, stride=stride,
                       num_layers=num_layers)
        self.channels = self.out_channels = channels
        self.num_layers = num_layers
        self.convs = nn.Sequential(*[
            ConvNormAct(channels, channels, kernel_size, stride=stride, groups=channels if depthwise else 1,
                        norm_layer=norm_layer, act_layer=act_layer if i < num_layers - 1 else None,
                        device=device, dtype=dtype)
            for i in range(num_layers)
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x).mean((2, 3), keepdim=True)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_layers={self.num_layers}"


class LinearPool(Squeeze):
    r"""A learned linear projection of the channels at each position (squeeze over C), as scSE's sSE.

    :math:`d = W x + b`, a 1×1 conv C → ``out_channels``.

    Args:
        channels: C, input channels.
        out_channels: descriptor maps. Default: 1.
        bias: Default: True.

    Shape:
        (N, C, H, W) → (N, out_channels, H, W).

    Examples:
        >>> LinearPool(8)(torch.randn(2, 8, 5, 4)).shape
        torch.Size([2, 1, 5, 4])
    """

    def __init__(self, channels: int, *, out_channels: int = 1, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels, out_channels=out_channels)
        self.channels = channels
        self.axes = "c"
        self.out_channels = out_channels
        self.proj = nn.Conv2d(channels, out_channels, 1, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)  # (N, out_channels, H, W)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, out_channels={self.out_channels}"


class AttentionPool(Squeeze):
    r"""Attention pooling (GCNet): :math:`d = \sum_j \mathrm{softmax}_j(W_k x_j + b)\, x_j`, (N, C, 1, 1).

    The position weights pass through a softmax :class:`~plugattn._layers.Gate` (``attn_gate``), so
    :func:`plugattn.capture` records them. Parameter names equal :class:`~plugattn.modules.gc.GlobalContextBlock`'s.

    Args:
        channels: C, input channels.
        bias: bias of the mask conv (official: True). Default: True.

    Shape:
        (N, C, H, W) → (N, C, 1, 1).

    Examples:
        >>> AttentionPool(8)(torch.randn(2, 8, 5, 4)).shape
        torch.Size([2, 8, 1, 1])
    """

    def __init__(self, channels: int, *, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        self.channels = self.out_channels = channels
        self.conv_attn = nn.Conv2d(channels, 1, 1, bias=bias, device=device, dtype=dtype)
        self.attn_gate = Gate("softmax", dim=-1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.conv_attn.weight, mode="fan_in", nonlinearity="relu")
        if self.conv_attn.bias is not None:
            nn.init.zeros_(self.conv_attn.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        a = self.attn_gate(self.conv_attn(x).flatten(2))  # (N, 1, HW): softmax over the positions
        return torch.matmul(x.flatten(2), a.transpose(1, 2)).view(n, c, 1, 1)  # (N, C, HW)·(N, HW, 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class ClusterPool(Squeeze):
    r"""Soft clustering of positions: k learnable centres, each pooling the positions assigned to it.

    .. math::
        a_{ij} = \mathrm{softmax}_j\Big(\frac{\langle x_i, \mu_j\rangle}{\sqrt{C}}\Big), \qquad
        d_j = \frac{\sum_i a_{ij}\, x_i}{\max(\sum_i a_{ij}, \epsilon)}

    i runs over the H·W positions, j over the k centres :math:`\mu_j \in \mathbb{R}^C`. Each :math:`d_j`
    is a convex combination of positions (the soft mean of cluster j, as the M-step of EM attention and
    the soft assignment of NetVLAD, without NetVLAD's residuals), so the descriptor is invariant to any
    permutation of the positions and independent of H·W. The (N, k, H, W) assignments pass through a
    softmax :class:`~plugattn._layers.Gate` (``assign_gate``). Not in a paper as a channel-gate squeeze.

    Args:
        channels: C, input channels.
        num_clusters: k. Default: 4.
        merge: ``"shared"`` (k descriptors for a shared excitation), ``"concat"`` ((N, k·C, 1, 1),
            cluster-major) or ``"mean"``. Default: ``"shared"``.
        eps: floor of a cluster's total assignment. Default: 1e-6.

    Shape:
        (N, C, H, W) → k × (N, C, 1, 1), or (N, k·C, 1, 1), or (N, C, 1, 1).

    Examples:
        >>> d = ClusterPool(16, num_clusters=3)(torch.randn(2, 16, 5, 4))
        >>> len(d), d[0].shape
        (3, torch.Size([2, 16, 1, 1]))
    """

    def __init__(self, channels: int, *, num_clusters: int = 4, merge: str = "shared", eps: float = 1e-6,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive(name, channels=channels, num_clusters=num_clusters)
        self.channels = channels
        self.num_clusters = num_clusters
        self.merge = _check_merge(name, merge)
        self.shared = merge == "shared" and num_clusters > 1
        self.out_channels = channels * num_clusters if merge == "concat" else channels
        self.eps = eps
        self.centres = nn.Parameter(torch.empty(num_clusters, channels, device=device, dtype=dtype))  # (k, C)
        self.assign_gate = Gate("softmax", dim=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.centres)  # unit-variance centres: similarities of order 1 for unit-variance inputs

    def assignments(self, x: Tensor) -> Tensor:
        """Soft assignment of each position to the centres: (N, C, H, W) → (N, k, H, W), summing to 1 over k."""
        n, c, h, w = x.shape
        sim = torch.matmul(self.centres, x.flatten(2)) * (c ** -0.5)  # (k, C)·(N, C, HW) → (N, k, HW)
        return self.assign_gate(sim.view(n, self.num_clusters, h, w))

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        n, c, h, w = x.shape
        a = self.assignments(x).view(n, self.num_clusters, h * w)  # (N, k, HW)
        pooled = torch.matmul(x.flatten(2), a.transpose(1, 2))  # (N, C, HW)·(N, HW, k) → (N, C, k)
        mass = a.sum(2).clamp_min(self.eps)  # (N, k)
        d = (pooled / mass.unsqueeze(1)).unsqueeze(-1)  # (N, C, k, 1)
        return _merge([d[:, :, j:j + 1] for j in range(self.num_clusters)], self.merge)  # each (N, C, 1, 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_clusters={self.num_clusters}, merge={self.merge!r}"
