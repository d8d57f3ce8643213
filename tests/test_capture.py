"""capture(): the weights every Gate applies, position-attention rows for chosen queries, no side effects."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import plugattn
from helpers import as_tuple, build, channel_counts, rand, randomize_
from plugattn._layers import Gate
from plugattn.analysis.capture import capture, query_indices
from plugattn.integrate import insert


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", plugattn.list_modules())
def test_every_module_outputs_unchanged_and_maps_recorded(name):
    m = build(name)
    c = channel_counts(name)[0]
    x = rand(2, c, 7, 5, seed=1)
    with torch.no_grad():
        ref = as_tuple(m(x))
        with capture(m) as maps:
            out = as_tuple(m(x))
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
    gates = {p for p, sub in m.named_modules() if isinstance(sub, Gate)}
    assert maps and {k.split("#")[0] for k in maps} <= gates
    for v in maps.values():
        assert not v.requires_grad and v.shape[0] == 2  # the module's batch, groups unfolded
    full = [k for k, v in maps.items() if v.shape[-2:] == (7 * 5, 7 * 5)]
    assert not full, f"{name}: capture recorded a whole HW x HW matrix at {full}"
    assert no_hooks(m)


def test_se_channel_weights_match_reference():
    m = randomize_(plugattn.create("se", 16), seed=2).eval()
    x = rand(3, 16, 6, 5, seed=3)
    with torch.no_grad(), capture(m) as maps:
        m(x)
        s = x.mean((2, 3), keepdim=True)
        ref = torch.sigmoid(F.conv2d(F.relu(F.conv2d(s, m.fc1.weight, m.fc1.bias)), m.fc2.weight, m.fc2.bias))
    assert list(maps) == ["gate"]
    torch.testing.assert_close(maps["gate"], ref.flatten(1), atol=1e-6, rtol=1e-6)  # (N, C)


def _pam_rows(m: nn.Module, x: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """softmax_j(q_iᵀ k_j) for the query positions idx, from the 1x1 conv weights (no 1/sqrt(d))."""
    q = torch.einsum("oc,nchw->nohw", m.query.weight[:, :, 0, 0], x) + m.query.bias[:, None, None]
    k = torch.einsum("oc,nchw->nohw", m.key.weight[:, :, 0, 0], x) + m.key.bias[:, None, None]
    q, k = q.flatten(2)[:, :, idx], k.flatten(2)  # (N, C', I), (N, C', HW)
    return torch.softmax(torch.einsum("nci,ncj->nij", q, k), dim=-1)


@pytest.mark.parametrize("query", [None, (0, 0), [(0, 0), (4, 2), (-1, -1)], (0.5, 0.99)], ids=str)
def test_position_attention_rows(query):
    m = randomize_(plugattn.create("danet_pam", 16), seed=4, scale=0.3).eval()
    x = rand(2, 16, 7, 5, seed=5)
    with torch.no_grad(), capture(m, query=query) as maps:
        y = m(x)
    assert torch.equal(y, m(x).detach())
    if isinstance(query, list):
        expected_idx = [0, 4 * 5 + 2, 6 * 5 + 4]  # (-1, -1) is the last row and column
    else:
        expected_idx = {None: [3 * 5 + 2], (0, 0): [0], (0.5, 0.99): [3 * 5 + 4]}[query]
    assert query_indices(query, 7, 5) == expected_idx
    rows = maps["gate"]
    assert rows.shape == (2, len(expected_idx), 7, 5)
    torch.testing.assert_close(rows.flatten(2).sum(-1), torch.ones(2, len(expected_idx)))
    torch.testing.assert_close(rows.flatten(2), _pam_rows(m, x, expected_idx), atol=1e-6, rtol=1e-5)


def test_network_with_several_modules():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10).eval()
    insert(model, "se", zero_init=True)
    insert(model, "danet_pam", where=["layer3.1", "layer4.0"])
    x = rand(2, 3, 64, 64, seed=6)
    with torch.no_grad():
        ref = model(x)
        with capture(model, query=(1, 1)) as maps:
            out = model(x)
    assert torch.equal(out, ref) and no_hooks(model)
    se_keys = [k for k in maps if maps[k].dim() == 2]
    assert len(se_keys) == 8 and all(k.endswith("attn.gate") and "attn.attn" not in k for k in se_keys)
    pam = {k: v for k, v in maps.items() if k not in se_keys}
    assert sorted(pam) == ["layer3.1.bn2.attn.gate", "layer4.0.bn2.attn.gate"]  # wraps the SE-wrapped bn2
    assert pam["layer3.1.bn2.attn.gate"].shape == (2, 1, 4, 4)  # 64 / 16
    assert pam["layer4.0.bn2.attn.gate"].shape == (2, 1, 2, 2)
    # the maps are of this forward: a second forward replaces them
    with torch.no_grad(), capture(model) as maps2:
        model(rand(2, 3, 64, 64, seed=7))
        model(x)
    for k in se_keys:
        assert torch.equal(maps2[k], maps[k])


def test_hooks_removed_on_error_and_no_recording_outside():
    m = plugattn.create("eca", 16).eval()
    with pytest.raises(RuntimeError, match="boom"):
        with capture(m) as maps:
            m(rand(1, 16, 4, 4))
            raise RuntimeError("boom")
    assert no_hooks(m)
    n = len(maps)
    maps.clear()
    m(rand(1, 16, 4, 4))
    assert maps == {} and n == 1


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        with capture("net"):
            pass
    with pytest.raises(ValueError, match="fraction"):
        with capture(plugattn.create("se", 8), query=(1.5, 0.0)):
            pass
    with pytest.raises(TypeError, match="query"):
        query_indices("centre", 4, 4)


@pytest.mark.parametrize("sub_sample", [False, True])
def test_non_local_rows_not_matrix(sub_sample):
    """Non-local records rows for the query (explicit softmax of θᵀφ / √C'), never its HW × S blocks."""
    m = randomize_(plugattn.create("non_local", 16, sub_sample=sub_sample), seed=6, scale=0.3).eval()
    x = rand(2, 16, 8, 6, seed=7)
    with torch.no_grad(), capture(m, query=(2, 3)) as maps:
        y = m(x)
    assert torch.equal(y, m(x).detach())
    theta = m.theta(x).flatten(2)[:, :, [2 * 6 + 3]]  # (N, C', 1)
    src = torch.nn.functional.max_pool2d(x, 2) if sub_sample else x
    phi = m.phi(src)
    if sub_sample and m.sub_sample_after_proj:
        phi = torch.nn.functional.max_pool2d(m.phi(x), 2)
    expected = torch.softmax(torch.einsum("nci,ncj->nij", theta, phi.flatten(2)) * m.scale, dim=-1)
    rows = maps["gate"]
    grid = (4, 3) if sub_sample else (8, 6)
    assert rows.shape == (2, 1, *grid)
    torch.testing.assert_close(rows.flatten(2), expected.detach(), atol=1e-6, rtol=1e-5)


LAYOUTS = {  # module → {gate path: shape of its map} for input (2, 16, 7, 5)
    "se": {"gate": (2, 16)},
    "cbam": {"channel.gate": (2, 16), "spatial.attn.gate": (2, 7, 5)},
    "coord": {"gate_h": (2, 16, 7), "gate_w": (2, 16, 5)},
    "sk": {"gate": (2, 2, 16)},
    "ema": {"channel_gate": (2, 16), "channel_gate#2": (2, 16)},
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_one_layout_per_kind(name):
    m = build(name, 16)
    with torch.no_grad(), capture(m) as maps:
        m(rand(2, 16, 7, 5, seed=8))
    got = {k: tuple(v.shape) for k, v in maps.items() if k in LAYOUTS[name]}
    assert got == LAYOUTS[name], {k: tuple(v.shape) for k, v in maps.items()}


def test_coordinate_maps_are_the_applied_weights():
    m = build("coord", 16)
    x = rand(2, 16, 7, 5, seed=9)
    with torch.no_grad(), capture(m) as maps:
        y = m(x)
    torch.testing.assert_close(y, x * maps["gate_h"][..., None] * maps["gate_w"][:, :, None, :])


def test_every_call_is_kept():
    m = build("ema", 16)
    with torch.no_grad(), capture(m) as maps:
        m(rand(2, 16, 7, 5, seed=10))
        n = len(maps)
        m(rand(2, 16, 7, 5, seed=11))  # a second forward replaces, it does not add
    assert len(maps) == n and any("#2" in k for k in maps)


def test_overlay():
    from plugattn.analysis.capture import overlay

    img = torch.zeros(1, 8, 8)
    a = torch.zeros(2, 2)
    a[0, 0] = 1.0  # high attention top-left: red there, blue bottom-right
    out = overlay(img, a, alpha=1.0)
    assert out.shape == (3, 8, 8) and out.min() >= 0 and out.max() <= 1
    assert out[0, 0, 0] > out[2, 0, 0] and out[2, -1, -1] > out[0, -1, -1]
    with pytest.raises(ValueError, match="attention"):
        overlay(img, torch.zeros(1, 2, 2))
