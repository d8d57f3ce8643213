"""Segmentation data: the Fashion-MNIST scene generator (pinned and checked against a slow reference), the
SegData interface, and the VOC / folder layouts on tiny data sets written here."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plugattn.experiments.data import DataNotFoundError
from plugattn.experiments.segdata import (
    SCENE_GROUPS,
    SCENE_RULES,
    FileSegData,
    _fmnist_pool,
    load_segmentation,
    make_scenes,
    scale_bilinear,
)

torch.set_num_threads(1)
THR = SCENE_RULES["threshold"] * 255


@pytest.fixture(scope="module")
def pool():
    return _fmnist_pool(None)  # embedded subset: train images, labels, test images, labels, source


@pytest.fixture(scope="module")
def scenes(pool):
    return make_scenes(pool[0], pool[1], 40, seed=7, return_layout=True)


# ---------------------------------------------------------------------------------------------- generator
def test_label_checksum_pin(pool):
    # Pins the generator (draw order, scaling, compositing) on the embedded subset. A deliberate change of the
    # rules changes these; update them together with docs/segmentation-data.md.
    y = make_scenes(pool[0], pool[1], 6, seed=2024)[1]
    yc = make_scenes(pool[0], pool[1], 6, seed=2024, context=True)[1]
    assert hashlib.sha256(y.tobytes()).hexdigest()[:16] == "454d73650257701e"
    assert hashlib.sha256(yc.tobytes()).hexdigest()[:16] == "c631aadac4213827"


def test_scale_bilinear_matches_torch_and_is_batch_invariant(pool):
    x = pool[0][:20]
    for side in range(28, 71, 3):
        ours = scale_bilinear(x, side).astype(np.float64)
        ref = F.interpolate(torch.from_numpy(x)[:, None].double(), size=(side, side), mode="bilinear",
                            align_corners=False)[:, 0].numpy()
        assert np.abs(ours - ref).max() <= 0.75, side  # fixed-point weights + rounding
        assert np.array_equal(scale_bilinear(x[3:4], side), scale_bilinear(x, side)[3:4])


def _reference_scene(layout, i, images, size):
    """Slow per-pixel re-derivation of one scene: the topmost item above the threshold wins."""
    rows = np.flatnonzero(layout.scene == i)
    patches = [scale_bilinear(images[layout.src[r]][None], int(layout.side[r]))[0].astype(int) for r in rows]
    img = np.zeros((size, size), int)
    lab = np.zeros((size, size), int)
    for y in range(size):
        for x in range(size):
            faint = 0
            for r, p in zip(rows[::-1], patches[::-1]):  # top to bottom
                t, le, s = layout.top[r], layout.left[r], layout.side[r]
                if t <= y < t + s and le <= x < le + s:
                    v = p[y - t, x - le]
                    if v > THR:
                        img[y, x], lab[y, x] = v, layout.cls[r] + 1
                        break
                    faint = max(faint, v)
            else:
                img[y, x] = faint
    return img, lab


def test_scenes_match_slow_reference(pool, scenes):
    x, y, lay = scenes
    for i in range(3):
        img, lab = _reference_scene(lay, i, pool[0], 96)
        assert np.array_equal(lab, y[i]), i
        assert np.array_equal(img, x[i]), i


def test_scene_rules(pool, scenes):
    x, y, lay = scenes
    # background exactly where the image is at or below the threshold
    assert np.array_equal(y == 0, x <= THR)
    assert ((lay.top >= 0) & (lay.left >= 0) & (lay.top + lay.side <= 96) & (lay.left + lay.side <= 96)).all()
    assert lay.side.min() >= 28 and lay.side.max() <= 70
    assert set(np.unique(lay.side).tolist()) > {28, 70} or len(np.unique(lay.side)) > 20  # scales spread out
    for i in range(len(x)):
        rows = np.flatnonzero(lay.scene == i)
        assert 2 <= len(rows) <= 4
        cls = lay.cls[rows]
        assert len(set(cls.tolist())) == len(cls)  # distinct classes
        assert (pool[1][lay.src[rows]] == cls).all()  # the source image has that class
        present = set(np.unique(y[i]).tolist()) - {0}
        assert present == set((cls + 1).tolist())  # every item visible, nothing else
        for r in rows:  # each keeps >= min_visible of its own labelled pixels
            own = (scale_bilinear(pool[0][lay.src[r]][None], int(lay.side[r]))[0] > THR).sum()
            assert (y[i] == lay.cls[r] + 1).sum() >= SCENE_RULES["min_visible"] * own
    counts = np.bincount([len(np.flatnonzero(lay.scene == i)) for i in range(len(x))], minlength=5)
    assert (counts[2:] > 0).all()  # 2, 3 and 4 items all occur


def test_context_scenes_stay_in_one_group(pool):
    groups = [set(g) for g in SCENE_GROUPS.values()]
    assert set().union(*groups) == set(range(10))
    _, y, lay = make_scenes(pool[0], pool[1], 60, seed=3, context=True, return_layout=True)
    for i in range(60):
        present = set((np.unique(y[i]).astype(int) - 1).tolist()) - {-1}
        assert present <= set(list(SCENE_GROUPS.values())[lay.group[i]])
    assert len(set(lay.group.tolist())) == len(SCENE_GROUPS)
    # the plain variant mixes classes across groups (the check above can fail)
    _, y2 = make_scenes(pool[0], pool[1], 60, seed=3)
    mixed = [set((np.unique(s).astype(int) - 1).tolist()) - {-1} for s in y2]
    assert any(not any(m <= g for g in groups) for m in mixed)


def test_make_scenes_bad_input(pool):
    with pytest.raises(ValueError, match="size"):
        make_scenes(pool[0], pool[1], 2, size=64)
    with pytest.raises(ValueError, match="images"):
        make_scenes(pool[0].astype(np.float32), pool[1], 2)
    with pytest.raises(ValueError, match="items"):
        make_scenes(pool[0], pool[1], 2, items=(3, 2))
    with pytest.raises(ValueError, match="group"):
        make_scenes(pool[0], pool[1], 2, context=True, groups={"tiny": (0, 1)})


# ---------------------------------------------------------------------------------------------- data sets
def test_scene_dataset_interface():
    d = load_segmentation("fmnist-scenes", num_train=24, num_test=10)
    assert d.num_classes == 11 and d.class_names[0] == "background" and d.in_channels == 1
    assert d.crop_size == (96, 96) and d.num_test == 10 and d.ignore_index == 255
    json.dumps(d.describe())
    x, y = d.train_epoch(0, 0)
    assert x.shape == (24, 1, 96, 96) and x.dtype == torch.uint8
    assert y.shape == (24, 96, 96) and y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < 11
    assert 0.05 < d.mean[0] < 0.5 and 0.1 < d.std[0] < 0.5
    # determinism in (epoch, seed), fresh scenes otherwise
    assert torch.equal(x, d.train_epoch(0, 0)[0])
    assert not torch.equal(x, d.train_epoch(1, 0)[0]) and not torch.equal(x, d.train_epoch(0, 1)[0])
    # the test set is fixed by the data set's seed, and every shard sample comes exactly once
    tx, ty = d.test_set()
    assert torch.equal(ty, load_segmentation("fmnist-scenes", num_train=24, num_test=10).test_set()[1])
    assert not torch.equal(ty, load_segmentation("fmnist-scenes", num_test=10, seed=1).test_set()[1])
    got = {}
    for rank in range(3):
        idx = list(range(rank, 10, 3))
        shard = list(d.test_batches(2, rank, 3))
        assert all(b[0].shape[0] <= 2 for b in shard)
        sx = torch.cat([b[0] for b in shard])
        assert torch.equal(sx, tx[idx]) and torch.equal(torch.cat([b[1] for b in shard]), ty[idx])
        got.update(dict.fromkeys(idx))
    assert sorted(got) == list(range(10))
    with pytest.raises(ValueError, match="rank"):
        next(d.test_batches(2, 3, 3))
    with pytest.raises(ValueError, match="epoch"):
        d.train_epoch(-1, 0)


def test_scene_crop_and_context_dataset():
    d = load_segmentation("fmnist-scenes-context", num_train=8, num_test=4, crop_size=64)
    x, y = d.train_epoch(2, 5)
    assert x.shape == (8, 1, 64, 64) and y.shape == (8, 64, 64)
    assert d.describe()["context"] and set(d.describe()["groups"]) == set(SCENE_GROUPS)
    # the crop is a window of the full scene: background exactly where the image is dark
    assert torch.equal(y == 0, x[:, 0] <= THR)
    with pytest.raises(ValueError, match="crop_size"):
        load_segmentation("fmnist-scenes", crop_size=128)


def _write_pool_npz(path):
    """Train items all at grey level 100, test items at 200, so a scene shows which pool it came from."""
    train = np.zeros((50, 28, 28), np.uint8)
    train[:, 4:24, 6:22] = 100
    test = np.zeros((20, 28, 28), np.uint8)
    test[:, 4:24, 6:22] = 200
    np.savez(path, train_images=train, train_labels=np.arange(50) % 10, test_images=test,
             test_labels=np.arange(20) % 10)


def test_train_and_test_scenes_come_from_their_own_pools(tmp_path):
    _write_pool_npz(tmp_path / "pool.npz")
    d = load_segmentation("fmnist-scenes", tmp_path / "pool.npz", num_train=30, num_test=30)
    x, _ = d.train_epoch(0, 0)
    tx, _ = d.test_set()
    assert int(x.max()) == 100 and int(tx.max()) == 200


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_scenes_from_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 40), ("t10k", 20)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    d = load_segmentation("fmnist-scenes", str(tmp_path), num_train=4, num_test=4)
    assert "IDX" in d.source and d.train_epoch(0, 0)[0].shape == (4, 1, 96, 96)
    with pytest.raises(DataNotFoundError, match="t10k"):
        (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
        load_segmentation("fmnist-scenes", str(tmp_path))


# ---------------------------------------------------------------------------------------------- files
def _label_image(h, w, seed):
    """Vertical stripes of labels 1..4 of uneven widths, a 255 (ignore) band, and an image encoding the label."""
    rng = np.random.default_rng(seed)
    edges = np.sort(rng.choice(np.arange(6, w - 6), 3, replace=False))
    mask = np.searchsorted(edges, np.arange(w), side="right").astype(np.uint8)[None].repeat(h, 0) + 1
    mask[: h // 6] = 255
    red = mask.astype(int) * 40 % 256
    img = np.stack([red, 255 - red, np.full_like(red, 90)], -1).astype(np.uint8)
    return img, mask


def _save(img, mask, img_path, mask_path, palette=True):
    from PIL import Image

    Image.fromarray(img).save(img_path)
    if palette:  # VOC-like palette: the colours are not the indices
        m = Image.frombytes("P", mask.shape[::-1], mask.tobytes())
        m.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [224, 224, 192] * 251)
    else:
        m = Image.fromarray(mask)  # greyscale ("L")
    m.save(mask_path)


def _make_voc(root, sizes):
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    ids = []
    for i, (h, w) in enumerate(sizes):
        img, mask = _label_image(h, w, i)
        _save(img, mask, root / "JPEGImages" / f"2007_{i:06d}.jpg", root / "SegmentationClass" / f"2007_{i:06d}.png")
        ids.append(f"2007_{i:06d}")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:3]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[3:]) + "\n")
    return ids


def test_voc_layout(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    sizes = [(40, 60), (50, 50), (36, 48), (40, 60), (44, 30), (44, 30)]
    _make_voc(root, sizes)
    for where in (root, tmp_path / "VOCdevkit", tmp_path):
        d = load_segmentation("voc", where, crop_size=32)
        assert d.num_classes == 21 and d.class_names[15] == "person" and d.num_train == 3 and d.num_test == 3
    x, y = d.train_epoch(0, 0)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8 and y.shape == (3, 32, 32) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) <= {1, 2, 3, 4, 255}
    batches = list(d.test_batches(4))
    assert [tuple(b[0].shape) for b in batches] == [(1, 3, 40, 60), (2, 3, 44, 30)]  # full size, one size a batch
    # palette PNGs are read as indices, not colours
    assert torch.equal(batches[0][1][0], torch.from_numpy(_label_image(40, 60, 3)[1]).long())
    assert [b[0].shape[0] for b in d.test_batches(4, 1, 2)] == [1]  # shard 1 of 2: val image 1 only
    json.dumps(d.describe())


def test_voc_missing_parts(tmp_path):
    with pytest.raises(DataNotFoundError, match="JPEGImages.*expected the Pascal VOC layout"):
        load_segmentation("voc", tmp_path)
    root = tmp_path / "VOC2012"
    _make_voc(root, [(20, 20)] * 4)
    (root / "SegmentationClass" / "2007_000003.png").unlink()
    with pytest.raises(DataNotFoundError, match="2007_000003.png"):
        load_segmentation("voc", tmp_path)
    with pytest.raises(ValueError, match="data_dir"):
        load_segmentation("voc")


def _make_folder(root, palette=False):
    for split, n in (("train", 3), ("val", 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            img, mask = _label_image(30 + 4 * i, 40, 10 + i)
            _save(img, mask, root / split / "images" / f"s{i}.png", root / split / "masks" / f"s{i}.png", palette)


def test_folder_layout(tmp_path):
    _make_folder(tmp_path)
    d = load_segmentation("segfolder", tmp_path, crop_size=24)
    assert d.num_classes == 5 and d.class_names[4] == "class4" and d.in_channels == 3  # max label 4 (255 ignored)
    assert d.train_epoch(1, 0)[0].shape == (3, 3, 24, 24)
    assert [tuple(b[1].shape) for b in d.test_batches(8)] == [(1, 30, 40), (1, 34, 40)]
    (tmp_path / "classes.txt").write_text("bg\na\nb\nc\nd\ne\n")
    assert load_segmentation("segfolder", tmp_path).class_names == ("bg", "a", "b", "c", "d", "e")
    (tmp_path / "classes.txt").write_text("bg\na\n")
    with pytest.raises(ValueError, match="label 4"):
        load_segmentation("segfolder", tmp_path).train_epoch(0, 0)


def test_folder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="train/images is missing; expected the folder layout"):
        load_segmentation("segfolder", tmp_path)
    _make_folder(tmp_path)
    (tmp_path / "val" / "masks" / "s1.png").unlink()
    with pytest.raises(DataNotFoundError, match="s1.png"):
        load_segmentation("segfolder", tmp_path)
    from PIL import Image

    Image.new("RGB", (30, 40)).save(tmp_path / "val" / "masks" / "s1.png")  # colour mask: rejected
    with pytest.raises(ValueError, match="index PNG"):
        load_segmentation("segfolder", tmp_path)


def test_augmentation_keeps_image_and_mask_aligned(tmp_path):
    _make_folder(tmp_path, palette=True)
    d = load_segmentation("segfolder", tmp_path, crop_size=32)
    assert isinstance(d, FileSegData)
    img, mask = _label_image(48, 64, 1)
    fill = np.rint(np.asarray(d.mean) * 255).astype(np.uint8)
    flips = 0
    for s in range(24):
        x, y = d.augment(img, mask, np.random.default_rng(s))
        assert x.shape == (3, 32, 32) and y.shape == (32, 32)
        decoded = np.rint(x[0].astype(float) / 40).astype(int)  # the image's red channel encodes the label
        pad = (y == 255) & (x == fill[:, None, None]).all(0)
        pure = np.ones_like(y, bool)  # pixels whose 5×5 neighbourhood has one label
        yp = np.pad(y, 2, mode="edge")
        for dy in range(5):
            for dx in range(5):
                pure &= yp[dy:dy + 32, dx:dx + 32] == y
        sel = pure & (y != 255)
        if sel.sum() > 50:
            assert (decoded[sel] == y[sel]).mean() > 0.99, s
            flips += int((decoded[sel] == y[:, ::-1][sel]).mean() < 0.9)  # a mis-flip would be caught
        assert pad.sum() <= (y == 255).sum()
    assert flips > 0
    with pytest.raises(ValueError, match="load_segmentation: unknown"):
        load_segmentation("cityscapes")
