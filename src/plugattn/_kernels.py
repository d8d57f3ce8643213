"""The few fast paths a module may use, each beside its plain twin.

A fast path is kept only where a benchmark shows that it matters where users pay: today only blockwise
attention, which keeps position attention's memory O(H·W·C) instead of O((H·W)²) (``benchmarks/pam_memory.py``).
Matrix-product forms of the 1×1 convs on pooled descriptors and shifted multiply-adds for ECA's 1-D conv
were measured in a ResNet-50 training step (``benchmarks/network.py``) and gave no gain there, so the
modules call plain ``nn.Conv2d`` / ``nn.Conv1d``. Under ``torch.fx`` symbolic tracing, ``torch.compile``,
``torch.export`` and ONNX export the plain twin runs; ``tests/test_kernels.py`` checks the two agree.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.fx
import torch.nn as nn
from torch import Tensor

__all__ = ["is_plain", "DEFAULT_BLOCK_BUDGET", "attention_plain", "attention_blockwise"]


def is_plain(x: Tensor) -> bool:
    """True where the plain twin must run: symbolic tracing (``x`` is a Proxy), compile, export, ONNX export."""
    return (isinstance(x, torch.fx.Proxy) or torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing())


# ---- blockwise attention (DANet PAM, non-local) ---------------------------------------------------------------

DEFAULT_BLOCK_BUDGET = 8 * 2**20
"""Bytes of one block of attention logits (batch × rows × keys × itemsize) in :func:`attention_blockwise`."""


def attention_plain(q: Tensor, k: Tensor, v: Tensor, gate: nn.Module, scale: float | None = None) -> Tensor:
    """Softmax attention with the whole matrix: ``v · gate(scale · q k)ᵀ``.

    Args:
        q: queries (N, L, d).
        k: keys (N, d, S).
        v: values (N, Cv, S).
        gate: the softmax over the keys (a ``Gate``), applied to the (N, L, S) logits.
        scale: logit scale; ``None`` leaves the logits unscaled (DANet).

    Returns:
        (N, Cv, L).
    """
    logits = torch.bmm(q, k)  # (N, L, S)
    if scale is not None:
        logits = logits * scale
    return torch.bmm(v, gate(logits).transpose(1, 2))  # (N, Cv, L)


def attention_blockwise(
    q: Tensor, k: Tensor, v: Tensor, gate: nn.Module, scale: float | None = None, *,
    block_budget: int | None = DEFAULT_BLOCK_BUDGET, query_block: int | None = None, grad_checkpoint: bool = False,
) -> Tensor:
    """:func:`attention_plain` over blocks of query positions, so the L × S matrix is never built whole.

    Each block of ``rows`` queries is :func:`attention_plain` on its own (``gate`` is called once per block, in
    order) and its output goes into its slice of the (N, Cv, L) result. ``rows`` is ``query_block`` if given, else
    the most rows whose logits (N × rows × S × itemsize bytes) fit in ``block_budget``; ``block_budget=None``,
    or ``rows >= L``, gives one block: :func:`attention_plain` itself. Under ``torch.fx`` symbolic tracing,
    compile and export (:func:`is_plain`) the plain twin runs. ``grad_checkpoint`` recomputes each block in the
    backward pass (``torch.utils.checkpoint``) instead of storing its attention.

    Shapes as in :func:`attention_plain`: q (N, L, d), k (N, d, S), v (N, Cv, S) → (N, Cv, L).
    """
    n, length, keys = q.shape[0], q.shape[1], k.shape[2]
    if is_plain(q) or (block_budget is None and query_block is None):
        return attention_plain(q, k, v, gate, scale)
    # block_budget is not None here unless query_block is given (the plain case returned above)
    rows = query_block or max(1, cast(int, block_budget) // max(1, n * keys * q.element_size()))
    if rows >= length:
        return attention_plain(q, k, v, gate, scale)
    out = v.new_empty(n, v.shape[1], length)  # (N, Cv, L)
    for start in range(0, length, rows):
        q_blk = q[:, start:start + rows]  # (N, rows, d)
        if grad_checkpoint:
            y = torch.utils.checkpoint.checkpoint(attention_plain, q_blk, k, v, gate, scale, use_reentrant=False)
        else:
            y = attention_plain(q_blk, k, v, gate, scale)
        out[:, :, start:start + rows] = y  # (N, Cv, rows)
    return out
