"""The public API surface and the registry's strictness."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.nn as nn

import plugattn

# Names users rely on (DESIGN.md); removing one must fail this test.
API = {"list_modules", "info", "get", "create", "from_official", "list_official", "register", "LayerType", "ModuleInfo",
       "insert", "inserted", "capture", "compose", "Squeeze", "Excite", "Gate", "Reweight"}


def test_api_surface():
    assert API <= set(plugattn.__all__)
    for name in plugattn.__all__:
        assert hasattr(plugattn, name), name


def test_api_snapshot():
    """``plugattn.__all__`` equals the reviewed snapshot: adding or removing a public name is a decision."""
    snapshot = (Path(__file__).parent / "api_snapshot.txt").read_text().split()
    assert sorted(plugattn.__all__) == snapshot


def test_registry_lookup_and_errors():
    names = plugattn.list_modules()
    assert names == sorted(names) and {"se", "eca"} <= set(names)
    assert plugattn.get("se") is plugattn.SqueezeExcite
    assert isinstance(plugattn.create("eca", 64), nn.Module)
    meta = plugattn.info("se")
    assert meta.year == 2018 and "arxiv" in meta.url
    with pytest.raises(ValueError, match="expected one of"):
        plugattn.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        plugattn.register("se", paper="p", year=2000, url="u", kind="channel")(nn.Identity)
    with pytest.raises(ValueError, match="expected one of"):
        plugattn.from_official("nope", {})


def test_bad_layer_names_are_reported():
    with pytest.raises(ValueError, match="act_layer"):
        plugattn.create("se", 64, act_layer="nonexistent")
    with pytest.raises(ValueError, match="gate_layer"):
        plugattn.create("se", 64, gate_layer="nonexistent")
