"""The fast paths of ``plugattn._kernels`` against their plain twins, and as ordinary layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune

from helpers import rand
from plugattn._kernels import ChannelConv1d, PointwiseConv2d, pointwise_fast, pointwise_plain, taps_fast, taps_plain


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_fast_equals_conv(bias):
    w, b = rand(6, 10, 1, 1, seed=1), rand(6, seed=2) if bias else None
    x = rand(3, 10, 1, 1, seed=3, dtype=torch.float64)
    want = F.conv2d(x, w.double(), None if b is None else b.double())
    torch.testing.assert_close(pointwise_fast(x, w.double(), None if b is None else b.double()), want)
    torch.testing.assert_close(pointwise_plain(x, w.double(), None if b is None else b.double()), want)


@pytest.mark.parametrize("k, padding, dilation", [(1, 0, 1), (3, 1, 1), (5, 2, 1), (3, 2, 2), (7, 0, 1)])
def test_taps_fast_equals_conv1d(k, padding, dilation):
    w = rand(1, 1, k, seed=4, dtype=torch.float64)
    s = rand(4, 1, 19, seed=5, dtype=torch.float64)
    for bias in (None, rand(1, seed=6, dtype=torch.float64)):
        want = F.conv1d(s, w, bias, padding=padding, dilation=dilation)
        torch.testing.assert_close(taps_fast(s, w, bias, padding, dilation), want)
        torch.testing.assert_close(taps_plain(s, w, bias, padding, dilation), want)


def test_pointwise_conv_is_an_ordinary_conv():
    conv = PointwiseConv2d(8, 4)
    ref = nn.Conv2d(8, 4, 1)
    ref.load_state_dict(conv.state_dict())  # same keys and shapes as nn.Conv2d
    for shape in [(2, 8, 1, 1), (2, 8, 3, 5)]:
        x = rand(*shape, seed=7)
        torch.testing.assert_close(conv(x), ref(x))
    calls = []
    conv.register_forward_hook(lambda *a: calls.append(1))
    prune.l1_unstructured(conv, "weight", amount=0.5)
    with torch.no_grad():
        conv.weight_orig.mul_(3)
        x = rand(2, 8, 1, 1, seed=8)
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight_orig * conv.weight_mask, conv.bias))
    assert calls == [1]


def test_channel_conv_is_an_ordinary_conv1d():
    conv = ChannelConv1d(5)
    ref = nn.Conv1d(1, 1, 5, padding=2, bias=False)
    ref.load_state_dict(conv.state_dict())
    x = rand(3, 1, 12, seed=9)
    torch.testing.assert_close(conv(x), ref(x))
    gm = torch.fx.symbolic_trace(conv)
    assert any(n.target is F.conv1d or "conv" in str(n.target) for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x), ref(x))


def test_pointwise_conv_traces_to_the_plain_twin():
    conv = PointwiseConv2d(8, 4)
    gm = torch.fx.symbolic_trace(conv)
    x = rand(2, 8, 1, 1, seed=10)
    torch.testing.assert_close(gm(x), conv(x))
