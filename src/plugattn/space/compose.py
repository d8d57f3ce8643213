"""``compose``: squeeze → excite → gate → reweight in one line; presets equal to the named modules.

A composed module runs::

    d = squeeze(x)          # a descriptor, or a tuple of descriptors
    l = excite(d)           # shared squeezes: excite(d_1) + excite(d_2) + ...; tuples: one per descriptor
    w = gate(l)             # plugattn._layers.Gate, once per logit tensor
    y = reweight(x, w)

Presets (:func:`preset`) build the named modules from parts; each is proven equal to its named module, with
the named module's weights loaded through :func:`load_named_state_dict` (the key maps are in
:data:`PRESETS`). The unexplored variants worth a name are registered here (``cluster_se``, ``eca_ms``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .._layers import LayerNorm2d, LayerType, bn_momentum, check_input, check_positive
from ..official import load_converted, rename_prefix
from ..registry import register
from .excite import (
    MLP,
    AxialMLP,
    ChannelConv,
    ChannelSelfAttention,
    ChannelwiseFC,
    Identity,
    MultiScale,
    SpatialConv,
)
from .gate import Gate, make_gate
from .reweight import Add, Multiply, Residual, Sequence
from .squeeze import AttentionPool, ClusterPool, ConvPool, DCTPool, GeMPool, LinearPool, Pool, Squeeze

__all__ = [
    "ComposedAttention", "compose", "preset", "list_presets", "load_named_state_dict", "PRESETS",
    "ClusterSE", "MultiScaleECA", "SPACE_MAP", "space_table",
]

_Descriptor = Tensor | tuple[Tensor, ...]


class ComposedAttention(nn.Module):
    r"""Four parts in a row: :math:`y = \mathrm{reweight}(x, \mathrm{gate}(\mathrm{excite}(\mathrm{squeeze}(x))))`.

    Follows the module contract: input checked (``channels``), weights through a :class:`Gate`, output in
    the input's dtype and memory format (the reweights are elementwise). Build it with :func:`compose`.

    Args:
        channels: C, input channels.
        squeeze: a squeeze module (:mod:`plugattn.space.squeeze`).
        excite: an excite module (:mod:`plugattn.space.excite`).
        gate: a :class:`Gate`.
        reweight: a reweight module (:mod:`plugattn.space.reweight`).

    Shape:
        (N, C, H, W) → (N, C, H, W).
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

    def descriptor(self, x: Tensor) -> _Descriptor:
        """The squeezed descriptor of ``x``."""
        check_input(self, x, self.channels)
        return self.squeeze(x)

    def logits(self, x: Tensor) -> _Descriptor:
        """Attention logits: the excitation of the descriptor (summed over a shared squeeze's descriptors)."""
        d = self.descriptor(x)
        if not isinstance(d, (tuple, list)) or getattr(self.excite, "takes_tuple", False):
            return self.excite(d)
        ls = [self.excite(t) for t in d]
        if getattr(self.squeeze, "shared", False):
            return sum(ls[1:], ls[0])  # one excitation shared by the statistics, logits summed (CBAM)
        return tuple(ls)

    def weights(self, x: Tensor) -> _Descriptor:
        """Attention weights: the gated logits."""
        ls = self.logits(x)
        if isinstance(ls, (tuple, list)):
            return tuple(self.gate(t) for t in ls)
        return self.gate(ls)

    def forward(self, x: Tensor) -> Tensor:
        return self.reweight(x, self.weights(x))


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
    dd = {"device": device, "dtype": dtype}
    sq = _make_squeeze(channels, squeeze, axes, merge, dict(squeeze_kw or {}), dd)
    ex = _make_excite(channels, excite, sq, dict(excite_kw or {}), dd)
    return ComposedAttention(channels, sq, ex, make_gate(gate), _make_reweight(reweight, dict(reweight_kw or {}), dd))


# --- presets ----------------------------------------------------------------------------------------------------


