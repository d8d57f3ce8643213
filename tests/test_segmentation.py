"""Segmentation: the encoder/heads, metrics against a per-pixel reference, training, compare, CLI and DDP.

Everything trains a few dozen 96×96 scenes for an epoch or two, so the file runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import plugattn
from helpers import interrupt_after_epoch
from plugattn.experiments import compare as cmp
from plugattn.experiments import train as tr
from plugattn.experiments.models import BasicBlock
from plugattn.experiments.segdata import load_segmentation
from plugattn.experiments.segmodels import SegNet, SmallEncoder, TorchvisionEncoder, build_seg_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def scenes():
    return load_segmentation("fmnist-scenes", num_train=64, num_test=24)


def seg_recipe(**kw) -> tr.SegRecipe:
    return tr.SegRecipe(**{"epochs": 1, "batch_size": 16, "widths": [8, 8, 16, 16], **kw})


# ------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("head", ["fcn", "danet_head", "light_head"])
@pytest.mark.parametrize("size", [(96, 96), (50, 70)])
def test_segnet_logits_at_input_size(head, size):
    net = SegNet(SmallEncoder(1, (8, 8, 16, 16)), 11, head).eval()
    x = torch.randn(2, 1, *size)
    assert net(x).shape == (2, 11, *size)
    feats = net.encoder(x)
    assert [f.shape[-1] for f in feats] == [-(-size[1] // s) for s in (2, 4, 8, 8)]  # output stride 8


def test_attention_sits_in_every_encoder_block():
    enc = SmallEncoder(1, (8, 8, 16, 16), depth=2, attn_layer="se")
    blocks = [m for m in enc.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8 and all(type(b.attn).__name__ == "SqueezeExcite" for b in blocks)
    spec = build_seg_model({"squeeze": "avg+max", "excite": "conv1d", "gate": "hard_sigmoid"}, 11, 1,
                           widths=(8, 8, 16, 16))
    attns = [b.attn for b in spec.modules() if isinstance(b, BasicBlock)]
    assert all(isinstance(a, plugattn.space.ComposedAttention) for a in attns)


def test_torchvision_encoder_output_stride_8_with_attention():
    enc = TorchvisionEncoder("resnet18", in_channels=1, attn_layer="eca").eval()
    feats = enc(torch.randn(1, 1, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 16), (128, 8, 8), (256, 8, 8), (512, 8, 8)]
    assert sum(isinstance(m, plugattn.get("eca")) for m in enc.modules()) == 8  # one per residual block
    net = build_seg_model("cbam", 5, 3, backbone="resnet18").eval()
    assert net(torch.randn(1, 3, 40, 56)).shape == (1, 5, 40, 56)


def test_network_entries_and_bad_names():
    net = build_seg_model("seaformer_seg_t", 11, 1).eval()
    assert net(torch.randn(1, 1, 64, 64)).shape == (1, 11, 64, 64)
    with pytest.raises(ValueError, match="backbone"):
        build_seg_model(None, 11, 1, backbone="vgg")
    with pytest.raises(ValueError, match="danet_head"):
        cmp.resolve_modules(["sea_block"], task="segmentation")  # not shape-preserving: the message lists the heads
    assert cmp.resolve_modules(["all"], task="segmentation") == ["baseline", *cmp.SEG_MODULES]


# ------------------------------------------------------------------------------------------------ metrics
def test_metrics_equal_a_per_pixel_reference(scenes):
    """evaluate_segmentation's confusion-matrix metrics vs IoU counted directly from the predicted pixels."""
    torch.manual_seed(0)
    net = SegNet(SmallEncoder(1, (8, 8, 16, 16)), 11).eval()
    m = tr.evaluate_segmentation(net, scenes, torch.device("cpu"), batch_size=7)
    preds, labels = [], []
    with torch.no_grad():
        for x, y in scenes.test_batches(100):
            preds.append(net(tr.normalize(x, scenes.mean, scenes.std)).argmax(1).flatten().numpy())
            labels.append(y.flatten().numpy())
    p, y = np.concatenate(preds), np.concatenate(labels)
    keep = y != scenes.ignore_index
    p, y = p[keep], y[keep]
    ious = {}
    for c in range(11):
        union = np.sum((p == c) | (y == c))
        if union:
            ious[c] = np.sum((p == c) & (y == c)) / union
    assert m["miou"] == pytest.approx(np.mean(list(ious.values())), abs=1e-12)
    assert m["miou_fg"] == pytest.approx(np.mean([v for c, v in ious.items() if c != 0]), abs=1e-12)
    assert m["pixel_acc"] == pytest.approx(np.mean(p == y), abs=1e-12)
    assert [c for c, v in enumerate(m["iou"]) if v is not None] == sorted(ious)


def test_metrics_skip_absent_classes_and_ignored_pixels():
    cm = torch.tensor([[5.0, 1, 0], [2, 3, 0], [0, 0, 0]])  # class 2 neither present nor predicted
    m = tr.segmentation_metrics(cm, ["background", "a", "b"])
    iou0, iou1 = 5 / (5 + 1 + 2), 3 / (3 + 2 + 1)
    assert m["iou"] == [pytest.approx(iou0), pytest.approx(iou1), None]
    assert m["miou"] == pytest.approx((iou0 + iou1) / 2) and m["miou_fg"] == pytest.approx(iou1)
    assert m["pixel_acc"] == pytest.approx(8 / 11)


