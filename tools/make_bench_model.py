#!/usr/bin/env python
"""Build a ResNet-50-sized ONNX benchmark model with onnx.helper + numpy only.

The graph mirrors what the TorchScript exporter produces for torchvision's
ResNet-50 (v1.5, stride on the 3x3 conv) with BatchNorm folded into conv
biases: Conv(+bias) -> Relu, bottleneck blocks 3-4-6-3 with Add shortcuts,
GlobalAveragePool -> Flatten -> Gemm(2048 -> 1000).  Input ``input`` is
``[batch, 3, 224, 224]`` with a symbolic batch dimension.  Weights are random
float32 with He-style scale (residual branches damped so activations stay
finite); about 25.6M parameters, ~100 MB on disk.  No torch required.

Usage::

    python tools/make_bench_model.py [OUTPUT_PATH]   # default /tmp/resnet50_like.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OUTPUT = Path("/tmp/resnet50_like.onnx")
OPSET = 13
STAGES = ((64, 256, 3, 1), (128, 512, 4, 2), (256, 1024, 6, 2), (512, 2048, 3, 2))
NUM_CLASSES = 1000
RESIDUAL_SCALE = 0.2  # damping of the last conv in each residual branch


@dataclass
class GraphBuilder:
    """Accumulates nodes and initializers while building the graph."""

    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        """Register a float32 initializer and return its name."""
        self.initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, name: str, x: str, cin: int, cout: int, k: int,
             stride: int = 1, gain: float = 1.0) -> str:
        """Conv with He-initialised weight and a (folded-BN style) bias."""
        std = gain * np.sqrt(2.0 / (cin * k * k))
        w = self.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * std
        b = self.rng.standard_normal(cout, dtype=np.float32) * 0.01
        inputs = [x, self.add_initializer(f"{name}.weight", w),
                  self.add_initializer(f"{name}.bias", b)]
        out = f"{name}_out"
        self.nodes.append(helper.make_node(
            "Conv", inputs, [out], name=f"{name}/Conv", kernel_shape=[k, k],
            strides=[stride, stride], pads=[k // 2] * 4, dilations=[1, 1], group=1))
        return out

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: object) -> str:
        """Add a single-output node and return its output name."""
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def conv_relu(self, name: str, x: str, cin: int, cout: int, k: int,
                  stride: int = 1) -> str:
        """Conv followed by Relu."""
        return self.op("Relu", [self.conv(name, x, cin, cout, k, stride)], f"{name}/Relu")


def bottleneck(g: GraphBuilder, name: str, x: str, cin: int, mid: int,
               cout: int, stride: int) -> str:
    """1x1 reduce -> 3x3 (stride) -> 1x1 expand, plus identity/projection shortcut."""
    y = g.conv_relu(f"{name}.conv1", x, cin, mid, 1)
    y = g.conv_relu(f"{name}.conv2", y, mid, mid, 3, stride)
    y = g.conv(f"{name}.conv3", y, mid, cout, 1, gain=RESIDUAL_SCALE)
    shortcut = x
    if stride != 1 or cin != cout:
        shortcut = g.conv(f"{name}.downsample", x, cin, cout, 1, stride)
    added = g.op("Add", [y, shortcut], f"{name}/Add")
    return g.op("Relu", [added], f"{name}/Relu")


def build_body(g: GraphBuilder, x: str) -> str:
    """Stem, four bottleneck stages and the classifier head."""
    x = g.conv_relu("conv1", x, 3, 64, 7, 2)
    x = g.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    cin = 64
    for stage, (mid, cout, blocks, stride) in enumerate(STAGES, start=1):
        for i in range(blocks):
            x = bottleneck(g, f"layer{stage}.{i}", x, cin, mid, cout, stride if i == 0 else 1)
            cin = cout
    x = g.op("GlobalAveragePool", [x], "avgpool")
    x = g.op("Flatten", [x], "flatten", axis=1)
    w = g.rng.standard_normal((NUM_CLASSES, cin), dtype=np.float32) * np.sqrt(1.0 / cin)
    b = np.zeros(NUM_CLASSES, np.float32)
    inputs = [x, g.add_initializer("fc.weight", w), g.add_initializer("fc.bias", b)]
    g.nodes.append(helper.make_node("Gemm", inputs, ["output"], name="fc/Gemm",
                                    alpha=1.0, beta=1.0, transB=1))
    return "output"


def build_model(seed: int = 0) -> onnx.ModelProto:
    """Return the ResNet-50-like ModelProto."""
    g = GraphBuilder(np.random.default_rng(seed))
    build_body(g, "input")
    graph = helper.make_graph(
        g.nodes, "resnet50_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onnxprune-make_bench_model")
    model.ir_version = 8
    return model


def num_parameters(model: onnx.ModelProto) -> int:
    """Total number of initializer elements."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def smoke_test(path: Path) -> None:
    """Run the saved model once in onnxruntime and check the output is finite."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32)
    start = time.perf_counter()
    (y,) = sess.run(["output"], {"input": x})
    elapsed = time.perf_counter() - start
    if y.shape != (1, NUM_CLASSES) or not np.isfinite(y).all():
        raise RuntimeError(f"bad output: shape {y.shape}, finite={np.isfinite(y).all()}")
    print(f"onnxruntime OK: output {y.shape}, |y|max={np.abs(y).max():.3g}, "
          f"std={y.std():.3g}, {elapsed * 1000:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    """Build, check, save and smoke-test the benchmark model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-run", action="store_true", help="skip the onnxruntime run")
    args = parser.parse_args(argv)
    model = build_model(args.seed)
    onnx.checker.check_model(model, full_check=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.output))
    size_mb = args.output.stat().st_size / 1e6
    print(f"saved {args.output}: {len(model.graph.node)} nodes, "
          f"{num_parameters(model) / 1e6:.2f}M parameters, {size_mb:.1f} MB")
    if not args.no_run:
        smoke_test(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
