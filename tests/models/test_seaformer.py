"""SeaFormer networks (plugattn.models.seaformer) against NETWORKS.md §0, §3.12 and §3.13.

The shipped goldens (seaformer_t, seaformer_seg_t) run in test_goldens.py; here: the architecture of every size
(entries, parameters, official key names and shapes written from the spec's naming rules), strict loading
through ``from_official``, and the backbone API.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models.feature_extraction import create_feature_extractor

import plugattn
from plugattn.models import create_model, model_info

# NETWORKS.md §0: state_dict entries and parameters of the official networks.
COUNTS = {
    "seaformer_t": (428, 1_781_096),
    "seaformer_s": (560, 4_105_656),
    "seaformer_b": (692, 8_742_664),
    "seaformer_l": (764, 14_046_504),
    "seaformer_seg_t": (458, 1_667_318),
    "seaformer_seg_s": (590, 3_990_118),
    "seaformer_seg_b": (722, 8_605_654),
    "seaformer_seg_l": (806, 13_951_510),
}

# NETWORKS.md §3.12: expand ratio t of every MV2 row per stage, and the transformer depths.
EXPANDS = {
    "t": [[1, 4, 3], [3, 3], [3, 3], [3], [6]],
    "s": [[1, 4, 3], [3, 3], [3, 3], [4], [6]],
    "b": [[1, 4, 3], [3, 3], [3, 3], [4], [6]],
    "l": [[3, 4, 4], [4, 4], [4, 4], [4], [6]],
}
DEPTHS = {"t": [2, 2], "s": [3, 3], "b": [4, 4], "l": [3, 3, 3]}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def conv_bn(prefix: str, conv: str = "c") -> list[str]:
    return [f"{prefix}.{conv}.weight"] + [f"{prefix}.bn.{b}" for b in BN]


def official_trunk_keys(size: str, classifier: bool = True) -> list[str]:
    """The official seaformer-cls state_dict keys, generated from NETWORKS.md §3.12's naming rules."""
    keys = conv_bn("smb1.stem_block.0")
    for s, rows in enumerate(EXPANDS[size], 1):
        for j, t in enumerate(rows, 1):
            for idx in ((0, 2) if t == 1 else (0, 2, 4)):
                keys += conv_bn(f"smb{s}.layer{j}.conv.{idx}")
    for n, depth in enumerate(DEPTHS[size], 1):
        for i in range(depth):
            p = f"trans{n}.transformer_blocks.{i}."
            for part in ("to_q", "to_k", "to_v", "proj.1", "proj_encode_row.1", "proj_encode_column.1", "dwconv",
                         "pwconv"):
                keys += conv_bn(p + "attn." + part)
            keys += [p + f"attn.pos_emb_{a}.pos_embed" for a in ("rowq", "rowk", "columnq", "columnk")]
            keys += conv_bn(p + "mlp.fc1") + [p + "mlp.dwconv.weight", p + "mlp.dwconv.bias"] + conv_bn(p + "mlp.fc2")
    return keys + (["linear.weight", "linear.bias"] if classifier else [])


def official_seg_keys(size: str) -> list[str]:
    """The official mmseg state_dict keys (NETWORKS.md §3.13)."""
    keys = ["backbone." + k for k in official_trunk_keys(size, classifier=False)]
    keys += ["decode_head.conv_seg.weight", "decode_head.conv_seg.bias"] + conv_bn("decode_head.linear_fuse", "conv")
    for i in range(1, len(DEPTHS[size]) + 1):
        keys += conv_bn(f"decode_head.fuse{i}.local_embedding", "conv")
        keys += conv_bn(f"decode_head.fuse{i}.global_act", "conv")
    return keys


def official_keys(key: str) -> list[str]:
    size = key[-1]
    return official_seg_keys(size) if "_seg_" in key else official_trunk_keys(size)


def converter(key: str):
    """Our model and key map from the registered ``from_official`` converter."""
    from plugattn.official import official_converter

    return official_converter(key)


@pytest.mark.parametrize("key", sorted(COUNTS))
def test_entries_and_parameters(key):
    entries, params = COUNTS[key]
    model = create_model(key)
    assert len(model.state_dict()) == entries
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(official_keys(key)) == entries  # the spec's naming rules give the official count


@pytest.mark.parametrize("key", sorted(COUNTS))
def test_official_keys_map_onto_ours(key):
    model, key_map = converter(key)
    mapped = [key_map(k) for k in official_keys(key)]
    assert sorted(mapped) == sorted(model.state_dict())  # one to one


