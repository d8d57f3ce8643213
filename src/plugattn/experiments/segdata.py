"""Semantic-segmentation data for ``plugattn compare --task segmentation``: uint8 images, int64 label maps.

Sources (nothing is ever downloaded):

- ``fmnist-scenes``: canvases (default 96×96) holding 2–4 Fashion-MNIST items, each scaled by a random factor
  in [1, 2.5] and placed at a random position, later items occluding earlier ones; 11 classes (0 background,
  1–10 the Fashion-MNIST classes). Made by :func:`make_scenes`; fresh training scenes every epoch (from
  training images only), a fixed test set (from test images only). The item images come from the subset
  embedded in the package (8,000 train / 2,000 test images) or, with ``data_dir``, from the full set.
- ``fmnist-scenes-context``: the same, but each scene first draws a hidden scene type from
  :data:`SCENE_GROUPS` and takes its items only from that group's classes, so one item says something about
  the others (object co-occurrence, as in real scene parsing).
- ``voc``: the Pascal VOC layout (``JPEGImages/``, ``SegmentationClass/`` palette PNGs,
  ``ImageSets/Segmentation/{train,val}.txt``), 21 classes, 255 = ignore.
- ``segfolder``: ``{train,val}/{images,masks}/`` with matching file stems; masks are index PNGs.

The rules of the scene generator, its class frequencies and its speed are in ``docs/segmentation-data.md``;
``python -m plugattn.experiments.segdata --figure DIR`` draws the figures there.

Fashion-MNIST: Xiao, Rasul, Vollgraf, arXiv:1708.07747, MIT licence. Pascal VOC: Everingham et al., IJCV 2010.
"""

from __future__ import annotations

import argparse
import numbers
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .data import EMBEDDED, FMNIST_CLASSES, FMNIST_DEFAULT_DIR, DataNotFoundError, embedded_path, fmnist_arrays

if TYPE_CHECKING:
    import numpy as np
else:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover  (the `train` extra)
        np = None

__all__ = [
    "SEG_DATASETS", "SCENE_GROUPS", "SCENE_RULES", "VOC_CLASSES", "SegData", "SceneData", "FileSegData",
    "load_segmentation", "make_scenes", "scale_bilinear",
]

SEG_DATASETS = ("fmnist-scenes", "fmnist-scenes-context", "voc", "segfolder")

#: Hidden scene types of ``fmnist-scenes-context``: name → Fashion-MNIST class indices (0-based) its items come
#: from. Each upper-body garment (T-shirt/top, Shirt, Pullover/Coat, Dress) belongs to one group only, so the
#: other items of a scene (sneaker, sandal, ankle boot, …) tell which garment to expect.
SCENE_GROUPS: dict[str, tuple[int, ...]] = {
    "casual": (0, 1, 7, 8),  # T-shirt/top, Trouser, Sneaker, Bag
    "summer": (3, 5, 7, 8),  # Dress, Sandal, Sneaker, Bag
    "winter": (2, 4, 1, 9),  # Pullover, Coat, Trouser, Ankle boot
    "office": (6, 1, 9, 8),  # Shirt, Trouser, Ankle boot, Bag
}
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
#: The generator settings of both scene data sets (arguments of :func:`make_scenes`).
SCENE_RULES: dict[str, Any] = {"items": (2, 4), "scale": (1.0, 2.5), "threshold": 0.1, "min_visible": 0.25}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FIX_BITS = 11  # fixed-point bits of the bilinear weights in scale_bilinear
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_TRAIN_TAG, _TEST_TAG, _STATS_TAG = 0x7A1, 0x7E5, 0x57A  # separate the seed streams of train / test / statistics


# ---------------------------------------------------------------------------------------------- scenes
def scale_bilinear(images: np.ndarray, side: int) -> np.ndarray:
    """Resize uint8 square images (B, S, S) to (B, side, side) bilinearly (half-pixel centres, edges clamped).

    The sampling of ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, in fixed point:
    weights are multiples of 1/2048 and the result is rounded half up to uint8 (at most about 0.6 grey levels from
    float bilinear). All sums are of integers below 2^31 held in float64, so they are exact whatever order the
    matrix product adds them in: the same bits on every machine, alone or in a batch.
    """
    s = images.shape[-1]
    one = 1 << _FIX_BITS
    src = np.maximum((np.arange(side) + 0.5) * (s / side) - 0.5, 0.0)  # source coordinate of each output pixel
    i0 = np.minimum(np.floor(src).astype(np.int64), s - 1)
    i1 = np.minimum(i0 + 1, s - 1)
    w1 = np.rint((src - i0) * one)
    w = np.zeros((side, s))  # (side, S) integer interpolation weights, each row sums to 2^bits
    np.add.at(w, (np.arange(side), i0), one - w1)
    np.add.at(w, (np.arange(side), i1), w1)
    v = w @ (images.astype(np.float64) @ w.T)  # (B, side, side), exact integers
    return np.floor(v * (1.0 / one**2) + 0.5).astype(np.uint8)


