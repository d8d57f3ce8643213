"""CBAM / BAM / Triplet ResidualNets (plugattn.models.cbam_resnet) against the facts of NETWORKS.md.

``cbam_resnet50``'s output is checked by its shipped golden (test_goldens.py). Here: parameter and state_dict
entry counts of every depth (the official factories' numbers), strict loading of state_dicts laid out as the
official ones (NETWORKS.md §2, §3.3, §3.4, §3.7: torchvision's trunk keys plus the attention keys it lists), the
placements, the AvgPool2d(7) head, and the backbone API. Big networks are built on the meta device or at 64×64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

import plugattn
from helpers import rand, randomize_
from plugattn.models import cbam_resnet, create_model, list_models, model_info
from plugattn.models.cbam_resnet import JongchanBAM

# (parameters, state_dict entries) of ResidualNet('ImageNet', depth, 1000, att) at the pinned commits
OFFICIAL = {
    "cbam_resnet18": (11_779_392, 202), "cbam_resnet34": (21_960_468, 378),
    "cbam_resnet50": (28_089_624, 480), "cbam_resnet101": (49_330_172, 956),
    "bam_resnet18": (11_712_503, 218), "bam_resnet34": (21_820_663, 314),
    "bam_resnet50": (25_915_099, 416), "bam_resnet101": (44_907_227, 722),
    "triplet_resnet18": (11_691_912, 266), "triplet_resnet34": (21_802_472, 506),
    "triplet_resnet50": (25_561_832, 608), "triplet_resnet101": (44_559_060, 1220),
}
KEYS = sorted(OFFICIAL)


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _attention_keys(att: str, prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    """The official attention module's keys and shapes as NETWORKS.md lists them."""
    r = c // 16
    if att == "cbam":
        keys = {f"{prefix}.ChannelGate.mlp.1.weight": (r, c), f"{prefix}.ChannelGate.mlp.1.bias": (r,),
                f"{prefix}.ChannelGate.mlp.3.weight": (c, r), f"{prefix}.ChannelGate.mlp.3.bias": (c,),
                f"{prefix}.SpatialGate.spatial.conv.weight": (1, 2, 7, 7)}
        return {**keys, **_bn(f"{prefix}.SpatialGate.spatial.bn", 1)}
    if att == "triplet":
        keys = {}
        for gate in ("ChannelGateH", "ChannelGateW", "SpatialGate"):
            keys[f"{prefix}.{gate}.spatial.conv.weight"] = (1, 2, 7, 7)
            keys.update(_bn(f"{prefix}.{gate}.spatial.bn", 1))
        return keys
    c_, s_ = f"{prefix}.channel_att.gate_c", f"{prefix}.spatial_att.gate_s"
    keys = {f"{c_}.gate_c_fc_0.weight": (r, c), f"{c_}.gate_c_fc_0.bias": (r,), **_bn(f"{c_}.gate_c_bn_1", r),
            f"{c_}.gate_c_fc_final.weight": (c, r), f"{c_}.gate_c_fc_final.bias": (c,),
            f"{s_}.gate_s_conv_reduce0.weight": (r, c, 1, 1), f"{s_}.gate_s_conv_reduce0.bias": (r,),
            **_bn(f"{s_}.gate_s_bn_reduce0", r)}
    for i in range(2):
        keys.update({f"{s_}.gate_s_conv_di_{i}.weight": (r, r, 3, 3), f"{s_}.gate_s_conv_di_{i}.bias": (r,),
                     **_bn(f"{s_}.gate_s_bn_di_{i}", r)})
    keys.update({f"{s_}.gate_s_conv_final.weight": (1, r, 1, 1), f"{s_}.gate_s_conv_final.bias": (1,)})
    return keys


def official_layout(key: str) -> dict[str, tuple[int, ...]]:
    """The official state_dict's keys and shapes: torchvision's ResNet keys + the attention keys (NETWORKS.md)."""
    att, depth = key.split("_resnet")
    with torch.device("meta"):
        tv = getattr(torchvision.models, f"resnet{depth}")()
    trunk = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    if att == "bam":
        width = 1 if int(depth) < 50 else 4
        extra: dict[str, tuple[int, ...]] = {}
        for i, c in enumerate((64, 128, 256), 1):
            extra.update(_attention_keys("bam", f"bam{i}", c * width))
        return {**extra, **trunk}
    out = dict(trunk)
    official = "cbam" if att == "cbam" else "triplet_attention"
    for name, m in tv.named_modules():
        if isinstance(m, torchvision.models.resnet.BasicBlock | torchvision.models.resnet.Bottleneck):
            c = m.bn3.num_features if hasattr(m, "bn3") else m.bn2.num_features
            out.update(_attention_keys(att, f"{name}.{official}", c))
    return out


