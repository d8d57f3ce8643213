"""SKNet-50/101 (ResearchingDexter, Caffe layout) and pppLang's CIFAR SKNet: NETWORKS.md §3.9, §3.10, §4.

No golden is shipped for these keys. The official networks are rebuilt here from the spec's description, with
the official state_dict names (small reference classes written for this test), filled with random weights, and
``from_official`` must reproduce their outputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models.feature_extraction import create_feature_extractor

import plugattn
from plugattn.models import create_model, model_info

N_PARAMS = {"sknet50": 27_479_784, "sknet_ppplang_cifar": 10_453_322}


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() <= 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
            else:
                t.copy_(torch.randn(t.shape, generator=g) / max(1, t[0].numel()) ** 0.5)
    return model.eval()


def _bn_relu(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU()]


# ----- reference: ResearchingDexter's SKNet, from NETWORKS.md §3.9 (official names) ---------------------------


class RefDexterSK(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, m: int = 2, r: int = 16, min_d: int = 32) -> None:
        super().__init__()
        d = max(cin // r, min_d)
        self.m, self.cout = m, cout
        self.conv = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=1 + i, dilation=1 + i, groups=32, bias=False),
                          *_bn_relu(cout))
            for i in range(m))
        self.fc1 = nn.Sequential(nn.Conv2d(cout, d, 1, bias=False), *_bn_relu(d))
        self.fc2 = nn.Conv2d(d, cout * m, 1, bias=False)

    def forward(self, x):
        outs = [c(x) for c in self.conv]
        z = self.fc1(sum(outs).mean((2, 3), keepdim=True))
        a = self.fc2(z).reshape(x.shape[0], self.m, self.cout, 1, 1).softmax(1)
        return sum(a[:, i] * outs[i] for i in range(self.m))


class RefDexterBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(cin, planes, 1, bias=False), *_bn_relu(planes))
        self.conv2 = RefDexterSK(planes, planes, stride)
        self.conv3 = nn.Sequential(nn.Conv2d(planes, 2 * planes, 1, bias=False), nn.BatchNorm2d(2 * planes))
        self.downsample = None
        if stride != 1 or cin != 2 * planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 2 * planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(2 * planes))

    def forward(self, x):
        short = x if self.downsample is None else self.downsample(x)
        return (self.conv3(self.conv2(self.conv1(x))) + short).relu()


class RefDexterSKNet(nn.Module):
    def __init__(self, layers) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), *_bn_relu(64))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for s, (n, planes) in enumerate(zip(layers, (128, 256, 512, 1024))):
            blocks = []
            for b in range(n):
                blocks.append(RefDexterBlock(cin, planes, 2 if (b == 0 and s > 0) else 1))
                cin = 2 * planes
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        x = self.maxpool(self.conv(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3))).softmax(-1)


# ----- reference: pppLang's CIFAR SKNet, from NETWORKS.md §3.10 (official names) -------------------------------


class RefPppSK(nn.Module):
    def __init__(self, features: int, stride: int, m: int = 2, g: int = 8, r: int = 2, min_d: int = 32) -> None:
        super().__init__()
        d = max(int(features / r), min_d)
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(features, features, 3 + 2 * i, stride, padding=1 + i, groups=g),
                          *_bn_relu(features))
            for i in range(m))
        self.fc = nn.Linear(features, d)
        self.fcs = nn.ModuleList(nn.Linear(d, features) for _ in range(m))

    def forward(self, x):
        outs = torch.stack([c(x) for c in self.convs], 1)  # (N, M, C, H, W)
        z = self.fc(outs.sum(1).mean((2, 3)))
        a = torch.stack([f(z) for f in self.fcs], 1).softmax(1)  # (N, M, C)
        return (outs * a[..., None, None]).sum(1)


class RefPppUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cout // 2
        self.feas = nn.Sequential(nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), RefPppSK(mid, stride),
                                  nn.BatchNorm2d(mid), nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential()
        if cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.feas(x) + self.shortcut(x)


class RefPppSKNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.basic_conv = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64))
        for s, (cin, cout) in enumerate(((64, 256), (256, 512), (512, 1024))):
            units = [RefPppUnit(cin, cout, 2), nn.ReLU(), RefPppUnit(cout, cout, 1), nn.ReLU(),
                     RefPppUnit(cout, cout, 1), nn.ReLU()]
            setattr(self, f"stage_{s + 1}", nn.Sequential(*units))
        self.pool = nn.AvgPool2d(8)
        self.classifier = nn.Sequential(nn.Linear(1024, 10))

    def forward(self, x):
        x = self.stage_3(self.stage_2(self.stage_1(self.basic_conv(x))))
        return self.classifier(torch.squeeze(self.pool(x)))


# ----- tests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(N_PARAMS))
def test_counts_and_registry(key):
    model = create_model(key)
    assert sum(p.numel() for p in model.parameters()) == N_PARAMS[key]
    assert key in plugattn.list_official()
    assert model_info(key).num_classes == (10 if key == "sknet_ppplang_cifar" else 1000)


def test_sknet50_matches_official_layout():
    ref = _randomize(RefDexterSKNet([3, 4, 6, 3]))
    sd = ref.state_dict()
    assert len(sd) == 528
    assert tuple(sd["layer1.0.conv2.conv.0.0.weight"].shape) == (128, 4, 3, 3)
    assert tuple(sd["layer1.0.conv2.fc1.0.weight"].shape) == (32, 128, 1, 1)
    assert tuple(sd["layer1.0.conv2.fc2.weight"].shape) == (256, 32, 1, 1)
    assert tuple(sd["layer4.0.conv2.fc1.0.weight"].shape) == (64, 1024, 1, 1)
    model = plugattn.from_official("sknet50", sd).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, y = ref(x), model(x)
    assert y.shape == (2, 1000)
    rel = (y.softmax(-1) - want).abs().max() / want.abs().max()  # ours returns logits
    assert rel < 1e-4


def test_sknet101_depth():
    model = create_model("sknet101")
    assert len(model.layer3) == 23
    ours = sum(p.numel() for p in model.parameters())
    per_block = sum(p.numel() for p in model.layer3[1].parameters())
    assert ours == N_PARAMS["sknet50"] + 17 * per_block  # 17 more identical layer3 blocks than SKNet-50


def test_ppplang_matches_official_layout():
    ref = _randomize(RefPppSKNet())
    sd = ref.state_dict()
    assert len(sd) == 381
    assert tuple(sd["stage_1.0.feas.2.convs.1.0.weight"].shape) == (128, 16, 5, 5)
    assert tuple(sd["stage_1.0.feas.2.fc.weight"].shape) == (64, 128)
    model = plugattn.from_official("sknet_ppplang_cifar", sd).eval()
    x = torch.randn(1, 3, 60, 60)  # the final map is ceil(60 / 8) = 8: AvgPool2d(8) is the global mean
    with torch.no_grad():
        want = ref(x)
        feats = model.forward_features(x)
        y = model.forward_head(feats)
    assert want.shape == (10,) and y.shape == (1, 10)  # the official squeeze drops the batch; ours keeps it
    assert feats.shape == (1, 1024, 8, 8) and model.forward_head(feats, pre_logits=True).shape == (1, 1024)
    assert (y[0] - want).abs().max() / want.abs().max() < 1e-4
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    model.reset_classifier(3)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items()) and model.fc.out_features == 3


def test_backbone_interface():
    model = create_model("sknet50")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 2048, 2, 2)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 2048)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    model.reset_classifier(5)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    fx = create_feature_extractor(model, return_nodes={"layer2": "c3", "layer4": "c5"})
    with torch.no_grad():
        out = fx(x)
        assert out["c3"].shape == (2, 512, 8, 8) and out["c5"].shape == (2, 2048, 2, 2)
        torch.testing.assert_close(out["c5"], feats)
        assert model(x).shape == (2, 5)
