"""plugattn.models: the registry, create_model and checkpoint files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

import plugattn
from helpers import network_golden
from plugattn.models import create_model, list_models, model_info, read_checkpoint

KEYS = ["se_resnet50", "se_resnet50_moskomule", "cbam_resnet50", "bam_resnet50", "eca_resnet50", "eca_mobilenet_v2",
        "triplet_resnet50", "coord_mobilenet_v2", "sknet50", "sknet_ppplang_cifar", "danet_resnet50", "seaformer_t",
        "seaformer_s", "seaformer_b", "seaformer_l", "seaformer_seg_t", "seaformer_seg_s", "seaformer_seg_b",
        "seaformer_seg_l"]


def test_every_official_network_key_is_registered_and_loadable():
    assert set(KEYS) <= set(list_models()) and set(KEYS) <= set(plugattn.list_official())
    assert list_models("seaformer_seg_?") == ["seaformer_seg_b", "seaformer_seg_l", "seaformer_seg_s",
                                              "seaformer_seg_t"]
    for key in KEYS:
        info = model_info(key)
        assert info.paper and info.url.startswith("http") and info.official and info.task in ("classification",
                                                                                               "segmentation")
    with pytest.raises(ValueError, match="expected one of"):
        model_info("resnet9000")


def test_create_model_num_classes():
    net = create_model("se_resnet18", num_classes=0)
    assert isinstance(net.get_classifier(), torch.nn.Identity)
    assert create_model("se_resnet18", num_classes=7)(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert not net.training


def test_official_checkpoint_files(tmp_path):
    """A released file as saved by the usual scripts (wrapped, DataParallel prefix) loads through create_model."""
    g = network_golden(Path(__file__).parents[1] / "goldens" / "networks" / "se_resnet50.pt")
    path = tmp_path / "se_resnet50.pth.tar"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in g["state_dict"].items()}}, path)
    net = create_model("se_resnet50", checkpoint=path)
    want = plugattn.from_official("se_resnet50", g["state_dict"]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), want(x), rtol=0, atol=0)
        five = create_model("se_resnet50", checkpoint=path, num_classes=5)
        assert five(x).shape == (1, 5)
        torch.testing.assert_close(five.forward_features(x), want.forward_features(x), rtol=0, atol=0)
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": g["state_dict"], "args": argparse.Namespace(lr=0.1)}, bad)
    with pytest.raises(ValueError, match="other than tensors"):
        read_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pth")


def test_convert_round_trip(tmp_path, capsys):
    """plugattn convert: official file → safetensors + JSON → create_model, exactly; a trained net round-trips."""
    pytest.importorskip("safetensors")
    from plugattn.cli import main
    from plugattn.models.convert import save_model

    g = network_golden(Path(__file__).parents[1] / "goldens" / "networks" / "eca_resnet50.pt")
    official = tmp_path / "eca_resnet50_k3557.pth.tar"
    torch.save({"state_dict": g["state_dict"]}, official)
    out = tmp_path / "conv" / "eca_resnet50.safetensors"
    assert main(["convert", "eca_resnet50", str(official), str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file() and "25,557,112 parameters" in capsys.readouterr().out
    want = plugattn.from_official("eca_resnet50", g["state_dict"]).eval()
    net = create_model("eca_resnet50", checkpoint=out)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), want(x), rtol=0, atol=0)
    small = create_model("se_resnet18", num_classes=3)
    with torch.no_grad():
        small.fc.weight.add_(1.0)  # "trained"
    path = save_model(small, "se_resnet18", tmp_path / "mine.safetensors")
    back = create_model("se_resnet18", checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), back.state_dict().values()))
    with pytest.raises(ValueError, match="not 'eca_resnet50'"):
        create_model("eca_resnet50", checkpoint=path)
