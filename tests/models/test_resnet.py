"""SE-ResNets (Caffe/timm legacy and moskomule) and ECA-ResNets: architecture facts from NETWORKS.md and the official
factories, references for the keys without a shipped golden, and the classification interface.

The shipped goldens (se_resnet50, eca_resnet50) run in test_goldens.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import plugattn
from plugattn.models import create_model, list_models, model_info

pytest.importorskip("torchvision")

# key: (official params, official state_dict entries). 50s: NETWORKS.md §0; SE Caffe: timm legacy_seresnet*;
# the others: the official factories at the pinned commits (moskomule se_resnetD(), ECANet eca_resnetD(k_size)).
OFFICIAL = {
    "se_resnet18": (11_778_592, 154),
    "se_resnet34": (21_958_868, 282),
    "se_resnet50": (28_088_024, 384),
    "se_resnet101": (49_326_872, 758),
    "se_resnet152": (66_821_848, 1132),
    "se_resnet18_moskomule": (11_776_552, 138),
    "se_resnet34_moskomule": (21_954_856, 250),
    "se_resnet50_moskomule": (28_071_976, 352),
    "se_resnet101_moskomule": (49_292_328, 692),
    "se_resnet152_moskomule": (66_770_984, 1032),
    "eca_resnet18": (11_689_556, 130),
    "eca_resnet34": (21_797_744, 234),
    "eca_resnet50": (25_557_112, 336),
    "eca_resnet101": (44_549_317, 659),
    "eca_resnet152": (60_193_042, 982),
}


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights with unit-scale activations and BN statistics that matter (float64)."""
    g = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.1)
            elif t.dim() == 1:  # BN weight
                t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * 0.5 + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * (1.0 / t[0].numel()) ** 0.5)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_registered():
    assert set(OFFICIAL) <= set(list_models())
    assert set(OFFICIAL) <= set(plugattn.list_official())
    assert model_info("se_resnet50").checkpoints[0].startswith("se_resnet50-ce0d4300.pth")
    assert model_info("eca_resnet50").checkpoints == ("eca_resnet50_k3557",)
    assert model_info("se_resnet50_moskomule").checkpoints == ("seresnet50-60a8950a85b2b.pkl",)


@pytest.mark.parametrize("key", sorted(OFFICIAL))
def test_official_counts(key):
    with torch.device("meta"):
        net = create_model(key)
    params, entries = OFFICIAL[key]
    assert sum(p.numel() for p in net.parameters()) == params
    assert len(net.state_dict()) == entries


def test_caffe_layout():
    with torch.device("meta"):
        net = create_model("se_resnet50")
    pool = net.maxpool
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True)
    for stage in ("layer2", "layer3", "layer4"):
        block = net.get_submodule(f"{stage}.0")
        assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
        assert block.downsample[0].stride == (2, 2)
    assert net.layer1[0].conv1.stride == (1, 1)
    assert net.head_drop.p == 0.2


def test_eca_kernels():
    with torch.device("meta"):
        k50 = create_model("eca_resnet50")
        k18 = create_model("eca_resnet18")
        k101 = create_model("eca_resnet101")
    assert [k50.get_submodule(f"layer{i}.0.bn3.attn").kernel_size for i in (1, 2, 3, 4)] == [3, 5, 5, 7]
    assert [k18.get_submodule(f"layer{i}.1.bn2.attn").kernel_size for i in (1, 2, 3, 4)] == [3, 5, 7, 7]
    assert [k101.get_submodule(f"layer{i}.0.bn3.attn").kernel_size for i in (1, 2, 3, 4)] == [3, 3, 5, 7]


