"""Quantize the Fashion-MNIST fixture with ONNX Runtime, for the README's figures on quantized models: to
the QDQ format, or with ``--operator-format`` to QLinearConv, QLinearAdd and QGemm.

Usage::

    python tools/quantize_fixture.py /tmp/fashion_qdq.onnx [--per-tensor] [--operator-format]
    python tools/quantize_fixture.py --calib /tmp/fashion_calib.npz    # 2,000 test images with labels
    onnxprune /tmp/fashion_qdq.onnx --target-macs 0.5 --calib /tmp/fashion_calib.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "models/fashion_mnist.ts.onnx"


def test_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` Fashion-MNIST test images, normalised as the fixture was trained, and labels."""
    data = np.load(ROOT / "models/fashion_mnist_test.npz")
    x = ((data["x"][:count].astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]
    return x, data["labels"][:count].astype(np.int64)


class _Batches(CalibrationDataReader):
    def __init__(self, x: np.ndarray) -> None:
        self.batches = iter([{"input": x[i:i + 16]} for i in range(0, len(x), 16)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path)
    parser.add_argument("--per-tensor", action="store_true", help="one scale per weight, not per channel")
    parser.add_argument("--operator-format", action="store_true", help="integer ops (QuantFormat.QOperator), not QDQ")
    parser.add_argument("--calib", type=Path, help="also write 2,000 test images with labels to this .npz")
    args = parser.parse_args()
    if args.output:
        quantize_static(str(FIXTURE), str(args.output), _Batches(test_images(64)[0]), quant_format=QuantFormat.QOperator if args.operator_format else QuantFormat.QDQ,
                        per_channel=not args.per_tensor, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        print(f"written: {args.output}")
    if args.calib:
        x, labels = test_images(2000)
        np.savez(args.calib, input=x, labels=labels)
        print(f"written: {args.calib}")


if __name__ == "__main__":
    main()
