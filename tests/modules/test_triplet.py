"""Triplet Attention and its Z-pool gate against the official permute-based formulation.

The reference below is plain PyTorch written from SPEC.md §5 (landskape-ai/triplet-attention
``triplet_attention.py``): it rotates ``x`` with ``permute(...).contiguous()``, applies the official
``AttentionGate`` (Z-pool [max; mean] over dim 1, 7×7 conv, BN, σ, x·σ) to each rotated copy, rotates the gated
copies back and averages them with the Python float 1/3 (1/2 with ``no_spatial``). Our modules are built through
``from_official`` from random official state_dicts.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import plugattn
from helpers import TOL, param_leaves, rand, randomize_
from plugattn._layers import Gate, ZPoolGate
from plugattn.modules.triplet import TripletAttention

F64 = torch.float64
CL = torch.channels_last

# ---------------------------------------------------------------------------------------------------------------
# random official state_dicts


def official_basic_conv(g: torch.Generator, prefix: str, k: int = 7) -> dict[str, Tensor]:
    """``BasicConv(2, 1, k, relu=False)``: a bias-free conv 2 → 1 and its BN (momentum 0.01)."""
    return {
        prefix + "conv.weight": 0.3 * torch.randn(1, 2, k, k, generator=g),
        prefix + "bn.weight": 0.5 + torch.rand(1, generator=g),
        prefix + "bn.bias": 0.3 * torch.randn(1, generator=g),
        prefix + "bn.running_mean": 0.2 * torch.randn(1, generator=g),
        prefix + "bn.running_var": 0.5 + torch.rand(1, generator=g),
        prefix + "bn.num_batches_tracked": torch.tensor(7),
    }


def official_triplet(seed: int, no_spatial: bool, k: int = 7, models: bool = False) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    names = ("ChannelGateH.spatial.", "ChannelGateW.spatial.", "SpatialGate.spatial.") if models else \
        ("cw.conv.", "hc.conv.", "hw.conv.")
    sd: dict[str, Tensor] = {}
    for name in names[:2] if no_spatial else names:
        sd.update(official_basic_conv(g, name, k))
    return sd


def cast(sd: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


# ---------------------------------------------------------------------------------------------------------------
# the independent reference (SPEC.md §5)


def ref_gate_map(t: Tensor, sd: dict[str, Tensor], p: str, training: bool = False) -> Tensor:
    """Official AttentionGate's σ map: ZPool [max; mean] over dim 1 → conv (no bias) → BN → σ."""
    z = torch.cat((torch.max(t, 1)[0].unsqueeze(1), torch.mean(t, 1).unsqueeze(1)), dim=1)
    k = sd[p + "conv.weight"].shape[-1]
    z = F.conv2d(z, sd[p + "conv.weight"], padding=(k - 1) // 2)
    z = F.batch_norm(z, sd[p + "bn.running_mean"], sd[p + "bn.running_var"], sd[p + "bn.weight"],
                     sd[p + "bn.bias"], training=training, momentum=0.01, eps=1e-5)
    return torch.sigmoid(z)


def ref_triplet(x: Tensor, sd: dict[str, Tensor], no_spatial: bool, training: bool = False) -> Tensor:
    """The official permute-based formulation."""
    x_perm1 = x.permute(0, 2, 1, 3).contiguous()  # (N, H, C, W)
    x_out11 = (x_perm1 * ref_gate_map(x_perm1, sd, "cw.conv.", training)).permute(0, 2, 1, 3).contiguous()
    x_perm2 = x.permute(0, 3, 2, 1).contiguous()  # (N, W, H, C)
    x_out21 = (x_perm2 * ref_gate_map(x_perm2, sd, "hc.conv.", training)).permute(0, 3, 2, 1).contiguous()
    if no_spatial:
        return 1 / 2 * (x_out11 + x_out21)
    x_out = x * ref_gate_map(x, sd, "hw.conv.", training)
    return 1 / 3 * (x_out + x_out11 + x_out21)


def close(got: Tensor, want: Tensor) -> None:
    atol, rtol = TOL[want.dtype]
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)


