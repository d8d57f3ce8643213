"""Presets (plugattn/space/presets.py): each equals its named module with the named module's weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.fx

import plugattn
from helpers import assert_matches_reference, rand, randomize_
from plugattn.space import PRESETS, list_presets, load_named_state_dict, preset, space_table
from plugattn.space.presets import SPACE_MAP

C = 32
SHAPES = [(2, 7, 5), (1, 1, 1), (3, 13, 17), (2, 4, 4)]


def _x(n=2, c=C, h=7, w=5, seed=0, dtype=torch.float32):
    return rand(n, c, h, w, seed=seed, dtype=dtype) + rand(n, c, 1, 1, seed=seed + 100, dtype=dtype)


PRESET_CASES = [
    ("se", {}), ("se", {"bias": False}), ("se", {"rd_divisor": 8}), ("se", {"add_maxpool": True}),
    ("se", {"norm_layer": "batchnorm", "act_layer": "silu", "gate_layer": "hard_sigmoid", "rd_ratio": 1 / 4}),
    ("eca", {}), ("eca", {"kernel_size": 5}), ("eca", {"kernel_size": 1}), ("eca", {"gate_layer": "hard_sigmoid"}),
    ("cbam_channel", {}), ("cbam_channel", {"pool_types": ("avg", "max", "lp", "lse")}),
    ("cbam_channel", {"pool_types": ("max",), "rd_ratio": 1 / 4, "bias": False}),
    ("cbam_spatial", {}), ("cbam_spatial", {"kernel_size": 3}),
    ("cbam", {}), ("cbam", {"no_spatial": True}), ("cbam", {"kernel_size": 5, "pool_types": ("lse", "avg")}),
    ("coord", {}), ("coord", {"rd_ratio": 1 / 4}), ("coord", {"rd_channels": 5, "bias": False, "act_layer": "silu"}),
    ("srm", {}),
    ("fca", {}), ("fca", {"dct_h": 14, "dct_w": 14, "freq_sel_method": "low8"}),
    ("gc", {}), ("gc", {"use_attn": False}), ("gc", {"fuse_add": False, "fuse_scale": True, "rd_ratio": 1 / 4}),
]
CASE_IDS = [f"{n}-{i}" for i, (n, _) in enumerate(PRESET_CASES)]


def _named_and_preset(name: str, kwargs: dict, c: int = C, seed: int = 0):
    named_key = PRESETS[name].named
    assert named_key in plugattn.list_modules(), f"preset {name!r} names an unregistered module {named_key!r}"
    torch.manual_seed(seed)
    named = randomize_(plugattn.create(named_key, c, **kwargs), seed=seed)
    p = preset(name, c, **kwargs)
    load_named_state_dict(p, name, named.state_dict())
    return named, p


@pytest.mark.parametrize("name,kwargs", PRESET_CASES, ids=CASE_IDS)
def test_preset_equals_named_module(name, kwargs):
    named, p = _named_and_preset(name, kwargs)
    assert sum(t.numel() for t in p.parameters()) == sum(t.numel() for t in named.parameters())
    named.eval(), p.eval()
    assert_matches_reference(p, named, SHAPES, C, dtype=torch.float32, tol=(1e-5, 1e-5), grad=False,
                             seeds=lambda i, s: (i, 0), make_x=lambda shape, seed: _x(*shape, seed=seed))
    x = _x(2, C, 6, 5, seed=9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(p).double()(x), copy.deepcopy(named).double()(x),
                                   atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["cbam_spatial", "coord", "srm", "se"])
def test_preset_equals_named_module_in_training(name):
    """Batch statistics too: the norms see the same tensors (Coordinate Attention's BN sees H and W together)."""
    kwargs = {"norm_layer": "batchnorm"} if name == "se" else {}
    named, p = _named_and_preset(name, kwargs)
    named.train(), p.train()
    x = _x(4, C, 6, 5, seed=3).requires_grad_()
    y_named = named(x)
    y_p = p(x)
    torch.testing.assert_close(y_p, y_named, atol=1e-5, rtol=1e-5)
    g = rand(*x.shape, seed=4)
    gx_named, = torch.autograd.grad(y_named, x, g)
    gx_p, = torch.autograd.grad(y_p, x, g)
    torch.testing.assert_close(gx_p, gx_named, atol=1e-5, rtol=1e-5)
    sd_named = {k: v for k, v in named.state_dict().items() if "running" in k}
    sd_p = p.state_dict()
    for k, v in sd_named.items():
        torch.testing.assert_close(sd_p[PRESETS[name].key_map(k)], v)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_fx_and_hooks(name):
    p = randomize_(preset(name, C), seed=5).eval()
    gm = torch.fx.symbolic_trace(p)
    for i, (n, h, w) in enumerate(SHAPES):
        x = _x(n, C, h, w, seed=10 + i)
        torch.testing.assert_close(gm(x), p(x))
    owners = [mod for mod in p.modules() if any(True for _ in mod.parameters(recurse=False))]
    fired = set()
    for mod in owners:
        mod.register_forward_hook(lambda mod, args, out: fired.add(id(mod)))
    p(_x(seed=20))
    assert owners and fired == {id(mod) for mod in owners}


def test_every_preset_has_a_case_and_a_named_module():
    assert {n for n, _ in PRESET_CASES} == set(list_presets())
    assert {"se", "eca", "cbam_channel", "cbam_spatial", "coord"} <= set(list_presets())
    with pytest.raises(ValueError, match="expected one of"):
        preset("nope", 16)
    with pytest.raises(ValueError, match="unknown preset"):
        load_named_state_dict(preset("se", 16), "nope", {})


def test_gc_preset_rejects_both_fusions():
    with pytest.raises(ValueError, match="one pipeline"):
        preset("gc", 32, fuse_add=True, fuse_scale=True)


def test_load_named_state_dict_is_strict():
    """An unknown key, a missing tensor and a wrong shape each raise an error naming the key."""
    sd = {k: v.clone() for k, v in plugattn.create("se", 32).state_dict().items()}
    with pytest.raises(KeyError, match="'extra.weight' maps to 'excite.extra.weight'"):
        load_named_state_dict(preset("se", 32), "se", {**sd, "extra.weight": torch.zeros(1)})
    missing = {k: v for k, v in sd.items() if k != "fc1.bias"}
    with pytest.raises(KeyError, match=r"lacks the tensors for \['excite.fc1.bias'\]"):
        load_named_state_dict(preset("se", 32), "se", missing)
    with pytest.raises(ValueError, match="'fc1.weight' has shape"):
        load_named_state_dict(preset("se", 32), "se", {**sd, "fc1.weight": torch.zeros(3, 32)})
    p = load_named_state_dict(preset("se", 32), "se", sd)  # the complete state_dict loads
    torch.testing.assert_close(p.excite.fc2.weight.flatten(1), sd["fc2.weight"].flatten(1))


# --- where every registered module sits in the space ------------------------------------------------------------------


def test_space_map_covers_every_registered_module():
    table = space_table()
    missing = [n for n in plugattn.list_modules() if n not in SPACE_MAP]
    assert not missing, f"add {missing} to plugattn.space.presets.SPACE_MAP and regenerate docs/space.md"
    assert "not mapped yet" not in table
    assert "| `se` | channel |" in table and "| `se` |" in space_table(["se"])


def test_docs_space_table_is_current():
    doc = (Path(__file__).parents[2] / "docs" / "space.md").read_text()
    assert space_table() in doc, "regenerate the table in docs/space.md with plugattn.space.space_table()"