def _se(channels: int, *, rd_ratio: float = 1 / 16, rd_channels: int | None = None, rd_divisor: int | None = None,
        bias: bool = True, add_maxpool: bool = False, act_layer: LayerType = "relu", norm_layer: LayerType = None,
        gate_layer: LayerType = "sigmoid", device=None, dtype=None) -> ComposedAttention:
    """SE (:class:`~plugattn.modules.se.SqueezeExcite`'s arguments): mean (or ½(mean + max)) → MLP → σ → ×."""
    dd = {"device": device, "dtype": dtype}
    sq = Pool(channels, stats="avg+max" if add_maxpool else "avg", merge="mean")
    ex = MLP(channels, channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor, bias=bias,
             act_layer=act_layer, norm_layer=norm_layer, **dd)
    return ComposedAttention(channels, sq, ex, make_gate(gate_layer), Multiply())


def _eca(channels: int, *, kernel_size: int | None = None, gamma: float = 2, beta: float = 1,
         gate_layer: LayerType = "sigmoid", device=None, dtype=None) -> ComposedAttention:
    """ECA (:class:`~plugattn.modules.eca.EfficientChannelAttention`): mean → 1-D conv over C → σ → ×."""
    ex = ChannelConv(channels, kernel_size=kernel_size, gamma=gamma, beta=beta, device=device, dtype=dtype)
    return ComposedAttention(channels, Pool(channels), ex, make_gate(gate_layer), Multiply())


def _cbam_channel(channels: int, *, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                  rd_divisor: int | None = None, pool_types=("avg", "max"), bias: bool = True,
                  act_layer: LayerType = "relu", gate_layer: LayerType = "sigmoid", device=None, dtype=None
                  ) -> ComposedAttention:
    """CBAM channel gate: pools kept apart → one shared MLP, logits summed → σ → ×.

    Not expressible: ``rd_channels=0`` (the official width for C < 16), which the named module allows.
    """
    sq = Pool(channels, stats=tuple(pool_types), merge="shared")
    ex = MLP(channels, channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor, bias=bias,
             act_layer=act_layer, device=device, dtype=dtype)
    return ComposedAttention(channels, sq, ex, make_gate(gate_layer), Multiply())


def _cbam_spatial(channels: int, *, kernel_size: int = 7, norm_layer: LayerType = bn_momentum(0.01),
                  gate_layer: LayerType = "sigmoid", device=None, dtype=None) -> ComposedAttention:
    """CBAM spatial gate: [max; mean] over C → 7×7 conv (no bias) → BN → σ → ×."""
    sq = Pool(channels, stats="max+avg", axes="c", merge="concat")
    ex = SpatialConv(2, 1, kernel_size=kernel_size, bias=False, norm_layer=norm_layer, device=device, dtype=dtype)
    return ComposedAttention(channels, sq, ex, make_gate(gate_layer), Multiply())


def _cbam(channels: int, *, rd_ratio: float = 1 / 16, rd_channels: int | None = None, rd_divisor: int | None = None,
          pool_types=("avg", "max"), no_spatial: bool = False, kernel_size: int = 7, bias: bool = True,
          act_layer: LayerType = "relu", norm_layer: LayerType = bn_momentum(0.01), gate_layer: LayerType = "sigmoid",
          device=None, dtype=None) -> Sequence:
    """CBAM: the channel gate, then the spatial gate on the refined tensor (:class:`Sequence`)."""
    dd = {"device": device, "dtype": dtype}
    parts = [_cbam_channel(channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor,
                           pool_types=pool_types, bias=bias, act_layer=act_layer, gate_layer=gate_layer, **dd)]
    if not no_spatial:
        parts.append(_cbam_spatial(channels, kernel_size=kernel_size, norm_layer=norm_layer, gate_layer=gate_layer,
                                   **dd))
    return Sequence(*parts, channels=channels)


