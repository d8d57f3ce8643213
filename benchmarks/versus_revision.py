"""Forward time of every module against the same module at an earlier git revision, side by side in one process.

    .venv/bin/python benchmarks/versus_revision.py b29ad31                   # both standard shapes, both layouts
    .venv/bin/python benchmarks/versus_revision.py HEAD~3 --names se coord --shapes 8 256 28 28

The revision's ``src/plugattn`` is extracted with ``git archive`` into a temporary directory and imported as
``plugattn_rev`` (the package imports itself relatively), so both versions run interleaved in one process with the
same weights (the revision's module loads the current one's ``state_dict``) on the same input; the outputs are
compared before timing. Ratio = revision time / current time (higher: the current code is faster). Modules whose
forward takes more than ``--max-ms`` are skipped (the attention-heavy ones, timed by ``targets.py``).
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import plugattn  # noqa: E402
from plugattn.analysis.bench import paired_ratio, time_interleaved  # noqa: E402
from targets import pin_malloc, rand  # noqa: E402


def import_revision(rev: str, root: Path) -> object:
    """``src/plugattn`` at ``rev`` as the package ``plugattn_rev``, extracted under ``root``."""
    data = subprocess.run(["git", "archive", rev, "src/plugattn"], cwd=HERE.parent, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(root, filter="data")
    (root / "src" / "plugattn").rename(root / "plugattn_rev")
    sys.path.insert(0, str(root))
    return importlib.import_module("plugattn_rev")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="git revision to compare with (e.g. a commit or HEAD~5)")
    p.add_argument("--names", nargs="+", help="modules (default: every module both versions register)")
    p.add_argument("--shapes", type=int, nargs=4, action="append", metavar=("N", "C", "H", "W"))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--max-ms", type=float, default=20.0, help="skip modules slower than this (forward)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [tuple(s) for s in args.shapes] if args.shapes else [(8, 64, 56, 56), (8, 256, 28, 28)]
    with tempfile.TemporaryDirectory() as tmp:
        rev = import_revision(args.rev, Path(tmp))
        names = args.names or [n for n in plugattn.list_modules() if n in rev.list_modules()]
        print(f"forward, eval, no grad; ratio = {args.rev} time / current time; {torch.get_num_threads()} threads")
        print(f"{'module':<14} {'shape':<18} {'layout':<14} {'rev ms':>9} {'now ms':>9} {'ratio':>7}  max|Δ|")
        for shape in shapes:
            for fmt, label in ((torch.contiguous_format, "contiguous"), (torch.channels_last, "channels_last")):
                x = rand(shape).to(memory_format=fmt)
                for name in names:
                    torch.manual_seed(0)
                    new = plugattn.create(name, shape[1]).eval().to(memory_format=fmt)
                    old = rev.create(name, shape[1]).eval().to(memory_format=fmt)
                    old.load_state_dict(new.state_dict())
                    with torch.no_grad():
                        ys_new, ys_old = new(x), old(x)
                        ys_new = ys_new if isinstance(ys_new, tuple) else (ys_new,)
                        ys_old = ys_old if isinstance(ys_old, tuple) else (ys_old,)
                        diff = max((a - b).abs().max().item() for a, b in zip(ys_new, ys_old))
                        probe = time_interleaved({"new": lambda: new(x)}, repeats=1, warmup=1, min_sample_ms=0)
                        if probe["new"]["median"] > args.max_ms:
                            continue
                        t = time_interleaved({"old": lambda: old(x), "new": lambda: new(x)},
                                             repeats=args.repeats, warmup=2, min_sample_ms=40)
                    print(f"{name:<14} {str(shape):<18} {label:<14} {t['old']['median']:9.3f} "
                          f"{t['new']['median']:9.3f} {paired_ratio(t, 'old', 'new'):7.2f}  {diff:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    pin_malloc(sys.argv[1:], script=__file__)  # the allocator settings of targets.py (see its docstring)
    sys.exit(main())
