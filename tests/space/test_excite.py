"""Excites of the design space (plugattn/space/excite.py) against independent formulas."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from helpers import rand, randomize_
from plugattn.space import (
    MLP,
    AxialMLP,
    ChannelConv,
    ChannelSelfAttention,
    ChannelwiseFC,
    Identity,
    MultiScale,
    SpatialConv,
)


def _bn_eval(t, bn):
    return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_mlp_formula():
    mlp = randomize_(MLP(10, 10, rd_channels=3, norm_layer="batchnorm"), seed=1).double().eval()
    assert type(mlp.fc1) is nn.Conv2d and type(mlp.fc2) is nn.Conv2d
    w1, w2 = mlp.fc1.weight[:, :, 0, 0], mlp.fc2.weight[:, :, 0, 0]
    for i, (h, w) in enumerate([(1, 1), (3, 2), (1, 5)]):  # a pooled descriptor and, at every position, a map
        d = rand(3, 10, h, w, seed=11 + i, dtype=torch.float64)
        hid = torch.einsum("nchw,oc->nohw", d, w1) + mlp.fc1.bias.view(1, -1, 1, 1)
        want = torch.einsum("nchw,oc->nohw", F.relu(_bn_eval(hid, mlp.norm)), w2) + mlp.fc2.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(mlp(d), want)
    assert MLP(64).rd_channels == 4 and MLP(64, rd_divisor=8).rd_channels == 8
    with pytest.raises(ValueError, match="MLP.*rd_ratio"):
        MLP(16, rd_ratio=0)
    with pytest.raises(ValueError, match="MLP.*rd_channels"):
        MLP(16, rd_channels=0)


def test_channel_conv_and_multiscale():
    cc = randomize_(ChannelConv(10, kernel_size=3), seed=2).double()
    assert type(cc.conv) is nn.Conv1d
    k = cc.conv.weight.view(3)
    d = rand(3, 10, 1, 1, seed=11, dtype=torch.float64)
    s = F.pad(d.flatten(1), (1, 1))  # zero padding at both channel ends
    torch.testing.assert_close(cc(d).flatten(1), k[0] * s[:, :-2] + k[1] * s[:, 1:-1] + k[2] * s[:, 2:])
    assert ChannelConv(256).kernel_size == 5  # ECA's adaptive ψ(C)
    dmap = rand(2, 10, 3, 2, seed=12, dtype=torch.float64)  # at every position of a map, too
    torch.testing.assert_close(cc(dmap)[:, :, 1, 0], cc(dmap[:, :, 1:2, 0:1]).flatten(1))
    dil = randomize_(ChannelConv(10, kernel_size=3, dilation=2), seed=3).double()
    kd, s2 = dil.conv.weight.view(3), F.pad(d.flatten(1), (2, 2))
    torch.testing.assert_close(dil(d).flatten(1), kd[0] * s2[:, :-4] + kd[1] * s2[:, 2:-2] + kd[2] * s2[:, 4:])

    branches = [randomize_(ChannelConv(10, kernel_size=k), seed=k).double() for k in (3, 5)]
    summed = MultiScale(branches, fuse="sum")
    one = ChannelConv(10, kernel_size=5).double()
    with torch.no_grad():  # the sum of linear branches is one conv with the summed, centred kernels
        one.conv.weight.copy_(branches[1].conv.weight + F.pad(branches[0].conv.weight, (1, 1)))
    torch.testing.assert_close(summed(d), one(d))
    mx = MultiScale(branches, fuse="max")
    torch.testing.assert_close(mx(d), torch.maximum(branches[0](d), branches[1](d)))
    torch.testing.assert_close(MultiScale(branches, fuse="mean")(d), (branches[0](d) + branches[1](d)) / 2)
    with pytest.raises(ValueError, match="ChannelConv.*odd"):
        ChannelConv(10, kernel_size=4)
    with pytest.raises(ValueError, match="MultiScale.*fuse"):
        MultiScale(branches, fuse="prod")


def test_channel_self_attention_formula():
    m = randomize_(ChannelSelfAttention(6, embed_dim=4), seed=3).double()
    d = rand(2, 6, 1, 1, seed=13, dtype=torch.float64)
    e = d.view(2, 6, 1) * m.value_embed + m.channel_embed  # (N, C, e)
    wq, wk, wv = m.qkv.weight.split(4, 0)
    q, k, v = e @ wq.T, e @ wk.T, e @ wv.T
    a = torch.softmax(q @ k.transpose(1, 2) / 2.0, -1)
    want = (a @ v) @ m.proj.weight.T + m.proj.bias
    torch.testing.assert_close(m(d), want.view(2, 6, 1, 1))
    d.requires_grad_()
    assert torch.autograd.gradcheck(m, (d,))


def test_spatial_conv_axial_mlp_and_cfc():
    sc = randomize_(SpatialConv(2, 1, kernel_size=5), seed=4).double().eval()
    d = rand(2, 2, 6, 7, seed=14, dtype=torch.float64)
    torch.testing.assert_close(sc(d), _bn_eval(F.conv2d(d, sc.conv.weight, None, 1, 2), sc.bn))
    assert sc.bn.momentum == 0.01

    ax = randomize_(AxialMLP(16, rd_ratio=1 / 32), seed=5).double().eval()
    assert ax.fc1.out_channels == 8  # max(8, C // 32)
    for i, (h, w) in enumerate([(5, 3), (1, 1), (4, 9)]):
        x = rand(2, 16, h, w, seed=15 + i, dtype=torch.float64)
        dh, dw = x.mean(3, keepdim=True), x.mean(2, keepdim=True)
        lh, lw = ax((dh, dw))
        assert lh.shape == (2, 16, h, 1) and lw.shape == (2, 16, 1, w)

        def branch(t, fc):  # the shared conv-BN-h-swish on one part (identical per position in eval)
            y = _bn_eval(F.conv2d(t, ax.fc1.weight, ax.fc1.bias), ax.norm)
            return F.conv2d(y * F.relu6(y + 3) / 6, fc.weight, fc.bias)

        torch.testing.assert_close(lh, branch(dh, ax.fc_h))
        torch.testing.assert_close(lw, branch(dw, ax.fc_w))
    with pytest.raises(TypeError, match="AxialMLP"):
        ax(dh)

    cfc = randomize_(ChannelwiseFC(4, num_stats=3, norm_layer=None), seed=6).double()
    t = rand(2, 12, 1, 1, seed=16, dtype=torch.float64)
    stats = t.view(2, 3, 4)  # stat-major
    torch.testing.assert_close(cfc(t).flatten(1), (stats * cfc.cfc.T).sum(1))


def test_axial_mlp_batch_norm_sees_both_axes_in_training():
    """Coordinate Attention's BN normalises the H and W parts together (statistics over H + W positions)."""
    ax = randomize_(AxialMLP(16, rd_channels=4), seed=7).double().train()
    x = rand(3, 16, 5, 3, seed=17, dtype=torch.float64)
    dh, dw = x.mean(3, keepdim=True), x.mean(2, keepdim=True)
    lh, lw = ax((dh, dw))
    y = F.conv2d(torch.cat((dh, dw.transpose(2, 3)), 2), ax.fc1.weight, ax.fc1.bias)  # (N, m, H+W, 1)
    nb = ax.norm
    y = F.batch_norm(y, None, None, nb.weight, nb.bias, True, 0.0, nb.eps)
    y = y * F.relu6(y + 3) / 6
    torch.testing.assert_close(lh, F.conv2d(y[:, :, :5], ax.fc_h.weight, ax.fc_h.bias))
    torch.testing.assert_close(lw, F.conv2d(y[:, :, 5:].transpose(2, 3), ax.fc_w.weight, ax.fc_w.bias))


