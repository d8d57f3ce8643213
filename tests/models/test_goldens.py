"""Every shipped whole-network golden: from_official(KEY, official state_dict) reproduces the official output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import plugattn
from helpers import network_golden

CASES = sorted((Path(__file__).parents[1] / "goldens" / "networks").glob("*.pt"))


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_network_golden(path):
    g = network_golden(path)
    model = plugattn.from_official(g["key"], g["state_dict"]).eval()
    with torch.no_grad():
        y = model(g["input"].clone())
    if isinstance(y, (tuple, list)):
        y = y[g["select"].get("index", 0)]
    if g["select"].get("slice"):
        y = y[tuple(slice(*s) if s is not None else slice(None) for s in g["select"]["slice"])]
    want = g["output"]
    if g["key"] == "sknet50":  # NETWORKS.md: logits instead of the official softmax
        y = y.softmax(-1)
    assert y.shape == want.shape
    rel = ((y.double() - want.double()).abs().max() / want.double().abs().max()).item()
    assert rel <= 1e-4, f"{g['key']}: relative max difference {rel:.3g}"
