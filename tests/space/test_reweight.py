"""Gates and reweights of the design space (plugattn/space/gate.py, reweight.py) against their formulas."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn

from helpers import rand, randomize_
from plugattn._layers import Gate
from plugattn.space import Add, Multiply, Parallel, Residual, Series, SpatialSoftmax, compose, make_gate


def _x(n=2, c=8, h=5, w=4, seed=0, dtype=torch.float64):
    return rand(n, c, h, w, seed=seed, dtype=dtype) + rand(n, c, 1, 1, seed=seed + 100, dtype=dtype)


def test_gates():
    t = rand(2, 3, 4, 5, seed=17, dtype=torch.float64) * 3
    torch.testing.assert_close(make_gate("sigmoid")(t), 1 / (1 + (-t).exp()))
    torch.testing.assert_close(make_gate("hard_sigmoid")(t), (t + 3).clamp(0, 6) / 6)
    torch.testing.assert_close(make_gate("softmax")(t), t.exp() / t.exp().sum(1, keepdim=True))
    torch.testing.assert_close(make_gate("softmax_hw")(t), t.exp() / t.exp().sum((2, 3), keepdim=True))
    torch.testing.assert_close(make_gate("tanh")(t), torch.tanh(t))
    assert torch.equal(make_gate("identity")(t), t)
    assert torch.equal(make_gate(None)(t), t)
    torch.testing.assert_close(make_gate(SpatialSoftmax)(t), t.exp() / t.exp().sum((2, 3), keepdim=True))
    gm = torch.fx.symbolic_trace(make_gate("softmax_hw"))
    torch.testing.assert_close(gm(t), t.exp() / t.exp().sum((2, 3), keepdim=True))
    g = Gate("sigmoid")
    assert make_gate(g) is g
    with pytest.raises(TypeError, match="Gate"):
        make_gate(nn.Sigmoid())
    with pytest.raises(ValueError, match="gate_layer"):
        make_gate("nonexistent")


def test_reweights():
    x = _x(2, 4, 3, 5, seed=18)
    wc, ws = torch.rand(2, 4, 1, 1, dtype=torch.float64), torch.rand(2, 1, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(Multiply()(x, (wc, ws)), x * wc * ws)
    torch.testing.assert_close(Add()(x, wc), x + wc)
    torch.testing.assert_close(Add()(x, (wc, ws)), x + wc + ws)
    r = Residual().double()
    assert torch.equal(r(x, wc), x) and r.gamma.requires_grad  # DANet: γ = 0 at the start
    with torch.no_grad():
        r.gamma.fill_(0.3)
    torch.testing.assert_close(r(x, wc), x + 0.3 * x * wc)
    torch.testing.assert_close(Residual(gamma_init=1.0, learnable=False).double()(x, wc), x * (1 + wc))
    assert not list(Residual(learnable=False).parameters())
    assert "gamma_init=1.0, learnable=False" in repr(Residual(gamma_init=1.0, learnable=False))
    xcl = x.to(memory_format=torch.channels_last)
    for rw in (Multiply(), Add(), Residual().double()):
        assert rw(xcl, wc).is_contiguous(memory_format=torch.channels_last)


def test_series_and_parallel():
    torch.manual_seed(7)
    ch = randomize_(compose(8, "avg", "mlp", excite_kw={"rd_channels": 2}), seed=1).double().eval()
    sp = randomize_(compose(8, "max+avg", "conv2d", axes="c"), seed=2).double().eval()
    x = _x(2, 8, 5, 4, seed=19)
    torch.testing.assert_close(Series(ch, sp, channels=8)(x), sp(ch(x)))
    torch.testing.assert_close(Parallel(ch, sp)(x), ch(x) + sp(x))
    torch.testing.assert_close(Parallel(ch, sp, combine="max")(x), torch.maximum(ch(x), sp(x)))
    torch.testing.assert_close(Parallel(ch, sp, combine="mean")(x), (ch(x) + sp(x)) / 2)
    bam_paper = Parallel(ch, sp, combine="logits_sum", reweight=Residual(gamma_init=1.0, learnable=False))
    want = x * (1 + torch.sigmoid(ch.logits(x) + sp.logits(x)))  # BAM's paper: x·(1 + σ(M_c + M_s))
    torch.testing.assert_close(bam_paper.double()(x), want)
    bam_code = Parallel(ch, sp, combine="logits_prod", reweight=Residual(gamma_init=1.0, learnable=False))
    torch.testing.assert_close(bam_code.double()(x), x * (1 + torch.sigmoid(ch.logits(x) * sp.logits(x))))
    with pytest.raises(ValueError, match="Series.*channels"):
        Series(ch, sp, channels=8)(_x(2, 9, 5, 4))
    with pytest.raises(TypeError, match="logits"):
        Parallel(ch, nn.Identity(), combine="logits_sum")
    with pytest.raises(ValueError, match="combine"):
        Parallel(ch, sp, combine="concat")
    assert "channels=8" in repr(Series(ch, sp, channels=8))
    assert "combine='max'" in repr(Parallel(ch, sp, combine="max"))


@pytest.mark.parametrize("combine", ["series", "add", "max", "logits_sum", "logits_prod"])
def test_combinations_fx_and_hooks(combine):
    ch = randomize_(compose(8, "avg", "mlp", excite_kw={"rd_channels": 2}), seed=1).eval()
    sp = randomize_(compose(8, "max+avg", "conv2d", axes="c"), seed=2).eval()
    m = Series(ch, sp, channels=8) if combine == "series" else Parallel(ch, sp, combine=combine, channels=8)
    gm = torch.fx.symbolic_trace(m)
    for i, (h, w) in enumerate([(5, 4), (1, 1), (9, 3)]):
        x = _x(2, 8, h, w, seed=30 + i, dtype=torch.float32)
        torch.testing.assert_close(gm(x), m(x))
    owners = [mod for mod in m.modules() if any(True for _ in mod.parameters(recurse=False))]
    fired = set()
    for mod in owners:
        mod.register_forward_hook(lambda mod, args, out: fired.add(id(mod)))
    m(_x(2, 8, 5, 4, dtype=torch.float32))
    assert fired == {id(mod) for mod in owners}
