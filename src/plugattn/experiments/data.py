"""Real image-classification data for ``plugattn compare``, held in memory as uint8 tensors.

Sources (no network unless ``download=True`` is passed explicitly):

- ``fmnist-mini`` (default): a class-balanced subset of Fashion-MNIST shipped inside the package
  (``plugattn/data/fmnist_subset.npz``: 800 train + 200 test images per class, 28×28 grey). Regenerate it
  with ``python -m plugattn.experiments.data`` (see :func:`build_embedded_subset`).
- ``fashion-mnist``: the full set from a folder of the four gzipped (or plain) IDX files; default
  ``/usr/share/datasets/fashion-mnist`` (Debian: ``apt-get install dataset-fashion-mnist``).
- ``cifar10``: ``cifar10-train.npz``/``cifar10-test.npz`` (the project's shared offline copy, found in
  ``../shared/data/cifar10`` from the repository or the working directory) or the standard CIFAR-10
  python batches (``data_batch_1..5``, ``test_batch``; these are pickles, read with ``pickle``, so point it
  only at the official archive).
- ``imagefolder``: any folder with ``train/<class>/*`` and ``test/<class>/*`` (or ``val/``) images, resized to
  ``image_size`` (needs Pillow).

Fashion-MNIST: Xiao, Rasul, Vollgraf, arXiv:1708.07747, MIT licence (https://github.com/zalandoresearch/fashion-mnist).
CIFAR-10: Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    import numpy as np
else:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover  (the `train` extra; the CLI still lists the command without it)
        np = None
from torch import Tensor

__all__ = [
    "DATASETS", "ImageData", "load_dataset", "balanced_subset", "build_embedded_subset", "find_cifar10", "augment",
    "normalize", "DataNotFoundError",
]

DATASETS = ("fmnist-mini", "fashion-mnist", "cifar10", "imagefolder")
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FMNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
EMBEDDED = "fmnist_subset.npz"
EMBEDDED_PER_CLASS = (800, 200)  # train, test images per class in the shipped subset
CACHE_DIR = Path.home() / ".cache" / "plugattn"


class DataNotFoundError(FileNotFoundError):
    """The requested data set is not on disk; the message says how to get it."""


@dataclass
class ImageData:
    """A data set in memory: uint8 images (N, C, H, W), int64 labels, class names, per-channel mean/std in [0, 1]."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[str]
    source: str = ""
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.mean:  # in numpy: the same bits whatever torch's thread count
            x = self.train_x.numpy().astype(np.float64) / 255  # (N, C, H, W)
            self.mean = tuple(float(v) for v in x.mean((0, 2, 3)))
            self.std = tuple(float(v) for v in x.std((0, 2, 3), ddof=1))

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """Plain metadata (JSON- and checkpoint-safe)."""
        return {
            "name": self.name, "source": self.source, "train": int(self.train_x.shape[0]),
            "test": int(self.test_x.shape[0]),
            "shape": [int(s) for s in self.train_x.shape[1:]], "classes": list(self.classes),
            "mean": list(self.mean), "std": list(self.std),
        }


def balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of ``per_class`` examples of every class, drawn without replacement.

    One ``numpy.random.default_rng(seed)`` draws class 0, 1, … in order; each class's draw is sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if per_class > len(idx):
            raise ValueError(f"balanced_subset: per_class={per_class} but class {c} has only {len(idx)} examples")
        out.append(np.sort(rng.choice(idx, per_class, replace=False)))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------- readers
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def fmnist_arrays(folder: Path) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST IDX arrays of ``folder`` (train/test images and labels); a clear error if missing."""
    paths = {k: _find_idx(folder, stem) for k, stem in FMNIST_FILES.items()}
    missing = [FMNIST_FILES[k] + ".gz" for k, p in paths.items() if p is None]
    if missing:
        raise DataNotFoundError(
            f"Fashion-MNIST: {', '.join(missing)} not found in {folder}. Get the data with one of:\n"
            f"  apt-get install dataset-fashion-mnist      (Debian/Ubuntu; files land in {FMNIST_DEFAULT_DIR})\n"
            f"  plugattn compare --dataset fashion-mnist --data-dir DIR --download   (from {FMNIST_URL})\n"
            f"or pass --data-dir pointing at a folder with the four IDX files."
        )
    return {k: _read_idx(cast(Path, p)) for k, p in paths.items()}  # none missing: checked above


def _download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    print(f"downloading {url} -> {dest}")
    urllib.request.urlretrieve(url, tmp)  # noqa: S310  (official address, only with download=True)
    tmp.replace(dest)
    return dest


def _download_fmnist(folder: Path) -> None:
    for stem in FMNIST_FILES.values():
        if _find_idx(folder, stem) is None:
            _download(FMNIST_URL + stem + ".gz", folder / (stem + ".gz"))


def _download_cifar10(folder: Path) -> None:
    archive = folder / "cifar-10-python.tar.gz"
    if not archive.exists():
        _download(CIFAR10_URL, archive)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()  # noqa: S324  (integrity, not security)
    if md5 != CIFAR10_MD5:
        raise ValueError(f"{archive}: md5 {md5} != {CIFAR10_MD5}; delete it and download again")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")


def _repo_candidates() -> list[Path]:
    here = Path(__file__).resolve()
    roots = [Path.cwd(), *Path.cwd().parents[:2], *here.parents[:5]]
    out: list[Path] = []
    for r in roots:
        for rel in ("../shared/data/cifar10", "shared/data/cifar10", "data/cifar10"):
            out.append((r / rel).resolve())
    out.append(CACHE_DIR / "cifar10")
    return list(dict.fromkeys(out))


def _cifar_layout(folder: Path) -> str | None:
    if (folder / "cifar10-train.npz").is_file() and (folder / "cifar10-test.npz").is_file():
        return "npz"
    if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
        return "batches"
    if (folder / "cifar-10-batches-py" / "data_batch_1").is_file():
        return "batches-sub"
    return None


def find_cifar10(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding CIFAR-10 (npz pair or python batches); ``data_dir`` first, then known places."""
    candidates = [Path(data_dir)] if data_dir is not None else _repo_candidates()
    for c in candidates:
        if _cifar_layout(c):
            return c
    where = str(data_dir) if data_dir is not None else ", ".join(str(c) for c in candidates[:4]) + ", …"
    raise DataNotFoundError(
        f"CIFAR-10 not found (looked in {where}). Either:\n"
        f"  pass --data-dir DIR with cifar10-train.npz + cifar10-test.npz (the shared offline copy, "
        f"shared/data/cifar10) or the python batches data_batch_1..5 + test_batch, or\n"
        f"  plugattn compare --dataset cifar10 --data-dir DIR --download   (fetches {CIFAR10_URL}, 163 MB)"
    )


def _load_cifar10(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    layout = _cifar_layout(folder)
    if layout == "npz":
        tr, te = np.load(folder / "cifar10-train.npz"), np.load(folder / "cifar10-test.npz")
        return tr["images"], tr["labels"], te["images"], te["labels"], f"{folder} (npz)"
    if layout == "batches-sub":
        folder = folder / "cifar-10-batches-py"

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # noqa: S301  (the official CIFAR-10 format)
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, H, W, C)
        return x, np.asarray(d[b"labels"], np.uint8)

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = batch("test_batch")
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), xte, yte,
            f"{folder} (python batches)")