@dataclass
class _Layout:
    """Items of ``n`` scenes as flat arrays (one row per item, scene by scene, bottom to top)."""

    scene: np.ndarray  # (M,) scene index
    cls: np.ndarray  # (M,) Fashion-MNIST class (0-based)
    src: np.ndarray  # (M,) index into the source pool
    side: np.ndarray  # (M,) scaled side length in pixels
    top: np.ndarray  # (M,) row of the item's top-left corner
    left: np.ndarray  # (M,) column of the item's top-left corner
    group: np.ndarray  # (n,) scene type (index into SCENE_GROUPS) or -1


def make_scenes(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    *,
    size: int = 96,
    seed: int | Sequence[int] = 0,
    context: bool = False,
    items: tuple[int, int] = (2, 4),
    scale: tuple[float, float] = (1.0, 2.5),
    threshold: float = 0.1,
    min_visible: float = 0.25,
    groups: dict[str, tuple[int, ...]] | None = None,
    return_layout: bool = False,
) -> Any:
    """Compose ``n`` segmentation scenes from Fashion-MNIST items (the rules are in ``docs/segmentation-data.md``).

    Each scene draws k ∈ [items[0], items[1]] distinct classes (with ``context``: first a scene type from
    ``groups``, then classes of that type only), one random image of each class from ``images``, a scale factor
    in ``scale`` per item (side ``round(28·factor)``, bilinear) and a top-left corner that keeps the item inside
    the canvas. Items are painted bottom to top: where an item's scaled intensity exceeds ``threshold`` (of 255)
    it overwrites image and label (label = class + 1); its darker pixels are transparent (over background they
    add their faint intensity by maximum, so background pixels stay at or below the threshold). A scene in which
    some item keeps less than ``min_visible`` of its labelled pixels is redrawn (new positions; after 10 tries a
    whole new scene), so every scene shows k classes. All randomness comes from one
    ``numpy.random.default_rng(seed)``.

    Args:
        images: source items, uint8 (N, S, S) (Fashion-MNIST: S = 28), bright object on a dark background.
        labels: their classes, integers in [0, 10) (any count of classes works with ``context=False``).
        n: number of scenes.
        size: canvas side; must hold the largest item, ``round(S·scale[1])``.
        seed: seed (or sequence of ints) of the generator.
        context: draw a hidden scene type first and items only from its classes.
        items: (min, max) items per scene.
        scale: (min, max) scale factor.
        threshold: fraction of 255 above which an item pixel is labelled and occludes.
        min_visible: smallest visible share of each item's labelled pixels.
        groups: scene types for ``context`` (default :data:`SCENE_GROUPS`); each needs ≥ items[1] classes.
        return_layout: also return the item layout (for tests and figures).

    Returns:
        ``(images uint8 (n, size, size), labels uint8 (n, size, size))``, plus the layout when ``return_layout``.

    Examples:
        >>> src = np.zeros((4, 28, 28), np.uint8); src[:, 4:24, 8:20] = 200
        >>> x, y = make_scenes(src, np.arange(4), 3, size=72, seed=1)
        >>> x.shape, y.dtype, sorted(set(np.unique(y)) - {0}) != []
        ((3, 72, 72), dtype('uint8'), True)
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
        raise ValueError(f"make_scenes: images must be uint8 (N, S, S), got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"make_scenes: labels must have shape ({images.shape[0]},), got {labels.shape}")
    if not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"make_scenes: n must be an int >= 0, got {n!r}")
    n = int(n)
    lo_k, hi_k = items
    if not 1 <= lo_k <= hi_k:
        raise ValueError(f"make_scenes: items must be (min, max) with 1 <= min <= max, got {items}")
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"make_scenes: scale must be (min, max) with 0 < min <= max, got {scale}")
    if not 0 <= threshold < 1:
        raise ValueError(f"make_scenes: threshold must be in [0, 1), got {threshold}")
    if not 0 <= min_visible <= 1:
        raise ValueError(f"make_scenes: min_visible must be in [0, 1], got {min_visible}")
    s = images.shape[1]
    max_side = int(round(s * scale[1]))
    if size < max_side:
        raise ValueError(f"make_scenes: size={size} cannot hold an item of {max_side} px (scale up to {scale[1]})")
    num_cls = int(labels.max()) + 1 if labels.size else 0
    pools = [np.flatnonzero(labels == c) for c in range(num_cls)]
    if context:
        groups = SCENE_GROUPS if groups is None else groups
        allowed = np.zeros((len(groups), num_cls), bool)
        for g, members in enumerate(groups.values()):
            if len(set(members)) < hi_k or not all(0 <= c < num_cls for c in members):
                raise ValueError(f"make_scenes: group {list(groups)[g]!r} needs >= {hi_k} distinct classes in "
                                 f"[0, {num_cls}), got {members}")
            allowed[g, list(members)] = True
    else:
        allowed = np.ones((1, num_cls), bool)
    usable = np.array([len(p) > 0 for p in pools])
    if (allowed & usable).sum(1).min(initial=num_cls) < hi_k:
        raise ValueError(f"make_scenes: scenes of up to {hi_k} distinct classes need images of >= {hi_k} classes")

    rng = np.random.default_rng(seed)
    thr = threshold * 255

    def draw(m: int) -> tuple[np.ndarray, ...]:  # classes, sources, sides (m, hi_k) and counts, groups (m,)
        k = rng.integers(lo_k, hi_k + 1, m)
        grp = rng.integers(0, len(allowed), m) if context else np.zeros(m, np.int64)
        keys = np.where(allowed[grp] & usable, rng.random((m, num_cls)), np.inf)
        cls = np.argsort(keys, axis=1, kind="stable")[:, :hi_k]  # random distinct allowed classes
        sizes = np.array([len(p) for p in pools])
        pick = rng.integers(0, np.maximum(sizes[cls], 1))
        src = np.array([pools[c][i] for c, i in zip(cls.ravel(), pick.ravel())], np.int64).reshape(cls.shape)
        side = np.rint(s * rng.uniform(scale[0], scale[1], (m, hi_k))).astype(np.int64)
        return cls, src, side, k, (grp if context else np.full(m, -1))

    def place(side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, size - side + 1), rng.integers(0, size - side + 1)

    cls, src, side, k, grp = draw(n)
    top, left = place(side)
    # scale every item once, batched by side length (same bits as one by one)
    patches: dict[tuple[int, int], _Item] = {}
    used = np.arange(hi_k)[None, :] < k[:, None]
    for L in np.unique(side[used]):
        sel = np.argwhere(used & (side == L))
        for (i, j), item in zip(sel.tolist(), _items(images[src[sel[:, 0], sel[:, 1]]], int(L), thr)):
            patches[(i, j)] = item

    out_x = np.zeros((n, size, size), np.uint8)
    out_y = np.zeros((n, size, size), np.uint8)
    rows: list[tuple[int, ...]] = []
    for i, ki in enumerate(k.tolist()):
        its = [patches.pop((i, j)) for j in range(ki)]
        c_i, src_i, side_i = cls[i, :ki].tolist(), src[i, :ki].tolist(), side[i, :ki].tolist()
        t_i, l_i = top[i, :ki].tolist(), left[i, :ki].tolist()
        tries = 0
        while not _compose(out_x[i], out_y[i], its, c_i, t_i, l_i, min_visible):
            tries += 1
            if tries > 1000:
                raise RuntimeError(f"make_scenes: no layout of scene {i} keeps min_visible={min_visible} of every "
                                   f"item after 1000 tries; lower min_visible or the scale")
            if tries % 10 == 0:  # a whole new scene (same count of items)
                c2, s2, sd2, _, g2 = draw(1)
                c_i, src_i, side_i = c2[0, :ki].tolist(), s2[0, :ki].tolist(), sd2[0, :ki].tolist()
                grp[i] = g2[0]
                its = [_items(images[j][None], L, thr)[0] for j, L in zip(src_i, side_i)]  # (rare)
            t2, l2 = place(np.array(side_i))
            t_i, l_i = t2.tolist(), l2.tolist()
        rows += list(zip([i] * ki, c_i, src_i, side_i, t_i, l_i))
    if not return_layout:
        return out_x, out_y
    cols = np.array(rows, np.int64).reshape(-1, 6).T
    return out_x, out_y, _Layout(cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], group=grp)


_Item = tuple[np.ndarray, np.ndarray, np.ndarray, int]  # scaled uint8 patch, its mask, its faint part, mask size


def _items(images: np.ndarray, side: int, thr: float) -> list[_Item]:
    """Scale items to ``side`` and split each into its mask (> thr) and its faint part (<= thr, else 0)."""
    p = scale_bilinear(images, side)  # (B, side, side)
    m = p > thr
    faint = np.where(m, np.uint8(0), p)
    sums = m.sum((1, 2)).tolist()
    return [(p[b], m[b], faint[b], sums[b]) for b in range(len(p))]


def _compose(img: np.ndarray, lab: np.ndarray, items: list[_Item], cls: list[int], top: list[int],
             left: list[int], min_visible: float) -> bool:
    """Paint the items bottom to top into ``img``/``lab`` (in place); False if one is hidden too much.

    Background pixels hold at most ``thr`` and labelled ones more, so ``max(canvas, faint)`` changes background
    pixels only: an item's faint pixels never cover a lower item.
    """
    img[:] = 0
    lab[:] = 0
    for (p, m, faint, _), c, t, le in zip(items, cls, top, left):
        L = p.shape[0]
        ri, rl = img[t:t + L, le:le + L], lab[t:t + L, le:le + L]  # views into the canvas
        np.maximum(ri, faint, out=ri)
        np.copyto(ri, p, where=m)
        np.copyto(rl, c + 1, where=m, casting="unsafe")
    return all(np.count_nonzero(lab == c + 1) >= min_visible * it[3] for c, it in zip(cls, items))


def _fmnist_pool(data_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(train images, train labels, test images, test labels, source) of the Fashion-MNIST items."""
    if data_dir is None or str(data_dir) == "embedded":
        path = embedded_path()
        if not path.is_file():
            raise DataNotFoundError(f"{path} is missing; rebuild it with `python -m plugattn.experiments.data`")
        d = np.load(path)
        return (d["train_images"], d["train_labels"], d["test_images"], d["test_labels"],
                f"embedded {EMBEDDED} (8,000 train / 2,000 test Fashion-MNIST images)")
    p = Path(data_dir)
    if p.is_file() and p.suffix == ".npz":
        d = np.load(p)
        return d["train_images"], d["train_labels"], d["test_images"], d["test_labels"], f"{p} (npz)"
    if not p.is_dir():
        raise DataNotFoundError(
            f"fmnist-scenes: {p} does not exist or is not a folder. Pass data_dir=None for the embedded subset, or "
            f"a folder with the four Fashion-MNIST IDX files (e.g. {FMNIST_DEFAULT_DIR}: "
            f"`apt-get install dataset-fashion-mnist`)")
    a = fmnist_arrays(p)
    return a["train_images"], a["train_labels"], a["test_images"], a["test_labels"], f"{p} (Fashion-MNIST IDX)"


