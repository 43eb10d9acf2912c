"""A real model over 2 GB: build it with external data, prune it with the command line, check the result.

The model is an MLP-style stack (MatMul + Add + Relu) whose float32 weights total about 2.3 GB, saved as
``large.onnx`` plus ``large.onnx.data`` in a temporary folder. The script runs ``onnxprune`` on it as
a user would, reports wall time and the peak memory of that process, and checks that the output was
written with external data beside it and that ONNX Runtime runs it with unchanged output shapes.

Usage::

    python tools/bench_large.py [--width 12288] [--layers 4] [--keep] [--calib]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def build(folder: Path, width: int, layers: int) -> Path:
    """Write the model and its external data; returns the model path."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "input"
    for i in range(layers):
        w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"matmul{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
        del w
    head = rng.standard_normal((width, 10), dtype=np.float32) / np.sqrt(width)
    inits.append(numpy_helper.from_array(head.astype(np.float32), "head"))
    nodes.append(helper.make_node("MatMul", [x, "head"], ["output"], name="head"))
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "large.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="large.onnx.data", size_threshold=1024)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=12288)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--calib", action="store_true", help="also calibrate and compensate, on 64 random samples")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="onnxprune_large_"))
    path = build(folder, args.width, args.layers)
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"model: {size / 1e9:.2f} GB ({path.stat().st_size} bytes of graph, the rest in large.onnx.data)")
    out = folder / "large.pruned.onnx"
    start = time.perf_counter()
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "onnxprune", str(path), "-o", str(out),
               "--ratio", "0.3", "--no-latency"]
    if args.calib:
        calib = folder / "calib.npy"
        np.save(calib, np.random.default_rng(2).standard_normal((64, args.width)).astype(np.float32))
        command += ["--calib", str(calib)]
    proc = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    peak = next((int(line.split(":")[1]) for line in proc.stderr.splitlines() if "Maximum resident" in line), 0)
    print(proc.stdout.strip())
    if proc.returncode != 0:
        sys.exit(f"onnxprune failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    written = sorted(p.name for p in folder.iterdir())
    pruned_size = sum((folder / name).stat().st_size for name in written if name.startswith("large.pruned"))
    size = sum((folder / name).stat().st_size for name in ("large.onnx", "large.onnx.data"))
    print(f"onnxprune: {elapsed:.1f} s wall, peak memory {peak / 1e6:.2f} GB ({peak * 1e3 / size:.2f}x the model)")
    print(f"written: {[n for n in written if n.startswith('large.pruned')]}, {pruned_size / 1e9:.2f} GB")
    sess = ort.InferenceSession(str(out))
    x = np.random.default_rng(1).standard_normal((2, args.width)).astype(np.float32)
    print(f"ONNX Runtime runs the pruned model: output shape {sess.run(None, {'input': x})[0].shape}")
    if not args.keep:
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