def make_input(shape, dtype=torch.float32, seed=1) -> Tensor:
    n, c = shape[:2]
    return rand(*shape, seed=seed, dtype=dtype) + rand(n, c, 1, 1, seed=seed + 100, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# Triplet

TRIPLET_CASES = [  # (no_spatial, kernel size, input shape, dtype)
    (False, 7, (3, 16, 8, 8), torch.float32),
    (False, 7, (1, 5, 13, 17), torch.float32),
    (True, 7, (2, 7, 5, 9), F64),
    (False, 3, (2, 3, 1, 1), torch.float32),
    (False, 3, (1, 12, 4, 11), F64),
    (True, 3, (2, 8, 6, 1), torch.float32),
    (False, 7, (2, 64, 28, 28), torch.float32),
    (False, 7, (1, 16, 56, 21), torch.float32),
]


@pytest.mark.parametrize("no_spatial,k,shape,dtype", TRIPLET_CASES, ids=str)
def test_triplet_matches_permute_reference(no_spatial, k, shape, dtype):
    sd = cast(official_triplet(k + shape[1], no_spatial, k), dtype)
    kw = {"kernel_size": k} if k != 7 else {}
    m = plugattn.from_official("triplet", sd, no_spatial=no_spatial, **kw).to(dtype).eval()
    assert isinstance(m, TripletAttention) and m.channels is None and (m.hw is None) == no_spatial
    x = make_input(shape, dtype)
    with torch.no_grad():
        want = ref_triplet(x, sd, no_spatial)
        close(m(x), want)
        y_cl = m(x.contiguous(memory_format=CL))
        close(y_cl, want)
        assert y_cl.is_contiguous(memory_format=CL)
        close(m(x.transpose(2, 3).contiguous().transpose(2, 3)), want)  # non-contiguous


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL], ids=str)
@pytest.mark.parametrize("shape", [(2, 5, 7, 6), (1, 3, 1, 1), (2, 4, 3, 9)], ids=str)
def test_triplet_gradients_match_reference(no_spatial, memory_format, shape):
    sd = cast(official_triplet(8, no_spatial), F64)
    m = plugattn.from_official("triplet", sd, no_spatial=no_spatial).double().eval()
    ref_sd = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in sd.items()}
    x = make_input(shape, F64).contiguous(memory_format=memory_format)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = rand(*shape, seed=3, dtype=F64)
    y1, y2 = m(x1), ref_triplet(x2, ref_sd, no_spatial)
    close(y1, y2)
    assert y1.is_contiguous(memory_format=memory_format)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    close(x1.grad, x2.grad)
    params = dict(m.named_parameters())
    for key in ("cw.conv.conv.weight", "hc.conv.conv.weight", "hc.conv.bn.bias") + (
            () if no_spatial else ("hw.conv.conv.weight", "hw.conv.bn.weight")):
        close(params[key].grad, ref_sd[key].grad)  # our keys are the official ones


def test_triplet_train_mode_batch_norm_momentum():
    sd = official_triplet(6, False)
    m = plugattn.from_official("triplet", sd).train()
    ref_sd = copy.deepcopy(sd)
    x = make_input((4, 8, 6, 5))
    with torch.no_grad():
        close(m(x), ref_triplet(x, ref_sd, False, training=True))
    for b in ("cw", "hc", "hw"):
        close(getattr(m, b).conv.bn.running_mean, ref_sd[f"{b}.conv.bn.running_mean"])
        close(getattr(m, b).conv.bn.running_var, ref_sd[f"{b}.conv.bn.running_var"])
        assert not torch.equal(getattr(m, b).conv.bn.running_mean, sd[f"{b}.conv.bn.running_mean"])


