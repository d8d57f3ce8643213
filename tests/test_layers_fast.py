"""The fast-path primitives of ``plugattn._layers`` against the plain PyTorch ops they replace.

Each primitive is checked against an independent formulation (the conv kernel, ``mean``, an explicit einsum) in
float64 at 1e-10, for contiguous and channels_last input where the primitive branches on the layout, forward and
gradient; the modules built on them are checked again against their references in test_reference.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from plugattn._layers import (
    axis_mean, channel_map, conv1d_taps, conv1x1, descriptor_mlp, is_channels_last, like_layout, weighted_positions,
)
from helpers import rand

F64 = torch.float64
CL = torch.channels_last


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("bias", [True, False])
def test_conv1x1_equals_the_conv(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 5, 1, bias=bias, dtype=F64)
    s = rand(3, 12, seed=1, dtype=F64)
    close(conv1x1(conv, s), conv(s[:, :, None, None]).flatten(1))  # (N, C) descriptor
    seq = rand(3, 12, 7, seed=2, dtype=F64)
    close(conv1x1(conv, seq), conv(seq.unsqueeze(3)).squeeze(3))  # (N, C, L) sequence
    close(conv1x1(conv, seq[:, :, ::2]), conv(seq[:, :, ::2].unsqueeze(3)).squeeze(3))  # strided
    conv_cl = conv.to(memory_format=CL)  # a channels_last 1×1 weight flattens as a view
    close(conv1x1(conv_cl, s), conv(s[:, :, None, None]).flatten(1))


def test_descriptor_mlp_equals_the_conv_stack():
    torch.manual_seed(0)
    fc1, fc2 = nn.Conv2d(16, 4, 1, dtype=F64), nn.Conv2d(4, 16, 1, dtype=F64)
    norm, act = nn.BatchNorm2d(4, dtype=F64).eval(), nn.ReLU()
    nn.init.normal_(norm.running_mean)
    s = rand(5, 16, seed=3, dtype=F64)
    close(descriptor_mlp(s, fc1, norm, act, fc2), fc2(act(norm(fc1(s[:, :, None, None])))).flatten(1))


@pytest.mark.parametrize("k,padding,dilation", [(1, 0, 1), (3, 1, 1), (5, 2, 1), (5, 0, 1), (3, 2, 2), (17, 8, 1)])
def test_conv1d_taps_equals_conv1d(k, padding, dilation):
    weight = rand(1, 1, k, seed=4, dtype=F64)
    bias = rand(1, seed=5, dtype=F64)
    s = rand(4, 24, seed=6, dtype=F64).requires_grad_()
    got = conv1d_taps(s, weight, bias, padding=padding, dilation=dilation)
    want = F.conv1d(s[:, None], weight, bias, padding=padding, dilation=dilation)[:, 0]
    close(got, want)
    close(torch.autograd.grad(got.sum(), s)[0], torch.autograd.grad(want.sum(), s)[0])


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL], ids=["contiguous", "channels_last"])
def test_axis_mean(dim, fmt):
    x = rand(2, 6, 5, 7, seed=7, dtype=F64).to(memory_format=fmt).requires_grad_()
    got, want = axis_mean(x, dim), x.mean(dim)
    close(got, want)
    g = rand(*want.shape, seed=8, dtype=F64)
    close(torch.autograd.grad((got * g).sum(), x)[0], torch.autograd.grad((want * g).sum(), x)[0])


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL], ids=["contiguous", "channels_last"])
def test_channel_map_and_weighted_positions(fmt):
    x = rand(3, 8, 5, 4, seed=9, dtype=F64).to(memory_format=fmt)
    w, b = rand(2, 8, seed=10, dtype=F64), rand(2, seed=11, dtype=F64)
    close(channel_map(x, w, b), F.conv2d(x, w[:, :, None, None], b).flatten(2))
    a = rand(3, 2, 20, seed=12, dtype=F64)
    close(weighted_positions(x, a), torch.einsum("nchw,nkhw->nck", x, a.view(3, 2, 5, 4)))


def test_layout_helpers():
    x = rand(2, 4, 3, 3, seed=13)
    assert not is_channels_last(x) and is_channels_last(x.to(memory_format=CL))
    assert not is_channels_last(rand(2, 4, 1, 1, seed=14).to(memory_format=CL))  # 1×1: both layouts at once
    w = rand(2, 4, 3, 1, seed=15)
    assert like_layout(w, x) is w
    moved = like_layout(w, x.to(memory_format=CL))
    assert torch.equal(moved, w) and moved.stride(1) == 1
