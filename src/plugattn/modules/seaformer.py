"""SeaFormer: squeeze-enhanced axial attention and its transformer block.

Paper: Wan, Zhang, Zhang, Lu, Zhang, "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic
Segmentation", ICLR 2023. https://arxiv.org/abs/2301.13156 — official code: https://github.com/fudan-zvg/SeaFormer
(``seaformer-cls/seaformer.py``: ``Sea_Attention``, ``Block``, ``Mlp``, ``Conv2d_BN``,
``SqueezeAxialPositionalEmbedding``; the mmseg backbone copy is identical for attn_ratio 2).

Both modules reproduce the official classes exactly (the goldens check it). Our parameter names are our
own; :func:`plugattn.from_official` (keys ``"sea_attention"`` and ``"sea_block"``) maps the official ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .._layers import ConvNormAct, Gate, LayerType, check_input, check_positive, factory_kwargs, get_layer
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["SeaAttention", "SeaFormerBlock", "DropPath"]

_PAPER = "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic Segmentation"
_URL = "https://arxiv.org/abs/2301.13156"


def resample_pos_embed(pos: Tensor, length: int) -> Tensor:
    """Resample a (1, C, L) positional embedding to (1, C, length) as the official code does.

    ``F.interpolate(pos, size=length, mode="linear", align_corners=False)``: sample points
    src = (i + ½)·L/length − ½ clamped at 0, no antialiasing; the identity when ``length == L``.
    """
    return F.interpolate(pos, size=length, mode="linear", align_corners=False)


def _act_conv_norm(
    in_channels: int, out_channels: int, act_layer: LayerType, norm_layer: LayerType, dd: dict[str, Any]
) -> nn.Sequential:
    """``act`` → 1×1 conv (no bias) → norm: the official ``Sequential(activation(), Conv2d_BN(...))``."""
    return nn.Sequential(OrderedDict(
        act=get_layer(act_layer, arg_name="act_layer"),
        conv=nn.Conv2d(in_channels, out_channels, 1, bias=False, **dd),
        bn=get_layer(norm_layer, out_channels, arg_name="norm_layer", **dd),  # None: nn.Identity
    ))


@register(
    "sea_attention", paper=_PAPER, year=2023, url=_URL, kind="self-attention",
    official="fudan-zvg/SeaFormer seaformer-cls Sea_Attention",
)
class SeaAttention(nn.Module):
    r"""Squeeze-enhanced axial attention (Sea attention), with its detail-enhancement branch.

    With :math:`q, k, v` from 1×1 conv-BN projections (:math:`h` heads, key dim :math:`d_k`, value dim
    :math:`d_v = \lfloor r\,d_k \rfloor`, channels head-major), the squeezed axial attention is

    .. math::
        q_{(h)} = \tfrac1W \textstyle\sum_w q + p^q_{(h)},\quad
        k_{(h)} = \tfrac1W \textstyle\sum_w k + p^k_{(h)},\quad
        v_{(h)} = \tfrac1W \textstyle\sum_w v,\quad
        y_{(h)} = \mathrm{softmax}\!\big(q_{(h)}^\top k_{(h)} \cdot d_k^{-1/2}\big)\, v_{(h)}

    per head over the H rows (and likewise :math:`y_{(v)}` over the W columns with means over H), where the
    positional embeddings :math:`p` (length ``pos_len``) are linearly resampled to H and W at every call.
    Then :math:`x_x = v + (\mathrm{BN}(\mathrm{conv}(\delta(y_{(h)}))) + \mathrm{BN}(\mathrm{conv}(\delta(y_{(v)}))))`
    broadcast over (H, W), the detail branch
    :math:`q_{kv} = \mathrm{pw}(\delta(\mathrm{dw}_{3\times3}([q, k, v])))`, and the output
    :math:`y = \sigma_h(\mathrm{proj}(x_x)) \cdot q_{kv}` with hard sigmoid :math:`\sigma_h` and
    :math:`\mathrm{proj} = \mathrm{BN}\circ\mathrm{conv}_{1\times1}\circ\delta`. There is no residual
    (:class:`SeaFormerBlock` adds it). As in the official code, the BN weights after ``proj`` and the two
    axial encoders start at 0, so at initialisation :math:`y = \tfrac12 q_{kv}`.

    The two axial softmaxes and the final hard sigmoid each pass through a :class:`~plugattn._layers.Gate`
    (``row_gate``: (N, h, H, H), ``col_gate``: (N, h, W, W), ``gate``: (N, C, H, W)).

    Defaults (``key_dim=16``, ``num_heads=4``, ``attn_ratio=2``, ReLU6) are SeaFormer-T's first transformer
    stage; the official class has no defaults for key_dim and num_heads, and they do not depend on
    ``channels``, so ``SeaAttention(C)`` works for every C.

    Args:
        channels: C, input and output channels (official ``dim``).
        key_dim: d_k, query/key channels per head. Default: 16.
        num_heads: h. Default: 4.
        attn_ratio: r, value dim per head d_v = int(r·d_k). Default: 2.
        act_layer: δ, the activation (official ``activation``; SeaFormer passes ReLU6). Default: ``"relu6"``.
        norm_layer: the norm after every conv (official ``norm_cfg`` BN). Default: ``"batchnorm2d"``.
        gate_layer: σ_h on the projected output. Default: ``"hard_sigmoid"`` (= ReLU6(t + 3)/6).
        pos_len: stored length of each positional embedding (official: 16). Default: 16.

    Shape:
        (N, C, H, W) → (N, C, H, W), any H, W ≥ 1.

    Examples:
        >>> m = SeaAttention(64)
        >>> m(torch.randn(2, 64, 7, 5)).shape
        torch.Size([2, 64, 7, 5])
    """

    def __init__(
        self,
        channels: int,
        *,
        key_dim: int = 16,
        num_heads: int = 4,
        attn_ratio: float = 2,
        act_layer: LayerType = "relu6",
        norm_layer: LayerType = "batchnorm2d",
        gate_layer: LayerType = "hard_sigmoid",
        pos_len: int = 16,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels, key_dim=key_dim, num_heads=num_heads, pos_len=pos_len)
        if act_layer is None:
            raise ValueError(f"{owner}: act_layer must be given (the official Sea_Attention requires an activation)")
        if isinstance(attn_ratio, bool) or not isinstance(attn_ratio, (int, float)) or int(attn_ratio * key_dim) < 1:
            raise ValueError(
                f"{owner}: attn_ratio must be a number with int(attn_ratio * key_dim) >= 1, got {attn_ratio!r}"
            )
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.key_dim = key_dim
        self.num_heads = num_heads
        self.attn_ratio = attn_ratio
        self.value_dim = int(attn_ratio * key_dim)  # d_v per head
        self.scale = key_dim ** -0.5
        qk_channels = key_dim * num_heads  # nh_kd
        v_channels = self.value_dim * num_heads  # dh
        qkv_channels = 2 * qk_channels + v_channels

        self.to_q = ConvNormAct(channels, qk_channels, 1, norm_layer=norm_layer, **dd)
        self.to_k = ConvNormAct(channels, qk_channels, 1, norm_layer=norm_layer, **dd)
        self.to_v = ConvNormAct(channels, v_channels, 1, norm_layer=norm_layer, **dd)
        # detail-enhancement branch: depthwise 3×3 on [q, k, v] → act → pointwise to C
        self.detail_dw = ConvNormAct(
            qkv_channels, qkv_channels, 3, groups=qkv_channels, norm_layer=norm_layer, act_layer=act_layer, **dd
        )
        self.detail_pw = ConvNormAct(qkv_channels, channels, 1, norm_layer=norm_layer, **dd)
        # squeeze-axial positional embeddings, (1, nh_kd, pos_len), added to q and k only
        self.pos_row_q = nn.Parameter(torch.empty(1, qk_channels, pos_len, **dd))
        self.pos_row_k = nn.Parameter(torch.empty(1, qk_channels, pos_len, **dd))
        self.pos_col_q = nn.Parameter(torch.empty(1, qk_channels, pos_len, **dd))
        self.pos_col_k = nn.Parameter(torch.empty(1, qk_channels, pos_len, **dd))
        self.row_gate = Gate("softmax", dim=-1)
        self.col_gate = Gate("softmax", dim=-1)
        self.encode_row = _act_conv_norm(v_channels, v_channels, act_layer, norm_layer, dd)
        self.encode_col = _act_conv_norm(v_channels, v_channels, act_layer, norm_layer, dd)
        self.proj = _act_conv_norm(v_channels, channels, act_layer, norm_layer, dd)
        self.gate = Gate(gate_layer)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation: randn positional embeddings, zero BN weight after proj and encoders."""
        for p in (self.pos_row_q, self.pos_row_k, self.pos_col_q, self.pos_col_k):
            nn.init.normal_(p)
        for seq in (self.encode_row, self.encode_col, self.proj):
            weight, bias = getattr(seq.bn, "weight", None), getattr(seq.bn, "bias", None)
            if weight is not None:
                nn.init.zeros_(weight)
            if bias is not None:
                nn.init.zeros_(bias)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, key_dim={self.key_dim}, num_heads={self.num_heads}, "
                f"attn_ratio={self.attn_ratio}, pos_len={self.pos_row_q.shape[-1]}")

    def _axial(self, q: Tensor, k: Tensor, v: Tensor, pos_q: Tensor, pos_k: Tensor, gate: Gate) -> Tensor:
        """Attention along one squeezed axis: q, k (N, h·d_k, L), v (N, h·d_v, L) → (N, h·d_v, L)."""
        n, _, length = q.shape
        q = q + resample_pos_embed(pos_q, length)
        k = k + resample_pos_embed(pos_k, length)
        q = q.reshape(n, self.num_heads, self.key_dim, length).transpose(-1, -2)  # (N, h, L, d_k)
        k = k.reshape(n, self.num_heads, self.key_dim, length)  # (N, h, d_k, L)
        v = v.reshape(n, self.num_heads, self.value_dim, length).transpose(-1, -2)  # (N, h, L, d_v)
        attn = gate(torch.matmul(q, k) * self.scale)  # (N, h, L, L), softmax over the last dim
        out = torch.matmul(attn, v)  # (N, h, L, d_v)
        return out.transpose(-1, -2).reshape(n, self.num_heads * self.value_dim, length)  # (N, h·d_v, L)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        n, _, h, w = x.shape
        q = self.to_q(x)  # (N, h·d_k, H, W)
        k = self.to_k(x)
        v = self.to_v(x)  # (N, h·d_v, H, W)
        qkv = self.detail_pw(self.detail_dw(torch.cat([q, k, v], dim=1)))  # (N, C, H, W)
        row = self._axial(q.mean(-1), k.mean(-1), v.mean(-1), self.pos_row_q, self.pos_row_k, self.row_gate)
        col = self._axial(q.mean(-2), k.mean(-2), v.mean(-2), self.pos_col_q, self.pos_col_k, self.col_gate)
        row = self.encode_row(row.unsqueeze(-1))  # (N, h·d_v, H, 1)
        col = self.encode_col(col.unsqueeze(-2))  # (N, h·d_v, 1, W)
        xx = v + (row + col)  # broadcast to (N, h·d_v, H, W)
        return self.gate(self.proj(xx)) * qkv