# ---------------------------------------------------------------------------------------------- data sets
@dataclass
class SegData:
    """A segmentation data set: training epochs and a fixed test set as uint8 images and int64 label maps.

    Built by :func:`load_segmentation`; :class:`SceneData` and :class:`FileSegData` implement the methods.

    Attributes:
        name: registry name (one of :data:`SEG_DATASETS`).
        source: where the data came from, in words.
        class_names: one name per class; index 0 is the background where there is one.
        mean: per-channel mean of the images in [0, 1] (normalisation).
        std: per-channel standard deviation of the images in [0, 1].
        in_channels: image channels (1 for scenes, 3 for VOC / folder).
        num_train: training samples per epoch.
        crop_size: (H, W) of every training sample.
        ignore_index: label value that marks pixels to ignore (padding, VOC's object borders).
    """

    name: str
    source: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_channels: int
    num_train: int
    crop_size: tuple[int, int]
    ignore_index: int = 255

    @property
    def num_classes(self) -> int:
        """Number of classes (background included)."""
        return len(self.class_names)

    @property
    def num_test(self) -> int:
        """Number of test images."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Plain, JSON-able configuration of the data set."""
        return {
            "name": self.name, "source": self.source, "classes": list(self.class_names),
            "num_classes": self.num_classes, "in_channels": self.in_channels, "num_train": self.num_train,
            "num_test": self.num_test, "crop_size": list(self.crop_size), "ignore_index": self.ignore_index,
            "mean": list(self.mean), "std": list(self.std),
        }

    def train_epoch(self, epoch: int, seed: int) -> tuple[Tensor, Tensor]:
        """All training samples of one epoch: uint8 (N, C, H, W) images and int64 (N, H, W) labels.

        Deterministic in ``(epoch, seed)``; the order is not shuffled (the training loop permutes).
        """
        raise NotImplementedError

    def test_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """The fixed test set at full size, in batches of uint8 images and int64 labels.

        Sample ``i`` goes to shard ``rank`` when ``i % world == rank``; images of different sizes come in
        separate batches.
        """
        raise NotImplementedError