def _coord(channels: int, *, rd_ratio: float = 1 / 32, rd_channels: int | None = None, rd_divisor: int | None = None,
           min_channels: int = 8, bias: bool = True, act_layer: LayerType = "hardswish",
           norm_layer: LayerType = "batchnorm", gate_layer: LayerType = "sigmoid", device=None, dtype=None
           ) -> ComposedAttention:
    """Coordinate Attention: means over W and H → conv-BN-h-swish, split, two 1×1 convs → σ → x·a_h·a_w."""
    ex = AxialMLP(channels, channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor,
                  min_channels=min_channels, bias=bias, act_layer=act_layer, norm_layer=norm_layer, device=device,
                  dtype=dtype)
    return ComposedAttention(channels, Pool(channels, axes="h+w"), ex, make_gate(gate_layer), Multiply())


def _srm(channels: int, *, norm_layer: LayerType = "batchnorm", gate_layer: LayerType = "sigmoid",
         device=None, dtype=None) -> ComposedAttention:
    """SRM: [mean; std] over H·W → channel-wise FC → BN → σ → ×."""
    ex = ChannelwiseFC(channels, num_stats=2, norm_layer=norm_layer, device=device, dtype=dtype)
    return ComposedAttention(channels, Pool(channels, stats="avg+std", merge="concat"), ex, make_gate(gate_layer),
                             Multiply())


def _fca(channels: int, *, dct_h: int = 7, dct_w: int = 7, freq_sel_method: str = "top16", rd_ratio: float = 1 / 16,
         rd_channels: int | None = None, rd_divisor: int | None = None, bias: bool = False,
         act_layer: LayerType = "relu", gate_layer: LayerType = "sigmoid", device=None, dtype=None
         ) -> ComposedAttention:
    """FcaNet: DCT components → MLP (no bias) → σ → ×."""
    dd = {"device": device, "dtype": dtype}
    sq = DCTPool(channels, dct_h=dct_h, dct_w=dct_w, freq_sel_method=freq_sel_method, **dd)
    ex = MLP(channels, channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor, bias=bias,
             act_layer=act_layer, **dd)
    return ComposedAttention(channels, sq, ex, make_gate(gate_layer), Multiply())


def _gc(channels: int, *, rd_ratio: float = 1 / 16, rd_channels: int | None = None, rd_divisor: int | None = None,
        use_attn: bool = True, fuse_add: bool = True, fuse_scale: bool = False, bias: bool = True,
        act_layer: LayerType = "relu", norm_layer: LayerType = LayerNorm2d, gate_layer: LayerType = "sigmoid",
        device=None, dtype=None) -> ComposedAttention:
    """GCNet: attention pooling → MLP with LayerNorm → + (``channel_add``), or → σ → × (``channel_mul``).

    Not expressible: both fusions at once (two transforms of one context, x·σ(t₁) + t₂), which is not a
    single squeeze-excite-gate-reweight pipeline; use the named module.
    """
    if fuse_add == fuse_scale:
        raise ValueError("gc preset: exactly one of fuse_add, fuse_scale (both at once is not one pipeline; "
                         "use plugattn.modules.gc.GlobalContextBlock)")
    dd = {"device": device, "dtype": dtype}
    sq = AttentionPool(channels, bias=bias, **dd) if use_attn else Pool(channels)
    ex = MLP(channels, channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor, bias=bias,
             act_layer=act_layer, norm_layer=norm_layer, **dd)
    if fuse_add:
        return ComposedAttention(channels, sq, ex, make_gate("identity"), Add())
    return ComposedAttention(channels, sq, ex, make_gate(gate_layer), Multiply())


@dataclass(frozen=True)
class PresetInfo:
    """A preset: its builder, the named module (registry key) it equals, and the key map from that module's
    state_dict to the preset's (tensors whose shapes differ only by singleton dims are reshaped)."""

    build: Callable[..., nn.Module]
    named: str
    key_map: Callable[[str], str | None]


