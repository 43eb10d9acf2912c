#!/usr/bin/env python
"""Measure ONNX Runtime CPU latency of conv stacks against their channel count (chooses --round-to's default).

A stack of 3x3 and 1x1 convs at 28x28 with C channels is timed for C around a multiple of 16; the
latency per MAC shows which channel counts keep ONNX Runtime's fast kernels.

Usage: python tools/bench_round_to.py [--threads 1] [--runs 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def conv_stack(channels: int, size: int = 28, depth: int = 4) -> onnx.ModelProto:
    """depth x (3x3 conv + relu + 1x1 conv + relu) at `channels` channels."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(depth):
        for k in (3, 1):
            name = f"c{i}_{k}"
            w = rng.standard_normal((channels, channels, k, k)).astype(np.float32) * 0.05
            inits.append(numpy_helper.from_array(w, f"{name}.w"))
            nodes.append(helper.make_node("Conv", [x, f"{name}.w"], [f"{name}.y"], pads=[k // 2] * 4))
            nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"]))
            x = f"{name}.r"
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def median_latency(model: onnx.ModelProto, threads: int, runs: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(1).standard_normal(sess.get_inputs()[0].shape).astype(np.float32)}
    for _ in range(10):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    print(f"{'channels':>8} {'median ms':>10} {'ns per 1k MACs':>15}")
    for channels in (40, 44, 46, 47, 48, 50, 52, 56, 60, 62, 63, 64):
        ms = median_latency(conv_stack(channels), args.threads, args.runs) * 1e3
        macs = 4 * 28 * 28 * channels * channels * 10
        print(f"{channels:>8} {ms:>10.3f} {ms * 1e6 / macs * 1e3:>15.2f}")


if __name__ == "__main__":
    main()