@pytest.mark.parametrize("depth", [18])
def test_se_caffe_equals_timm_legacy(depth):
    """timm's legacy_seresnet* is the official code of the Caffe-layout keys (18/34: SE after the block's ReLU)."""
    timm = pytest.importorskip("timm")
    ref = _randomize(timm.create_model(f"legacy_seresnet{depth}"))
    net = plugattn.from_official(f"se_resnet{depth}", ref.state_dict()).eval()
    x = torch.randn(2, 3, 45, 39, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        assert _rel(net(x), ref(x)) < 1e-10


def _tv_reference(depth: int, attn):
    """torchvision's ResNet with ``attn(block, y)`` applied to the last BN output of every block (forward hooks)."""
    import torchvision

    ref = _randomize(getattr(torchvision.models, f"resnet{depth}")())
    last = "bn2" if depth < 50 else "bn3"
    for stage in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
        for block in stage:
            getattr(block, last).register_forward_hook(lambda m, i, y, block=block: attn(block, y))
    return ref


def test_moskomule_state_dict_and_output():
    """NETWORKS.md §3.2: torchvision keys + ``layerL.B.se.fc.{0,2}.weight``; SELayer after bn3, bias-free."""
    g = torch.Generator().manual_seed(2)
    se = {}

    def attn(block, y):
        w1, w2 = block.se_w
        return y * torch.sigmoid(torch.relu(y.mean((2, 3)) @ w1.T) @ w2.T)[:, :, None, None]

    ref = _tv_reference(50, attn)
    for name, block in ref.named_modules():
        if name.count(".") == 1 and name.startswith("layer"):
            c = block.bn3.num_features
            block.se_w = (torch.randn(c // 16, c, generator=g, dtype=torch.float64) / c**0.5,
                          torch.randn(c, c // 16, generator=g, dtype=torch.float64) / (c // 16) ** 0.5)
            se[f"{name}.se.fc.0.weight"], se[f"{name}.se.fc.2.weight"] = block.se_w
    official = {**ref.state_dict(), **se}
    assert len(official) == 352 and se["layer1.0.se.fc.0.weight"].shape == (16, 256)
    net = plugattn.from_official("se_resnet50_moskomule", official).eval()
    assert torch.equal(net.get_submodule("layer4.2.bn3.attn").fc2.weight.flatten(1), se["layer4.2.se.fc.2.weight"])
    x = torch.randn(1, 3, 40, 40, generator=g, dtype=torch.float64)
    with torch.no_grad():
        assert _rel(net(x), ref(x)) < 1e-10


def test_eca_basic_block_state_dict_and_output():
    """ECABasicBlock (18/34): ECA after bn2, keys ``layerL.B.eca.conv.weight (1, 1, k)``, released k 3/5/7/7."""
    g = torch.Generator().manual_seed(3)
    ks = {1: 3, 2: 5, 3: 7, 4: 7}
    eca = {}

    def attn(block, y):
        z = nn.functional.conv1d(y.mean((2, 3))[:, None], block.eca_w, padding=block.eca_w.shape[-1] // 2)
        return y * torch.sigmoid(z)[:, 0, :, None, None]

    ref = _tv_reference(18, attn)
    for name, block in ref.named_modules():
        if name.count(".") == 1 and name.startswith("layer"):
            block.eca_w = torch.randn(1, 1, ks[int(name[5])], generator=g, dtype=torch.float64)
            eca[f"{name}.eca.conv.weight"] = block.eca_w
    official = {**ref.state_dict(), **eca}
    assert len(official) == OFFICIAL["eca_resnet18"][1]
    net = plugattn.from_official("eca_resnet18", official).eval()
    x = torch.randn(2, 3, 40, 40, generator=g, dtype=torch.float64)
    with torch.no_grad():
        assert _rel(net(x), ref(x)) < 1e-10


def test_strict_loading_rejects_wrong_kernels():
    with torch.device("meta"):
        sd = plugattn.from_official("eca_resnet50").state_dict()
    bad = {k.replace(".bn3.attn.", ".eca.").replace(".bn3.module.", ".bn3."): torch.zeros(v.shape)
           for k, v in sd.items()}
    bad["layer1.0.eca.conv.weight"] = torch.zeros(1, 1, 5)
    with pytest.raises(ValueError, match="layer1.0.eca.conv.weight"):
        plugattn.from_official("eca_resnet50", bad)


def test_classification_interface():
    from torchvision.models.feature_extraction import create_feature_extractor

    net = create_model("se_resnet18", num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = net.forward_features(x)
        assert feats.shape == (2, 512, 2, 2)
        y = net(x)
        assert y.shape == (2, 10)
        torch.testing.assert_close(net.forward_head(feats), y)
        assert net.forward_head(feats, pre_logits=True).shape == (2, 512)
        before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("fc.")}
        net.reset_classifier(7)
        assert net(x).shape == (2, 7) and net.get_classifier().out_features == 7
        after = net.state_dict()
        assert all(torch.equal(v, after[k]) for k, v in before.items())
        net.reset_classifier(0)
        assert net(x).shape == (2, 512)
        extractor = create_feature_extractor(net, return_nodes={"layer2": "c3", "layer4": "c5"})
        out = extractor(x)
    assert out["c3"].shape == (2, 128, 8, 8) and out["c5"].shape == (2, 512, 2, 2)
    torch.testing.assert_close(out["c5"], feats)


def test_training_backward_and_bad_kernels():
    net = create_model("eca_resnet18", num_classes=3).train()
    y = net(torch.randn(2, 3, 40, 40))
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="4 kernel sizes"):
        create_model("eca_resnet18", k_size=(3, 5))