def _check_epoch(epoch: int, seed: int) -> None:
    for arg, v in (("epoch", epoch), ("seed", seed)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
            raise ValueError(f"train_epoch: {arg} must be an int >= 0, got {v!r}")


def _check_shard(batch_size: int, rank: int, world: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"test_batches: batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(world, int) or world < 1 or not isinstance(rank, int) or not 0 <= rank < world:
        raise ValueError(f"test_batches: need 0 <= rank < world, got rank={rank!r}, world={world!r}")


@dataclass
class SceneData(SegData):
    """Fashion-MNIST scenes (:func:`make_scenes`): fresh training scenes each epoch, a fixed test set."""

    size: int = 96
    seed: int = 0
    context: bool = False
    test_count: int = 1000
    pools: tuple[np.ndarray, ...] = field(default=(), repr=False)  # train images, labels, test images, labels
    _test: tuple[Tensor, Tensor] | None = field(default=None, init=False, repr=False)

    @property
    def num_test(self) -> int:
        """Number of test scenes."""
        return self.test_count

    def describe(self) -> dict:
        """Plain, JSON-able configuration, with the generator's settings."""
        d = super().describe()
        d.update(size=self.size, seed=self.seed, context=self.context,
                 **{k: list(v) if isinstance(v, tuple) else v for k, v in SCENE_RULES.items()},
                 groups={k: [FMNIST_CLASSES[c] for c in v] for k, v in SCENE_GROUPS.items()} if self.context else None)
        return d

    def _scenes(self, split: str, n: int, seed: Sequence[int]) -> tuple[Tensor, Tensor]:
        x, y = self.pools[:2] if split == "train" else self.pools[2:]
        img, lab = make_scenes(x, y, n, size=self.size, seed=seed, context=self.context, **SCENE_RULES)
        return torch.from_numpy(img[:, None]), torch.from_numpy(lab).long()

    def train_epoch(self, epoch: int, seed: int) -> tuple[Tensor, Tensor]:
        """``num_train`` fresh scenes from the training images, random-cropped to ``crop_size`` if smaller."""
        _check_epoch(epoch, seed)
        x, y = self._scenes("train", self.num_train, (int(seed), int(epoch), _TRAIN_TAG))
        ch, cw = self.crop_size
        if (ch, cw) != (self.size, self.size):
            rng = np.random.default_rng((int(seed), int(epoch), _TRAIN_TAG, 1))
            oy = torch.from_numpy(rng.integers(0, self.size - ch + 1, len(x)))
            ox = torch.from_numpy(rng.integers(0, self.size - cw + 1, len(x)))
            rows = (oy[:, None] + torch.arange(ch))[:, :, None]  # (N, ch, 1)
            cols = (ox[:, None] + torch.arange(cw))[:, None, :]  # (N, 1, cw)
            idx = torch.arange(len(x))[:, None, None]
            x, y = x[:, 0][idx, rows, cols][:, None].contiguous(), y[idx, rows, cols].contiguous()
        return x, y

    def test_set(self) -> tuple[Tensor, Tensor]:
        """The whole test set: uint8 (num_test, 1, size, size) images, int64 labels (made once, then cached)."""
        if self._test is None:
            self._test = self._scenes("test", self.test_count, (self.seed, _TEST_TAG))
        return self._test

    def test_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """The fixed test scenes of shard ``rank`` (indices ``rank::world``), ``batch_size`` at a time."""
        _check_shard(batch_size, rank, world)
        x, y = self.test_set()
        idx = torch.arange(rank, len(x), world)
        for b in range(0, len(idx), batch_size):
            sel = idx[b:b + batch_size]
            yield x[sel], y[sel]


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover
        raise ImportError("the voc and segfolder data sets need Pillow: pip install pillow") from e
    return Image


def _read_image(path: Path) -> np.ndarray:
    with _pil().open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)  # (H, W, 3)


def _read_mask(path: Path) -> np.ndarray:
    with _pil().open(path) as im:
        if im.mode not in ("P", "L", "1"):
            raise ValueError(f"{path}: a mask must be an index PNG (palette or greyscale) whose values are class "
                             f"indices, got mode {im.mode}")
        return np.asarray(im, np.uint8)  # (H, W); for palette images the indices, not the colours


@dataclass
class FileSegData(SegData):
    """Images and index masks on disk (VOC or folder layout), read lazily; RGB, evaluated at full size."""

    train_files: list[tuple[Path, Path]] = field(default_factory=list, repr=False)
    test_files: list[tuple[Path, Path]] = field(default_factory=list, repr=False)
    scale_range: tuple[float, float] = (0.5, 2.0)

    @property
    def num_test(self) -> int:
        """Number of validation images."""
        return len(self.test_files)

    def describe(self) -> dict:
        """Plain, JSON-able configuration, with the augmentation."""
        d = super().describe()
        d.update(augment={"scale": list(self.scale_range), "crop": list(self.crop_size), "flip": True,
                          "pad": "image: mean, mask: ignore_index"})
        return d

    def _load(self, pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
        img, mask = _read_image(pair[0]), _read_mask(pair[1])
        if img.shape[:2] != mask.shape:
            raise ValueError(f"{pair[0]} is {img.shape[1]}×{img.shape[0]} but its mask {pair[1]} is "
                             f"{mask.shape[1]}×{mask.shape[0]}")
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():
            raise ValueError(f"{pair[1]}: label {int(mask[bad].max())} but the data set has {self.num_classes} "
                             f"classes (and {self.ignore_index} = ignore)")
        return img, mask

    def augment(self, img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One training sample: random scale (bilinear / nearest), pad, random crop to ``crop_size``, random flip.

        Padding goes to the bottom and right: the image gets the mean colour, the mask ``ignore_index``. Draws,
        in this order: the scale factor, the crop's top, its left, the flip.

        Args:
            img: uint8 (H, W, 3) image.
            mask: uint8 (H, W) labels.
            rng: the generator to draw from.

        Returns:
            uint8 (3, ch, cw) image and uint8 (ch, cw) mask.
        """
        image_mod = _pil()
        f = rng.uniform(*self.scale_range)
        h, w = mask.shape
        nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
        im = np.asarray(image_mod.fromarray(img).resize((nw, nh), image_mod.Resampling.BILINEAR))
        mk = np.asarray(image_mod.fromarray(mask).resize((nw, nh), image_mod.Resampling.NEAREST))
        ch, cw = self.crop_size
        ph, pw = max(ch, nh), max(cw, nw)
        fill = np.rint(np.asarray(self.mean) * 255).astype(np.uint8)
        big = np.broadcast_to(fill, (ph, pw, 3)).copy()
        big_m = np.full((ph, pw), self.ignore_index, np.uint8)
        big[:nh, :nw], big_m[:nh, :nw] = im, mk
        t, le = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        im, mk = big[t:t + ch, le:le + cw], big_m[t:t + ch, le:le + cw]
        if rng.random() < 0.5:
            im, mk = im[:, ::-1], mk[:, ::-1]
        return np.ascontiguousarray(im.transpose(2, 0, 1)), np.ascontiguousarray(mk)

    def train_epoch(self, epoch: int, seed: int) -> tuple[Tensor, Tensor]:
        """Every training image once, augmented (see :meth:`augment`), in file order."""
        _check_epoch(epoch, seed)
        rng = np.random.default_rng((int(seed), int(epoch), _TRAIN_TAG))
        ch, cw = self.crop_size
        xs = np.empty((len(self.train_files), 3, ch, cw), np.uint8)
        ys = np.empty((len(self.train_files), ch, cw), np.uint8)
        for i, pair in enumerate(self.train_files):
            xs[i], ys[i] = self.augment(*self._load(pair), rng)
        return torch.from_numpy(xs), torch.from_numpy(ys).long()

    def test_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """Validation images of shard ``rank`` at full size; a batch holds consecutive images of one size."""
        _check_shard(batch_size, rank, world)
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for pair in self.test_files[rank::world]:
            img, mask = self._load(pair)
            if xs and (len(xs) == batch_size or ys[0].shape != mask.shape):
                yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)).long()
                xs, ys = [], []
            xs.append(img.transpose(2, 0, 1))
            ys.append(mask)
        if xs:
            yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)).long()


# ---------------------------------------------------------------------------------------------- layouts
def _voc_root(data_dir: Path) -> Path:
    for root in (data_dir, data_dir / "VOC2012", data_dir / "VOCdevkit" / "VOC2012"):
        if (root / "ImageSets" / "Segmentation").is_dir():
            return root
    return data_dir


def _voc_files(data_dir: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]], Path]:
    root = _voc_root(data_dir)
    layout = ("expected the Pascal VOC layout: ROOT/JPEGImages/<id>.jpg, ROOT/SegmentationClass/<id>.png (palette "
              "PNGs), ROOT/ImageSets/Segmentation/train.txt and val.txt, with ROOT = data_dir, data_dir/VOC2012 "
              "or data_dir/VOCdevkit/VOC2012")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt",
                "ImageSets/Segmentation/val.txt"):
        if not (root / sub).exists():
            raise DataNotFoundError(f"voc: {root / sub} is missing; {layout}")

    def split(name: str) -> list[tuple[Path, Path]]:
        ids = [s.strip() for s in (root / "ImageSets" / "Segmentation" / f"{name}.txt").read_text().split()]
        pairs = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids if i]
        for pair in pairs:
            for p in pair:
                if not p.is_file():
                    raise DataNotFoundError(f"voc: {p} (listed in {name}.txt) is missing; {layout}")
        if not pairs:
            raise DataNotFoundError(f"voc: {root}/ImageSets/Segmentation/{name}.txt lists no images")
        return pairs

    return split("train"), split("val"), root


def _folder_files(data_dir: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    layout = ("expected the folder layout: data_dir/{train,val}/images/<stem>.jpg|png and "
              "data_dir/{train,val}/masks/<stem>.png (index PNGs, 255 = ignore), optional data_dir/classes.txt")

    def split(name: str) -> list[tuple[Path, Path]]:
        img_dir, mask_dir = data_dir / name / "images", data_dir / name / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise DataNotFoundError(f"segfolder: {d} is missing; {layout}")
        imgs = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not imgs:
            raise DataNotFoundError(f"segfolder: no images in {img_dir}; {layout}")
        pairs = []
        for p in imgs:
            m = mask_dir / f"{p.stem}.png"
            if not m.is_file():
                raise DataNotFoundError(f"segfolder: {m} (the mask of {p}) is missing; {layout}")
            pairs.append((p, m))
        return pairs

    return split("train"), split("val")


def _take(files: list, count: int | None, arg: str) -> list:
    if count is None:
        return files
    if not isinstance(count, int) or not 1 <= count <= len(files):
        raise ValueError(f"load_segmentation: {arg} must be an int in [1, {len(files)}], got {count!r}")
    return files[:count]


# ---------------------------------------------------------------------------------------------- public
def load_segmentation(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    size: int = 96,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    crop_size: int | None = None,
) -> SegData:
    """Open a segmentation data set (see the module docstring for the sources).

    Args:
        name: one of :data:`SEG_DATASETS`.
        data_dir: scenes: None or ``"embedded"`` for the embedded Fashion-MNIST subset, a folder with the four
            Fashion-MNIST IDX files (e.g. ``/usr/share/datasets/fashion-mnist``) for the full set, or an ``.npz``
            laid out like the embedded one; ``voc``: the VOC root or a folder above it; ``segfolder``: the folder.
        size: canvas side of the scenes (not used by ``voc`` / ``segfolder``).
        num_train: training samples per epoch (scenes: default 1000; files: the first ``num_train`` of the list,
            default all).
        num_test: test samples (scenes: default 1000; files: the first ``num_test`` validation images, default all).
        seed: seed of the fixed test scenes and of the scene statistics (not of training epochs, which take theirs
            in :meth:`SegData.train_epoch`).
        crop_size: side of the training crops; default ``size`` for scenes (whole canvases), 256 for files.

    Returns:
        A :class:`SegData` (:class:`SceneData` or :class:`FileSegData`).
    """
    if name not in SEG_DATASETS:
        raise ValueError(f"load_segmentation: unknown dataset {name!r}; expected one of {', '.join(SEG_DATASETS)}")
    if np is None:
        raise ImportError("plugattn's experiments need numpy and tqdm: pip install 'plugattn[train]'")
    for arg, v in (("size", size), ("crop_size", crop_size), ("num_train", num_train), ("num_test", num_test)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"load_segmentation: {arg} must be a positive int, got {v!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"load_segmentation: seed must be an int >= 0, got {seed!r}")
    if name.startswith("fmnist-scenes"):
        if crop_size is not None and crop_size > size:
            raise ValueError(f"load_segmentation: crop_size={crop_size} exceeds the scene size {size}")
        xtr, ytr, xte, yte, source = _fmnist_pool(data_dir)
        context = name == "fmnist-scenes-context"
        crop = crop_size or size
        d = SceneData(name, source, ("background", *FMNIST_CLASSES), (), (), 1, num_train or 1000, (crop, crop),
                      size=size, seed=seed, context=context, test_count=num_test or 1000,
                      pools=(xtr, ytr, xte, yte))
        sample, _ = make_scenes(xtr, ytr, 256, size=size, seed=(seed, _STATS_TAG), context=context, **SCENE_RULES)
        v = sample.astype(np.float64) / 255
        d.mean, d.std = (float(v.mean()),), (float(v.std(ddof=1)),)
        return d
    if data_dir is None:
        raise ValueError(f"load_segmentation: {name} needs data_dir (the folder holding the data set)")
    crop = crop_size or 256
    folder = Path(data_dir)
    classes: tuple[str, ...]
    if name == "voc":
        tr, te, root = _voc_files(folder)
        classes, source = VOC_CLASSES, f"{root} (Pascal VOC layout)"
    else:
        tr, te = _folder_files(folder)
        source = f"{folder} (image/mask folders)"
        names_file = folder / "classes.txt"
        if names_file.is_file():
            classes = tuple(s.strip() for s in names_file.read_text().splitlines() if s.strip())
            if not classes:
                raise DataNotFoundError(f"segfolder: {names_file} is empty; expected one class name per line")
        else:
            top = 0
            for _, m in tr + te:
                labels = _read_mask(m)
                top = max(top, int(labels[labels != 255].max(initial=0)))
            classes = tuple(f"class{i}" for i in range(top + 1))
    tr, te = _take(tr, num_train, "num_train"), _take(te, num_test, "num_test")
    return FileSegData(name, source, classes, IMAGENET_MEAN, IMAGENET_STD, 3, len(tr), (crop, crop),
                       train_files=tr, test_files=te)


# ---------------------------------------------------------------------------------------------- figures
def colour_labels(lab: np.ndarray, num_classes: int = 11, ignore_index: int = 255) -> np.ndarray:
    """Integer (H, W) labels → float RGB: background (0) black, classes in tab10/tab20 colours, ignore white."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if num_classes <= 11 else "tab20"]
    table = np.array([(0.0, 0.0, 0.0)] + [cmap(i % cmap.N)[:3] for i in range(max(num_classes - 1, 1))])
    lab = np.asarray(lab)
    out = table[np.clip(lab, 0, len(table) - 1)]
    out[lab == ignore_index] = 1.0
    return out


def scene_figure(path: str | os.PathLike, *, context: bool = False, n: int = 8, seed: int = 0) -> Path:
    """Draw ``n`` test scenes of the embedded subset (top) and their colour-coded labels (bottom) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    xtr, ytr, xte, yte, _ = _fmnist_pool(None)
    img, lab, lay = make_scenes(xte, yte, n, seed=seed, context=context, return_layout=True)
    fig, axes = plt.subplots(2, n, figsize=(1.5 * n, 4.1))
    for i in range(n):
        axes[0, i].imshow(img[i], cmap="gray", vmin=0, vmax=255)
        axes[1, i].imshow(colour_labels(lab[i]), interpolation="nearest")
        if context:
            axes[0, i].set_title(list(SCENE_GROUPS)[lay.group[i]], fontsize=9)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("scene")
    axes[1, 0].set_ylabel("labels")
    handles = [Patch(color=colour_labels(np.array([c]))[0], label=name)
               for c, name in enumerate(("background", *FMNIST_CLASSES))]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.suptitle(f"fmnist-scenes{'-context' if context else ''}: test scenes (top) and labels (bottom)", fontsize=10)
    fig.subplots_adjust(left=0.03, right=0.99, top=0.86, bottom=0.17, wspace=0.06, hspace=0.12)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def scene_stats(n: int = 1000, *, context: bool = False, seed: int = 0, repeats: int = 3) -> dict:
    """Pixel share of every class over ``n`` training scenes of the embedded subset, and the generation time.

    Returns:
        ``{"share": {class name: fraction of pixels}, "seconds": best of ``repeats`` timings of ``n`` scenes,
        "items": mean items per scene}``.
    """
    xtr, ytr, _, _, _ = _fmnist_pool(None)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, lab, lay = make_scenes(xtr, ytr, n, seed=seed, context=context, return_layout=True)
        times.append(time.perf_counter() - t0)
    share = np.bincount(lab.ravel(), minlength=11) / lab.size
    return {"share": dict(zip(("background", *FMNIST_CLASSES), share.tolist())), "seconds": min(times),
            "items": len(lay.scene) / n}


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: draw the scene figures and print class shares and generation times."""
    parser = argparse.ArgumentParser(prog="python -m plugattn.experiments.segdata", description=main.__doc__)
    parser.add_argument("--figure", metavar="DIR", help="write scenes.png and scenes-context.png to DIR")
    parser.add_argument("--stats", type=int, default=1000, metavar="N", help="class shares over N scenes (0: off)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.figure:
        for ctx, fname in ((False, "scenes.png"), (True, "scenes-context.png")):
            print(f"wrote {scene_figure(Path(args.figure) / fname, context=ctx)}")
    if args.stats:
        for ctx in (False, True):
            st = scene_stats(args.stats, context=ctx)
            xtr, ytr, _, _, _ = _fmnist_pool(None)
            t0 = time.perf_counter()
            make_scenes(xtr, ytr, 4000, context=ctx)
            t4k = time.perf_counter() - t0
            print(f"fmnist-scenes{'-context' if ctx else ''}: {args.stats} scenes in {st['seconds']:.3f} s, "
                  f"4000 in {t4k:.3f} s, {st['items']:.2f} items/scene")
            for k, v in st["share"].items():
                print(f"  {k:12s} {100 * v:6.2f} %")


if __name__ == "__main__":
    main()
