"""Cost of the activation statistics: recording time over plain ONNX Runtime inference, per criterion.

For each model, the statistics that ``onnxprune`` records before ranking (those the criterion reads, and
the sums compensation reads) are recorded over the same samples that plain inference runs over. Both
times include the creation of their ONNX Runtime session and use all cores; each is the best of
``--repeats``. Fixtures run on 512 samples of their calibration data (``models/calib_images``, Fashion-MNIST
test images for the Fashion-MNIST fixture) in batches of 16; other models on 64 seeded random samples
in batches of 8.

Compensation records the Gram matrices it fits on later, in its refit passes over the pruned model
(see ``candidates.py``); those passes are not counted here.

Usage::

    python tools/bench_statistics.py [--models resnet.ts yolo.ts /tmp/resnet50_like.onnx ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune.calibdata import ImageOptions, input_specs, load_calibration  # noqa: E402
from onnxprune.calibrate import consumer_inputs, record_consumer_inputs, recording_batches  # noqa: E402
from onnxprune.candidates import Activations, CandidateBuilder, Loaded  # noqa: E402
from onnxprune.config import Importance  # noqa: E402
from onnxprune.model import load_model  # noqa: E402
from onnxprune.validate import session  # noqa: E402

IMAGES = ROOT / "models/calib_images"
FASHION = ROOT / "models/fashion_mnist_test.npz"
IMAGE_OPTIONS = ImageOptions(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# Criteria with different recordings (wanda reads what fluctuation reads); l1 stands for every weight
# criterion, whose recording is the sums that compensation's first pass reads.
CRITERIA = (Importance.L1, Importance.ACTIVATION, Importance.APOZ, Importance.FLUCTUATION, Importance.REDUNDANCY)


def calibration_source(path: Path) -> tuple[object, ImageOptions | None]:
    """The calibration data of a fixture: Fashion-MNIST test images (the fashion_mnist and crnn fixtures,
    trained on it), seeded random token ids (the gpt fixture, whose weights are random too) or the
    natural-image crops (NHWC pixels for the Keras fixture)."""
    if path.name.startswith("gpt"):
        return [{"input": np.random.default_rng(0).integers(0, 64, (600, 16))}], None
    if path.name.startswith(("fashion_mnist", "crnn")):
        data = np.load(FASHION)
        x = ((data["x"][:600].astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]
        return [{"input": x, "labels": data["labels"][:600].astype(np.int64)}], None
    if path.name.endswith(".tf2onnx.onnx"):  # Keras' applications take pixels in [0, 255] (they rescale), NHWC
        return str(IMAGES), ImageOptions(scale=1.0)
    return str(IMAGES), IMAGE_OPTIONS


def fixture_batches(path: Path, samples: int = 512, batch: int = 16) -> list[dict[str, np.ndarray]]:
    """``samples`` calibration samples of a fixture (its calibration set repeated) in batches of ``batch``."""
    source, images = calibration_source(path)
    data = load_calibration(source, input_specs(session(str(path))), images=images or ImageOptions(), held_out=0.2)
    name = next(iter(data.calibration.batches[0]))
    pool = np.concatenate([b[name] for b in data.calibration.batches])
    pool = np.resize(pool, (samples, *pool.shape[1:]))
    return [{name: pool[i:i + batch]} for i in range(0, samples, batch)]


def random_batches(path: Path, samples: int = 64, batch: int = 8) -> list[dict[str, np.ndarray]]:
    """Seeded random inputs for a one-input model (symbolic dimensions as 1)."""
    arg = session(str(path)).get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in arg.shape[1:]]
    rng = np.random.default_rng(0)
    return [{arg.name: rng.standard_normal([batch, *shape]).astype(np.float32)} for _ in range(samples // batch)]


def statistics_costs(path: Path, batches: list[dict[str, np.ndarray]], criteria=CRITERIA,
                     repeats: int = 5) -> tuple[float, dict[Importance, float]]:
    """Seconds of plain inference over ``batches`` (or over them joined as the recording joins them, if
    faster), and of recording each criterion's statistics over them, each including the creation of its
    ONNX Runtime session (best of ``repeats``). The runs are interleaved, one of each per round, so that
    a machine slowing down or speeding up meanwhile moves them all alike."""
    model = load_model(path)
    analysis = CandidateBuilder(Loaded(model, str(path), None, False), None).analysis()

    # The recording joins small batches (see ``recording_batches``); plain inference gets the faster of
    # the two batchings, so that the ratio is not flattered by the joining alone.
    joined = recording_batches(model, batches, consumer_inputs(analysis).values())

    def infer(batches: list[dict[str, np.ndarray]]):
        def run() -> None:
            plain_session = session(str(path), threads=0)
            for batch in batches:
                plain_session.run(None, batch)
        return run

    def recorder(importance: Importance):
        wanted = Activations(batches, importance, compensate=True)

        def record() -> None:
            for stats in record_consumer_inputs(model, analysis, batches, True, wanted.gram, wanted.sums).values():
                _ = stats.grams  # wide tensors' Gram matrices are multiplied when first read: count that too
        return record

    runs = {"batches": infer(batches), "joined": infer(joined), **{c: recorder(c) for c in criteria}}
    times: dict[object, list[float]] = {key: [] for key in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(repeats):
        for key, run in runs.items():
            # numpy's BLAS threads spin for some 30-100 ms after a product (a recording multiplies wide
            # tensors' Gram matrices at its end) and would slow the next timed run's ONNX Runtime threads
            # (fashion_mnist's plain inference right after a 1024 x 2000 product: 34 ms against 19 ms).
            time.sleep(0.1)
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    plain = min(min(times["batches"]), min(times["joined"]))
    return plain, {c: min(times[c]) for c in criteria}


def main() -> None:
    ort.set_default_logger_severity(3)  # ONNX Runtime's optimiser notes, as the CLI hides them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None,
                        help="fixture names (models/NAME.onnx) or paths to other models (random inputs)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = args.models or sorted(p.name.removesuffix(".onnx") for p in (ROOT / "models").glob("*.ts.onnx"))
    print("| model | plain inference | " + " | ".join(c.value for c in CRITERIA) + " |")
    print("|---|---|" + "---|" * len(CRITERIA))
    for name in names:
        fixture = ROOT / "models" / f"{name}.onnx"
        path = fixture if fixture.exists() else Path(name)
        batches = fixture_batches(path) if fixture.exists() else random_batches(path)
        plain, recorded = statistics_costs(path, batches, repeats=args.repeats)
        costs = " | ".join(f"{recorded[c] / plain:.2f}x" for c in CRITERIA)
        print(f"| {path.name.removesuffix('.onnx')} | {plain * 1e3:.0f} ms | {costs} |", flush=True)


if __name__ == "__main__":
    main()
