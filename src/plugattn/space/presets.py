"""Presets: the named modules built from space parts, each equal to its named module, weights included.

:func:`preset` builds a named module from parts with the named module's constructor arguments;
:func:`load_named_state_dict` loads the named module's weights into it through the key map in
:data:`PRESETS` (tests/space/test_presets.py proves each equal to its named module). :data:`SPACE_MAP` and
:func:`space_table` place every registered module on the four axes (docs/space.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn as nn
from torch import Tensor

from .._layers import LayerNorm2d, LayerType, factory_kwargs
from ..official import load_converted, rename_prefix
from ..registry import info, list_modules
from .compose import ComposedAttention
from .excite import CBAM_NORM, MLP, AxialMLP, ChannelConv, ChannelwiseFC, SpatialConv
from .gate import make_gate
from .reweight import Add, Multiply, Series
from .squeeze import AttentionPool, DCTPool, Pool

__all__ = ["PresetInfo", "PRESETS", "list_presets", "preset", "load_named_state_dict", "SPACE_MAP", "space_table"]


def _se(channels: int, *, rd_ratio: float = 1 / 16, rd_channels: int | None = None, rd_divisor: int | None = None,
        bias: bool = True, add_maxpool: bool = False, act_layer: LayerType = "relu", norm_layer: LayerType = None,
        gate_layer: LayerType = "sigmoid", device=None, dtype=None) -> ComposedAttention:
    """SE (:class:`~plugattn.modules.se.SqueezeExcite`'s arguments): mean (or ½(mean + max)) → MLP → σ → ×."""
    dd = factory_kwargs(device, dtype)
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


def _cbam_spatial(channels: int, *, kernel_size: int = 7, norm_layer: LayerType = CBAM_NORM,
                  gate_layer: LayerType = "sigmoid", device=None, dtype=None) -> ComposedAttention:
    """CBAM spatial gate: [max; mean] over C → 7×7 conv (no bias) → BN → σ → ×."""
    sq = Pool(channels, stats="max+avg", axes="c", merge="concat")
    ex = SpatialConv(2, 1, kernel_size=kernel_size, bias=False, norm_layer=norm_layer, device=device, dtype=dtype)
    return ComposedAttention(channels, sq, ex, make_gate(gate_layer), Multiply())


def _cbam(channels: int, *, rd_ratio: float = 1 / 16, rd_channels: int | None = None, rd_divisor: int | None = None,
          pool_types=("avg", "max"), no_spatial: bool = False, kernel_size: int = 7, bias: bool = True,
          act_layer: LayerType = "relu", norm_layer: LayerType = CBAM_NORM, gate_layer: LayerType = "sigmoid",
          device=None, dtype=None) -> Series:
    """CBAM: the channel gate, then the spatial gate on the refined tensor (:class:`Series`)."""
    dd = factory_kwargs(device, dtype)
    parts = [_cbam_channel(channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor,
                           pool_types=pool_types, bias=bias, act_layer=act_layer, gate_layer=gate_layer, **dd)]
    if not no_spatial:
        parts.append(_cbam_spatial(channels, kernel_size=kernel_size, norm_layer=norm_layer, gate_layer=gate_layer,
                                   **dd))
    return Series(*parts, channels=channels)


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
    dd = factory_kwargs(device, dtype)
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
    dd = factory_kwargs(device, dtype)
    sq = AttentionPool(channels, bias=bias, **dd) if use_attn else Pool(channels)
    ex = MLP(channels, channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor, bias=bias,
             act_layer=act_layer, norm_layer=norm_layer, **dd)
    if fuse_add:
        return ComposedAttention(channels, sq, ex, make_gate("identity"), Add())
    return ComposedAttention(channels, sq, ex, make_gate(gate_layer), Multiply())


@dataclass(frozen=True)
class PresetInfo:
    """A preset: its builder, the named module (registry key) it equals, and the key map of their state_dicts.

    ``key_map`` takes a key of the named module's state_dict to the preset's (tensors whose shapes differ only
    by singleton dims are reshaped).
    """

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
        >>> import torch
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
module adds its row here (tests/space/test_presets.py checks that every registered module has one)."""


def space_table(names: list[str] | None = None) -> str:
    """The markdown table of docs/space.md: every registered module on the four axes.

    Modules missing from :data:`SPACE_MAP` get a row marked "not mapped yet".
    """
    names = list_modules() if names is None else names
    presets = {p.named: k for k, p in PRESETS.items()}
    rows = ["| module | kind | squeeze | excite | gate | reweight | preset | notes |",
            "|---|---|---|---|---|---|---|---|"]
    for n in names:
        sq, ex, g, rw, note = SPACE_MAP.get(n, ("?", "?", "?", "?", "not mapped yet"))
        pr = f"`{presets[n]}`" if n in presets else ""
        rows.append(f"| `{n}` | {info(n).kind} | {sq} | {ex} | {g} | {rw} | {pr} | {note} |")
    return "\n".join(rows)
