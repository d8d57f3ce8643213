"""Non-local block (embedded Gaussian), computed in blocks of query positions.

Paper: Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018. https://arxiv.org/abs/1711.07971 —
official code (Caffe2): https://github.com/facebookresearch/video-nonlocal-net (``lib/models/nonlocal_helper.py``
``spacetime_nonlocal``, defaults in ``lib/core/config.py`` ``NONLOCAL.*``); the common PyTorch port:
https://github.com/AlexHex7/Non-local_pytorch (``lib/non_local_embedded_gaussian.py``, ``NONLocalBlock2D``).
Written from the paper and both codes; no code is copied.

As in DANet's position attention, the (H·W) × S affinity is computed over blocks of query positions
(:func:`plugattn._kernels.attention_blockwise`), so memory is O(H·W·C + ``block_budget``) instead of O(H·W·S).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .._kernels import DEFAULT_BLOCK_BUDGET, attention_blockwise
from .._layers import (
    Gate,
    LayerType,
    check_input,
    check_optional_positive,
    check_positive,
    factory_kwargs,
    get_layer,
    reduced_width,
)
from ..official import official, rename_prefix
from ..registry import register

__all__ = ["NonLocal"]


@register(
    "non_local", paper="Non-local Neural Networks", year=2018, url="https://arxiv.org/abs/1711.07971",
    kind="self-attention",
    official="facebookresearch/video-nonlocal-net spacetime_nonlocal (Caffe2); "
             "AlexHex7/Non-local_pytorch NONLocalBlock2D",
)
class NonLocal(nn.Module):
    r"""Non-local block, embedded Gaussian: a softmax-weighted sum over all positions, added back to the input.

    .. math::
        y_i = \sum_j \mathrm{softmax}_j\big(s\,\theta(x_i)^\top \phi(x_j)\big)\, g(x_j),\qquad
        z = x + \mathrm{BN}(W_z\, y)

    θ, φ, g are 1×1 convs C → C' (C' = C/2, with bias); W_z is a 1×1 conv C' → C with bias followed by
    ``norm_layer``, whose weight and bias start at 0, so the block starts as the identity. The softmax over
    the keys j is the ``gate``. ``s`` = C'^(−1/2) when ``use_scale`` (official Caffe2 ``NONLOCAL.USE_SCALE``;
    not written in the paper, absent from the AlexHex7 port), else 1.

    **Sub-sampling** (``sub_sample=True``): the keys and values come from a 2×2 max-pooled map (stride 2,
    floor), so there are ⌊H/2⌋·⌊W/2⌋ of them. The official Caffe2 code pools the input once before φ and g
    (default, ``sub_sample_after_proj=False``); the paper's text and the AlexHex7 port pool after φ and g
    (``sub_sample_after_proj=True``). Max pooling does not commute with a 1×1 conv, so the two differ.
    The official video models use sub-sampling; it is off by default here because it needs H, W ≥ 2, and
    the library contract asks every module to accept any size (1×1 included). With it on, an input smaller
    than 2×2 raises ``ValueError``.

    **Init** (``reset_parameters``): the official Caffe2 one: conv weights N(0, 0.01²), conv biases 0,
    norm weight and bias 0 (``NONLOCAL.CONV_INIT_STD``, ``BN_INIT_GAMMA = 0``). With ``norm_layer=None``,
    W_z itself starts at 0 (the AlexHex7 ``bn_layer=False`` form).

    The attention is computed over blocks of query positions (see the file docstring); the ``gate`` is called on
    each block's logits (N, rows, S), in order.

    Args:
        channels: C, input channels.
        rd_ratio: C'/C (floored, at least 1; official C/2). Default: 1/2.
        rd_channels: C', overriding ``rd_ratio``. Default: None.
        use_scale: scale the logits by C'^(−1/2) (official Caffe2). Default: True.
        sub_sample: 2×2 max pooling of the keys and values. Default: False.
        sub_sample_after_proj: pool after φ and g (paper text, AlexHex7) instead of before (Caffe2).
            Default: False.
        norm_layer: norm after W_z (official BatchNorm; ``None``: none). Default: BatchNorm2d.
        query_block: query positions per block; overrides ``block_budget``. Default: None.
        block_budget: largest size in bytes of one block of logits (batch × rows × S × itemsize);
            ``None`` computes the whole affinity at once. Default: 8 MiB.
        grad_checkpoint: recompute each block in the backward pass instead of storing its attention
            (``torch.utils.checkpoint``). Not in the official code. Default: False.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = NonLocal(64)
        >>> x = torch.randn(2, 64, 7, 5)
        >>> torch.equal(m(x), x)  # the output norm starts at 0: the identity
        True
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 2,
        rd_channels: int | None = None,
        use_scale: bool = True,
        sub_sample: bool = False,
        sub_sample_after_proj: bool = False,
        norm_layer: LayerType = "batchnorm2d",
        query_block: int | None = None,
        block_budget: int | None = DEFAULT_BLOCK_BUDGET,
        grad_checkpoint: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, channels=channels)
        rd_channels = reduced_width(owner, channels, rd_ratio, rd_channels, None, min_channels=1)
        check_optional_positive(owner, query_block=query_block, block_budget=block_budget)
        dd = factory_kwargs(device, dtype)
        self.channels = channels
        self.rd_channels = rd_channels
        self.scale = rd_channels**-0.5 if use_scale else None
        self.sub_sample = sub_sample
        self.sub_sample_after_proj = sub_sample_after_proj
        self.query_block = query_block
        self.block_budget = block_budget
        self.grad_checkpoint = grad_checkpoint
        self.theta = nn.Conv2d(channels, rd_channels, 1, bias=True, **dd)
        self.phi = nn.Conv2d(channels, rd_channels, 1, bias=True, **dd)
        self.g = nn.Conv2d(channels, rd_channels, 1, bias=True, **dd)
        self.gate = Gate("softmax", dim=-1)
        self.proj = nn.Conv2d(rd_channels, channels, 1, bias=True, **dd)
        self.norm = get_layer(norm_layer, channels, arg_name="norm_layer", **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official Caffe2 init: conv weights N(0, 0.01²), biases 0; the output norm (or, without one, W_z) 0."""
        for conv in (self.theta, self.phi, self.g, self.proj):
            nn.init.normal_(conv.weight, std=0.01)
            assert conv.bias is not None  # built with bias=True
            nn.init.zeros_(conv.bias)
        if isinstance(self.norm, nn.Identity):
            nn.init.zeros_(self.proj.weight)
        else:
            for p in self.norm.parameters():
                nn.init.zeros_(p)

    def extra_repr(self) -> str:
        s = f"channels={self.channels}, rd_channels={self.rd_channels}, use_scale={self.scale is not None}"
        if self.sub_sample:
            s += f", sub_sample=True, sub_sample_after_proj={self.sub_sample_after_proj}"
        s += f", block_budget={self.block_budget}"
        if self.query_block is not None:
            s += f", query_block={self.query_block}"
        return s + (", grad_checkpoint=True" if self.grad_checkpoint else "")

    def _keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """φ and g over the (optionally 2×2 max-pooled) key positions: two (N, C', S) tensors."""
        if self.sub_sample and not isinstance(x, torch.fx.Proxy) and (x.shape[-2] < 2 or x.shape[-1] < 2):
            raise ValueError(f"{type(self).__name__}: sub_sample=True needs H, W >= 2 (2×2 max pooling), "
                             f"got {x.shape[-2]}×{x.shape[-1]}")
        src = F.max_pool2d(x, 2) if self.sub_sample and not self.sub_sample_after_proj else x
        phi, g = self.phi(src), self.g(src)  # (N, C', H', W')
        if self.sub_sample and self.sub_sample_after_proj:
            phi, g = F.max_pool2d(phi, 2), F.max_pool2d(g, 2)
        return phi.flatten(2), g.flatten(2)

    def attention_rows(self, x: Tensor, index: int | Sequence[int] | Tensor) -> Tensor:
        """Attention weights of the query positions ``index`` (flat, h·W + w) over the S key positions.

        Returns:
            (N, len(index), S) softmax rows through the ``gate``; S = H·W, or the pooled grid's size with
            ``sub_sample``.
        """
        check_input(self, x, self.channels)
        index = torch.as_tensor(index, dtype=torch.long, device=x.device).reshape(-1)
        theta = self.theta(x).flatten(2).index_select(2, index).transpose(1, 2)  # (N, I, C')
        logits = torch.bmm(theta, self._keys_values(x)[0])  # (N, I, S)
        if self.scale is not None:
            logits = logits * self.scale
        return self.gate(logits)

    def attend(self, x: Tensor) -> Tensor:
        """The non-local response y (N, C', H, W), before W_z, the norm and the residual."""
        n, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        phi, g = self._keys_values(x)  # (N, C', S)
        y = attention_blockwise(theta, phi, g, self.gate, self.scale, block_budget=self.block_budget,
                                query_block=self.query_block, grad_checkpoint=self.grad_checkpoint)  # (N, C', HW)
        return y.view(n, self.rd_channels, h, w)

    def forward(self, x: Tensor) -> Tensor:
        check_input(self, x, self.channels)
        return x + self.norm(self.proj(self.attend(x)))  # z = x + BN(W_z y)


@official("non_local")
def _non_local_alexhex7(in_channels: int, inter_channels: int | None = None, sub_sample: bool = True,
                        bn_layer: bool = True):
    """AlexHex7/Non-local_pytorch ``NONLocalBlock2D(in_channels, inter_channels=None, sub_sample=True, bn_layer=True)``.

    Embedded Gaussian: no logit scale, pooling after φ and g, inter = max(C // 2, 1).
    """
    if inter_channels is None:
        inter_channels = max(in_channels // 2, 1)
    module = NonLocal(in_channels, rd_channels=inter_channels, use_scale=False, sub_sample=sub_sample,
                      sub_sample_after_proj=True, norm_layer="batchnorm2d" if bn_layer else None)
    pairs = [("W.0.", "proj."), ("W.1.", "norm.")] if bn_layer else [("W.", "proj.")]
    if sub_sample:  # g and phi are Sequential(conv, pool)
        pairs += [("g.0.", "g."), ("phi.0.", "phi.")]
    return module, rename_prefix(*pairs)
