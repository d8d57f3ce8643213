"""DANet networks (NETWORKS.md §3.11): layout, parameter counts, official keys, features, any num_classes.

The official numerics of danet_resnet50 are checked by tests/models/test_goldens.py (shipped golden).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import plugattn
from plugattn.models import create_model, list_models, model_info

pytest.importorskip("torchvision")

GOLDEN = Path(__file__).parents[1] / "goldens" / "networks" / "danet_resnet50.pt"

# NETWORKS.md §0 / §4: official entries and parameters (101/152: the 50's layout with 23/36 layer3 blocks,
# 18 entries per Bottleneck without downsample)
FACTS = {
    "danet_resnet50": (356, 47_462_651),
    "danet_resnet101": (662, 66_454_779),
    "danet_resnet152": (968, 82_098_427),
}


def test_registered():
    assert set(FACTS) <= set(list_models("danet_*"))
    assert set(FACTS) <= set(plugattn.list_official())
    info = model_info("danet_resnet101")
    assert info.task == "segmentation" and info.num_classes == 19
    assert info.checkpoints == ("DANet101.pth.tar",)


@pytest.mark.parametrize("key", sorted(FACTS))
def test_entries_and_params(key):
    entries, params = FACTS[key]
    with torch.device("meta"):  # shapes only, no memory or init cost
        net = create_model(key)
    assert len(net.state_dict()) == entries
    assert sum(p.numel() for p in net.parameters()) == params


def _official_entries(layer3_blocks: int = 6) -> list[tuple[str, tuple[int, ...]]]:
    """The official DANet state_dict layout, from the shipped ResNet-50 golden, with layer3 extended."""
    entries = [(k, tuple(s)) for k, s, _ in torch.load(GOLDEN, weights_only=True)["entries"]]
    out = []
    for k, s in entries:
        out.append((k, s))
        if k == "pretrained.layer3.5.bn3.num_batches_tracked":
            block = [(k2, s2) for k2, s2 in entries if k2.startswith("pretrained.layer3.5.")]
            for b in range(6, layer3_blocks):
                out += [(k2.replace("layer3.5.", f"layer3.{b}."), s2) for k2, s2 in block]
    return out


def test_official_keys_named_in_networks_md():
    shapes = dict(_official_entries())
    assert len(shapes) == 356
    assert shapes["pretrained.conv1.weight"] == (64, 3, 7, 7)
    assert shapes["pretrained.layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1)
    assert shapes["head.conv5a.0.weight"] == (512, 2048, 3, 3)
    assert shapes["head.sa.query_conv.weight"] == (64, 512, 1, 1)
    assert shapes["head.conv8.1.weight"] == (19, 512, 1, 1)
    assert not any(k.startswith("pretrained.fc.") for k in shapes)


def test_resnet101_loads_official_layout():
    """The released DANet101 layout (layer3: 23 blocks) loads strictly, every tensor in its place."""
    entries = _official_entries(layer3_blocks=23)
    assert len(entries) == 662
    sd = {k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.full(s, float(i))
          for i, (k, s) in enumerate(entries)}  # a distinct value per entry
    net = plugattn.from_official("danet_resnet101", sd)
    ours = net.state_dict()
    assert torch.equal(ours["backbone.layer3.22.conv2.weight"], sd["pretrained.layer3.22.conv2.weight"])
    assert torch.equal(ours["head.pam.query.weight"], sd["head.sa.query_conv.weight"])
    assert torch.equal(ours["head.cls_fused.bias"], sd["head.conv8.1.bias"])
    assert torch.equal(ours["head.cls_pam.bias"], sd["head.conv6.1.bias"])
    assert torch.equal(ours["head.cam.gamma"], sd["head.sc.gamma"])


def test_dilations_and_stem():
    with torch.device("meta"):
        net = create_model("danet_resnet101")
    b = net.backbone
    assert b.conv1.kernel_size == (7, 7) and b.conv1.stride == (2, 2)  # single 7×7 stem (no_deepstem)
    assert [blk.conv2.dilation[0] for blk in b.layer2] == [1] * 4
    assert [blk.conv2.dilation[0] for blk in b.layer3] == [1] + [2] * 22
    assert [(blk.conv2.dilation[0], blk.conv2.padding[0]) for blk in b.layer4] == [(4, 4), (8, 8), (16, 16)]
    assert [blk.conv2.stride[0] for blk in (b.layer2[0], b.layer3[0], b.layer4[0])] == [2, 1, 1]
    assert all(blk.downsample[0].stride == (1, 1) for blk in (b.layer3[0], b.layer4[0]))


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    net = create_model("danet_resnet50", num_classes=5)
    with torch.no_grad():  # γ = 0 at init would hide the attention branches
        net.head.pam.gamma.fill_(0.5)
        net.head.cam.gamma.fill_(0.5)
    return net.eval()


def test_forward_features_and_output(small_net):
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        feats = small_net.forward_features(x)
        out = small_net(x)
        head = small_net.forward_head(feats[-1])
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 12, 10), (512, 6, 5), (1024, 6, 5), (2048, 6, 5)]
    assert isinstance(out, tuple) and len(out) == 3
    for y, h in zip(out, head):
        assert y.shape == (1, 5, 48, 40)
        torch.testing.assert_close(y, F.interpolate(h, size=(48, 40), mode="bilinear", align_corners=True))
    assert not torch.allclose(out[0], out[1])


def test_feature_extractor(small_net):
    from torchvision.models.feature_extraction import create_feature_extractor

    nodes = {f"backbone.layer{i}": f"c{i}" for i in range(1, 5)} | {"head.cls_fused": "logits"}
    fe = create_feature_extractor(small_net, nodes)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        got = fe(x)
        want = small_net.forward_features(x)
    for i in range(4):
        torch.testing.assert_close(got[f"c{i + 1}"], want[i])
    assert got["logits"].shape == (1, 5, 5, 5)


def test_num_classes_and_repr():
    with torch.device("meta"):
        net = create_model("danet_resnet50", num_classes=150)
    assert all(getattr(net.head, c).weight.shape == (150, 512, 1, 1) for c in ("cls_fused", "cls_pam", "cls_cam"))
    assert re.search(r"num_classes=150, output_stride=8, multi_grid=\(4, 8, 16\)", repr(net))
    with pytest.raises(ValueError, match="multi_grid"):
        create_model("danet_resnet50", multi_grid=(2, 4))


def test_reset_classifier_keeps_other_weights():
    net = create_model("danet_resnet50")
    before = {k: v.clone() for k, v in net.state_dict().items() if ".cls_" not in k}
    net.reset_classifier(3)
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert after["head.cls_pam.weight"].shape == (3, 512, 1, 1) and net.num_classes == 3
