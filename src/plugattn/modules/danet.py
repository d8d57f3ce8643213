"""DANet: position attention (PAM), channel attention (CAM), their plug-in sum, and the segmentation head.

Paper: Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019.
https://arxiv.org/abs/1809.02983 — official code: https://github.com/junfu1115/DANet
(``encoding/nn/da_att.py``: ``PAM_Module``, ``CAM_Module``; ``encoding/models/sseg/danet.py``: ``DANetHead``,
commit b0a0fa00). Written from the paper and from ``reference/SPEC.md``; no official code is copied.

The official PAM builds the whole (H·W) × (H·W) attention matrix. :class:`PositionAttention` computes the same
attention over blocks of query positions (:func:`plugattn._kernels.attention_blockwise`), so its memory is
O(H·W·C + ``block_budget``) instead of O((H·W)²); each block's rows are those of the whole matrix. Under
``torch.fx`` symbolic tracing, ``torch.compile``, ``torch.export`` and ONNX export the matrix is built in one
block (the official formula). ``torch.nn.functional.scaled_dot_product_attention`` is not used: its fused kernels
would bypass the ``Gate`` that :func:`plugattn.capture` hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .._kernels import DEFAULT_BLOCK_BUDGET, attention_blockwise
from .._layers import (
    ConvNormAct,
    Gate,
    LayerType,
    check_input,
    check_optional_positive,
    check_positive,
    factory_kwargs,
    reduced_width,
)
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["PositionAttention", "DANetChannelAttention", "ChannelAttention", "DualAttention", "DANetHead"]

_PAPER = "Dual Attention Network for Scene Segmentation"
_URL = "https://arxiv.org/abs/1809.02983"


@register(
    "danet_pam", paper=_PAPER, year=2019, url=_URL, kind="self-attention",
    official="junfu1115/DANet encoding/nn/da_att.py PAM_Module",
)
class PositionAttention(nn.Module):
    r"""DANet position attention module (PAM): self-attention over the H·W positions, added back to the input.

    With the input A (N, C, H, W) flattened row-major to C × (H·W) (position index h·W + w):

    .. math::
        B = W_q A + b_q,\quad C = W_k A + b_k,\quad D = W_v A + b_v,\qquad
        s_{ij} = \frac{\exp(B_i^\top C_j)}{\sum_{j'} \exp(B_i^\top C_{j'})},\qquad
        E_i = \alpha \sum_j s_{ij} D_j + A_i

    i.e. ``y = gamma * (V softmax(QᵀK)ᵀ) + x``, with **no** 1/√d scaling (official code), the softmax over the
    keys j (the ``gate``), and the scale α (``gamma``) initialised to 0, so the module starts as the identity.
    W_q, W_k are 1×1 convs C → C/8 and W_v a 1×1 conv C → C, all with bias.

    The attention is computed over blocks of query positions (see the file docstring): the ``gate`` is called on
    each block's logits (N, rows, H·W), in order. :meth:`attention_rows` gives the attention of chosen queries.

    Args:
        channels: C, input channels.
        rd_ratio: query/key width C/8 as a ratio, floored (official: ``in_dim // 8``). Default: 1/8.
        rd_channels: query/key width, overriding ``rd_ratio``. Default: None.
        query_block: query positions per block; overrides ``block_budget``. Default: None.
        block_budget: largest size in bytes of one block of logits (batch × rows × H·W × itemsize); ``None``
            computes the whole matrix at once (the official formula, O((H·W)²) memory). Default: 8 MiB.
        grad_checkpoint: recompute each block in the backward pass instead of storing its attention
            (``torch.utils.checkpoint``); the ``gate`` then runs twice per block. Not in the official code.
            Default: False.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = PositionAttention(64)
        >>> x = torch.randn(2, 64, 7, 5)
        >>> torch.equal(m(x), x)  # gamma = 0 at init
        True
        >>> m.attention_rows(x, [0, 34]).shape  # (N, queries, H·W), rows sum to 1
        torch.Size([2, 2, 35])
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        query_block: int | None = None,
        block_budget: int | None = DEFAULT_BLOCK_BUDGET,
        grad_checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        rd_channels = reduced_width(owner, channels, rd_ratio, rd_channels, None, min_channels=0)
        if rd_channels < 1:
            raise ValueError(
                f"{owner}: channels={channels} with rd_ratio={rd_ratio} gives a query/key width "
                f"floor(channels * rd_ratio) = {rd_channels}; it must be >= 1 (channels >= 8 for the default "
                f"rd_ratio=1/8; the official PAM_Module crashes here), or set rd_channels"
            )
        check_optional_positive(owner, query_block=query_block, block_budget=block_budget)
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.rd_channels = rd_channels
        self.query_block = query_block
        self.block_budget = block_budget
        self.grad_checkpoint = grad_checkpoint
        self.query = nn.Conv2d(channels, rd_channels, 1, **dd)
        self.key = nn.Conv2d(channels, rd_channels, 1, **dd)
        self.value = nn.Conv2d(channels, channels, 1, **dd)
        self.gate = Gate("softmax", dim=-1)
        self.gamma = nn.Parameter(torch.empty(1, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default conv init (as the official code) and γ = 0."""
        for conv in (self.query, self.key, self.value):
            conv.reset_parameters()
        nn.init.zeros_(self.gamma)

    def extra_repr(self) -> str:
        s = f"channels={self.channels}, rd_channels={self.rd_channels}, block_budget={self.block_budget}"
        if self.query_block is not None:
            s += f", query_block={self.query_block}"
        return s + (", grad_checkpoint=True" if self.grad_checkpoint else "")

    def attend(self, x: Tensor) -> Tensor:
        """The attention output ``V softmax(QᵀK)ᵀ`` (N, C, H, W), before the scale γ and the residual."""
        n, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        k = self.key(x).flatten(2)  # (N, C', HW)
        v = self.value(x).flatten(2)  # (N, C, HW)
        out = attention_blockwise(q, k, v, self.gate, block_budget=self.block_budget, query_block=self.query_block,
                                  grad_checkpoint=self.grad_checkpoint)  # (N, C, HW)
        return out.view(n, c, h, w)

    def attention_rows(self, x: Tensor, index: int | Sequence[int] | Tensor) -> Tensor:
        """Attention weights of the query positions ``index`` (flat, h·W + w) over all H·W keys.

        Returns:
            (N, len(index), H·W) softmax rows (each sums to 1), computed through the ``gate``;
            ``.view(N, -1, H, W)`` gives one map per query.
        """
        check_input(self, x, self.channels)
        index = torch.as_tensor(index, dtype=torch.long, device=x.device).reshape(-1)
        q = self.query(x).flatten(2).index_select(2, index).transpose(1, 2)  # (N, I, C')
        k = self.key(x).flatten(2)  # (N, C', HW)
        return self.gate(torch.bmm(q, k))  # (N, I, HW)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        return torch.addcmul(x, self.gamma, self.attend(x))  # x + γ·out


@register(
    "danet_cam", paper=_PAPER, year=2019, url=_URL, kind="channel",
    official="junfu1115/DANet encoding/nn/da_att.py CAM_Module",
)
class DANetChannelAttention(nn.Module):
    r"""DANet channel attention module (CAM): self-attention among the C channels, added back to the input.

    With F = x viewed as C × (H·W):

    .. math::
        E = F F^\top,\qquad X = \mathrm{softmax}_{\text{last}}\big(\max_j E_{ij} - E_{ij}\big),\qquad
        y = \beta\, X F + x

    The ``max − E`` is the official code's, and it is not a stability shift: it flips the sign of the energy,
    so each channel attends most to the channels *least* correlated with it (the paper writes exp(A_i·A_j)).
    It is reproduced here. The softmax (the ``gate``) runs over the last dim; β (``gamma``) starts at 0, so the
    module starts as the identity. Memory is O(C² + C·H·W). Not CBAM's channel gate
    (:class:`~plugattn.modules.cbam.CBAMChannelGate`).

    Args:
        channels: C, input channels.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = DANetChannelAttention(32)
        >>> x = torch.randn(2, 32, 7, 5)
        >>> torch.equal(m(x), x)  # gamma = 0 at init
        True
    """

    def __init__(
        self,
        channels: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        self.channels = channels
        self.gate = Gate("softmax", dim=-1)
        self.gamma = nn.Parameter(torch.empty(1, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 0 (official)."""
        nn.init.zeros_(self.gamma)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        n, c, h, w = x.shape
        f = x.flatten(2)  # (N, C, HW)
        energy = torch.bmm(f, f.transpose(1, 2))  # (N, C, C)
        attn = self.gate(energy.amax(dim=-1, keepdim=True) - energy)  # (N, C, C), the official sign flip
        out = torch.bmm(attn, f).view(n, c, h, w)  # X F: (N, C, HW) → (N, C, H, W)
        return x + self.gamma * out


ChannelAttention = DANetChannelAttention
"""The former name of :class:`DANetChannelAttention`."""


@register(
    "danet", paper=_PAPER, year=2019, url=_URL, kind="channel+spatial",
    official="junfu1115/DANet PAM_Module + CAM_Module (plug-in form; the head is danet_head)",
)
class DualAttention(nn.Module):
    r"""DANet's dual attention as a shape-preserving plug-in: PAM and CAM in parallel on x, fused by a sum.

    .. math::
        y = \mathrm{PAM}(x) + \mathrm{CAM}(x) - x = x + \alpha\, \mathrm{PAM}_{\text{out}}(x)
            + \beta\, \mathrm{CAM}_{\text{out}}(x)

    where PAM_out and CAM_out are the two attention outputs before their own scale and residual, and
    α = ``pam.gamma``, β = ``cam.gamma``, both 0 at init, so the module starts as the identity.

    Why this form: the paper fuses the two branches by an element-wise sum, but in the official head each
    branch is followed by its own 3×3 conv-BN-ReLU before the sum (see :class:`DANetHead`). A plug-in must
    keep x's shape and meaning, and summing the two full module outputs, PAM(x) + CAM(x), would count the
    residual twice (2x at init). Subtracting x once keeps each branch's official parameters (``pam.*`` loads a
    ``PAM_Module`` state_dict after renaming, ``cam.gamma`` a ``CAM_Module``'s) and is the identity at init like
    each module. Not in the official code as a module of its own.

    Args:
        channels: C, input channels.
        rd_ratio: PAM query/key width ratio (floored). Default: 1/8.
        rd_channels: PAM query/key width, overriding ``rd_ratio``. Default: None.
        query_block: PAM query positions per block (see :class:`PositionAttention`). Default: None.
        block_budget: PAM block budget in bytes; ``None``: one block. Default: 8 MiB.
        grad_checkpoint: PAM recomputes each block in the backward pass. Default: False.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = DualAttention(64)
        >>> x = torch.randn(2, 64, 7, 5)
        >>> torch.equal(m(x), x)  # both gammas are 0 at init
        True
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        query_block: int | None = None,
        block_budget: int | None = DEFAULT_BLOCK_BUDGET,
        grad_checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        self.channels = channels
        self.pam = PositionAttention(
            channels, rd_ratio=rd_ratio, rd_channels=rd_channels, query_block=query_block,
            block_budget=block_budget, grad_checkpoint=grad_checkpoint, device=device, dtype=dtype,
        )
        self.cam = DANetChannelAttention(channels, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        return self.pam(x) + self.cam(x) - x  # x + α·PAM_out + β·CAM_out


@register(
    "danet_head", paper=_PAPER, year=2019, url=_URL, kind="head", preserves_shape=False,
    official="junfu1115/DANet encoding/models/sseg/danet.py DANetHead",
)
class DANetHead(nn.Module):
    r"""The official DANet segmentation head: two branches (PAM, CAM) and three classifiers.

    With inter = C/4 (floored):

    - position branch: ``p = pam_out(pam(pam_in(x)))``, channel branch: ``c = cam_out(cam(cam_in(x)))``,
      where ``*_in`` are conv 3×3 C → inter and ``*_out`` conv 3×3 inter → inter, no bias, each followed by
      norm and ReLU; ``pam`` is a :class:`PositionAttention` (inter/8 query/key channels, i.e. C/32) and
      ``cam`` a :class:`DANetChannelAttention`;
    - outputs: ``(cls_fused(drop(p + c)), cls_pam(drop(p)), cls_cam(drop(c)))`` with ``drop`` a
      Dropout2d(0.1) and ``cls_*`` 1×1 convs inter → out_channels with bias (official conv8, conv6, conv7).

    The full DANet upsamples each output bilinearly (align_corners=True) to the image size; that is not part
    of the head. When C < 32 the official head crashes (a PAM with 0 query/key channels); here the PAM then
    uses 1 query/key channel (not in the official code).

    Args:
        channels: C, input channels (official ``in_channels``; 2048 in DANet-ResNet).
        out_channels: classes (official ``out_channels``). Default: None, i.e. ``channels``.
        norm_layer: norm after each 3×3 conv (official SyncBatchNorm, BatchNorm2d in eval). Default: BatchNorm2d.
        act_layer: activation after each norm. Default: ReLU.
        drop_rate: Dropout2d probability before the classifiers. Default: 0.1.
        query_block: PAM query positions per block (see :class:`PositionAttention`). Default: None.
        block_budget: PAM block budget in bytes; ``None``: one block. Default: 8 MiB.
        grad_checkpoint: PAM recomputes each block in the backward pass. Default: False.

    Shape:
        (N, C, H, W) → a tuple of three (N, out_channels, H, W): (fused, position-only, channel-only).

    Examples:
        >>> m = DANetHead(128, out_channels=19).eval()
        >>> [t.shape for t in m(torch.randn(1, 128, 9, 9))]
        [torch.Size([1, 19, 9, 9]), torch.Size([1, 19, 9, 9]), torch.Size([1, 19, 9, 9])]
    """

    def __init__(
        self,
        channels: int,
        *,
        out_channels: int | None = None,
        norm_layer: LayerType = "batchnorm2d",
        act_layer: LayerType = "relu",
        drop_rate: float = 0.1,
        query_block: int | None = None,
        block_budget: int | None = DEFAULT_BLOCK_BUDGET,
        grad_checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        if out_channels is None:
            out_channels = channels
        check_positive(owner, out_channels=out_channels)
        inter = channels // 4
        if inter < 1:
            raise ValueError(f"{owner}: channels must be >= 4 (inner width channels // 4), got {channels}")
        dd = factory_kwargs(device, dtype)
        conv = {"bias": False, "norm_layer": norm_layer, "act_layer": act_layer, **dd}
        self.channels = channels
        self.out_channels = out_channels
        self.pam_in = ConvNormAct(channels, inter, 3, **conv)
        self.cam_in = ConvNormAct(channels, inter, 3, **conv)
        self.pam = PositionAttention(
            inter, rd_channels=max(1, inter // 8), query_block=query_block, block_budget=block_budget,
            grad_checkpoint=grad_checkpoint, **dd,
        )
        self.cam = DANetChannelAttention(inter, **dd)
        self.pam_out = ConvNormAct(inter, inter, 3, **conv)
        self.cam_out = ConvNormAct(inter, inter, 3, **conv)
        self.drop = nn.Dropout2d(drop_rate)  # stateless; one instance serves the three classifiers
        self.cls_pam = nn.Conv2d(inter, out_channels, 1, **dd)
        self.cls_cam = nn.Conv2d(inter, out_channels, 1, **dd)
        self.cls_fused = nn.Conv2d(inter, out_channels, 1, **dd)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, out_channels={self.out_channels}, inter_channels={self.pam.channels}"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_input(self, x, self.channels)
        p = self.pam_out(self.pam(self.pam_in(x)))  # (N, inter, H, W)
        out_p = self.cls_pam(self.drop(p))
        c = self.cam_out(self.cam(self.cam_in(x)))  # (N, inter, H, W)
        out_c = self.cls_cam(self.drop(c))
        fused = self.cls_fused(self.drop(p + c))
        return fused, out_p, out_c  # the official order (conv8, conv6, conv7); dropout draws in its order too


_PAM_KEYS = (("query_conv.", "query."), ("key_conv.", "key."), ("value_conv.", "value."))


@official("danet_pam")
def _danet_pam(in_dim: int):
    """junfu1115/DANet ``PAM_Module(in_dim)``."""
    return PositionAttention(in_dim), rename_prefix(*_PAM_KEYS)


@official("danet_cam")
def _danet_cam(in_dim: int):
    """junfu1115/DANet ``CAM_Module(in_dim)``."""
    return DANetChannelAttention(in_dim), rename_prefix()


@official("danet_head")
def _danet_head(in_channels: int, out_channels: int, norm_layer: LayerType):
    """junfu1115/DANet ``DANetHead(in_channels, out_channels, norm_layer)``; keys shifted by the Dropout2d."""
    module = DANetHead(in_channels, out_channels=out_channels, norm_layer=norm_layer)
    pairs = [
        ("conv5a.0.", "pam_in.conv."), ("conv5a.1.", "pam_in.bn."),
        ("conv5c.0.", "cam_in.conv."), ("conv5c.1.", "cam_in.bn."),
        ("conv51.0.", "pam_out.conv."), ("conv51.1.", "pam_out.bn."),
        ("conv52.0.", "cam_out.conv."), ("conv52.1.", "cam_out.bn."),
        *(("sa." + old, "pam." + new) for old, new in _PAM_KEYS),
        ("sa.", "pam."), ("sc.", "cam."),
        ("conv6.1.", "cls_pam."), ("conv7.1.", "cls_cam."), ("conv8.1.", "cls_fused."),
    ]
    return module, rename_prefix(*pairs)