PRESETS: dict[str, PresetInfo] = {
    "se": PresetInfo(_se, "se", rename_prefix(("", "excite."))),
    "eca": PresetInfo(_eca, "eca", rename_prefix(("", "excite."))),
    "cbam_channel": PresetInfo(_cbam_channel, "cbam_channel", rename_prefix(("", "excite."))),
    "cbam_spatial": PresetInfo(_cbam_spatial, "cbam_spatial", rename_prefix(("attn.conv.", "excite."))),
    "cbam": PresetInfo(_cbam, "cbam", rename_prefix(("channel.", "attns.0.excite."),
                                                    ("spatial.attn.conv.", "attns.1.excite."))),
    "coord": PresetInfo(_coord, "coord", rename_prefix(("conv1.", "excite.fc1."), ("norm.", "excite.norm."),
                                                       ("conv_h.", "excite.fc_h."), ("conv_w.", "excite.fc_w."))),
    "srm": PresetInfo(_srm, "srm", rename_prefix(("", "excite."))),
    "fca": PresetInfo(_fca, "fca", rename_prefix(("", "excite."))),
    "gc": PresetInfo(_gc, "gc", rename_prefix(("conv_attn.", "squeeze.conv_attn."), ("mlp_add.", "excite."),
                                              ("mlp_scale.", "excite."))),
}
"""Preset name → :class:`PresetInfo`. The builders take the named module's constructor arguments."""


def list_presets() -> list[str]:
    """Sorted preset names."""
    return sorted(PRESETS)


