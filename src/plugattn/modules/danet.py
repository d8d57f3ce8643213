"""DANet: position attention (PAM), channel attention (CAM), their plug-in sum, and the segmentation head.

Paper: Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019.
https://arxiv.org/abs/1809.02983 — official code: https://github.com/junfu1115/DANet
(``encoding/nn/da_att.py``: ``PAM_Module``, ``CAM_Module``; ``encoding/models/sseg/danet.py``: ``DANetHead``,
commit b0a0fa00). Written from the paper and from ``reference/SPEC.md``; no official code is copied.

Memory. The official PAM builds the whole (H·W) × (H·W) attention matrix: at 128×128 with batch 2 that is
2 GiB for the energy plus 2 GiB for its softmax. :class:`PositionAttention` instead processes the query
positions in blocks (``torch.split`` over the flattened positions, one ``bmm`` → ``Gate`` → ``bmm`` per block);
each block's matrix stays under ``block_budget`` bytes (default 8 MiB), and each block's ``γ·out + x`` is
written straight into its slice of the preallocated output (no list of block outputs, no ``torch.cat`` copy, no
separate full-size ``γ·out``), so the extra memory of the forward pass is the output, Q, K, V and two blocks:
O(H·W·C + block_budget) instead of O((H·W)²). Measured at 128×128, C = 512, batch 2 (``benchmarks/targets.py``):
167 MiB against 4253 MiB for the official formula (25×), in the same time. Every attention row is computed by
the same reduction as in the official formula, so the result equals it to float32 round-off; with one block
(small maps, or ``block_budget=None``) the operations are exactly the official ones.

Tracing and export. The number of blocks is plain Python arithmetic on ``x.shape`` (batch, H·W, itemsize),
evaluated at call time, and the blocks are a Python loop over ``torch.split``. ``torch.compile`` and
``torch.export`` with static shapes unroll that loop (a new input size recompiles); an ONNX graph exported at
one size holds that many unrolled blocks (checked against onnxruntime) and is meant for that size only. With
dynamic H, W, ``torch.export`` traces the block count of the example input and guards on it, so another size
fails the guard: export dynamic-shape graphs with ``block_budget=None`` (one block, the official formula, no
guard, O(N²) memory). ``torch.nn.functional.scaled_dot_product_attention`` is not used:
on CPU with query/key width C/8 and value width C it takes a path that materialises the matrix, and its fused
kernels would bypass the ``Gate`` that :func:`plugattn.capture` hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .._layers import (
    ConvNormAct,
    Gate,
    LayerType,
    check_input,
    check_positive,
    is_channels_last,
    is_eager,
    make_divisible,
)
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["PositionAttention", "ChannelAttention", "DualAttention", "DANetHead", "blockwise_attention",
           "attention_block_rows"]

_PAPER = "Dual Attention Network for Scene Segmentation"
_URL = "https://arxiv.org/abs/1809.02983"
_DEFAULT_BLOCK_BUDGET = 8 * 2**20  # bytes of one block of the attention matrix (see PositionAttention)


def _check_optional_positive(owner: str, **values: int | None) -> None:
    for name, v in values.items():
        if v is not None:
            check_positive(owner, **{name: v})


def attention_block_rows(
    batch: int, keys: int, itemsize: int, *, queries: int, query_block: int | None = None,
    block_budget: int | None = _DEFAULT_BLOCK_BUDGET,
) -> int:
    """Query rows per block so that one block of logits (``batch`` × rows × ``keys`` × ``itemsize`` bytes)
    stays under ``block_budget``; ``query_block`` overrides it and ``block_budget=None`` gives one block."""
    if query_block is not None:
        return query_block
    if block_budget is None:
        return queries
    return max(1, block_budget // (batch * keys * itemsize))


def _attend_block(q: Tensor, k: Tensor, v: Tensor, gate: nn.Module, scale: float | None,
                  buffer: Tensor | None = None) -> Tensor:
    # q: (N, rows, d), k: (N, d, S), v: (N, Cv, S) → (N, Cv, rows)
    if buffer is None:
        logits = torch.bmm(q, k)  # (N, rows, S)
        if scale is not None:
            logits = logits * scale
    else:  # no autograd, eager: the logits go into the caller's reused buffer
        n, rows, s = q.shape[0], q.shape[1], k.shape[2]
        logits = torch.bmm(q, k, out=buffer[: n * rows * s].view(n, rows, s))
        if scale is not None:
            logits.mul_(scale)
    return torch.bmm(v, gate(logits).transpose(1, 2))  # gate: softmax over the keys


def blockwise_attention(
    q: Tensor, k: Tensor, v: Tensor, gate: nn.Module, rows: int, *, scale: float | None = None,
    grad_checkpoint: bool = False, residual: Tensor | None = None, res_scale: Tensor | None = None,
    result_like: Tensor | None = None,
) -> Tensor:
    """Softmax attention ``v · gate(scale · q k)ᵀ`` computed over blocks of ``rows`` query positions.

    Shapes: q (N, L, d), k (N, d, S), v (N, Cv, S) → (N, Cv, L). The L × S matrix is never built whole:
    each block's logits (N, rows, S) go through ``gate`` (hooks see the blocks in order), then are
    contracted with v. ``scale=None`` skips the multiply (DANet: no scaling). ``grad_checkpoint``
    recomputes each block in the backward pass when gradients are recorded. The number of blocks is
    static for a given input size (see the file docstring on tracing and export).

    With ``residual`` (N, Cv, L) and ``res_scale`` (broadcastable), the result is
    ``residual + res_scale · attention`` (DANet's ``γ·out + x``), fused block by block. ``result_like`` (the same
    values as ``residual``, another layout) gives the result its strides: DANet passes x itself (channels_last
    input → channels_last output) and reads the residual from its contiguous copy, so the per-block sums run on
    contiguous memory and only the final write into the result is strided.

    Memory: with one block (``rows >= L``) the operations are exactly the plain formula. With several, the
    result is allocated once (``empty_like(result_like)``, or (N, Cv, L)) and each block's output is written into
    its slice: no list of block outputs, no ``torch.cat`` copy, no separate full-size ``res_scale · out`` and
    sum. Peak extra memory is the result plus two blocks of logits.

    Allocations: without autograd, in eager mode, the logits of every block are computed into one buffer
    allocated once (``torch.bmm(..., out=)``), so each block allocates only its softmax. With glibc's malloc,
    two fresh block-sized allocations per block made it trim and re-fault the heap at every block (measured at
    (8, 64, 56, 56): 2.5× the time of the same work on reused memory). A forward hook that keeps a gate's
    *input* must therefore clone it; the gate's output (what :func:`plugattn.capture` records) is fresh.
    """
    use_ckpt = grad_checkpoint and torch.is_grad_enabled()
    reuse = not (q.requires_grad or k.requires_grad or v.requires_grad) and is_eager()
    buffer = q.new_empty(q.shape[0] * min(rows, q.shape[1]) * k.shape[2]) if reuse else None

    def block(q_blk: Tensor) -> Tensor:
        if use_ckpt:
            return checkpoint(_attend_block, q_blk, k, v, gate, scale, use_reentrant=False)
        return _attend_block(q_blk, k, v, gate, scale, buffer)

    like = residual if result_like is None else result_like
    blocks = torch.split(q, rows, dim=1)
    if len(blocks) == 1:  # the plain formula
        out = block(q)  # (N, Cv, L)
        return out if residual is None else torch.addcmul(like, res_scale, out)  # like first: its layout
    n, length, cv = q.shape[0], q.shape[1], v.shape[1]
    result = v.new_empty(n, cv, length) if residual is None else torch.empty_like(like)
    # without autograd, γ·out + x is written straight into the result's slice
    fused = residual is not None and reuse and not (
        torch.is_grad_enabled() and (residual.requires_grad or res_scale.requires_grad))
    start = 0
    for q_blk in blocks:
        stop = start + q_blk.shape[1]
        out = block(q_blk)  # (N, Cv, rows)
        if fused:
            torch.addcmul(residual[:, :, start:stop], res_scale, out, out=result[:, :, start:stop])
        else:
            if residual is not None:
                out = torch.addcmul(residual[:, :, start:stop], res_scale, out)
            result[:, :, start:stop] = out  # written in place: the result is our own buffer
        start = stop
    return result  # (N, Cv, L)


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

    The attention is computed in blocks of query positions (see the file docstring): the ``gate`` is applied
    to each block's logits (shape (N, rows, H·W)), so forward hooks on it see the blocks in order.
    :meth:`attention_rows` gives the attention of chosen query positions.

    Args:
        channels: C, input channels.
        rd_ratio: query/key width C/8 as a ratio, floored (official: ``in_dim // 8``). Default: 1/8.
        rd_channels: query/key width, overriding ``rd_ratio``. Default: None.
        query_block: query positions per block; overrides ``block_budget``. Default: None.
        block_budget: largest size in bytes of one block of the attention matrix (batch × rows × H·W ×
            itemsize); the forward pass holds about two such blocks at a time. ``None`` computes the whole
            matrix at once (the official formula; O((H·W)²) memory). Default: 8 MiB: the two live blocks then
            stay well below the output's size at segmentation resolutions (at 128×128, C = 512, batch 2 the output
            is 64 MiB and a block holds 64 query rows), maps up to 32×32 at batch 2 still run as one block (the
            official formula), and on the CPU blocks of 2 to 64 MiB were measured equally fast. The number of
            blocks is what ``torch.compile`` and ONNX unroll: raise the budget for compiled graphs at large sizes.
        grad_checkpoint: when gradients are recorded, recompute each block in the backward pass instead of
            storing its attention (``torch.utils.checkpoint``), so training memory is also O(H·W·C + block).
            The ``gate`` then runs twice per block. Not in the official code. Default: False.

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
        block_budget: int | None = _DEFAULT_BLOCK_BUDGET,
        grad_checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, None)
            if rd_channels < 1:
                raise ValueError(
                    f"{owner}: channels={channels} with rd_ratio={rd_ratio} gives a query/key width "
                    f"floor(channels * rd_ratio) = {rd_channels}; it must be >= 1 (channels >= 8 for the default "
                    f"rd_ratio=1/8; the official PAM_Module crashes here), or set rd_channels"
                )
        check_positive(owner, rd_channels=rd_channels)
        _check_optional_positive(owner, query_block=query_block, block_budget=block_budget)
        dd = {"device": device, "dtype": dtype}
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

    def block_rows(self, batch: int, positions: int, itemsize: int) -> int:
        """Query positions per block for an input of ``batch`` × ``positions`` (= H·W) of ``itemsize`` bytes."""
        return attention_block_rows(batch, positions, itemsize, queries=positions, query_block=self.query_block,
                                    block_budget=self.block_budget)

    def attend(self, x: Tensor, *, residual: bool = False) -> Tensor:
        """The attention output ``V softmax(QᵀK)ᵀ`` (N, C, H, W), before the scale γ and the residual;
        with ``residual=True``, ``x + γ · V softmax(QᵀK)ᵀ`` (what :meth:`forward` returns), fused block by block.

        The input is made contiguous first (a copy only for channels_last or strided input): the logits are not
        scaled by 1/√d, so the softmax amplifies round-off, and layout-dependent conv kernels would make
        channels_last results differ from contiguous ones by more than float32 round-off of the output.
        The output takes x's memory format (its residual sums read the contiguous copy, see
        :func:`blockwise_attention`).
        """
        n, c, h, w = x.shape
        xc = x.contiguous()
        q = self.query(xc).flatten(2).transpose(1, 2)  # (N, HW, C')
        k = self.key(xc).flatten(2)  # (N, C', HW)
        v = self.value(xc).flatten(2)  # (N, C, HW)
        rows = self.block_rows(n, h * w, x.element_size())
        res, like = (xc.flatten(2), x.flatten(2)) if residual else (None, None)  # (N, C, HW); x.flatten(2): a
        # view for contiguous and channels_last x (a contiguous copy otherwise)
        out = blockwise_attention(q, k, v, self.gate, rows, grad_checkpoint=self.grad_checkpoint, residual=res,
                                  res_scale=self.gamma if residual else None, result_like=like)  # (N, C, HW)
        return out.view(n, c, h, w)

    def attention_rows(self, x: Tensor, index: int | Sequence[int] | Tensor) -> Tensor:
        """Attention weights of the query positions ``index`` (flat, h·W + w) over all H·W keys.

        Returns:
            (N, len(index), H·W) softmax rows (each sums to 1), computed through the ``gate``;
            ``.view(N, -1, H, W)`` gives one map per query.
        """
        check_input(self, x, self.channels)
        x = x.contiguous()  # as in attend(): the same bits whatever the input layout
        index = torch.as_tensor(index, dtype=torch.long, device=x.device).reshape(-1)
        q = self.query(x).flatten(2).index_select(2, index).transpose(1, 2)  # (N, I, C')
        k = self.key(x).flatten(2)  # (N, C', HW)
        return self.gate(torch.bmm(q, k))

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        return self.attend(x, residual=True)  # x + γ·out, block by block


@register(
    "danet_cam", paper=_PAPER, year=2019, url=_URL, kind="channel",
    official="junfu1115/DANet encoding/nn/da_att.py CAM_Module",
)
class ChannelAttention(nn.Module):
    r"""DANet channel attention module (CAM): self-attention among the C channels, added back to the input.

    With F = x viewed as C × (H·W):

    .. math::
        E = F F^\top,\qquad X = \mathrm{softmax}_{\text{last}}\big(\max_j E_{ij} - E_{ij}\big),\qquad
        y = \beta\, X F + x

    The ``max − E`` is the official code's, and it is not a stability shift: it flips the sign of the energy,
    so each channel attends most to the channels *least* correlated with it (the paper writes exp(A_i·A_j)).
    It is reproduced here. The softmax (the ``gate``) runs over the last dim; β (``gamma``) starts at 0, so the
    module starts as the identity. Memory is O(C² + C·H·W).

    Args:
        channels: C, input channels.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = ChannelAttention(32)
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

    def attend(self, x: Tensor) -> Tensor:
        """The attention output ``X F`` (N, C, H, W), before the scale γ and the residual."""
        n, c, h, w = x.shape
        f = x.flatten(2)  # (N, C, HW), a view for contiguous and channels_last x
        energy = torch.bmm(f, f.transpose(1, 2))  # (N, C, C)
        attn = self.gate(energy.amax(dim=-1, keepdim=True) - energy)  # (N, C, C), the official sign flip
        if is_channels_last(x):  # X·F written as (Fᵀ·Xᵀ): the (N, HW, C) rows of channels_last memory
            return torch.bmm(f.transpose(1, 2), attn.transpose(1, 2)).view(n, h, w, c).permute(0, 3, 1, 2)
        return torch.bmm(attn, f).view(n, c, h, w)  # (N, C, HW) → (N, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        return torch.addcmul(x, self.gamma, self.attend(x))  # x + γ·X F in one pass