@pytest.mark.parametrize("no_spatial", [False, True])
def test_triplet_models_key_renaming(no_spatial):
    sd = official_triplet(21, no_spatial, models=True)
    m = plugattn.from_official("triplet_models", sd, gate_channels=16, reduction_ratio=16,
                               pool_types=["avg", "max"], no_spatial=no_spatial).eval()
    ref_sd = {k.replace("ChannelGateH.spatial.", "cw.conv.").replace("ChannelGateW.spatial.", "hc.conv.")
              .replace("SpatialGate.spatial.", "hw.conv."): v for k, v in sd.items()}
    x = make_input((2, 9, 13, 17))  # any channel count: gate_channels is unused officially
    with torch.no_grad():
        close(m(x), ref_triplet(x, ref_sd, no_spatial))


def test_triplet_attention_maps_orientation():
    """Each branch's Gate output is the official gate in the official orientation: (C, W), (H, C), (H, W)."""
    sd = official_triplet(4, False)
    m = plugattn.from_official("triplet", sd).eval()
    maps: dict[str, Tensor] = {}
    for name in ("cw", "hc", "hw"):
        getattr(m, name).gate.register_forward_hook(lambda mod, i, o, name=name: maps.__setitem__(name, o))
    x = make_input((2, 6, 5, 9))
    with torch.no_grad():
        m(x)
        close(maps["cw"], ref_gate_map(x.permute(0, 2, 1, 3), sd, "cw.conv."))  # (N, 1, C, W)
        close(maps["hc"], ref_gate_map(x.permute(0, 3, 2, 1), sd, "hc.conv."))  # (N, 1, H, C)
        close(maps["hw"], ref_gate_map(x, sd, "hw.conv."))  # (N, 1, H, W)
    assert maps["cw"].shape == (2, 1, 6, 9) and maps["hc"].shape == (2, 1, 5, 6) and maps["hw"].shape == (2, 1, 5, 9)


