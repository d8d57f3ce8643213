"""The registered design-space variants ``cluster_se`` and ``eca_ms`` (plugattn/space/variants.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import rand, randomize_
from plugattn.space import ClusterSE, MultiScaleECA

C = 32
# odd and non-square sizes, 1×1, a batch of one
SHAPES = [(2, 7, 5), (1, 1, 1), (3, 13, 17), (1, 4, 9)]


def _x(n=2, c=C, h=7, w=5, seed=0, dtype=torch.float32):
    return rand(n, c, h, w, seed=seed, dtype=dtype) + rand(n, c, 1, 1, seed=seed + 100, dtype=dtype)


# --- independent references (plain formulas from the docstrings), evaluated with the module's weights ----------------


def ref_cluster_se(sd: dict, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """y = x·σ(Σ_j W₂ δ(W₁ d_j + b₁) + b₂), d_j = Σ_i a_ij x_i / Σ_i a_ij, a_ij = softmax_j(⟨x_i, μ_j⟩/√C)."""
    n, c, h, w = x.shape
    centres = sd["squeeze.centres"]  # (k, C)
    w1, b1 = sd["excite.fc1.weight"].flatten(1), sd["excite.fc1.bias"]
    w2, b2 = sd["excite.fc2.weight"].flatten(1), sd["excite.fc2.bias"]
    flat = x.reshape(n, c, h * w)  # (N, C, P)
    a = torch.softmax(torch.einsum("kc,ncp->nkp", centres, flat) / math.sqrt(c), dim=1)  # (N, k, P)
    logits = 0
    for j in range(centres.shape[0]):
        mass = a[:, j].sum(-1).clamp_min(eps)  # (N,)
        d = (flat * a[:, j:j + 1]).sum(-1) / mass[:, None]  # (N, C)
        logits = logits + F.linear(F.relu(F.linear(d, w1, b1)), w2, b2)
    return x * torch.sigmoid(logits).view(n, c, 1, 1)


def ref_eca_ms(sd: dict, x: torch.Tensor, fuse: str = "max") -> torch.Tensor:
    """y = x·σ(fuse_k conv1d_k(GAP(x))), each conv1d zero-padded to keep C, fuse = max, sum or mean."""
    n, c = x.shape[:2]
    s = x.mean((2, 3)).view(n, 1, c)
    ls = []
    for key in sorted(k for k in sd if k.endswith("conv.weight")):
        k = sd[key].shape[-1]
        ls.append(F.conv1d(s, sd[key], padding=(k - 1) // 2))
    stacked = torch.stack(ls)
    z = stacked.amax(0) if fuse == "max" else stacked.sum(0) if fuse == "sum" else stacked.mean(0)
    return x * torch.sigmoid(z).view(n, c, 1, 1)


VARIANTS = {
    "cluster_se": (lambda: ClusterSE(C, num_clusters=3), ref_cluster_se),
    "cluster_se_rd": (lambda: ClusterSE(C, rd_channels=5), ref_cluster_se),
    "eca_ms": (lambda: MultiScaleECA(C), ref_eca_ms),
    "eca_ms_sum": (lambda: MultiScaleECA(C, kernel_sizes=(3, 9), fuse="sum"), lambda sd, x: ref_eca_ms(sd, x, "sum")),
    "eca_ms_mean": (lambda: MultiScaleECA(C, kernel_sizes=(5,), fuse="mean"), lambda sd, x: ref_eca_ms(sd, x, "mean")),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_equals_reference(name):
    build, ref = VARIANTS[name]
    m = randomize_(build(), seed=1).double().eval()
    sd = m.state_dict()
    for i, (n, h, w) in enumerate(SHAPES):
        x = _x(n, C, h, w, seed=i, dtype=torch.float64)
        for xi in (x, x.to(memory_format=torch.channels_last)):
            xi = xi.detach().requires_grad_()
            y, y_ref = m(xi), ref(sd, xi)
            torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
            if h * w > 1 and xi.is_contiguous(memory_format=torch.channels_last):
                assert y.is_contiguous(memory_format=torch.channels_last)
            g = rand(*x.shape, seed=10 + i, dtype=torch.float64)
            gx, = torch.autograd.grad(y, xi, g)
            gx_ref, = torch.autograd.grad(y_ref, xi, g)
            torch.testing.assert_close(gx, gx_ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_fx_hooks(name):
    m = randomize_(VARIANTS[name][0](), seed=2).eval()
    gm = torch.fx.symbolic_trace(m)
    for i, (n, h, w) in enumerate(SHAPES):
        x = _x(n, C, h, w, seed=20 + i)
        torch.testing.assert_close(gm(x), m(x))
    owners = [mod for mod in m.modules() if any(True for _ in mod.parameters(recurse=False))]
    fired = set()
    for mod in owners:
        mod.register_forward_hook(lambda mod, args, out: fired.add(id(mod)))
    m(_x(seed=30))
    assert owners and fired == {id(mod) for mod in owners}


def test_registered_variants_and_reprs():
    assert {"cluster_se", "eca_ms"} <= set(plugattn.list_modules())
    assert plugattn.get("cluster_se") is ClusterSE and plugattn.get("eca_ms") is MultiScaleECA
    assert "channels=64, num_clusters=4, rd_channels=4" in repr(ClusterSE(64))
    assert "channels=64, kernel_sizes=(3, 5, 7), fuse='max'" in repr(MultiScaleECA(64))
    assert [b.conv.kernel_size[0] for b in MultiScaleECA(64, kernel_sizes=(3, 9)).excite.branches] == [3, 9]
    with pytest.raises(ValueError, match="MultiScaleECA.*kernel_sizes"):
        MultiScaleECA(C, kernel_sizes=())
    with pytest.raises(ValueError, match="ChannelConv.*odd"):
        MultiScaleECA(C, kernel_sizes=(3, 4))
    with pytest.raises(ValueError, match="ClusterSE.*channels"):
        ClusterSE(0)


def test_cluster_se_with_one_cluster_is_se():
    se = randomize_(plugattn.create("se", C), seed=1).eval()
    cse = ClusterSE(C, num_clusters=1).eval()
    cse.excite.load_state_dict(se.state_dict())
    x = _x(2, C, 6, 5, seed=10)
    with torch.no_grad():
        torch.testing.assert_close(cse(x), se(x), atol=1e-6, rtol=1e-6)


def test_cluster_se_separates_what_se_cannot():
    """Two inputs with the same per-channel mean (so SE gives the same weights) but different spatial
    structure: the soft-cluster squeeze tells them apart."""
    x_a = torch.zeros(1, C, 4, 4)
    x_a[:, :, :2] = 1.0  # half the positions at 1, half at 0 in every channel ...
    x_b = torch.full((1, C, 4, 4), 0.5)  # ... versus all at 0.5: equal means
    x_b[:, :C // 2] = x_a[:, :C // 2]
    se = randomize_(plugattn.create("se", C), seed=2).eval()
    cse = randomize_(ClusterSE(C, num_clusters=4), seed=2).eval()
    with torch.no_grad():
        se_w = [se(x) / x.clamp_min(1e-3) for x in (x_a, x_b)]  # x·w / x at the positions where x = 1 or 0.5
        torch.testing.assert_close(se_w[0][:, :, 0, 0], se_w[1][:, :, 0, 0])
        assert (cse.weights(x_a) - cse.weights(x_b)).abs().max() > 1e-3


def test_variants_export_and_compile():
    x = _x(2, C, 7, 9, seed=33)
    for m in (randomize_(ClusterSE(C), seed=1).eval(), randomize_(MultiScaleECA(C), seed=1).eval()):
        ep = torch.export.export(m, (x,))
        compiled = torch.compile(m, fullgraph=True, dynamic=False)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), m(x))
            torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_cluster_se_learns_what_se_cannot():
    """A two-class task whose classes have equal channel means (half the positions bright vs all at the
    mean): after a short training, SE stays at chance and the soft-cluster squeeze separates them."""
    c = 16

    def batch(n, g):
        y = torch.randint(0, 2, (n,), generator=g)
        x = 0.2 * torch.rand(n, c, 8, 8, generator=g)
        bright = (torch.rand(n, 1, 8, 8, generator=g) < 0.5).float()
        return torch.where(y.view(n, 1, 1, 1) == 1, x + bright, x + 0.5), y

    def accuracy(name):
        torch.manual_seed(1)
        g = torch.Generator().manual_seed(0)
        attn, head = plugattn.create(name, c, rd_channels=4), nn.Linear(c, 2)
        opt = torch.optim.Adam([*attn.parameters(), *head.parameters()], lr=1e-2)
        for _ in range(60):
            x, y = batch(32, g)
            loss = F.cross_entropy(head(attn(x).mean((2, 3))), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            x, y = batch(1000, g)
            return (head(attn.eval()(x).mean((2, 3))).argmax(1) == y).float().mean().item()

    assert accuracy("se") < 0.6
    assert accuracy("cluster_se") > 0.9
