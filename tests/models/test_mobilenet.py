"""CA-MobileNetV2 and ECA-MobileNetV2: architecture facts of NETWORKS.md §3.6, §3.8, and the backbone interface.

The CA-MobileNetV2 output is checked by the shipped golden (test_goldens.py). ECA-MobileNetV2 has no shipped
golden: its official state_dict layout (torchvision's names + 17 ``conv.{3,4}.conv.weight``) is rebuilt from the
spec and its output compared with torchvision's MobileNetV2 plus an independent ECA applied by forward hooks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

import plugattn
from plugattn.models import create_model, model_info

N_PARAMS = {"coord_mobilenet_v2": 3_950_648, "eca_mobilenet_v2": 3_504_903}
N_ENTRIES = {"coord_mobilenet_v2": 490, "eca_mobilenet_v2": 331}


def _random_state(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("weight", "bias", "running_mean")) and v.dim() <= 1:
            out[k] = torch.randn(v.shape, generator=g) * 0.2 + (1.0 if k.endswith("weight") else 0.0)
        else:
            fan_in = max(1, v[0].numel())
            out[k] = torch.randn(v.shape, generator=g) / fan_in**0.5
    return out


@pytest.mark.parametrize("key", sorted(N_PARAMS))
def test_counts_and_registry(key):
    model = create_model(key)
    assert sum(p.numel() for p in model.parameters()) == N_PARAMS[key]
    assert len(model.state_dict()) == N_ENTRIES[key]
    info = model_info(key)
    assert info.num_classes == 1000 and info.input_size == (3, 224, 224)
    assert key in plugattn.list_official()


def test_coord_placement():
    model = create_model("coord_mobilenet_v2")
    paths = [(i.site, i.path) for i in plugattn.inserted(model)]
    # every expanding block, after the depthwise Conv-BN-ReLU6
    assert paths == [(f"features.{i}", f"features.{i}.conv.1.attn") for i in range(2, 18)]
    mips = {i.channels: model.get_submodule(i.path).rd_channels for i in plugattn.inserted(model)}
    assert mips == {96: 8, 144: 8, 192: 8, 384: 12, 576: 18, 960: 30}


def _official_eca_keys(model: nn.Module) -> dict[str, str]:
    """Official ECANet key → ours: torchvision names, ECA at ``conv.3`` (block 1) / ``conv.4`` (blocks 2–17)."""
    out = {}
    for k in model.state_dict():
        if ".conv.attn." in k:
            i = int(k.split(".")[1])
            out[k.replace("conv.attn.", "conv.3." if i == 1 else "conv.4.")] = k
        else:
            out[k] = k
    return out


def test_eca_official_layout_and_output():
    ours = create_model("eca_mobilenet_v2")
    keys = _official_eca_keys(ours)
    assert "features.1.conv.3.conv.weight" in keys and "features.14.conv.4.conv.weight" in keys
    state = _random_state(ours)
    official_sd = {ok: state[k] for ok, k in keys.items()}
    assert tuple(official_sd["features.14.conv.4.conv.weight"].shape) == (1, 1, 3)
    assert tuple(official_sd["features.10.conv.4.conv.weight"].shape) == (1, 1, 1)
    model = plugattn.from_official("eca_mobilenet_v2", official_sd).eval()

    # reference: torchvision's MobileNetV2 + ECA on every block's projected output, by hooks
    ref = torchvision.models.mobilenet_v2().eval()
    eca_keys = {f"features.{i}.conv.{3 if i == 1 else 4}.conv.weight" for i in range(1, 18)}
    ref.load_state_dict({k: v for k, v in official_sd.items() if k not in eca_keys})

    def eca_hook(weight):
        def hook(mod, inp, out):
            s = out.mean((2, 3)).unsqueeze(1)  # (N, 1, C)
            k = weight.shape[-1]
            return out * torch.sigmoid(F.conv1d(s, weight, padding=(k - 1) // 2)).transpose(1, 2).unsqueeze(-1)
        return hook

    for i in range(1, 18):
        w = official_sd[f"features.{i}.conv.{3 if i == 1 else 4}.conv.weight"]
        ref.features[i].conv.register_forward_hook(eca_hook(w))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y, want = model(x), ref(x)
    assert (y - want).abs().max() / want.abs().max() < 1e-5


def test_backbone_interface():
    model = create_model("coord_mobilenet_v2").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 1280, 2, 2)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 1280)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier")}
    model.reset_classifier(7)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model(x).shape == (2, 7)
    fx = create_feature_extractor(model, return_nodes={"features.6": "c3", "features.13": "c4", "features.18": "c5"})
    with torch.no_grad():
        out = fx(x)
    assert out["c3"].shape == (2, 32, 8, 8) and out["c4"].shape == (2, 96, 4, 4) and out["c5"].shape == (2, 1280, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(out["c5"], model.forward_features(x))
