"""The public API surface and the registry's strictness."""

from __future__ import annotations

import pytest
import torch.nn as nn

import plugattn
from plugattn.cli import main

# Names users rely on (DESIGN.md); removing one must fail this test.
API = {"list_modules", "info", "get", "create", "from_official", "list_official", "register", "LayerType", "ModuleInfo",
       "insert", "inserted", "capture", "compose", "Squeeze", "Excite", "Gate", "Reweight"}


def test_api_surface():
    assert API <= set(plugattn.__all__)
    for name in plugattn.__all__:
        assert hasattr(plugattn, name), name


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


def test_from_official_rejects_wrong_state_dict():
    import torch

    sd = plugattn.from_official("se", None, channels=64).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="extra.weight"):
        plugattn.from_official("se", sd, channels=64)
    sd.pop("extra.weight")
    sd.pop("fc1.bias")
    with pytest.raises(KeyError, match="lacks"):
        plugattn.from_official("se", sd, channels=64)


def test_cli_list(capsys):
    assert main(["list", "--channels", "32", "--size", "7", "5"]) == 0
    out = capsys.readouterr().out
    for name in plugattn.list_modules():
        assert f"\n{name} " in out