class DropPath(nn.Module):
    """Stochastic depth on (N, C, H, W): in training, zero each sample with probability p, scale the rest by 1/(1 − p).

    Args:
        drop_prob: p. Default: 0 (the identity).
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if isinstance(drop_prob, bool) or not isinstance(drop_prob, (int, float)) or not 0 <= drop_prob < 1:
            raise ValueError(f"DropPath: drop_prob must be in [0, 1), got {drop_prob!r}")
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = torch.bernoulli(x.new_full((x.shape[0], 1, 1, 1), keep))  # (N, 1, 1, 1): 1 keeps the sample
        return x * (mask / keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class _SeaMlp(nn.Module):
    """The official ``Mlp``: 1×1 conv-BN → depthwise 3×3 conv (biased) → act → dropout → 1×1 conv-BN → drop."""

    def __init__(
        self, channels: int, hidden: int, act_layer: LayerType, norm_layer: LayerType, drop: float,
        dd: dict[str, Any],
    ) -> None:
        super().__init__()
        self.fc1 = ConvNormAct(channels, hidden, 1, norm_layer=norm_layer, **dd)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=True, **dd)
        self.act = get_layer(act_layer, arg_name="act_layer")
        self.drop = nn.Dropout(drop)
        self.fc2 = ConvNormAct(hidden, channels, 1, norm_layer=norm_layer, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


@register(
    "sea_block", paper=_PAPER, year=2023, url=_URL, kind="block",
    official="fudan-zvg/SeaFormer seaformer-cls Block",
)
class SeaFormerBlock(nn.Module):
    r"""The SeaFormer block: Sea attention and an MLP, each on a residual branch.

    .. math::
        x' = x + \mathrm{DP}(\mathrm{Sea}(x)),\qquad y = x' + \mathrm{DP}(\mathrm{MLP}(x'))

    Sea is :class:`SeaAttention`; MLP is 1×1 conv-BN to ``int(C·mlp_ratio)`` → depthwise 3×3 conv with bias
    → act → dropout → 1×1 conv-BN back to C → dropout; DP is per-sample drop path (identity in eval).

    Defaults: ``key_dim=16``, ``num_heads=4`` (SeaFormer-T stage 1; the official Block requires them),
    ``mlp_ratio=4`` (the official Block default; SeaFormer-T/S/B use 2 then 4), ReLU6 (what SeaFormer
    passes; the official Block's own default is ReLU).

    Args:
        channels: C (official ``dim``).
        key_dim: d_k per head. Default: 16.
        num_heads: h. Default: 4.
        mlp_ratio: MLP hidden width ratio. Default: 4.
        attn_ratio: value dim per head int(r·d_k). Default: 2.
        drop: dropout probability in the MLP. Default: 0.
        drop_path: drop-path probability on both residual branches. Default: 0.
        act_layer: the activation of attention and MLP. Default: ``"relu6"``.
        norm_layer: the norm after every conv. Default: ``"batchnorm2d"``.
        gate_layer: σ_h of the attention. Default: ``"hard_sigmoid"``.
        pos_len: stored positional-embedding length. Default: 16.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = SeaFormerBlock(64, key_dim=16, num_heads=4, mlp_ratio=2)
        >>> m(torch.randn(2, 64, 13, 17)).shape
        torch.Size([2, 64, 13, 17])
    """

    def __init__(
        self,
        channels: int,
        *,
        key_dim: int = 16,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        attn_ratio: float = 2,
        drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: LayerType = "relu6",
        norm_layer: LayerType = "batchnorm2d",
        gate_layer: LayerType = "hard_sigmoid",
        pos_len: int = 16,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or int(channels * mlp_ratio) < 1:
            raise ValueError(
                f"{owner}: mlp_ratio must be a number with int(channels * mlp_ratio) >= 1, got {mlp_ratio!r}"
            )
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop <= 1:
            raise ValueError(f"{owner}: drop must be in [0, 1], got {drop!r}")
        if isinstance(drop_path, bool) or not isinstance(drop_path, (int, float)) or not 0 <= drop_path < 1:
            raise ValueError(f"{owner}: drop_path must be in [0, 1), got {drop_path!r}")
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.attn = SeaAttention(
            channels, key_dim=key_dim, num_heads=num_heads, attn_ratio=attn_ratio, act_layer=act_layer,
            norm_layer=norm_layer, gate_layer=gate_layer, pos_len=pos_len, **dd,
        )
        self.mlp = _SeaMlp(channels, int(channels * mlp_ratio), act_layer, norm_layer, drop, dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def extra_repr(self) -> str:
        return f"channels={self.channels}, mlp_channels={self.mlp.fc1.conv.out_channels}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


# ---------------------------------------------------------------------------------------------------------
# Official converters (fudan-zvg/SeaFormer, seaformer-cls/seaformer.py)

_BN_TYPES = {"BN", "BN2d", "SyncBN"}  # mmcv names that build BatchNorm2d (SyncBN equals it in eval / one process)


def _norm_from_cfg(name: str, norm_cfg: Mapping[str, Any] | None) -> tuple[LayerType, bool]:
    """Map an mmcv ``norm_cfg`` to (norm factory, requires_grad)."""
    if not isinstance(norm_cfg, Mapping) or "type" not in norm_cfg:
        raise TypeError(f"from_official({name!r}): norm_cfg must be a dict with a 'type' key, got {norm_cfg!r}")
    cfg = dict(norm_cfg)
    kind = cfg.pop("type")
    requires_grad = bool(cfg.pop("requires_grad", True))
    if kind not in _BN_TYPES:
        raise ValueError(f"from_official({name!r}): norm_cfg type {kind!r} is not supported; "
                         f"expected one of {sorted(_BN_TYPES)} (BatchNorm2d)")
    return (partial(nn.BatchNorm2d, **cfg) if cfg else nn.BatchNorm2d), requires_grad


def _check_act(name: str, arg: str, act: Any) -> None:
    if act is None:
        raise TypeError(f"from_official({name!r}): {arg}=None is not usable: the official Sea_Attention calls "
                        f"{arg}() and crashes on None; pass the activation SeaFormer uses, e.g. nn.ReLU6 or 'ReLU6'")


def _freeze_norms(module: nn.Module, requires_grad: bool) -> None:
    if not requires_grad:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad_(False)


_ATTN_KEYS = {
    "pos_emb_rowq.pos_embed": "pos_row_q",
    "pos_emb_rowk.pos_embed": "pos_row_k",
    "pos_emb_columnq.pos_embed": "pos_col_q",
    "pos_emb_columnk.pos_embed": "pos_col_k",
}
_ATTN_PREFIXES = (
    ("to_q.c.", "to_q.conv."), ("to_k.c.", "to_k.conv."), ("to_v.c.", "to_v.conv."),
    ("dwconv.c.", "detail_dw.conv."), ("dwconv.bn.", "detail_dw.bn."),
    ("pwconv.c.", "detail_pw.conv."), ("pwconv.bn.", "detail_pw.bn."),
    ("proj_encode_row.1.c.", "encode_row.conv."), ("proj_encode_row.1.bn.", "encode_row.bn."),
    ("proj_encode_column.1.c.", "encode_col.conv."), ("proj_encode_column.1.bn.", "encode_col.bn."),
    ("proj.1.c.", "proj.conv."), ("proj.1.bn.", "proj.bn."),
)
_MLP_PREFIXES = (("fc1.c.", "fc1.conv."), ("fc2.c.", "fc2.conv."))


_rename_attn = rename_prefix(*_ATTN_PREFIXES)
_rename_block = rename_prefix(*(("attn." + o, "attn." + n) for o, n in _ATTN_PREFIXES),
                              *(("mlp." + o, "mlp." + n) for o, n in _MLP_PREFIXES))


def _map_attn_key(key: str) -> str:
    return _ATTN_KEYS.get(key) or _rename_attn(key)


def _map_block_key(key: str) -> str:
    inner = key[len("attn."):]
    return "attn." + _ATTN_KEYS[inner] if key.startswith("attn.") and inner in _ATTN_KEYS else _rename_block(key)


@official("sea_attention")
def _sea_attention(
    dim: int,
    key_dim: int,
    num_heads: int,
    attn_ratio: float = 2,
    activation: Any = None,
    norm_cfg: Mapping[str, Any] | None = None,
):
    """fudan-zvg/SeaFormer ``Sea_Attention(dim, key_dim, num_heads, attn_ratio=2, activation=None, norm_cfg=BN)``."""
    _check_act("sea_attention", "activation", activation)
    norm_layer, requires_grad = _norm_from_cfg(
        "sea_attention", {"type": "BN", "requires_grad": True} if norm_cfg is None else norm_cfg
    )
    module = SeaAttention(dim, key_dim=key_dim, num_heads=num_heads, attn_ratio=attn_ratio,
                          act_layer=activation, norm_layer=norm_layer)
    _freeze_norms(module, requires_grad)
    return module, _map_attn_key


@official("sea_block")
def _sea_block(
    dim: int,
    key_dim: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    attn_ratio: float = 2.0,
    drop: float = 0.0,
    drop_path: float = 0.0,
    act_layer: Any = nn.ReLU,
    norm_cfg: Mapping[str, Any] | None = None,
):
    """fudan-zvg/SeaFormer ``Block``.

    Signature: ``Block(dim, key_dim, num_heads, mlp_ratio=4., attn_ratio=2., drop=0., drop_path=0.,
    act_layer=nn.ReLU, norm_cfg=BN2d)``.
    """
    _check_act("sea_block", "act_layer", act_layer)
    norm_layer, requires_grad = _norm_from_cfg(
        "sea_block", {"type": "BN2d", "requires_grad": True} if norm_cfg is None else norm_cfg
    )
    module = SeaFormerBlock(dim, key_dim=key_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, attn_ratio=attn_ratio,
                            drop=drop, drop_path=drop_path, act_layer=act_layer, norm_layer=norm_layer)
    _freeze_norms(module, requires_grad)
    return module, _map_block_key
