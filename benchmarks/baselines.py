"""The usual (official-style) formulations that the module benchmarks compare plugattn against.

Each takes a plugattn module and runs the official forward with that module's weights, calling its children:
``explicit_pam`` builds DANet's whole (H·W)² energy matrix; ``permute_triplet`` rotates x with
``permute().contiguous()`` for every branch, as the official Triplet Attention code does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


def explicit_pam(m: nn.Module, x: Tensor) -> Tensor:
    """junfu1115/DANet ``PAM_Module.forward`` with plugattn ``PositionAttention`` ``m``'s layers."""
    b, c, h, w = x.shape
    q = m.query(x).view(b, -1, h * w).permute(0, 2, 1)  # (B, N, C')
    k = m.key(x).view(b, -1, h * w)  # (B, C', N)
    attention = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, N, N)
    v = m.value(x).view(b, -1, h * w)  # (B, C, N)
    return m.gamma * torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, h, w) + x


def _zpool_gate(g: nn.Module, x: Tensor) -> Tensor:
    """Official AttentionGate on a (rotated) x: Z-pool over dim 1, conv-BN, sigmoid, x · s."""
    z = torch.cat((x.amax(1, keepdim=True), x.mean(1, keepdim=True)), dim=1)
    return x * torch.sigmoid(g.conv(z))


def permute_triplet(m: nn.Module, x: Tensor) -> Tensor:
    """landskape-ai ``TripletAttention.forward`` with plugattn ``TripletAttention`` ``m``'s layers."""
    x1 = _zpool_gate(m.cw, x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
    x2 = _zpool_gate(m.hc, x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
    if m.hw is None:
        return 1 / 2 * (x1 + x2)
    return 1 / 3 * (_zpool_gate(m.hw, x) + x1 + x2)