@register(
    "danet", paper=_PAPER, year=2019, url=_URL, kind="channel+spatial",
    official="junfu1115/DANet PAM_Module + CAM_Module (plug-in form; the head is danet_head)",
)
class DualAttention(nn.Module):
    r"""DANet's dual attention as a shape-preserving plug-in: PAM and CAM in parallel on x, fused by a sum.

    .. math::
        y = x + \alpha\, \mathrm{PAM}_{\text{out}}(x) + \beta\, \mathrm{CAM}_{\text{out}}(x)

    where PAM_out and CAM_out are the two attention outputs before their own scale and residual
    (:meth:`PositionAttention.attend`, :meth:`ChannelAttention.attend`) and α = ``pam.gamma``,
    β = ``cam.gamma``, both 0 at init, so the module starts as the identity.

    Why this form: the paper fuses the two branches by an element-wise sum, but in the official head each
    branch is followed by its own 3×3 conv-BN-ReLU before the sum (see :class:`DANetHead`). A plug-in must
    keep x's shape and meaning, and summing the two full module outputs, PAM(x) + CAM(x), would count the
    residual twice (2x at init). Summing the two residual branches once gives exactly
    PAM(x) + CAM(x) − x, keeps each branch's official parameters (``pam.*`` loads a ``PAM_Module``
    state_dict after renaming, ``cam.gamma`` a ``CAM_Module``'s) and is the identity at init like each module.
    Not in the official code as a module of its own.

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
        block_budget: int | None = _DEFAULT_BLOCK_BUDGET,
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
        self.cam = ChannelAttention(channels, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        return torch.addcmul(self.pam(x), self.cam.gamma, self.cam.attend(x))  # (x + α·PAM) + β·CAM; self.pam(x)
        # (not attend) so that its hooks fire


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
      ``cam`` a :class:`ChannelAttention`;
    - outputs: ``(cls_fused(drop(p + c)), cls_pam(drop(p)), cls_cam(drop(c)))`` with ``drop`` a
      Dropout2d(0.1) and ``cls_*`` 1×1 convs inter → out_channels with bias (official conv8, conv6, conv7).

    The full DANet upsamples each output bilinearly (align_corners=True) to the image size; that is not part
    of the head. The head computes on a contiguous copy of x (outputs are contiguous), so the result does
    not depend on the input's memory format. When C < 32 the official head crashes (a PAM with 0 query/key
    channels); here the PAM then uses 1 query/key channel (not in the official code).

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
        block_budget: int | None = _DEFAULT_BLOCK_BUDGET,
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
        dd = {"device": device, "dtype": dtype}
        conv = {"bias": False, "norm_layer": norm_layer, "act_layer": act_layer, **dd}
        self.channels = channels
        self.out_channels = out_channels
        self.pam_in = ConvNormAct(channels, inter, 3, **conv)
        self.cam_in = ConvNormAct(channels, inter, 3, **conv)
        self.pam = PositionAttention(
            inter, rd_channels=max(1, inter // 8), query_block=query_block, block_budget=block_budget,
            grad_checkpoint=grad_checkpoint, **dd,
        )
        self.cam = ChannelAttention(inter, **dd)
        self.pam_out = ConvNormAct(inter, inter, 3, **conv)
        self.cam_out = ConvNormAct(inter, inter, 3, **conv)
        self.drop = nn.Dropout2d(drop_rate)  # stateless; one instance serves the three classifiers
        self.cls_pam = nn.Conv2d(inter, out_channels, 1, **dd)
        self.cls_cam = nn.Conv2d(inter, out_channels, 1, **dd)
        self.cls_fused = nn.Conv2d(inter, out_channels, 1, **dd)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_input(self, x, self.channels)
        # One layout for every input (a copy only for channels_last or strided x): the PAM logits are unscaled,
        # so layout-dependent conv round-off would be amplified into visible differences between layouts.
        x = x.contiguous()
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
    return ChannelAttention(in_dim), rename_prefix()


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
