#!/usr/bin/env python
"""Build a MobileNetV2-1.0-sized ONNX benchmark model (3.5M parameters, ~300M MACs at 224x224) with
onnx.helper + numpy only: inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project, ReLU6 as
Clip, BatchNorm folded into conv biases as TorchScript exports it), GAP, Flatten, Gemm. Random weights.

Usage: python tools/make_mobilenetv2_bench.py [OUTPUT_PATH]   # default /tmp/mobilenetv2_like.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OUTPUT = Path("/tmp/mobilenetv2_like.onnx")
# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class Builder:
    """Accumulates nodes and initializers."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = [
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array(6.0, np.float32), "six"),
        ]
        self.count = 0

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, group: int = 1, relu6: bool = True) -> str:
        self.count += 1
        name = f"conv{self.count}"
        fan_in = c_in // group * k * k
        w = (self.rng.standard_normal((c_out, c_in // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(np.zeros(c_out, np.float32), f"{name}.b")]
        self.nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], name=name,
                                           group=group, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        if not relu6:
            return f"{name}.y"
        self.nodes.append(helper.make_node("Clip", [f"{name}.y", "zero", "six"], [f"{name}.r"]))
        return f"{name}.r"

    def inverted_residual(self, x: str, c_in: int, c_out: int, expansion: int, stride: int) -> str:
        hidden = c_in * expansion
        h = self.conv(x, c_in, hidden, 1) if expansion != 1 else x
        h = self.conv(h, hidden, hidden, 3, stride, group=hidden)
        y = self.conv(h, hidden, c_out, 1, relu6=False)
        if stride == 1 and c_in == c_out:
            self.nodes.append(helper.make_node("Add", [x, y], [f"{y}.res"]))
            return f"{y}.res"
        return y


def build() -> onnx.ModelProto:
    b = Builder()
    x, channels = b.conv("input", 3, 32, 3, 2), 32
    for expansion, c_out, repeats, stride in BLOCKS:
        for i in range(repeats):
            x = b.inverted_residual(x, channels, c_out, expansion, stride if i == 0 else 1)
            channels = c_out
    x = b.conv(x, channels, 1280, 1)
    b.nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
                helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    b.inits += [numpy_helper.from_array(b.rng.standard_normal((1000, 1280)).astype(np.float32) * 0.03, "fc.w"),
                numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b")]
    graph = helper.make_graph(b.nodes, "mobilenetv2_like",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="onnxprune-bench")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    onnx.save(build(), output)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