SHAPES = {
    "seaformer_t": {
        "smb1.stem_block.0.c.weight": (16, 3, 3, 3),
        "smb1.layer1.conv.0.c.weight": (16, 1, 3, 3),
        "trans1.transformer_blocks.0.attn.to_q.c.weight": (64, 128, 1, 1),
        "trans1.transformer_blocks.0.attn.dwconv.c.weight": (256, 1, 3, 3),
        "trans1.transformer_blocks.0.attn.pos_emb_rowq.pos_embed": (1, 64, 16),
        "trans2.transformer_blocks.1.mlp.fc1.c.weight": (640, 160, 1, 1),
        "linear.weight": (1000, 160),
    },
    "seaformer_l": {"smb1.layer1.conv.0.c.weight": (96, 32, 1, 1)},
    "seaformer_seg_t": {
        "decode_head.conv_seg.weight": (150, 96, 1, 1),
        "decode_head.linear_fuse.conv.weight": (96, 1, 1, 1),
        "decode_head.fuse1.local_embedding.conv.weight": (64, 32, 1, 1),
        "decode_head.fuse1.global_act.conv.weight": (64, 128, 1, 1),
        "decode_head.fuse2.global_act.conv.weight": (96, 160, 1, 1),
    },
}


@pytest.mark.parametrize("key", sorted(SHAPES))
def test_spec_shapes(key):
    model, key_map = converter(key)
    sd = model.state_dict()
    for name, shape in SHAPES[key].items():
        assert tuple(sd[key_map(name)].shape) == shape, name


@pytest.mark.parametrize("key", ["seaformer_s", "seaformer_seg_l"])
def test_from_official_loads_strictly(key):
    """A state_dict with the official names (random values) loads through from_official and reproduces."""
    torch.manual_seed(0)
    source, key_map = converter(key)
    for t in source.state_dict().values():  # perturb every tensor (the BN weights that start at 0 too)
        if t.is_floating_point():
            t.mul_(1 + 0.1 * torch.randn_like(t)).add_(0.01 * torch.randn_like(t).abs())
    ours = source.state_dict()
    official_sd = {k: ours[key_map(k)] for k in official_keys(key)}
    loaded = plugattn.from_official(key, official_sd).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = source.eval()(x)
        assert want.isfinite().all() and want.std() > 0
        torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)
    with pytest.raises(KeyError):
        plugattn.from_official(key, dict(list(official_sd.items())[:-1]))  # strict: a missing key raises
    with pytest.raises(KeyError):
        plugattn.from_official(key, {**official_sd, "linear_extra.weight": torch.zeros(1)})  # and an unknown one


def test_classifier_api():
    torch.manual_seed(0)
    model = create_model("seaformer_t")
    x = torch.randn(2, 3, 65, 65)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 160, 2, 2)  # ceil-halving six times: 65 → 33, 17, 9, 5, 3, 2
        assert torch.equal(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 160)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.reset_classifier(10)
    assert model(x).shape == (2, 10)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    model.reset_classifier(0)
    assert model(x).shape == (2, 160)
    assert create_model("seaformer_b", num_classes=7)(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_feature_extractor_and_fx():
    model = create_model("seaformer_t")
    x = torch.randn(1, 3, 64, 64)
    fe = create_feature_extractor(model, {"stages.1": "s8", "stages.4": "s64", "head": "logits"})
    with torch.no_grad():
        out = fe(x)
        assert out["s8"].shape == (1, 32, 8, 8) and out["s64"].shape == (1, 160, 1, 1)
        torch.testing.assert_close(out["logits"], model(x))
        seg = create_model("seaformer_seg_t")
        torch.testing.assert_close(torch.fx.symbolic_trace(seg)(x), seg(x))


def test_segmentation_output_and_classes():
    torch.manual_seed(0)
    seg = create_model("seaformer_seg_t")
    assert model_info("seaformer_seg_t").task == "segmentation"
    with torch.no_grad():
        assert seg(torch.randn(1, 3, 65, 65)).shape == (1, 150, 9, 9)  # 1/8 resolution, ceil
        feats = seg.forward_features(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [32, 128, 160]
    before = {k: v.clone() for k, v in seg.state_dict().items() if "classifier" not in k}
    seg.reset_classifier(19)
    assert seg.num_classes == 19 and seg(torch.randn(1, 3, 64, 64)).shape == (1, 19, 8, 8)
    assert all(torch.equal(v, seg.state_dict()[k]) for k, v in before.items())
    assert create_model("seaformer_seg_s_cityscapes").num_classes == 19
    assert plugattn.from_official("seaformer_seg_t", None, num_classes=19).num_classes == 19


def test_create_model_reads_mmseg_checkpoint(tmp_path):
    torch.manual_seed(0)
    source, key_map = converter("seaformer_seg_t")
    ours = source.state_dict()
    path = tmp_path / "seaformer_tiny.pth"
    torch.save({"meta": {"mmseg_version": "0.x"}, "state_dict": {k: ours[key_map(k)]
                                                                  for k in official_keys("seaformer_seg_t")}}, path)
    model = create_model("seaformer_seg_t", checkpoint=path)
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())
    assert isinstance(model.decode_head.classifier, nn.Conv2d)
