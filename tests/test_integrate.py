"""insert(): placement in torchvision/timm blocks, exact identity with zero_init, learning, errors; timm attn_layer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import plugattn
from helpers import rand
from plugattn.integrate import Inserted, ZeroInit, insert, inserted, supported_blocks

tv = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

PRESERVING = [n for n in plugattn.list_modules() if plugattn.info(n).preserves_shape]
GAMMA_STYLE = {"danet_pam", "danet_cam", "danet"}  # zero-initialised scale γ: identity when built


@torch.no_grad()
def randomize_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine/statistics (timm zero-inits the last BN of each block, which would hide the branch)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def make(ctor, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_bn_(ctor(), seed).eval()


def tv_resnet18():
    return tv.models.resnet18(num_classes=10)


def timm_resnet10t():
    return timm.create_model("resnet10t", pretrained=False, num_classes=10)


X = rand(1, 3, 64, 64, seed=3)


# ---------------------------------------------------------------------------------------------------------
# zero_init: exact identity on real networks, then learning


@pytest.mark.parametrize("name", PRESERVING)
@pytest.mark.parametrize("ctor", [tv_resnet18, timm_resnet10t], ids=["tv_resnet18", "timm_resnet10t"])
def test_zero_init_is_exact_identity(name, ctor):
    model = make(ctor)
    base = copy.deepcopy(model)
    with torch.no_grad():
        before = model(X)
    insert(model, name, zero_init=True)
    records = inserted(model)
    assert records and all(r.name == name for r in records)
    if name in GAMMA_STYLE:  # identity through their own zero γ: not wrapped, so γ keeps a gradient
        assert not any(r.wrapped for r in records)
    elif name in ("se", "eca"):
        assert all(r.wrapped for r in records)
    with torch.no_grad():
        after = model(X)
    assert (after - before).abs().max().item() == 0.0
    # without zero_init the same insertion changes the output (the check above could fail)
    other = insert(base, name)
    with torch.no_grad():
        changed = other(X)
    if all(r.wrapped for r in records):
        assert not torch.equal(changed, before)


@pytest.mark.parametrize("ctor", [
    lambda: tv.models.mobilenet_v2(num_classes=10),
    lambda: tv.models.mobilenet_v3_small(num_classes=10),
    lambda: tv.models.efficientnet_b0(num_classes=10),
    lambda: tv.models.efficientnet_v2_s(num_classes=10),
    lambda: tv.models.convnext_tiny(num_classes=10),
    lambda: tv.models.regnet_x_400mf(num_classes=10),
    lambda: tv.models.resnet50(num_classes=10),
    lambda: timm.create_model("mobilenetv3_small_050", num_classes=10),
    lambda: timm.create_model("efficientnet_b0", num_classes=10),
    lambda: timm.create_model("efficientnetv2_rw_t", num_classes=10),
    lambda: timm.create_model("mobilenetv4_conv_small", num_classes=10),
    lambda: timm.create_model("convnext_atto", num_classes=10),
    lambda: timm.create_model("regnetx_002", num_classes=10),
    lambda: timm.create_model("resnet26", num_classes=10),
], ids=["tv_mbv2", "tv_mbv3", "tv_effb0", "tv_effv2s", "tv_convnext", "tv_regnet", "tv_resnet50", "timm_mbv3",
        "timm_effb0", "timm_effv2", "timm_mbv4", "timm_convnext", "timm_regnet", "timm_resnet26"])
def test_every_block_family(ctor):
    """Identity with zero_init, and a working (channel-checked) forward without it, on every supported family."""
    model = make(ctor)
    base = copy.deepcopy(model)
    with torch.no_grad():
        before = model(X)
    insert(model, "eca", zero_init=True)
    with torch.no_grad():
        assert torch.equal(model(X), before)
    plain = insert(base, "se")  # SE checks its channel count, so a wrong inference raises here
    with torch.no_grad():
        out = plain(X)
    assert torch.isfinite(out).all() and not torch.equal(out, before)


def test_zero_init_learns():
    model = insert(make(tv_resnet18), "cbam_channel" if "cbam_channel" in PRESERVING else "se", zero_init=True)
    model = insert(model, "danet_pam", where=["layer4.0"], zero_init=True)
    model.train()
    x = rand(2, 3, 64, 64, seed=4)
    model(x).square().mean().backward()
    wrappers = [m for m in model.modules() if isinstance(m, ZeroInit)]
    assert len(wrappers) == 8
    for w in wrappers:
        assert w.alpha.item() == 0 and w.alpha.grad is not None and w.alpha.grad.abs().item() > 0
    pam = model.get_submodule([r.path for r in inserted(model) if r.name == "danet_pam"][0])
    assert not isinstance(pam, ZeroInit) and pam.gamma.grad.abs().item() > 0  # learns through its own γ
    before = copy.deepcopy(model).eval()(x)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(model.eval()(x), before)


# ---------------------------------------------------------------------------------------------------------
# placement: positions, channel counts, the block arithmetic


def test_resnet_positions_and_channels():
    model = insert(make(tv_resnet18), "se")
    got = [(r.path, r.site, r.channels) for r in inserted(model)]
    stages = [64, 64, 128, 128, 256, 256, 512, 512]
    sites = [f"layer{i // 2 + 1}.{i % 2}" for i in range(8)]
    assert got == [(f"{s}.bn2.attn", s, c) for s, c in zip(sites, stages)]
    model = insert(tv.models.resnet50(), "se")
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert [r.channels for r in inserted(model)] == widths
    assert all(r.path.endswith("bn3.attn") for r in inserted(model))


def test_mobilenetv2_only_residual_blocks():
    model = insert(tv.models.mobilenet_v2(), "se")
    # torchvision's config (t, c, n, s): the n - 1 repeats of each stage with n > 1 have a residual connection
    expected = [24] + [32] * 2 + [64] * 3 + [96] * 2 + [160] * 2
    assert [r.channels for r in inserted(model)] == expected
    assert all(r.path.endswith(".conv.attn") for r in inserted(model))


def test_block_arithmetic_torchvision_basicblock():
    model = insert(make(tv_resnet18), "se")
    blk = model.layer2[0]  # with a downsample shortcut
    x = rand(2, 64, 16, 16, seed=5)
    with torch.no_grad():
        branch = blk.bn2.module(blk.conv2(blk.relu(blk.bn1(blk.conv1(x)))))
        expected = torch.relu(blk.bn2.attn(branch) + blk.downsample(x))
        torch.testing.assert_close(blk(x), expected, rtol=0, atol=0)


def test_block_arithmetic_mobilenetv2_and_cnblock():
    model = make(lambda: tv.models.mobilenet_v2())
    insert(model, "eca")
    blk = model.features[3]
    x = rand(2, 24, 8, 8, seed=6)
    with torch.no_grad():
        branch = x
        for layer in list(blk.conv)[:-1]:
            branch = layer(branch)
        torch.testing.assert_close(blk(x), x + blk.conv.attn(branch), rtol=0, atol=0)
    cn = make(lambda: tv.models.convnext_tiny())
    insert(cn, "eca")
    blk = cn.features[1][0]
    x = rand(2, 96, 8, 8, seed=7)
    with torch.no_grad():
        branch = blk.layer_scale * blk.block(x)
        torch.testing.assert_close(blk(x), blk.stochastic_depth.attn(branch) + x, rtol=0, atol=0)


def test_block_arithmetic_timm():
    model = make(lambda: timm.create_model("resnet10t"))
    insert(model, "eca")
    blk = model.layer1[0]
    assert isinstance(blk.se, plugattn.get("eca"))  # timm's own attention slot
    x = rand(2, 64, 8, 8, seed=8)
    with torch.no_grad():
        branch = blk.bn2(blk.conv2(blk.act1(blk.bn1(blk.conv1(x)))))
        short = blk.downsample(x) if blk.downsample is not None else x
        torch.testing.assert_close(blk(x), blk.act2(blk.se(branch) + short), rtol=0, atol=0)
    cn = make(lambda: timm.create_model("convnext_atto"))
    insert(cn, "eca")
    blk = cn.stages[0].blocks[0]
    x = rand(2, 40, 8, 8, seed=9)
    with torch.no_grad():
        if blk.use_conv_mlp:  # (N, C, H, W) throughout
            y = blk.mlp(blk.norm(blk.conv_dw(x)))
        else:  # (N, H, W, C) for the norm and MLP
            y = blk.mlp(blk.norm(blk.conv_dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        y = y * blk.gamma.reshape(1, -1, 1, 1)
        torch.testing.assert_close(blk(x), blk.drop_path.attn(y) + x, rtol=0, atol=0)


def test_existing_state_dict_keys_are_kept_or_still_load():
    # free slots (timm se, Sequential append, drop_path): no existing key changes
    ctors = (lambda: timm.create_model("resnet10t"), tv.models.mobilenet_v2,
             lambda: timm.create_model("convnext_atto"))
    for ctor in ctors:
        ref = ctor()
        keys = set(ref.state_dict())
        model = insert(copy.deepcopy(ref), "se")
        assert keys <= set(model.state_dict())
    # wrapped bn2: the pre-insertion state_dict still loads, attention keys are the only missing ones
    ref = make(tv_resnet18, seed=1)
    model = insert(make(tv_resnet18, seed=2), "se", zero_init=True)
    result = model.load_state_dict(ref.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(".attn." in k for k in result.missing_keys)
    with torch.no_grad():
        assert torch.equal(model(X), ref(X))


def test_where_paths_predicate_and_report():
    model = make(tv_resnet18)
    insert(model, "se", where=["layer1.0", "layer3.1.conv1"])
    recs = inserted(model)
    assert [(r.path, r.site, r.channels) for r in recs] == [
        ("layer1.0.bn2.attn", "layer1.0", 64), ("layer3.1.conv1.attn", "layer3.1.conv1", 256)]
    assert isinstance(model.layer3[1].conv1, Inserted) and recs[0].cls is plugattn.get("se")
    with torch.no_grad():
        model(X)
    model = make(tv_resnet18)
    insert(model, "eca", where=lambda path, m: isinstance(m, nn.BatchNorm2d) and path.endswith("bn1"))
    assert [r.site for r in inserted(model)] == ["bn1"] + [f"layer{s}.{b}.bn1" for s in range(1, 5) for b in range(2)]
    # a second call nests correctly and the report follows the moved module
    insert(model, "se")
    names = [r.name for r in inserted(model)]
    assert names.count("eca") == 9 and names.count("se") == 8
    for r in inserted(model):
        assert isinstance(model.get_submodule(r.path), r.cls)
    assert len(inserted(copy.deepcopy(model))) == 17
    with torch.no_grad():
        model(X)


def test_class_and_kwargs_and_dtype():
    model = tv_resnet18().to(torch.float64).eval()
    insert(model, plugattn.get("se"), rd_ratio=0.5)
    se = model.get_submodule(inserted(model)[0].path)
    assert se.fc1.out_channels == 32 and se.fc1.weight.dtype == torch.float64
    with torch.no_grad():
        assert model(X.double()).dtype == torch.float64


def test_errors():
    with pytest.raises(ValueError, match="supported blocks: .*torchvision.models.resnet.BasicBlock"):
        insert(tv.models.vgg11(), "se")
    assert "timm.models.convnext.ConvNeXtBlock" in supported_blocks()
    with pytest.raises(ValueError, match="not in the model"):
        insert(tv_resnet18(), "se", where=["layer9"])
    with pytest.raises(ValueError, match="cannot infer the channel count"):
        insert(tv_resnet18(), "se", where=["relu"])
    with pytest.raises(ValueError, match="expected one of"):
        insert(tv_resnet18(), "nope")
    if "danet_head" in plugattn.list_modules():
        with pytest.raises(ValueError, match="shape-preserving"):
            insert(tv_resnet18(), "danet_head")
    with pytest.raises(TypeError, match="where"):
        insert(tv_resnet18(), "se", where=3)
    with pytest.raises(TypeError, match="model"):
        insert("resnet", "se")
    model = tv_resnet18()
    keys = set(model.state_dict())
    with pytest.raises(ValueError):
        insert(model, "se", where=["layer1.0", "relu"])  # fails before changing anything
    assert set(model.state_dict()) == keys and inserted(model) == []


# ---------------------------------------------------------------------------------------------------------
# timm's attn_layer


@pytest.mark.parametrize("name", PRESERVING)
def test_timm_attn_layer(name):
    cls = plugattn.get(name)
    # timm ResNet passes attention to its blocks through block_args (its own seresnet, ecaresnet do the same)
    model = timm.create_model("resnet10t", block_args={"attn_layer": cls}, pretrained=False, num_classes=10).eval()
    seen: list[int] = []
    for m in model.modules():
        if isinstance(m, cls):
            m.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    with torch.no_grad():
        y = model(rand(1, 3, 64, 64, seed=10))
    assert seen == [64, 128, 256, 512]  # one per block, on the block's output width
    assert y.shape == (1, 10) and torch.isfinite(y).all()


# ---------------------------------------------------------------------------------------------------------
# torch.fx: feature extraction from networks with attention inserted; FX graph-mode quantisation

FX_NETWORKS = {  # network → the module path whose output is extracted
    "resnet18": "layer4", "resnet50": "layer4", "mobilenet_v3_large": "features", "efficientnet_b0": "features",
}


@pytest.mark.parametrize("network", list(FX_NETWORKS))
@pytest.mark.parametrize("name", PRESERVING)
def test_create_feature_extractor(name, network):
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    net = randomize_bn_(insert(getattr(tv.models, network)(num_classes=10), name)).eval()
    node = FX_NETWORKS[network]
    extractor = create_feature_extractor(net, return_nodes={node: "feat"})
    seen = []
    net.get_submodule(node).register_forward_hook(lambda m, a, out: seen.append(out))
    x = rand(2, 3, 64, 48, seed=5)
    with torch.no_grad():
        feat = extractor(x)["feat"]
        net(x)
    torch.testing.assert_close(feat, seen[0], atol=1e-5, rtol=1e-5)


def test_fx_post_training_quantisation_stays_close_to_float():
    """FX graph mode PTQ (x86) of resnet18 with se, eca, cbam and coord inserted: near the float network."""
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    x = rand(32, 3, 64, 64, seed=6)
    for name in ["se", "eca", "cbam", "coord"]:
        torch.manual_seed(0)
        net = randomize_bn_(insert(tv.models.resnet18(num_classes=10), name)).eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FX graph mode quantisation is marked deprecated
            want = net(x)
            prepared = prepare_fx(copy.deepcopy(net), get_default_qconfig_mapping("x86"), example_inputs=(x,))
            prepared(x)  # calibration
            got = convert_fx(prepared)(x)
        assert any("quantized" in str(type(m)).lower() for m in convert_fx(prepared).modules()), name
        agreement = (got.argmax(1) == want.argmax(1)).float().mean().item()
        rel = ((got - want).norm() / want.norm()).item()
        assert agreement >= 0.8 and rel < 0.25, f"{name}: top-1 agreement {agreement:.2f}, relative error {rel:.3f}"


SEVEN = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny",
         "regnet_y_400mf"]


@pytest.mark.parametrize("name", PRESERVING)
def test_insert_into_seven_torchvision_networks(name):
    """Defaults adapt to every channel count these networks use (24, 40, 80, 112, 440, ...)."""
    x = rand(1, 3, 64, 64, seed=7)
    for network in SEVEN:
        net = insert(getattr(tv.models, network)(num_classes=10), name).eval()
        assert inserted(net), network
        with torch.no_grad():
            assert net(x).shape == (1, 10), network


@pytest.mark.parametrize("name", ["sk", "sge", "ema", "shuffle", "fca"])
def test_insert_into_timm_networks(name):
    x = rand(1, 3, 64, 64, seed=8)
    for model in ["resnet18", "mobilenetv3_small_100", "efficientnet_b0"]:
        net = insert(timm.create_model(model, pretrained=False, num_classes=10), name).eval()
        with torch.no_grad():
            assert net(x).shape == (1, 10), model


def test_insert_error_names_the_block_and_a_working_value():
    pattern = r"insert: building sge for block 'layer\d\.\d' \(\d+ channels\).*groups=\d+ would"
    with pytest.raises(ValueError, match=pattern):
        insert(tv.models.resnet18(), "sge", groups=48)


# ---------------------------------------------------------------------------------------------------------
# placements: "stage" (BAM), "expanded" (Coordinate in MobileNetV2, MobileNetV3's SE site), "replace" (SKNet)

X32 = rand(2, 3, 32, 32, seed=11)

# torchvision / the MobileNetV2 paper's table (t, c, n, s); the official mbv2_ca puts CA in every block with t ≠ 1,
# on the hidden (expanded) width, before the projection
MBV2_TABLE = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1)]


def mbv2_expanded_sites() -> list[tuple[str, int]]:
    """(block path, hidden width) of every expanding block, from the table alone."""
    out, c_in, i = [], 32, 1
    for t, c, n, _ in MBV2_TABLE:
        for _ in range(n):
            if t != 1:
                out.append((f"features.{i}", c_in * t))
            c_in, i = c, i + 1
    return out


def _identity_check(model: nn.Module, name: str, placement: str, x=X32, **kw) -> nn.Module:
    """Insert with zero_init: outputs equal bit for bit; the same without zero_init changes them."""
    base = copy.deepcopy(model)
    with torch.no_grad():
        before = model(x)
    insert(model, name, zero_init=True, placement=placement, **kw)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    insert(base, name, placement=placement, **kw)
    with torch.no_grad():
        assert not torch.equal(base(x), before)
    return model


@pytest.mark.parametrize("ctor, name, channels", [
    (tv_resnet18, "bam", [64, 128, 256]),
    (lambda: tv.models.resnet50(num_classes=10), "se", [256, 512, 1024]),
    (timm_resnet10t, "bam", [64, 128, 256]),
], ids=["tv_resnet18", "tv_resnet50", "timm_resnet10t"])
def test_stage_placement(ctor, name, channels):
    model = make(ctor)
    keys = set(model.state_dict())
    _identity_check(model, name, "stage")
    recs = inserted(model)
    assert [(r.path, r.site, r.channels, r.wrapped) for r in recs] == [
        (f"layer{i}.attn", f"layer{i}", c, True) for i, c in zip((1, 2, 3), channels)]
    assert keys <= set(model.state_dict())  # appended: no existing key changes
    assert not hasattr(model.layer4, "attn")  # none after the last stage, as BAM


def test_stage_arithmetic_where_and_nesting():
    model = insert(make(tv_resnet18), "se", placement="stage")
    x = rand(2, 64, 8, 8, seed=12)
    with torch.no_grad():
        blocks = model.layer1[1](model.layer1[0](x))
        torch.testing.assert_close(model.layer1(x), model.layer1.attn(blocks), rtol=0, atol=0)
    # where names stages (layer4 too); a predicate selects among Sequentials, never inside inserted modules
    model = insert(make(tv_resnet18), "bam", ["layer4"], placement="stage")
    assert [(r.path, r.channels) for r in inserted(model)] == [("layer4.attn", 512)]
    assert isinstance(model.layer4.attn.channel, nn.Sequential)  # inside an inserted module: never a stage
    insert(model, "eca", lambda p, m: p.startswith("layer4") and "downsample" not in p, placement="stage")
    assert [(r.name, r.path) for r in inserted(model)] == [("bam", "layer4.attn"), ("eca", "layer4.attn2")]
    # a ResNet inside another module: its stages are found under its path
    wrapper = nn.Sequential()
    wrapper.add_module("backbone", tv.models.resnet18())
    insert(wrapper, "se", placement="stage")
    assert [r.site for r in inserted(wrapper)] == ["backbone.layer1", "backbone.layer2", "backbone.layer3"]
    with pytest.raises(ValueError, match=r"found no stages in MobileNetV2: it looks for children layer1"):
        insert(tv.models.mobilenet_v2(), "se", placement="stage")
    with pytest.raises(ValueError, match=r"appends to nn.Sequential stages; 'fc' is a Linear"):
        insert(tv_resnet18(), "se", ["fc"], placement="stage")


def test_expanded_mobilenet_v2_matches_mbv2_ca_layout():
    model = make(lambda: tv.models.mobilenet_v2(num_classes=10))
    keys = set(model.state_dict())
    _identity_check(model, "coord", "expanded")
    want = mbv2_expanded_sites()
    assert len(want) == 16
    assert [(r.site, r.channels) for r in inserted(model)] == want
    assert [r.path for r in inserted(model)] == [f"{s}.conv.1.attn" for s, _ in want]
    # the depthwise Conv-BN-ReLU6 is wrapped: its old keys still load
    renamed = {k.replace(".conv.1.", ".conv.1.module.") if k.split(".")[2:4] == ["conv", "1"] and
               int(k.split(".")[1]) >= 2 else k for k in keys}
    assert renamed <= set(model.state_dict())
    ref = make(lambda: tv.models.mobilenet_v2(num_classes=10), seed=3)
    result = model.load_state_dict(ref.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(".attn." in k for k in result.missing_keys)
    # arithmetic of a residual block: x + project(attn(dw(expand(x))))
    plain = insert(make(lambda: tv.models.mobilenet_v2()), "eca", placement="expanded")
    blk = plain.features[3]
    x = rand(2, 24, 8, 8, seed=13)
    with torch.no_grad():
        hidden = blk.conv[1].module(blk.conv[0](x))
        torch.testing.assert_close(blk(x), x + blk.conv[3](blk.conv[2](blk.conv[1].attn(hidden))), rtol=0, atol=0)


def test_expanded_mobilenet_v3_and_efficientnet_torchvision():
    model = make(lambda: tv.models.mobilenet_v3_small(num_classes=10))
    _identity_check(model, "eca", "expanded")
    # 11 inverted residuals; the first has expanded == input channels (no 1×1 expansion)
    assert [r.site for r in inserted(model)] == [f"features.{i}" for i in range(2, 12)]
    assert inserted(model)[0].channels == 72
    blk = insert(make(lambda: tv.models.mobilenet_v3_small()), "se", placement="expanded").features[4]
    x = rand(2, 24, 8, 8, seed=14)
    with torch.no_grad():  # expand, depthwise, the new module, the block's own SE, project
        y = blk.block[1].module(blk.block[0](x))
        torch.testing.assert_close(blk(x), blk.block[3](blk.block[2](blk.block[1].attn(y))), rtol=0, atol=0)
    eff = make(lambda: tv.models.efficientnet_b0(num_classes=10))
    _identity_check(eff, "eca", "expanded")
    assert len(inserted(eff)) == 15  # 16 MBConv, the first with expand ratio 1


@pytest.mark.parametrize("network, n", [("mobilenetv2_100", 16), ("efficientnet_b0", 15)])
def test_expanded_timm(network, n):
    model = make(lambda: timm.create_model(network, num_classes=10))
    keys = set(model.state_dict())
    _identity_check(model, "eca", "expanded")
    recs = inserted(model)
    assert len(recs) == n and all(r.path.endswith(".aa.attn") for r in recs)
    assert keys <= set(model.state_dict())  # the parameter-free aa slot is wrapped: no existing key changes
    assert recs[0].channels == model.get_submodule(recs[0].site).conv_dw.out_channels
    blk = model.get_submodule(recs[3].site)
    x = rand(2, blk.conv_pw.in_channels, 8, 8, seed=15)
    with torch.no_grad():
        y = blk.aa.attn(blk.bn2(blk.conv_dw(blk.bn1(blk.conv_pw(x)))))
        y = blk.bn3(blk.conv_pwl(blk.se(y)))
        torch.testing.assert_close(blk(x), y + x if blk.has_skip else y, rtol=0, atol=0)


def test_expanded_where():
    model = insert(tv.models.mobilenet_v2(), "eca", ["features.1", "features.5"], placement="expanded")
    assert [(r.site, r.channels) for r in inserted(model)] == [("features.1", 32), ("features.5", 192)]
    model = insert(tv.models.mobilenet_v2(), "eca", lambda p, m: p.startswith("features.1"), placement="expanded")
    # the predicate picks among the blocks: features.1 (t = 1, named) and features.10 … 17; not their children
    assert [r.site for r in inserted(model)] == ["features.1"] + [f"features.{i}" for i in range(10, 18)]
    with pytest.raises(ValueError, match=r"placement='expanded' puts the module in blocks of these types: .*"
                                         r"'features.0' is a Conv2dNormActivation"):
        insert(tv.models.mobilenet_v2(), "eca", ["features.0"], placement="expanded")
    with pytest.raises(ValueError, match=r"found no block with an expansion layer in ResNet; it looks for: "
                                         r"torchvision.models.mobilenetv2.InvertedResidual"):
        insert(tv_resnet18(), "eca", placement="expanded")


def test_expanded_after_block_never_inside_inserted():
    model = insert(tv.models.mobilenet_v2(), "se")  # 10 residual blocks, SE appended to their conv Sequential
    insert(model, "eca", placement="expanded")
    recs = inserted(model)
    se = [r.path for r in recs if r.name == "se"]
    eca = [r.path for r in recs if r.name == "eca"]
    assert len(se) == 10 and len(eca) == 16
    assert not any(e.startswith(s + ".") for e in eca for s in se)
    with pytest.raises(ValueError, match="inside inserted modules"):
        insert(model, "eca", [se[0] + ".fc1"])
    with torch.no_grad():
        assert model.eval()(X32).shape == (2, 1000)


@pytest.mark.parametrize("ctor, n", [
    (tv_resnet18, 8),
    (lambda: tv.models.resnet50(num_classes=10), 16),
    (lambda: tv.models.resnext50_32x4d(num_classes=10), 16),
    (lambda: timm.create_model("resnet26", num_classes=10), 8),
], ids=["tv_resnet18", "tv_resnet50", "tv_resnext50", "timm_resnet26"])
def test_replace_placement(ctor, n):
    model = make(ctor)
    convs = {p: m.conv2 for p, m in model.named_modules() if hasattr(m, "conv2") and hasattr(m, "bn2")}
    with torch.no_grad():
        shapes = {}
        hooks = [c.register_forward_hook(lambda m, a, y, p=p: shapes.__setitem__(p, y.shape)) for p, c in convs.items()]
        model(X32)
        for h in hooks:
            h.remove()
    insert(model, "sk", placement="replace")
    recs = inserted(model)
    assert len(recs) == n and [r.site for r in recs] == list(convs)
    seen = {}
    for r in recs:
        blk, old = model.get_submodule(r.site), convs[r.site]
        assert r.path == r.site + ".conv2" and isinstance(blk.conv2, plugattn.get("sk"))
        assert isinstance(blk.bn2, nn.Identity) and r.channels == old.in_channels and not r.wrapped
        path0 = blk.conv2.paths[0].conv
        assert (path0.stride, path0.groups, blk.conv2.out_channels) == (old.stride, old.groups, old.out_channels)
        blk.conv2.register_forward_hook(lambda m, a, y, p=r.site: seen.__setitem__(p, y.shape))
    with torch.no_grad():
        assert model.eval()(X32).shape == (2, 10)
    assert seen == shapes  # every replacement gives the replaced conv's output shape
    with pytest.raises(ValueError, match="found no block with a conv to replace in .*replaced already"):
        insert(model, "sk", placement="replace")


def test_replace_arithmetic_and_dilation():
    model = insert(make(lambda: tv.models.resnet50()), "sk", placement="replace")
    blk = model.layer2[0]
    x = rand(2, 256, 8, 8, seed=16)
    with torch.no_grad():
        y = blk.relu(blk.conv2(blk.relu(blk.bn1(blk.conv1(x)))))
        torch.testing.assert_close(blk(x), blk.relu(blk.bn3(blk.conv3(y)) + blk.downsample(x)), rtol=0, atol=0)
    dilated = insert(tv.models.resnet50(replace_stride_with_dilation=[False, True, True]), "sk", placement="replace")
    sk = dilated.layer4[1].conv2  # conv2 had dilation 4: the SK branches get dilation 4 and 8
    assert [p.conv.dilation for p in sk.paths] == [(4, 4), (8, 8)]
    with torch.no_grad():
        assert dilated.eval().forward(X32).shape == (2, 1000)


def test_replace_errors():
    with pytest.raises(ValueError, match=r"module 'se' is not one. Conv replacements: sk"):
        insert(tv_resnet18(), "se", placement="replace")
    with pytest.raises(ValueError, match=r"placement='replace' needs a factory"):
        insert(tv_resnet18(), plugattn.get("eca"), placement="replace")
    with pytest.raises(ValueError, match="zero_init=True does not apply to placement='replace'"):
        insert(tv_resnet18(), "sk", zero_init=True, placement="replace")
    with pytest.raises(ValueError, match=r"sets \['stride'\] from the replaced conv"):
        insert(tv_resnet18(), "sk", placement="replace", stride=2)
    with pytest.raises(ValueError, match=r"found no block with a conv to replace in MobileNetV2; it looks for: "
                                         r"torchvision.models.resnet.BasicBlock"):
        insert(tv.models.mobilenet_v2(), "sk", placement="replace")
    with pytest.raises(ValueError, match="'layer1' is a Sequential"):
        insert(tv_resnet18(), "sk", ["layer1"], placement="replace")
    model = insert(tv_resnet18(), "sk", ["layer1.0", "layer2.1"], placement="replace", groups=2)
    assert [(r.site, model.get_submodule(r.path).paths[0].conv.groups) for r in inserted(model)] == [
        ("layer1.0", 2), ("layer2.1", 2)]


def test_placement_errors_and_supported_blocks():
    with pytest.raises(ValueError, match="unknown placement 'between'; expected one of: block, stage, expanded, "
                                         "replace"):
        insert(tv_resnet18(), "se", placement="between")
    with pytest.raises(TypeError, match="placement must be a str"):
        insert(tv_resnet18(), "se", placement=None)
    assert supported_blocks("replace") == [
        "torchvision.models.resnet.BasicBlock", "torchvision.models.resnet.Bottleneck",
        "timm.models.resnet.BasicBlock", "timm.models.resnet.Bottleneck"]
    assert "timm.models._efficientnet_blocks.InvertedResidual" in supported_blocks("expanded")
    with pytest.raises(ValueError, match="finds children layer1"):
        supported_blocks("stage")
    model = tv_resnet18()
    keys = set(model.state_dict())
    with pytest.raises(ValueError):
        insert(model, "se", ["layer1", "fc"], placement="stage")  # fails before changing anything
    assert set(model.state_dict()) == keys and inserted(model) == []
