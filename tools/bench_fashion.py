"""Accuracy benchmark on real data: prune the Fashion-MNIST fixture to half its MACs without retraining.

Calibration samples come from the Fashion-MNIST *training* set; accuracy is measured on the full
10,000-image test set, which the tool never sees. Needs Debian's ``dataset-fashion-mnist`` package.

Usage::

    python tools/bench_fashion.py [--model models/fashion_mnist.ts.onnx] [--target-macs 0.5]
        [--calib-samples 1000] [--seeds 1] [--importance l1 activation ...] [--sensitivity]

With ``--seeds N`` each setting runs on N different random calibration subsets; the loss printed is
their mean, followed by each run's loss (the subset alone moves the result by a few tenths of a point).
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tools"))
from bench_statistics import statistics_costs  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.config import Importance  # noqa: E402

DATA = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530


def read_idx(name: str) -> np.ndarray:
    with gzip.open(DATA / name) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def normalise(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) / 255 - MEAN) / STD)[:, None]


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    sess = ort.InferenceSession(model.SerializeToString() if hasattr(model, "SerializeToString") else str(model))
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: images[i:i + 500]})[0] for i in range(0, len(images), 500)])
    return float((logits.argmax(1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models/fashion_mnist.ts.onnx"))
    parser.add_argument("--target-macs", type=float, default=0.5)
    parser.add_argument("--calib-samples", type=int, default=1000)
    parser.add_argument("--importance", nargs="+", default=["l1", "activation", "fluctuation", "wanda", "redundancy"])
    parser.add_argument("--round-to", type=int, default=None)
    parser.add_argument("--group-cap", type=float, default=None)
    parser.add_argument("--seeds", type=int, default=1, help="calibration subsets to average over")
    parser.add_argument("--sensitivity", action="store_true", help="allocate per-group ratios from a scan (--sensitivity)")
    args = parser.parse_args()
    train_x, train_y = read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz")
    test_x, test_y = normalise(read_idx("t10k-images-idx3-ubyte.gz")), read_idx("t10k-labels-idx1-ubyte.gz")
    calibs = []
    for seed in range(args.seeds):
        pick = np.random.default_rng(seed).choice(len(train_x), args.calib_samples, replace=False)
        calibs.append({"input": normalise(train_x[pick]), "labels": train_y[pick].astype(np.int64)})
    base = accuracy(args.model, test_x, test_y)
    print(f"original: {base:.2%} top-1 on the 10,000 test images; calibration: {args.calib_samples} training images"
          f" ({args.seeds} random subset{'s' if args.seeds > 1 else ''})")
    print(f"{'importance':12} {'compensation':>12} {'MACs kept':>10} {'test top-1':>11} {'loss (points)':>14}")
    for importance in args.importance:
        for compensate in (True, False):
            accuracies = []
            for calib in calibs:
                result = onnxprune.prune(args.model, target_macs=args.target_macs, importance=importance,
                                         compensate=compensate, calib=[calib], round_to=args.round_to,
                                         group_cap=args.group_cap, sensitivity=args.sensitivity)
                accuracies.append(accuracy(result.model, test_x, test_y))
            kept = result.pruned.macs / result.original.macs
            losses = " ".join(f"{100 * (base - a):.2f}" for a in accuracies) if len(calibs) > 1 else ""
            print(f"{importance:12} {'on' if compensate else 'off':>12} {kept:>10.3f} {np.mean(accuracies):>11.2%} "
                  f"{100 * (base - np.mean(accuracies)):>14.2f}  {losses}")
    calib = calibs[0]
    batches = [{"input": calib["input"][i:i + 16]} for i in range(0, len(calib["input"]), 16)]
    inference, recorded = statistics_costs(Path(args.model), batches, [Importance(i) for i in args.importance])
    for importance, recording in recorded.items():
        print(f"statistics for {importance.value} over {len(calib['input'])} samples: {recording:.3f} s; "
              f"plain ONNX Runtime inference: {inference:.3f} s ({recording / inference:.2f}x)")


if __name__ == "__main__":
    main()