# --- every excite: an ordinary module --------------------------------------------------------------------------------

EXCITES = {
    "mlp": (lambda: MLP(8, rd_channels=2, norm_layer="batchnorm"), (2, 8, 1, 1)),
    "mlp_map": (lambda: MLP(8, rd_channels=2), (2, 8, 1, 5)),
    "conv1d": (lambda: ChannelConv(8, kernel_size=3), (2, 8, 1, 1)),
    "conv1d_map": (lambda: ChannelConv(8, kernel_size=5), (2, 8, 3, 1)),
    "attention": (lambda: ChannelSelfAttention(8, embed_dim=4), (2, 8, 1, 1)),
    "conv2d": (lambda: SpatialConv(2, 1, kernel_size=3), (2, 2, 5, 4)),
    "multiscale": (lambda: MultiScale([ChannelConv(8, kernel_size=k) for k in (3, 5)], fuse="max"), (2, 8, 1, 1)),
    "cfc": (lambda: ChannelwiseFC(8, num_stats=2), (2, 16, 1, 1)),
    "axial": (lambda: AxialMLP(8, rd_channels=3), None),
    "identity": (lambda: Identity(8), (2, 8, 1, 1)),
}


class _Pair(nn.Module):
    """Takes the (H-pooled, W-pooled) pair as two arguments: a traced tuple argument would be one Proxy."""

    def __init__(self, excite: nn.Module) -> None:
        super().__init__()
        self.excite = excite

    def forward(self, dh, dw):
        return self.excite((dh, dw))


def _inputs(name, shape, seed):
    if name == "axial":
        return rand(2, 8, 5, 1, seed=seed), rand(2, 8, 1, 4, seed=seed + 1)
    return (rand(*shape, seed=seed),)


def _flat(y):
    return torch.cat([t.flatten() for t in y]) if isinstance(y, (tuple, list)) else y.flatten()


@pytest.mark.parametrize("name", list(EXCITES))
def test_excite_fx_hooks_and_repr(name):
    build, shape = EXCITES[name]
    m = randomize_(build(), seed=4).eval()
    gm = torch.fx.symbolic_trace(_Pair(m) if name == "axial" else m)
    for seed in (1, 2):
        args = _inputs(name, shape, seed)
        want = m(args) if name == "axial" else m(*args)
        torch.testing.assert_close(_flat(gm(*args)), _flat(want))
    owners = [mod for mod in m.modules() if any(True for _ in mod.parameters(recurse=False))]
    fired = set()
    for mod in owners:
        mod.register_forward_hook(lambda mod, args, out: fired.add(id(mod)))
    args = _inputs(name, shape, 3)
    m(args) if name == "axial" else m(*args)
    assert fired == {id(mod) for mod in owners}
    assert "channels=" in repr(m) or name == "multiscale"


def test_excite_reprs_name_the_hyper_parameters():
    assert "in_channels=8, out_channels=8, rd_channels=2" in repr(MLP(8, rd_channels=2))
    assert "channels=64, kernel_size=3, dilation=1" in repr(ChannelConv(64))
    assert "kernel_size=7, dilation=1" in repr(SpatialConv())
    assert "channels=32, out_channels=32, rd_channels=8" in repr(AxialMLP(32))
    assert "channels=8, num_stats=2" in repr(ChannelwiseFC(8))
    assert "fuse='max'" in repr(MultiScale([ChannelConv(8)], fuse="max"))
