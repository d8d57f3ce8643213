"""SimAM (plugattn.modules.simam) against the paper's energy formula as the official ``simam_module`` computes it.

Reference: μ and the unbiased variance σ² over H·W (``torch.var``), 1/e* = (t − μ)²/(4(σ² + λ)) + ½, y = x·σ(1/e*).
The official code divides by H·W − 1 = 0 at a single position (NaN), where plugattn uses max(H·W − 1, 1)
(documented); that case is checked against its own formula.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx

import plugattn
from helpers import assert_matches_reference, rand
from plugattn.modules.simam import SimAM

F64 = torch.float64
SHAPES = [(2, 7, 5), (1, 13, 17), (2, 1, 2), (3, 6, 6)]  # H·W > 1: the official variance is defined


def simam_ref(x: torch.Tensor, lam: float = 1e-4) -> torch.Tensor:
    """Paper eq. (5) / official forward: unbiased variance over H·W, E⁻¹ = (t−μ)²/(4(σ²+λ)) + ½."""
    mu = x.mean((2, 3), keepdim=True)
    var = x.var((2, 3), unbiased=True, keepdim=True)
    return x * torch.sigmoid((x - mu) ** 2 / (4 * (var + lam)) + 0.5)


@pytest.mark.parametrize("lam", [1e-4, 0.1])
def test_simam_matches_reference(lam):
    """Output and input gradient equal the formula, for contiguous and channels_last x (layout kept)."""
    m = SimAM(32, e_lambda=lam)
    assert_matches_reference(m, lambda x: simam_ref(x, lam), SHAPES, 32, layout_1x1=True)


def test_simam_official_any_channels_and_float32():
    x = rand(2, 16, 7, 5, seed=1, dtype=F64)
    torch.testing.assert_close(plugattn.from_official("simam", {}, e_lambda=0.1)(x), simam_ref(x, 0.1),
                               atol=1e-10, rtol=1e-10)  # channels=None: any C
    x32 = rand(2, 24, 9, 4, seed=2)
    torch.testing.assert_close(SimAM(24)(x32), simam_ref(x32.double()).float(), atol=1e-6, rtol=1e-5)


def test_simam_single_position_is_finite():
    x = rand(3, 8, 1, 1, seed=2, dtype=F64).requires_grad_()
    y = plugattn.create("simam", 8)(x)
    torch.testing.assert_close(y, x * torch.sigmoid(torch.tensor(0.5, dtype=F64)), atol=1e-12, rtol=1e-12)
    g, = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(g).all()


def test_simam_no_parameters_repr_and_errors():
    m = SimAM(64)
    assert not list(m.parameters()) and not list(m.buffers())
    assert "channels=64, e_lambda=0.0001" in repr(m)
    with pytest.raises(ValueError, match="e_lambda"):
        plugattn.create("simam", 8, e_lambda=0.0)
    with pytest.raises(ValueError, match="SimAM: expected input x with 64 channels"):
        m(rand(1, 32, 4, 4))


def test_simam_torch_export_follows_the_size():
    m = SimAM(16)
    dim = torch.export.Dim
    ep = torch.export.export(m, (rand(2, 16, 9, 11, seed=2),),
                             dynamic_shapes={"x": {0: dim("batch"), 2: dim("height"), 3: dim("width")}})
    for n, h, w in [(2, 9, 11), (3, 13, 17), (1, 1, 1)]:
        x = rand(n, 16, h, w, seed=h)
        torch.testing.assert_close(ep.module()(x), m(x))


def test_fx_trace():
    """Parameter-free: no submodule but the gate; the traced graph follows the size, 1×1 included."""
    m = SimAM(32)
    gm = torch.fx.symbolic_trace(m)
    fired = []
    m.gate.register_forward_hook(lambda *_: fired.append("gate"))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = rand(n, 32, h, w, seed=h, dtype=F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert fired == ["gate"]