def preset(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """The named module ``name`` built from space parts, with the named module's constructor arguments.

    Examples:
        >>> m = preset("se", 64, rd_ratio=1 / 8)
        >>> type(m).__name__, m(torch.randn(1, 64, 3, 3)).shape
        ('ComposedAttention', torch.Size([1, 64, 3, 3]))
    """
    if name not in PRESETS:
        raise ValueError(f"preset: unknown name {name!r}; expected one of: {', '.join(list_presets())}")
    return PRESETS[name].build(channels, **kwargs)


def load_named_state_dict(module: nn.Module, name: str, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Load the state_dict of named module ``name`` into its preset ``module`` (strict), converting the keys."""
    if name not in PRESETS:
        raise ValueError(f"load_named_state_dict: unknown preset {name!r}; "
                         f"expected one of: {', '.join(list_presets())}")
    return load_converted(module, state_dict, PRESETS[name].key_map, owner=f"load_named_state_dict({name!r})")


# --- registered variants (points of the space not in a paper) -----------------------------------------------------

_SPACE_PAPER = "plugattn design space (docs/space.md): an unexplored variant, not in a paper"


@register(
    "cluster_se", paper=_SPACE_PAPER + "; soft-cluster squeeze after NetVLAD and EM attention", year=2026,
    url="https://arxiv.org/abs/1511.07247", kind="channel", official="none (composed: plugattn.space)",
)
class ClusterSE(ComposedAttention):
    r"""SE with a soft-cluster squeeze: k learned centres pool the positions, one shared MLP excites each pool.

    .. math::
        y = x \cdot \sigma\Big(\sum_{j=1}^{k} \mathrm{MLP}(d_j)\Big), \qquad
        d_j = \frac{\sum_i a_{ij} x_i}{\sum_i a_{ij}},\ a_{ij} = \mathrm{softmax}_j(\langle x_i, \mu_j\rangle/\sqrt{C})

    CBAM's channel gate shares its MLP between two fixed pools (avg, max); here the pools are k learned,
    content-dependent soft means (:class:`~plugattn.space.squeeze.ClusterPool`), so the gate can respond
    to what kinds of positions a channel is active at, not only to its mean. With k = 1 it is SE.
    Not in a paper (the seed's open question). Descriptor permutation-invariant over positions.

    Args:
        channels: C, input channels.
        num_clusters: k. Default: 4.
        rd_ratio: 1/r of the MLP. Default: 1/16.
        rd_channels: hidden width, overriding ``rd_ratio``. Default: None.
        rd_divisor: ``None`` floors C·rd_ratio; an int rounds to a multiple. Default: None.
        act_layer: δ. Default: ReLU.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = ClusterSE(32, num_clusters=3)
        >>> m(torch.randn(2, 32, 7, 5)).shape
        torch.Size([2, 32, 7, 5])
    """

    def __init__(
        self,
        channels: int,
        *,
        num_clusters: int = 4,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int | None = None,
        act_layer: LayerType = "relu",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive(type(self).__name__, channels=channels)
        dd = {"device": device, "dtype": dtype}
        sq = ClusterPool(channels, num_clusters=num_clusters, merge="shared", **dd)
        ex = MLP(channels, channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor,
                 act_layer=act_layer, **dd)
        super().__init__(channels, sq, ex, make_gate(gate_layer), Multiply())


@register(
    "eca_ms", paper=_SPACE_PAPER + "; multi-scale ECA (max over several 1-D kernels)", year=2026,
    url="https://arxiv.org/abs/1910.03151", kind="channel", official="none (composed: plugattn.space)",
)
class MultiScaleECA(ComposedAttention):
    r"""ECA with several kernel sizes at once, fused by the elementwise max of their logits.

    :math:`y = x \cdot \sigma(\max_k \mathrm{conv1d}_k(\mathrm{GAP}(x)))`. A sum of the branches would be one
    conv with the largest kernel (linear, re-parameterisable); the max is not: each channel keeps the
    scale that excites it most. Not in a paper.

    Args:
        channels: C, input channels.
        kernel_sizes: the odd kernel sizes. Default: (3, 5, 7).
        fuse: ``"max"``, ``"sum"`` or ``"mean"``. Default: ``"max"``.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = MultiScaleECA(64)
        >>> m(torch.randn(2, 64, 7, 5)).shape
        torch.Size([2, 64, 7, 5])
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_sizes: tuple[int, ...] = (3, 5, 7),
        fuse: str = "max",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive(type(self).__name__, channels=channels)
        if isinstance(kernel_sizes, int) or not kernel_sizes:
            raise ValueError(f"{type(self).__name__}: kernel_sizes must be a non-empty tuple of odd ints, "
                             f"got {kernel_sizes!r}")
        ex = MultiScale([ChannelConv(channels, kernel_size=k, device=device, dtype=dtype) for k in kernel_sizes],
                        fuse=fuse)
        super().__init__(channels, Pool(channels), ex, make_gate(gate_layer), Multiply())


# --- where every registered module sits in the space (docs/space.md) -----------------------------------------------

_HW = "avg over H·W"
SPACE_MAP: dict[str, tuple[str, str, str, str, str]] = {
    # channel attention
    "se": (_HW, "MLP C → C/16 → C", "sigmoid", "multiply", ""),
    "ese": (_HW, "one FC C → C", "hard sigmoid", "multiply", "effective SE (VoVNetV2)"),
    "eca": (_HW, "1-D conv across C (local, k = ψ(C))", "sigmoid", "multiply", ""),
    "ceca": (_HW, "1-D conv across C, circular padding", "sigmoid", "multiply", "timm's variant"),
    "eca_ms": (_HW, "multi-scale 1-D convs (3, 5, 7), max-fused", "sigmoid", "multiply", "variant, not in a paper"),
    "cbam_channel": ("avg + max over H·W, kept apart", "shared MLP, logits summed", "sigmoid", "multiply", ""),
    "cluster_se": ("soft clustering of positions (k = 4 centres), kept apart", "shared MLP, logits summed",
                   "sigmoid", "multiply", "variant, not in a paper"),
    "srm": ("mean + std over H·W, concatenated", "channel-wise FC + BN", "sigmoid", "multiply", ""),
    "fca": ("DCT components over H·W (top16; input pooled to the DCT grid)", "MLP, no bias", "sigmoid", "multiply",
            ""),
    "gc": ("attention pooling over H·W (softmax of a 1×1 conv)", "MLP with LayerNorm", "identity",
           "add (`channel_add`)", "`fuse_scale`: sigmoid, multiply; both fusions: not one pipeline"),
    "ge": ("avg (or depthwise strided convs) over an extent e", "identity (or MLP)", "sigmoid",
           "multiply, nearest-upsampled", "extent 0: global"),
    "simam": ("mean and variance over H·W", "energy (t − μ)²/(4(σ² + λ)) + ½, no parameters", "sigmoid",
              "multiply", "3-D weights"),
    # spatial and axial attention
    "cbam_spatial": ("max + avg over C, concatenated", "7×7 conv + BN", "sigmoid", "multiply", ""),
    "coord": ("avg over W and over H (h+w)", "axial MLP: shared 1×1 conv-BN-h-swish, split, two 1×1 convs",
              "sigmoid", "multiply: x·a_h·a_w", ""),
    "sge": ("per group: each position's dot product with the group's GAP, normalised over H·W",
            "per-group affine (γ, β)", "sigmoid", "multiply", "channel groups folded into the batch"),
    # combinations
    "cbam": ("`cbam_channel`, then `cbam_spatial`", "", "", "sequence", ""),
    "bam": ("avg over H·W ∥ 1×1 conv over C (to C/r maps)", "MLP + BN ∥ dilated 3×3 convs → 1 map",
            "sigmoid of M_c·M_s (official; paper: M_c + M_s)", "parallel (logits), residual x·(1 + w)", ""),
    "scse": ("avg over H·W ∥ linear projection over C", "MLP ∥ identity", "sigmoid", "parallel, max of outputs",
             "official code: max; MICCAI paper: add"),
    "triplet": ("max + avg over C, over H and over W (three Z-pools)", "7×7 conv + BN per branch", "sigmoid",
                "parallel, mean of the three outputs", ""),
    "shuffle": ("per group: avg over H·W (channel half) ∥ GroupNorm (spatial half)", "per-channel affine",
                "sigmoid", "multiply, then channel shuffle", ""),
    "ema": ("per group: avg over W and over H (h+w) ∥ 3×3 conv", "shared 1×1 conv; cross-spatial softmax(GAP)·x",
            "sigmoid", "multiply", ""),
    "sk": ("sum of conv branches (3×3, 5×5), avg over H·W", "MLP (FC-BN-ReLU) → one logit map per branch",
           "softmax over branches", "weighted sum of the branches (selection)", "replaces a conv"),
    # self-attention
    "danet_pam": ("none: positions as tokens (1×1 conv q, k, v)", "affinity QᵀK (H·W × H·W)",
                  "softmax over positions", "aggregate V·Sᵀ, residual with learnable γ", ""),
    "danet_cam": ("none: channels as tokens", "Gram F·Fᵀ (C × C), max − E", "softmax over channels",
                  "aggregate X·F, residual with learnable γ", ""),
    "danet": ("`danet_pam` ∥ `danet_cam`", "", "", "parallel, sum with learnable γs", ""),
    "non_local": ("none: positions as tokens (1×1 convs θ, φ, g; optional 2×2 max-pooled keys)",
                  "embedded Gaussian affinity θᵀφ (H·W × H·W)", "softmax over positions",
                  "aggregate g, 1×1 conv + BN (zero-init), residual add", ""),
    "danet_head": ("conv branches around PAM and CAM", "", "", "", "a segmentation head, not a reweight"),
    "sea_attention": ("mean over W and over H of q, k, v (axial squeeze)", "axial self-attention + detail conv",
                      "softmax over rows and columns", "multiply: σ(proj) · detail branch", ""),
    "sea_block": ("`sea_attention` + MLP, residual", "", "", "", "a transformer block"),
}
"""Registry key → (squeeze, excite, gate, reweight, notes); :func:`space_table` renders it. A new registered
module adds its row here (tests/test_space.py checks that every registered module has one)."""


def space_table(names: list[str] | None = None) -> str:
    """The markdown table of docs/space.md: every registered module on the four axes.

    Modules missing from :data:`SPACE_MAP` get a row marked "not mapped yet".
    """
    from ..registry import info, list_modules

    names = list_modules() if names is None else names
    presets = {p.named: k for k, p in PRESETS.items()}
    rows = ["| module | kind | squeeze | excite | gate | reweight | preset | notes |",
            "|---|---|---|---|---|---|---|---|"]
    for n in names:
        sq, ex, g, rw, note = SPACE_MAP.get(n, ("?", "?", "?", "?", "not mapped yet"))
        pr = f"`{presets[n]}`" if n in presets else ""
        rows.append(f"| `{n}` | {info(n).kind} | {sq} | {ex} | {g} | {rw} | {pr} | {note} |")
    return "\n".join(rows)
