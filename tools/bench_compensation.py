"""Compensation on every fixture: output fidelity with and without it, and the cost of the statistics.

Each fixture is calibrated on ``models/calib_images`` (natural-image crops; Fashion-MNIST test images for
the Fashion-MNIST fixture) and pruned at ratios 0.3 and 0.5 with compensation on and off. Fidelity is
measured on held-out samples: the largest relative L2 error over the outputs, and top-1 agreement for
classifiers. The statistics cost is the time to record them over the calibration samples divided by
plain ONNX Runtime inference over the same samples (512, the calibration set repeated; both with all
cores, each including the creation of its session, best of 5).

Usage::

    python tools/bench_compensation.py [--fixtures resnet.ts mobilenetv2.ts ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxprune  # noqa: E402
from onnxprune.calibdata import ImageOptions, input_specs, load_calibration  # noqa: E402
from onnxprune.calibrate import record_consumer_inputs  # noqa: E402
from onnxprune.candidates import CandidateBuilder, Loaded  # noqa: E402
from onnxprune.model import load_model  # noqa: E402
from onnxprune.validate import session  # noqa: E402

IMAGES = ROOT / "models/calib_images"
FASHION = ROOT / "models/fashion_mnist_test.npz"
IMAGE_OPTIONS = ImageOptions(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def calibration_source(path: Path) -> tuple[object, ImageOptions | None]:
    if path.name.startswith("fashion_mnist"):
        data = np.load(FASHION)
        x = ((data["x"][:600].astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]
        return [{"input": x, "labels": data["labels"][:600].astype(np.int64)}], None
    return str(IMAGES), IMAGE_OPTIONS


def stats_cost(path: Path, source, images, samples: int = 512, repeats: int = 5) -> float:
    """Recording time over plain inference time (each with its session's creation), on the same
    ``samples`` calibration samples (the calibration set repeated) in batches of 16."""
    sess = session(str(path), threads=0)
    data = load_calibration(source, input_specs(sess), images=images or ImageOptions(), held_out=0.2)
    name = next(iter(data.calibration.batches[0]))
    pool = np.concatenate([b[name] for b in data.calibration.batches])
    pool = np.resize(pool, (samples, *pool.shape[1:]))
    batches = [{name: pool[i:i + 16]} for i in range(0, samples, 16)]
    recording, plain = statistics_cost(path, batches, repeats)
    return recording / plain


def random_stats_cost(path: Path, samples: int = 64, batch: int = 8) -> float:
    """Recording time over plain inference time on seeded random inputs (each with its session's creation)."""
    sess = session(str(path), threads=0)
    arg = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in arg.shape[1:]]
    rng = np.random.default_rng(0)
    batches = [{arg.name: rng.standard_normal([batch, *shape]).astype(np.float32)} for _ in range(samples // batch)]
    recording, plain = statistics_cost(path, batches, repeats=2)
    return recording / plain


def statistics_cost(path: Path, batches: list[dict[str, np.ndarray]], repeats: int) -> tuple[float, float]:
    """Seconds to record the statistics over ``batches`` and to run plain inference over them, each
    including the creation of its ONNX Runtime session (best of ``repeats``)."""
    model = load_model(path)
    analysis = CandidateBuilder(Loaded(model, str(path), None, False), None).analysis()

    def best(run) -> float:
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    def infer() -> None:
        plain_session = session(str(path), threads=0)
        for batch in batches:
            plain_session.run(None, batch)

    def record() -> None:
        for stats in record_consumer_inputs(model, analysis, batches).values():
            _ = stats.grams  # wide tensors' Gram matrices are multiplied when first read: count that too

    return best(record), best(infer)


def fidelity(result) -> tuple[float, float | None]:
    evaluation = result.evaluation
    return max(o.relative_l2 for o in evaluation.outputs), evaluation.top1_agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", nargs="+", default=None)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5])
    parser.add_argument("--stats-only", nargs="+", default=[], metavar="MODEL",
                        help="only measure the statistics cost of these models, on 64 random samples")
    args = parser.parse_args()
    if args.stats_only:
        for path in args.stats_only:
            print(f"{path}: statistics cost {random_stats_cost(Path(path)):.2f}x plain inference")
        return
    names = args.fixtures or sorted(p.name.removesuffix(".onnx") for p in (ROOT / "models").glob("*.onnx"))
    print("| fixture | ratio | rel. L2 error off | on | top-1 agreement off | on | stats cost |")
    print("|---|---|---|---|---|---|---|")
    worse = 0
    for name in names:
        path = ROOT / "models" / f"{name}.onnx"
        source, images = calibration_source(path)
        cost = stats_cost(path, source, images)
        for ratio in args.ratios:
            row = {}
            for compensate in (False, True):
                result = onnxprune.prune(str(path), ratio=ratio, calib=source, images=images, compensate=compensate)
                row[compensate] = fidelity(result)
            worse += row[True][0] > row[False][0] + 1e-9
            agree = [f"{row[c][1]:.1%}" if row[c][1] is not None else "-" for c in (False, True)]
            print(f"| {name} | {ratio} | {row[False][0]:.4f} | {row[True][0]:.4f} | {agree[0]} | {agree[1]} | {cost:.2f}x |")
    print(f"\ncompensation less faithful than none in {worse} of {len(names) * len(args.ratios)} runs")


if __name__ == "__main__":
    main()