@pytest.mark.parametrize("key", KEYS)
def test_counts_and_official_layout(key):
    params, entries = OFFICIAL[key]
    with torch.device("meta"):
        model = create_model(key)
        layout = official_layout(key)
        assert sum(p.numel() for p in model.parameters()) == params
        assert len(model.state_dict()) == entries == len(layout)
        # strict: every official key maps to one of ours with its shape, and every one of ours is filled
        sd = {k: torch.empty(s, dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
              for k, s in layout.items()}
        loaded = plugattn.from_official(key, sd)
    assert sum(p.numel() for p in loaded.parameters()) == params
    assert key in list_models() and model_info(key).num_classes == 1000
    assert cbam_resnet.OFFICIAL_PARAMS[key] == params


def test_placements():
    """CBAM / Triplet in every block on the last BN's output; BAM on layer1–3's outputs only."""
    with torch.device("meta"):
        cbam = create_model("cbam_resnet50", global_pool="avg")
        bam = create_model("bam_resnet50", global_pool="avg")
        assert type(cbam.layer3[5].bn3.attn).__name__ == "CBAM" and cbam.layer3[5].bn3.attn.channels == 1024
    assert sum(type(m).__name__ == "CBAM" for m in cbam.modules()) == 16
    trip = create_model("triplet_resnet18", global_pool="avg")
    assert sum(type(m).__name__ == "TripletAttention" for m in trip.modules()) == 8
    assert type(trip.layer1[0].bn2.attn).__name__ == "TripletAttention"
    assert [bam.get_submodule(f"layer{i}.attn").channels for i in (1, 2, 3)] == [256, 512, 1024]
    assert not hasattr(bam.layer4, "attn") and sum(isinstance(m, JongchanBAM) for m in bam.modules()) == 3
    # official key names map as documented
    key_map = plugattn.official.official_converter("bam_resnet50")[1]
    assert key_map("bam2.spatial_att.gate_s.gate_s_conv_di_1.weight") == "layer2.attn.spatial.2.conv.weight"
    assert key_map("layer2.0.conv2.weight") == "layer2.0.conv2.weight"
    key_map = plugattn.official.official_converter("cbam_resnet50")[1]
    assert key_map("layer1.0.bn3.running_var") == "layer1.0.bn3.module.running_var"
    assert key_map("layer1.0.cbam.ChannelGate.mlp.1.weight") == "layer1.0.bn3.attn.channel.fc1.weight"


def test_bam_official_pooling():
    """JongchanBAM: the module's math on square maps; the official H×H window on H ≤ W < 2H maps."""
    ours = randomize_(JongchanBAM(32)).eval()
    ref = randomize_(plugattn.modules.bam.BottleneckAttention(32)).eval()
    x = rand(2, 32, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
        x = rand(2, 32, 6, 10, seed=1)
        pooled = F.avg_pool2d(x, 6, stride=6)  # the official ChannelGate's pool: (N, C, 1, 1) for W < 2H
        want = x * (1 + torch.sigmoid(ours.channel(pooled) * ours.spatial(x)))
        torch.testing.assert_close(ours(x), want)


def test_head_avgpool7():
    """AvgPool2d(7): the global mean of a 7×7 map (193–224 px), the top-left 7×7 of an 8×8 map (225–256 px)."""
    official = create_model("cbam_resnet18").eval()
    pooled = create_model("cbam_resnet18", global_pool="avg").eval()
    pooled.fc = official.fc
    with torch.no_grad():
        f = rand(2, 512, 7, 7)
        torch.testing.assert_close(official.forward_head(f), pooled.forward_head(f))
        f = rand(2, 512, 8, 8, seed=1)
        torch.testing.assert_close(official.forward_head(f), official.fc(f[..., :7, :7].mean((2, 3))))
        with pytest.raises(RuntimeError):
            official.forward_head(rand(1, 512, 5, 5))  # 160 px: the official pool fails too
        assert official.forward_features(rand(1, 3, 64, 80)).shape == (1, 512, 2, 3)


def test_backbone_api():
    model = create_model("bam_resnet18", global_pool="avg").eval()
    x = rand(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
        f = model.forward_features(x)
        assert f.shape == (2, 512, 2, 2) and y.shape == (2, 1000)
        torch.testing.assert_close(model.forward_head(f), y)
        assert model.forward_head(f, pre_logits=True).shape == (2, 512)
        fe = create_feature_extractor(model, {"layer1": "c2", "layer1.1": "pre", "layer4": "c5", "fc": "out"})
        out = fe(x)
        torch.testing.assert_close(out["out"], y)
        torch.testing.assert_close(out["c2"], model.layer1.attn(out["pre"]))  # the stage output is attended
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    model.reset_classifier(10)
    assert model(x).shape == (2, 10) and model.get_classifier().out_features == 10
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    model.reset_classifier(0)
    assert model(x).shape == (2, 512)
    assert create_model("cbam_resnet18", num_classes=5, global_pool="avg")(x).shape == (2, 5)


def test_stage_placement_zero_init_and_errors():
    net = torchvision.models.resnet18().eval()
    x = rand(1, 3, 64, 64)
    with torch.no_grad():
        y = net(x)
        plugattn.insert(net, "bam", zero_init=True, placement="stage")
        torch.testing.assert_close(net(x), y, rtol=0, atol=0)
    assert [i.path for i in plugattn.inserted(net)] == ["layer1.attn", "layer2.attn", "layer3.attn"]
    with pytest.raises(ValueError, match="appends to nn.Sequential"):
        plugattn.insert(torchvision.models.resnet18(), "bam", ["fc"], placement="stage")
    with pytest.raises(ValueError, match="global_pool"):
        create_model("cbam_resnet18", global_pool="max")
    assert isinstance(create_model("cbam_resnet18").avgpool, nn.AvgPool2d)
