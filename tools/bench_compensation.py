"""Compensation on every fixture: output fidelity with and without it.

Each fixture is calibrated on ``models/calib_images`` (natural-image crops; Fashion-MNIST test images for
the Fashion-MNIST fixture, random token ids for the gpt fixture) and pruned at ratios 0.3 and 0.5 with
compensation on and off. Fidelity is measured on held-out samples: the largest relative L2 error over the
outputs, and top-1 agreement for classifiers. (The cost of the statistics is measured by ``bench_statistics.py``.)

Usage::

    python tools/bench_compensation.py [--fixtures resnet.ts mobilenetv2.ts ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_statistics import calibration_source  # noqa: E402

import onnxprune  # noqa: E402


def fidelity(result) -> tuple[float, float | None]:
    evaluation = result.evaluation
    return max(o.relative_l2 for o in evaluation.outputs), evaluation.top1_agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", nargs="+", default=None)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5])
    args = parser.parse_args()
    names = args.fixtures or sorted(p.name.removesuffix(".onnx") for p in (ROOT / "models").glob("*.onnx"))
    print("| fixture | ratio | rel. L2 error off | on | top-1 agreement off | on |")
    print("|---|---|---|---|---|---|")
    worse = 0
    for name in names:
        path = ROOT / "models" / f"{name}.onnx"
        source, images = calibration_source(path)
        for ratio in args.ratios:
            row = {}
            for compensate in (False, True):
                result = onnxprune.prune(str(path), ratio=ratio, calib=source, images=images, compensate=compensate)
                row[compensate] = fidelity(result)
            worse += row[True][0] > row[False][0] + 1e-9
            agree = [f"{row[c][1]:.1%}" if row[c][1] is not None else "-" for c in (False, True)]
            print(f"| {name} | {ratio} | {row[False][0]:.4f} | {row[True][0]:.4f} | {agree[0]} | {agree[1]} |")
    print(f"\ncompensation less faithful than none in {worse} of {len(names) * len(args.ratios)} runs")


if __name__ == "__main__":
    main()