# ----------------------------------------------------------------------------------------------- training
def test_segmentation_training_is_deterministic_resumable_and_learns(scenes, tmp_path, monkeypatch):
    r = seg_recipe(epochs=2)
    a = tr.train_run("se", 0, scenes, r, out_dir=tmp_path / "a", progress=False)
    real_save = tr._save
    interrupt_after_epoch(monkeypatch, tr)
    with pytest.raises(KeyboardInterrupt):
        tr.train_run("se", 0, scenes, r, out_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(tr, "_save", real_save)
    b = tr.train_run("se", 0, scenes, r, out_dir=tmp_path / "b", progress=False)
    wa, wb = (tr.load_checkpoint(tmp_path / s / "final.pt")["model"] for s in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["test_miou"] == b["test_miou"] and a["task"] == "segmentation"
    assert len(a["test_iou"]) == 11 and 0 <= a["test_miou_fg"] <= a["test_miou"] < 1
    assert a["history"][1]["train_loss"] < a["history"][0]["train_loss"]
    seen = []
    tr.train_run(None, 1, scenes, seg_recipe(epochs=2), progress=False, on_epoch=lambda e, m: seen.append(e))
    assert seen == [1, 2]


def test_recipe_and_data_must_agree(scenes):
    with pytest.raises(TypeError, match="SegRecipe"):
        tr.train_run(None, 0, scenes, tr.Recipe(), progress=False)


# ------------------------------------------------------------------------------------------------ compare
def test_compare_segmentation_reports(scenes, tmp_path):
    out = tmp_path / "cmp"
    s = cmp.compare(["eca", "danet_head"], seeds=2, recipe=seg_recipe(), data=scenes, out=out, progress=False)
    rows = {r["module"]: r for r in s["rows"]}
    assert list(rows) == ["baseline", "eca", "danet_head"] and s["task"] == "segmentation"
    assert rows["eca"]["miou_mean"] == pytest.approx(float(np.mean(rows["eca"]["miou"])))
    assert rows["danet_head"]["kind"] == "head" and len(rows["eca"]["iou_mean"]) == 11
    text = (out / "results.md").read_text()
    assert "| danet_head | head |" in text and "Per-class IoU" in text
    assert "Shirt" in text.split("Per-class IoU")[1]


def test_cli_segmentation(tmp_path, capsys):
    from plugattn.cli import main

    args = ["compare", "--task", "segmentation", "-m", "se", "--seeds", "1", "--epochs", "1", "--num-train", "32",
            "--num-test", "16", "--widths", "8", "8", "16", "16", "--no-progress", "--out", str(tmp_path / "c")]
    assert main(args) == 0
    assert "mIoU, all classes" in capsys.readouterr().out
    assert main(["compare", "--task", "segmentation", "--dataset", "cifar10", "--out", str(tmp_path / "x")]) == 2
    assert "classification data set" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not found")
def test_ddp_segmentation_two_cpu_processes_match_single_process(tmp_path, scenes):
    args = ["--task", "segmentation", "--module", "eca", "--num-train", "64", "--num-test", "24", "--epochs", "1",
            "--batch-size", "16", "--widths", "8", "8", "16", "16", "--threads", "1", "--no-progress"]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "plugattn.experiments.train",
                        *args, "--out", str(tmp_path / "ddp")], capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    single = tr.train_run("eca", 0, scenes, seg_recipe(), progress=False)
    assert ddp["world_size"] == 2 and ddp["data"] == single["data"]
    # the same global batches; only BatchNorm statistics differ (per-process halves of each batch)
    assert abs(ddp["history"][0]["train_loss"] - single["history"][0]["train_loss"]) < 0.1
    assert abs(ddp["test_miou"] - single["test_miou"]) < 0.05, (ddp["test_miou"], single["test_miou"])


def test_model_outputs_are_plain_modules():
    """The encoder and head are ordinary modules: torch.fx traces the FCN network and the trace equals eager."""
    net = SegNet(SmallEncoder(1, (8, 8, 16, 16), attn_layer="cbam"), 11).eval()
    gm = torch.fx.symbolic_trace(net)
    x = torch.randn(1, 1, 48, 40)
    torch.testing.assert_close(gm(x), net(x))


def test_viz_draws_predictions_and_attention_over_scenes(scenes, tmp_path):
    pytest.importorskip("matplotlib")
    from plugattn.cli import main

    out = tmp_path / "cmp"
    cmp.compare(["cbam", "danet_head"], seeds=1, recipe=seg_recipe(), data=scenes, out=out, progress=False)
    assert main(["viz", str(out), "--gallery", str(tmp_path / "gallery.md")]) == 0
    figs = {p.name for p in (out / "figures").glob("*.png")}
    assert {"fmnist-scenes_predictions.png", "fmnist-scenes_cbam_spatial.png", "fmnist-scenes_danet_head_pam.png",
            "fmnist-scenes_danet_head_spatial.png"} <= figs
    assert "fmnist-scenes_cbam_channels.png" not in figs  # per-class averages are for classification
    text = (tmp_path / "gallery.md").read_text()
    assert "test mIoU" in text and "predictions" in text