class _FullSizeOutputs(TorchDispatchMode):
    """Counts the ops inside the ``with`` block whose output has ``numel`` elements."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor) and t.numel() == self.numel:
                self.count += 1
        return out


def test_triplet_rotates_only_pooled_maps():
    """Pool first, rotate the pooled maps: three full-size results (two sums of weights, x · w), no rotated copies
    of x (the permute form makes ten: four rotations, three gated copies, two sums and the scaling)."""
    m = TripletAttention().eval()
    x = make_input((2, 8, 6, 5))
    with torch.no_grad():
        with _FullSizeOutputs(x.numel()) as ours:
            m(x)
        with _FullSizeOutputs(x.numel()) as permute:
            ref_triplet(x, {k: v for k, v in m.state_dict().items()}, False)
    assert ours.count == 3 and permute.count >= 10


def test_triplet_is_channel_agnostic_and_checks_given_channels():
    m = TripletAttention().eval()
    with torch.no_grad():
        for c in (1, 3, 17):
            assert m(rand(2, c, 5, 4)).shape == (2, c, 5, 4)
    with pytest.raises(ValueError, match="TripletAttention.*16 channels"):
        TripletAttention(16)(rand(2, 15, 5, 4))
    assert sum(p.numel() for p in m.parameters()) == 3 * (2 * 49 + 2)
    assert [b.dim for b in (m.cw, m.hc, m.hw)] == [2, 3, 1]
    assert sum(isinstance(mod, Gate) for mod in m.modules()) == 3


def test_state_dict_keys_and_extra_repr():
    shapes = {k: tuple(v.shape) for k, v in TripletAttention(kernel_size=3).state_dict().items()}
    assert shapes == {f"{b}.conv.{k}": s for b in ("cw", "hc", "hw") for k, s in (
        ("conv.weight", (1, 2, 3, 3)), ("bn.weight", (1,)), ("bn.bias", (1,)), ("bn.running_mean", (1,)),
        ("bn.running_var", (1,)), ("bn.num_batches_tracked", ()))}
    assert "channels=16, kernel_size=7, no_spatial=True" in repr(TripletAttention(16, no_spatial=True))
    assert "dim=3, kernel_size=7" in repr(TripletAttention().hc)


# ---------------------------------------------------------------------------------------------------------------
# the Z-pool gate


@pytest.mark.parametrize("dim,perm", [(1, (0, 1, 2, 3)), (2, (0, 2, 1, 3)), (3, (0, 3, 2, 1))])
@pytest.mark.parametrize("shape", [(2, 6, 5, 9), (1, 3, 1, 1), (2, 1, 4, 7)], ids=str)
def test_zpool_gate_is_the_rotated_official_gate(dim, perm, shape):
    """ZPoolGate(dim) = the official gate map of x rotated by ``perm``, rotated back (values and gradients)."""
    g = randomize_(ZPoolGate(dim=dim, kernel_size=5), seed=dim).double().eval()
    sd = g.conv.state_dict()  # conv.weight, bn.*: the official BasicConv keys
    x = make_input(shape, F64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    w1, w2 = g(x1), ref_gate_map(x2.permute(perm), sd, "").permute(perm)
    close(w1, w2)
    out = list(shape)
    out[dim] = 1
    assert w1.shape == tuple(out)
    gy = rand(*out, seed=2, dtype=F64)
    (w1 * gy).sum().backward()
    (w2 * gy).sum().backward()
    close(x1.grad, x2.grad)


@pytest.mark.parametrize("module", [TripletAttention(12), TripletAttention(no_spatial=True, kernel_size=3),
                                    ZPoolGate(dim=3)], ids=str)
def test_fx_trace_and_hooks(module):
    m = randomize_(module).double().eval()
    gm = torch.fx.symbolic_trace(m)
    leaves = list(param_leaves(m))
    assert leaves
    fired: list[str] = []
    for name in leaves:
        m.get_submodule(name).register_forward_hook(lambda *_, name=name: fired.append(name))
    for n, h, w in [(2, 7, 5), (1, 1, 1)]:
        x = make_input((n, 12, h, w), F64)
        traced = gm(x)
        fired.clear()
        torch.testing.assert_close(traced, m(x), atol=1e-12, rtol=1e-12)
        assert sorted(fired) == sorted(leaves)


def test_export_with_dynamic_size_matches_eager():
    """torch.export with symbolic H, W: no size-dependent path is baked into the graph."""
    m = randomize_(plugattn.create("triplet", 8)).eval()
    h, w = torch.export.Dim("h", min=2, max=64), torch.export.Dim("w", min=2, max=64)
    ep = torch.export.export(m, (rand(2, 8, 9, 7),), dynamic_shapes=({2: h, 3: w},))
    x = rand(2, 8, 28, 13, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("k", [0, 4, 2.0])
def test_bad_kernel_size(k):
    with pytest.raises(ValueError, match="TripletAttention.*kernel_size"):
        TripletAttention(16, kernel_size=k)
    with pytest.raises(ValueError, match="ZPoolGate.*kernel_size"):
        ZPoolGate(kernel_size=k)


def test_bad_arguments():
    for dim in (0, 4, True):
        with pytest.raises(ValueError, match="ZPoolGate.*dim"):
            ZPoolGate(dim=dim)
    with pytest.raises(ValueError, match="TripletAttention.*channels"):
        TripletAttention(0)
    with pytest.raises(TypeError, match="TripletAttention"):
        TripletAttention()(torch.ones(1, 3, 4, 4, dtype=torch.int32))


def test_bad_official_arguments():
    with pytest.raises(ValueError, match="shape"):  # a k = 7 checkpoint into a k = 3 module
        plugattn.from_official("triplet", official_triplet(0, False), kernel_size=3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        plugattn.from_official("triplet", official_triplet(0, False), gate_channels=16)
