"""Numerics of Spatial Group-wise Enhance (``plugattn.modules.sge``) against an independent formulation.

The reference follows the official ``SpatialGroupEnhance`` one group at a time (no reshapes): each position's
dot product with the group's GAP, standardised over H·W by ``torch.std`` (unbiased) + 1e-5, an affine map with
the group's γ, β and a sigmoid. It reads an official-layout state_dict, so ``from_official("sge")`` is checked
too. At H·W = 1 the official code gives NaN; plugattn gives x·σ(β) (documented), checked separately.
"""

from __future__ import annotations

import pytest
import torch

import plugattn
from helpers import TOL, assert_matches_reference, rand, randomize_
from plugattn.modules.sge import SpatialGroupEnhance

F64 = torch.float64
SIZES = [(2, 7, 5), (1, 13, 17), (3, 6, 6), (2, 1, 3)]


def close(a, b, dtype=F64):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def official_state_dict(groups: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (0.5 * torch.randn(1, groups, 1, 1, generator=g)).double() for k in ("weight", "bias")}


def sge_reference(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, groups: int) -> torch.Tensor:
    """Official SpatialGroupEnhance, one group at a time: ⟨GAP, x_i⟩ normalised by its unbiased std (+1e-5)."""
    b, c, h, w = x.shape
    cg = c // groups
    parts = []
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg]
        t = (xg * xg.mean((2, 3), keepdim=True)).sum(1).flatten(1)  # (B, H·W)
        t = t - t.mean(1, keepdim=True)
        t = t / (t.std(1, keepdim=True) + 1e-5)
        parts.append(xg * torch.sigmoid(t.view(b, 1, h, w) * weight[0, g] + bias[0, g]))
    return torch.cat(parts, 1)


@pytest.mark.parametrize("c,groups", [(64, 64), (128, 64), (32, 4), (24, 1)])
def test_sge_matches_official_with_gradients(c, groups):
    sd = official_state_dict(groups, seed=c + groups)
    m = plugattn.from_official("sge", sd, groups=groups, channels=c).double()
    assert_matches_reference(m, lambda x: sge_reference(sd["weight"], sd["bias"], x, groups), SIZES, c,
                             seeds=lambda i, s: (17 + s[1], 18))


def test_sge_parameter_gradients_match_official():
    sd = official_state_dict(8, seed=3)
    m = plugattn.from_official("sge", sd, groups=8, channels=32).double()
    leaves = {k: v.clone().requires_grad_() for k, v in sd.items()}
    x = rand(2, 32, 6, 5, seed=4, dtype=F64)
    gy = rand(2, 32, 6, 5, seed=5, dtype=F64)
    (m(x) * gy).sum().backward()
    (sge_reference(leaves["weight"], leaves["bias"], x, 8) * gy).sum().backward()
    close(m.weight.grad, leaves["weight"].grad)
    close(m.bias.grad, leaves["bias"].grad)


def test_sge_single_position_is_x_times_sigmoid_beta():
    """Official: NaN (unbiased std of one value); here ĉ = 0, y = x·σ(β), with finite gradients."""
    sd = official_state_dict(8, seed=6)
    m = plugattn.from_official("sge", sd, groups=8, channels=32).double()
    x = rand(2, 32, 1, 1, seed=7, dtype=F64).requires_grad_()
    beta = sd["bias"].repeat_interleave(4, 1)  # (1, C, 1, 1)
    y = m(x)
    close(y, x * torch.sigmoid(beta))
    y.sum().backward()
    close(x.grad, torch.sigmoid(beta).expand_as(x))
    assert torch.isfinite(m.weight.grad).all() and torch.isfinite(m.bias.grad).all()
    with torch.no_grad(), pytest.warns(UserWarning, match="degrees of freedom"):  # the official formula: NaN
        assert torch.isnan(sge_reference(sd["weight"], sd["bias"], x, 8)).all()


def test_sge_init_is_official():
    m = SpatialGroupEnhance(32, groups=8)
    assert torch.equal(m.weight, torch.zeros(1, 8, 1, 1)) and torch.equal(m.bias, torch.ones(1, 8, 1, 1))
    x = rand(2, 32, 5, 4, seed=1)
    with torch.no_grad():  # γ = 0, β = 1: y = x·σ(1)
        close(m(x), x * torch.sigmoid(torch.tensor(1.0)), torch.float32)


def test_sge_float16_statistics_do_not_overflow():
    """Similarities of a few hundred (squares above the float16 range) still standardise like float64."""
    m = randomize_(SpatialGroupEnhance(16, groups=4), seed=8)
    x = 12 * rand(2, 16, 6, 5, seed=9) + 4
    with torch.no_grad():
        want = m.double()(x.double())
        got = m.half()(x.half())
    assert torch.isfinite(got).all()
    assert (got.double() - want).abs().max() <= 0.02 * want.abs().max()


def test_sge_groups_cap_and_errors():
    assert [plugattn.create("sge", c).groups for c in (1, 16, 64, 256)] == [1, 16, 64, 64]
    # any width: the largest divisor not above the paper's 64
    assert [plugattn.create("sge", c).groups for c in (96, 112, 160, 440)] == [48, 56, 40, 55]
    with pytest.raises(ValueError, match="SpatialGroupEnhance.*divisible.*groups=48 would work"):
        plugattn.create("sge", 96, groups=64)
    with pytest.raises(ValueError, match="groups"):
        plugattn.create("sge", 64, groups=0)
    with pytest.raises(TypeError, match="channels"):
        plugattn.from_official("sge", None, groups=8)


# ---- an ordinary nn.Module ---------------------------------------------------------------------------------------


def test_sge_symbolic_trace_equals_eager():
    m = randomize_(SpatialGroupEnhance(32, groups=8), seed=10)
    gm = torch.fx.symbolic_trace(m)
    with torch.no_grad():
        for shape in [(2, 32, 7, 5), (1, 32, 1, 1), (3, 32, 13, 17)]:
            x = rand(*shape, seed=11)
            close(gm(x), m(x), torch.float32)


def test_sge_forward_hooks_fire_on_every_parameter_leaf():
    """SGE's γ, β are its own parameters (no parameter-owning children); the gate child still runs."""
    m = SpatialGroupEnhance(32)
    leaves = {p: s for p, s in m.named_modules() if p and not list(s.children()) and list(s.parameters(False))}
    assert leaves == {}
    fired = []
    m.gate.register_forward_hook(lambda mod, args, out: fired.append(out.shape))
    with torch.no_grad():
        m(rand(2, 32, 6, 5))
    assert fired == [torch.Size([2, 32, 6, 5])]


def test_sge_extra_repr():
    assert SpatialGroupEnhance(64, groups=8).extra_repr() == "channels=64, groups=8, eps=1e-05"
