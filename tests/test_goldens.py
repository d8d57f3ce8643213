"""Every golden case from the official implementations is reproduced through ``from_official``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import plugattn
from helpers import as_tuple

GOLDENS = sorted((Path(__file__).parent / "goldens").glob("*.pt"))

# Case-name prefix → from_official key (tests/goldens/README.md).
PREFIX_TO_KEY = {
    "se_timmlegacy": "se", "se_moskomule": "se_moskomule", "se_timm": "se_timm",
    "sk_ppplang": "sk", "sk_dexter": "sk_caffe", "sk_timm": "sk_timm",
    "cbam": "cbam", "cbam_channelgate": "cbam_channel", "cbam_spatialgate": "cbam_spatial",
    "coordatt": "coord", "coordatt_mbv2ca": "coord_mbv2",
    "triplet": "triplet", "triplet_models": "triplet_models",
    "danet_pam": "danet_pam", "danet_cam": "danet_cam", "danet_head": "danet_head",
    "sea_attn": "sea_attention", "sea_block": "sea_block", "eca": "eca",
}


def test_every_official_key_has_a_golden():
    keys = {PREFIX_TO_KEY[p.name.split("__")[0]] for p in GOLDENS}
    assert keys == set(PREFIX_TO_KEY.values())
    assert keys <= set(plugattn.list_official())


@pytest.mark.parametrize("path", GOLDENS, ids=[p.stem for p in GOLDENS])
def test_golden(path: Path):
    case = torch.load(path, weights_only=True)
    key = PREFIX_TO_KEY[path.name.split("__")[0]]
    x = case["input"]
    m = plugattn.from_official(key, case["state_dict"], **case["config"]["kwargs"]).to(x.dtype).eval()
    with torch.no_grad():
        y = as_tuple(m(x))
    expected = as_tuple(case["output"])
    assert len(y) == len(expected)
    tol = 1e-10 if x.dtype == torch.float64 else 1e-5
    for got, want in zip(y, expected):
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
