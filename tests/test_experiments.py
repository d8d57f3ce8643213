"""Experiments: data loaders, the backbone, deterministic/resumable training, compare, viz, DDP, and a CI smoke run.

Everything here trains on tiny subsets for at most a couple of epochs, so the file runs in well under a minute.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import plugattn
from helpers import interrupt_after_epoch
from plugattn.experiments import compare as cmp
from plugattn.experiments import train as tr
from plugattn.experiments.data import DataNotFoundError, ImageData, augment, balanced_subset, load_dataset
from plugattn.experiments.models import BasicBlock, resnet

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_recipe(**kw) -> tr.Recipe:
    return tr.Recipe(**{"epochs": 1, "batch_size": 50, **kw})


@pytest.fixture(scope="module")
def mini() -> ImageData:
    return load_dataset("fmnist-mini")


@pytest.fixture(scope="module")
def tiny(mini) -> ImageData:
    """20 train / 10 test images per class from the embedded subset."""
    tr_i = balanced_subset(mini.train_y.numpy(), 20, 0)
    te_i = balanced_subset(mini.test_y.numpy(), 10, 0)
    return ImageData("tiny", mini.train_x[tr_i], mini.train_y[tr_i], mini.test_x[te_i], mini.test_y[te_i], mini.classes)


# ------------------------------------------------------------------------------------------------- data
def test_embedded_subset_is_balanced_and_small(mini):
    path = Path(plugattn.__file__).parent / "data" / "fmnist_subset.npz"
    assert path.stat().st_size < 5_000_000
    assert mini.train_x.shape == (8000, 1, 28, 28) and mini.train_x.dtype == torch.uint8
    assert mini.test_x.shape == (2000, 1, 28, 28)
    assert torch.bincount(mini.train_y).tolist() == [800] * 10
    assert torch.bincount(mini.test_y).tolist() == [200] * 10
    assert mini.classes[0] == "T-shirt/top" and mini.classes[9] == "Ankle boot"
    # real images, not noise: Fashion-MNIST's mean pixel is about 0.286, with a black background
    assert abs(mini.mean[0] - 0.286) < 0.01
    assert (mini.train_x[:, :, 0, 0] == 0).float().mean() > 0.9


def test_embedded_subset_matches_the_source_files():
    src = Path("/usr/share/datasets/fashion-mnist")
    if not (src / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed")
    d = np.load(Path(plugattn.__file__).parent / "data" / "fmnist_subset.npz")
    raw = gzip.open(src / "train-images-idx3-ubyte.gz").read()
    full = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    np.testing.assert_array_equal(d["train_images"], full[d["train_index"]])
    np.testing.assert_array_equal(d["train_index"], balanced_subset(
        np.frombuffer(gzip.open(src / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8), 800, 0))


def test_balanced_subset():
    y = np.repeat(np.arange(3), [5, 7, 9])
    i = balanced_subset(y, 4, seed=1)
    assert np.bincount(y[i]).tolist() == [4, 4, 4] and len(set(i.tolist())) == 12
    np.testing.assert_array_equal(i, balanced_subset(y, 4, seed=1))
    with pytest.raises(ValueError, match="has only 5"):
        balanced_subset(y, 6)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 256, (30, 28, 28)), np.tile(np.arange(10), 3)
    xte, yte = rng.integers(0, 256, (20, 28, 28)), np.tile(np.arange(10), 2)
    for stem, a in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                    ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        _write_idx(tmp_path / f"{stem}.gz", a)
    d = load_dataset("fashion-mnist", tmp_path)
    assert d.train_x.shape == (30, 1, 28, 28)
    np.testing.assert_array_equal(d.train_x[:, 0].numpy(), xtr)
    np.testing.assert_array_equal(d.test_y.numpy(), yte)
    d2 = load_dataset("fashion-mnist", tmp_path, train_per_class=2, test_per_class=1)
    assert torch.bincount(d2.train_y).tolist() == [2] * 10 and d2.test_x.shape[0] == 10


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)
    with pytest.raises(DataNotFoundError, match="--download"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist")


def test_cifar10_npz_and_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)  # N, H, W, C
    y = np.arange(12, dtype=np.uint8) % 10
    (tmp_path / "npz").mkdir()
    for split in ("train", "test"):
        np.savez(tmp_path / "npz" / f"cifar10-{split}.npz", images=x, labels=y)
    d = load_dataset("cifar10", tmp_path / "npz")
    assert d.train_x.shape == (12, 3, 32, 32)
    np.testing.assert_array_equal(d.train_x.numpy(), x.transpose(0, 3, 1, 2))
    # the official python batches: rows of 3072 = R plane, G plane, B plane
    (tmp_path / "py").mkdir()
    flat = x.transpose(0, 3, 1, 2).reshape(12, -1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / "py" / name, "wb") as f:
            pickle.dump({b"data": flat, b"labels": y.tolist()}, f)
    d = load_dataset("cifar10", tmp_path / "py")
    assert d.train_x.shape == (60, 3, 32, 32)
    np.testing.assert_array_equal(d.test_x.numpy(), x.transpose(0, 3, 1, 2))


def test_augment_crops_and_flips():
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.uint8).reshape(2, 1, 4, 5)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, 0, g, flip=False), x)
    for _ in range(5):
        y = augment(x, 0, g)
        for n in range(2):
            assert torch.equal(y[n], x[n]) or torch.equal(y[n], x[n].flip(-1))
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    y = augment(x, 2, g, flip=False)
    for n in range(2):  # every output is some 4x5 window of the padded image
        assert any(torch.equal(y[n], xp[n, :, i:i + 4, j:j + 5]) for i in range(5) for j in range(5))


# ------------------------------------------------------------------------------------------------ model
class _Recorder(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels, self.seen = channels, None

    def forward(self, x):
        self.seen = x
        return 2 * x


def test_attention_sits_before_the_residual_add():
    torch.manual_seed(0)
    b = BasicBlock(4, 8, 2, attn_layer=_Recorder).eval()
    assert b.attn.channels == 8
    x = torch.randn(2, 4, 6, 6)
    y = b(x)
    branch = b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x)))))  # independent re-derivation
    torch.testing.assert_close(b.attn.seen, branch)
    torch.testing.assert_close(y, torch.relu(2 * branch + b.shortcut(x)))


def test_backbone_accepts_names_classes_and_none():
    assert isinstance(resnet(None).layers[0].attn, nn.Identity)
    assert isinstance(resnet("baseline").layers[0].attn, nn.Identity)
    m = resnet("se", in_channels=1)
    assert isinstance(m.layers[2].attn, plugattn.get("se")) and m.layers[2].attn.channels == 64
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="unknown module name"):
        resnet("nope")
    with pytest.raises(TypeError, match="attn_layer"):
        resnet(nn.Identity())


# ----------------------------------------------------------------------------------------------- train
def test_training_is_deterministic_per_seed(tiny, tmp_path):
    r = tiny_recipe(epochs=2)
    a = tr.train_run("eca", 3, tiny, r, out_dir=tmp_path / "a", progress=False)
    b = tr.train_run("eca", 3, tiny, r, out_dir=tmp_path / "b", progress=False)
    tr.train_run("eca", 4, tiny, r, out_dir=tmp_path / "c", progress=False)
    wa, wb, wc = (tr.load_checkpoint(tmp_path / s / "final.pt")["model"] for s in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["test_acc"] == b["test_acc"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_after_interruption_gives_the_same_run(tiny, tmp_path, monkeypatch):
    r = tiny_recipe(epochs=2)
    ref = tr.train_run("se", 0, tiny, r, out_dir=tmp_path / "ref", progress=False)
    real_save = tr._save
    interrupt_after_epoch(monkeypatch, tr)
    with pytest.raises(KeyboardInterrupt):
        tr.train_run("se", 0, tiny, r, out_dir=tmp_path / "run", progress=False)
    monkeypatch.setattr(tr, "_save", real_save)
    assert (tmp_path / "run" / "last.pt").is_file() and not (tmp_path / "run" / "result.json").exists()
    res = tr.train_run("se", 0, tiny, r, out_dir=tmp_path / "run", progress=False)
    w0, w1 = (tr.load_checkpoint(tmp_path / s / "final.pt")["model"] for s in ("ref", "run"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert res["test_acc"] == ref["test_acc"] and not (tmp_path / "run" / "last.pt").exists()


def test_checkpoints_load_with_weights_only(tiny, tmp_path):
    tr.train_run("cbam", 0, tiny, tiny_recipe(), out_dir=tmp_path, progress=False)
    ck = torch.load(tmp_path / "final.pt", weights_only=True)
    json.dumps(ck["meta"])  # plain metadata only
    model = tr.build_model("cbam", ck["meta"]["data"], tr.Recipe(**ck["meta"]["recipe"]))
    model.load_state_dict(ck["model"])


# ---------------------------------------------------------------------------------------------- compare
def test_compare_writes_reports_and_skips_finished_runs(tiny, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    s = cmp.compare(["eca"], seeds=2, recipe=tiny_recipe(), data=tiny, out=out, progress=False)
    assert [r["module"] for r in s["rows"]] == ["baseline", "eca"]
    rows = {r["module"]: r for r in s["rows"]}
    assert len(rows["eca"]["acc"]) == 2
    assert rows["eca"]["acc_mean"] == pytest.approx(float(np.mean(rows["eca"]["acc"])))
    assert rows["eca"]["acc_std"] == pytest.approx(float(np.std(rows["eca"]["acc"], ddof=1)))
    assert rows["eca"]["params"] - rows["baseline"]["params"] == sum(
        p.numel() for m in ("layers.0.attn", "layers.1.attn", "layers.2.attn")
        for p in resnet("eca", in_channels=1).get_submodule(m).parameters())
    for f in ("results.json", "results.md", "config.json"):
        assert (out / f).is_file()
    assert "| eca |" in (out / "results.md").read_text()
    assert (out / "runs" / "eca" / "seed1" / "final.pt").is_file()

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(tr, "build_model", no_training)  # train_run builds a model only when it trains
    s2 = cmp.compare(["eca"], seeds=2, recipe=tiny_recipe(), data=tiny, out=out, progress=False)
    assert [r["acc"] for r in s2["rows"]] == [r["acc"] for r in s["rows"]]
    with pytest.raises(ValueError, match="another recipe"):
        cmp.compare(["eca"], seeds=1, recipe=tiny_recipe(epochs=2), data=tiny, out=out, progress=False)


def test_summarize_flags_differences_within_noise():
    runs = [{"module": m, "seed": s, "test_acc": a, "train_time": 1.0}
            for m, accs in (("baseline", (0.80, 0.82, 0.81)), ("se", (0.81, 0.83, 0.80)), ("eca", (0.90, 0.91, 0.92)))
            for s, a in enumerate(accs)]
    cost = {"params": 1, "flops": 1, "latency_ms": 1.0}
    rows = {r["module"]: r for r in cmp.summarize(runs, {"baseline": cost, "se": cost, "eca": cost})}
    assert rows["se"]["within_noise"] is True and rows["eca"]["within_noise"] is False
    assert rows["baseline"]["within_noise"] is None
    assert rows["eca"]["delta"] == pytest.approx(10.0)
    assert "(within noise)" in cmp.markdown_table(list(rows.values()))


def test_ci_smoke_two_modules_clear_a_floor(mini, tmp_path):
    """CI smoke: 1 epoch on 200 images/class of the embedded subset, baseline + 2 modules; far above chance (10%)."""
    i = balanced_subset(mini.train_y.numpy(), 200, 0)
    j = balanced_subset(mini.test_y.numpy(), 50, 0)
    data = ImageData("smoke", mini.train_x[i], mini.train_y[i], mini.test_x[j], mini.test_y[j], mini.classes)
    s = cmp.compare(["se", "cbam"], seeds=1, recipe=tr.Recipe(epochs=1, batch_size=32), data=data,
                    out=tmp_path, progress=False)
    assert [r["module"] for r in s["rows"]] == ["baseline", "se", "cbam"]
    for r in s["rows"]:
        # chance is 10%; measured for seeds 0/1: baseline 65/64, se 65/57, cbam 52/48 (CBAM starts slowest)
        assert r["acc_mean"] > 35, r


def test_cli_compare_and_viz(tmp_path, capsys):
    from plugattn.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", "--modules", "cbam", "--seeds", "1", "--epochs", "1", "--train-per-class", "10",
                 "--test-per-class", "10", "--batch-size", "50", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| baseline |" in text and "| cbam |" in text
    assert "±" not in (out / "results.md").read_text().split("| cbam |")[1].split("\n")[0]  # one seed: no spread
    pytest.importorskip("matplotlib")
    assert (out / "accuracy.png").stat().st_size > 10_000
    figs, gallery = tmp_path / "figs", tmp_path / "docs" / "gallery.md"
    assert main(["viz", str(out), "--out", str(figs), "--gallery", str(gallery), "--per-class", "5"]) == 0
    names = sorted(p.name for p in figs.glob("*.png"))
    assert names == ["fmnist-mini_cbam_channels.png", "fmnist-mini_cbam_spatial.png"]
    assert "fmnist-mini_cbam_spatial.png" in gallery.read_text()
    # a missing seed names the seeds there; a baseline alone has no attention to draw
    with pytest.raises(SystemExit, match="seeds there: 0"):
        main(["viz", str(out), "--seed", "3", "--out", str(figs)])
    capsys.readouterr()
    assert main(["viz", str(out / "runs" / "baseline" / "seed0" / "final.pt"), "--out", str(figs)]) == 1
    assert "no attention maps" in capsys.readouterr().err


def test_viz_records_position_attention_rows():
    from plugattn.experiments.viz import collect, spatial_maps

    torch.manual_seed(0)
    model = resnet("danet", in_channels=1).eval()
    maps = collect(model, torch.randn(2, 1, 12, 12), query=[(0.5, 0.5)])
    rows = {k: v for k, v in maps.items() if "pam" in k}
    assert sorted(rows) == ["layers.0.attn.pam.gate", "layers.1.attn.pam.gate", "layers.2.attn.pam.gate"]
    r = rows["layers.0.attn.pam.gate"]
    assert r.shape == (2, 1, 12, 12)
    torch.testing.assert_close(r.sum((-2, -1)), torch.ones(2, 1))
    # independent: the DANet PAM row of query i is softmax_j(q_i · k_j) over the block's residual branch
    x = torch.randn(2, 1, 12, 12)
    maps = collect(model, x, query=[(0.5, 0.5)])
    blk = model.layers[0]
    with torch.no_grad():
        f = blk.bn2(blk.conv2(torch.relu(blk.bn1(blk.conv1(model.stem(x))))))  # (N, C, 12, 12) at stem stride 1
        q = blk.attn.pam.query(f).flatten(2)  # (N, C', HW)
        k = blk.attn.pam.key(f).flatten(2)
        i = 6 * 12 + 6
        ref = torch.softmax(torch.einsum("nc,ncj->nj", q[:, :, i], k), -1).reshape(2, 12, 12)
    torch.testing.assert_close(maps["layers.0.attn.pam.gate"][:, 0], ref)
    assert "layers.0" in spatial_maps(maps)


# ------------------------------------------------------------------------------------------------- DDP
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not found")
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    args = ["--module", "se", "--train-per-class", "100", "--test-per-class", "50", "--epochs", "2",
            "--batch-size", "50", "--threads", "1", "--no-progress"]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "plugattn.experiments.train",
                        *args, "--out", str(tmp_path / "ddp")], capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert ddp["world_size"] == 2
    data = load_dataset("fmnist-mini", train_per_class=100, test_per_class=50)
    single = tr.train_run("se", 0, data, tr.Recipe(epochs=2, batch_size=50), progress=False)
    assert single["world_size"] == 1
    # same global batches and augmentation; only BatchNorm statistics differ (per-process halves of each batch)
    assert abs(ddp["test_acc"] - single["test_acc"]) < 0.06, (ddp["test_acc"], single["test_acc"])
    assert abs(ddp["history"][0]["train_loss"] - single["history"][0]["train_loss"]) < 0.1
    assert ddp["test_acc"] > 0.4


def test_viz_keeps_both_coordinate_attention_gates():
    from plugattn.experiments.viz import collect, spatial_maps

    if "coord" not in plugattn.list_modules():
        pytest.skip("coord not registered")
    torch.manual_seed(0)
    model = resnet("coord", in_channels=1, stem_stride=2).eval()
    seen = []
    attn = model.layers[0].attn
    h = attn.register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    maps = collect(model, torch.randn(2, 1, 28, 20))
    h.remove()
    a_h, a_w = maps["layers.0.attn.gate_h"], maps["layers.0.attn.gate_w"]
    assert a_h.shape == (2, 16, 14) and a_w.shape == (2, 16, 10)
    x, y = seen[0]
    torch.testing.assert_close(y, x * a_h[..., None] * a_w[:, :, None, :])  # the paper's y = x · a_h · a_w
    what, m = spatial_maps(maps)["layers.0"]
    torch.testing.assert_close(m, (a_h[..., None] * a_w[:, :, None, :]).mean(1))


def test_same_config_tolerates_last_bit_float_differences_only():
    a = {"recipe": {"lr": 0.1, "widths": [16, 32]}, "data": {"mean": [0.2857502763605443]}}
    assert tr.same_config(a, {"recipe": {"lr": 0.1, "widths": [16, 32]}, "data": {"mean": [0.28575027636054423]}})
    assert not tr.same_config(a, {"recipe": {"lr": 0.2, "widths": [16, 32]}, "data": {"mean": [0.2857502763605443]}})
    assert not tr.same_config(a, {"recipe": {"lr": 0.1, "widths": [16, 64]}, "data": {"mean": [0.2857502763605443]}})
    assert not tr.same_config(a, {"recipe": {"lr": 0.1}, "data": {"mean": [0.2857502763605443]}})


def test_compose_specs_name_points_of_the_space(tiny):
    from plugattn.experiments.models import parse_compose

    text = "compose:squeeze=avg,axes=h+w,excite=axial,excite_kw.rd_ratio=0.0625"
    assert parse_compose(text) == {"squeeze": "avg", "axes": "h+w", "excite": "axial",
                                   "excite_kw": {"rd_ratio": 0.0625}}
    with pytest.raises(ValueError, match="key=value"):
        parse_compose("compose:squeeze")
    # booleans are booleans: the string "False" would be truthy and silently keep the bias
    flags = parse_compose("compose:excite=conv2d,excite_kw.bias=False,excite_kw.norm_layer=batchnorm,squeeze_kw.x=none")
    assert flags["excite_kw"] == {"bias": False, "norm_layer": "batchnorm"} and flags["squeeze_kw"] == {"x": None}
    assert cmp.resolve_modules(["se", text]) == ["baseline", "se", text]
    assert cmp.plot_label(text) == "avg h+w axial excite_kw.rd_ratio=0.0625" and cmp.plot_label("se") == "se"
    net = tr.build_model(text, tiny.describe(), tiny_recipe())
    attn = net.layers[0].attn
    assert isinstance(attn, plugattn.space.ComposedAttention)
    ref = plugattn.compose(16, squeeze="avg", axes="h+w", excite="axial", excite_kw={"rd_ratio": 0.0625})
    assert [tuple(p.shape) for p in attn.parameters()] == [tuple(p.shape) for p in ref.parameters()]