def _load_imagefolder(root: Path, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover
        raise ImportError("the imagefolder dataset needs Pillow: pip install pillow") from e
    test_dir = next((root / d for d in ("test", "val", "valid") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DataNotFoundError(f"imagefolder: expected {root}/train/<class>/* and {root}/test/<class>/* (or val/)")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

    def read(split: Path) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for ci, c in enumerate(classes):
            for f in sorted((split / c).glob("*")) if (split / c).is_dir() else []:
                if f.suffix.lower() in exts:
                    img = Image.open(f).convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
                    xs.append(np.asarray(img, np.uint8))
                    ys.append(ci)
        if not xs:
            raise DataNotFoundError(f"imagefolder: no images under {split}")
        return np.stack(xs), np.asarray(ys, np.uint8)

    xtr, ytr = read(root / "train")
    xte, yte = read(test_dir)
    return xtr, ytr, xte, yte, classes


def embedded_path() -> Path:
    """Where the embedded Fashion-MNIST subset (shipped in the package) lies."""
    return Path(str(resources.files("plugattn") / "data" / EMBEDDED))


# ---------------------------------------------------------------------------------------------- public
def load_dataset(
    name: str = "fmnist-mini",
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    subset_seed: int = 0,
    image_size: int = 32,
) -> ImageData:
    """Load a data set into memory (see the module docstring for the sources).

    Args:
        name: one of :data:`DATASETS`.
        data_dir: where the files are (default: the standard place for each source).
        download: fetch missing files from the official address (never done otherwise).
        train_per_class: keep a class-balanced subset of this many training images per class (None: all).
        test_per_class: likewise for the test images.
        subset_seed: seed of :func:`balanced_subset`.
        image_size: side length images are resized to (``imagefolder`` only).
    """
    if name not in DATASETS:
        raise ValueError(f"load_dataset: unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if np is None:
        raise ImportError("plugattn's experiments need numpy and tqdm: pip install 'plugattn[train]'")
    if name == "fmnist-mini":
        path = Path(data_dir) / EMBEDDED if data_dir is not None else embedded_path()
        if not path.is_file():
            raise DataNotFoundError(f"{path} is missing; rebuild it with `python -m plugattn.experiments.data`")
        d = np.load(path)
        xtr, ytr, xte, yte = d["train_images"], d["train_labels"], d["test_images"], d["test_labels"]
        classes, source = [str(c) for c in d["classes"]], f"embedded {EMBEDDED} (class-balanced Fashion-MNIST subset)"
    elif name == "fashion-mnist":
        folder = Path(data_dir) if data_dir is not None else Path(FMNIST_DEFAULT_DIR)
        if download:
            _download_fmnist(folder)
        a = fmnist_arrays(folder)
        xtr, ytr, xte, yte = a["train_images"], a["train_labels"], a["test_images"], a["test_labels"]
        classes, source = list(FMNIST_CLASSES), f"{folder} (IDX)"
    elif name == "cifar10":
        if download:
            folder = Path(data_dir) if data_dir is not None else CACHE_DIR / "cifar10"
            if not _cifar_layout(folder):
                _download_cifar10(folder)
        folder = find_cifar10(data_dir)
        xtr, ytr, xte, yte, source = _load_cifar10(folder)
        classes = list(CIFAR10_CLASSES)
    else:
        if data_dir is None:
            raise ValueError("load_dataset: the imagefolder dataset needs data_dir (a folder with train/ and test/)")
        xtr, ytr, xte, yte, classes = _load_imagefolder(Path(data_dir), image_size)
        source = f"{data_dir} (image folder, {image_size}px)"
    if train_per_class is not None:
        keep = balanced_subset(ytr, train_per_class, subset_seed)
        xtr, ytr = xtr[keep], ytr[keep]
        source += f", {train_per_class} train/class"
    if test_per_class is not None:
        keep = balanced_subset(yte, test_per_class, subset_seed)
        xte, yte = xte[keep], yte[keep]
        source += f", {test_per_class} test/class"
    return ImageData(name, _to_nchw(xtr), torch.tensor(np.asarray(ytr), dtype=torch.int64),
                     _to_nchw(xte), torch.tensor(np.asarray(yte), dtype=torch.int64), classes, source)


def _to_nchw(x: np.ndarray) -> Tensor:
    x = np.array(x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2), dtype=np.uint8, order="C")  # (N, C, H, W)
    return torch.from_numpy(x)


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 (N, C, H, W) → float32, standardised per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255 - m) / s


def augment(x: Tensor, pad: int, generator: torch.Generator, flip: bool = True) -> Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, per image, drawn from ``generator``."""
    n, _, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    fl = torch.rand(n, generator=generator) < 0.5
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # (N, C, H+2p, W+2p)
    rows = oy[:, None] + torch.arange(h)  # (N, H)
    cols = torch.arange(w).expand(n, w)
    if flip:
        cols = torch.where(fl[:, None], cols.flip(1), cols)
    cols = ox[:, None] + cols  # (N, W)
    out = xp[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def build_embedded_subset(src_dir: str | os.PathLike = FMNIST_DEFAULT_DIR, out: str | os.PathLike | None = None,
                          per_class: tuple[int, int] = EMBEDDED_PER_CLASS, seed: int = 0) -> Path:
    """Write the shipped subset: ``per_class`` = (train, test) images per class from the full Fashion-MNIST.

    Training images from the training file, test images from the test file, each drawn by
    :func:`balanced_subset` (one ``default_rng(seed)`` for train, a fresh one for test), stored class by class
    with ``np.savez_compressed`` (keys train_images, train_labels, test_images, test_labels, classes and the
    source indices train_index, test_index into the original files).
    """
    a = fmnist_arrays(Path(src_dir))
    tr = balanced_subset(a["train_labels"], per_class[0], seed)
    te = balanced_subset(a["test_labels"], per_class[1], seed)
    out = Path(out) if out is not None else Path(__file__).resolve().parents[1] / "data" / EMBEDDED
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, train_images=a["train_images"][tr], train_labels=a["train_labels"][tr],
        test_images=a["test_images"][te], test_labels=a["test_labels"][te],
        classes=np.array(FMNIST_CLASSES), train_index=tr.astype(np.int32), test_index=te.astype(np.int32),
    )
    return out


if __name__ == "__main__":  # regenerate the embedded subset from the Debian files
    import sys

    p = build_embedded_subset(sys.argv[1] if len(sys.argv) > 1 else FMNIST_DEFAULT_DIR)
    print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")
