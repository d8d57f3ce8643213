"""Module-level targets that a network step cannot show: Triplet's speed and position attention's memory.

    .venv/bin/python benchmarks/modules.py            # both (about a minute on 2 cores)
    .venv/bin/python benchmarks/modules.py --rounds 15

(b) Triplet Attention at least 4× faster than the official permute form (``baselines.permute_triplet``,
    same weights), forward, at (8, 64, 56, 56) and (8, 256, 28, 28): ratio of minima over interleaved rounds.
(a) DANet position attention: peak extra memory of one forward at 128², C = 512, batch 2, at least 20× below
    the explicit (H·W)² form: run ``benchmarks/pam_memory.py`` (subprocesses, several GiB for the baseline).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import permute_triplet  # noqa: E402

import plugattn  # noqa: E402
from plugattn.analysis.bench import interleaved_min  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| shape | plugattn triplet ms | permute form ms | ratio | target ≥ 4 |")
    print("|---|---:|---:|---:|---|")
    for shape in [(8, 64, 56, 56), (8, 256, 28, 28)]:
        torch.manual_seed(0)
        m = plugattn.create("triplet", shape[1]).eval()
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(m(x), permute_triplet(m, x), atol=1e-5, rtol=1e-5)
            t = interleaved_min({"ours": lambda: m(x), "permute": lambda: permute_triplet(m, x)}, args.rounds)
        ratio = t["permute"] / t["ours"]
        print(f"| {shape} | {t['ours']:.2f} | {t['permute']:.2f} | {ratio:.2f} | {'PASS' if ratio >= 4 else 'FAIL'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
