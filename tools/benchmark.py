#!/usr/bin/env python
"""Benchmarks whose numbers go in the README.

1. Speed and memory: analysing and pruning a ResNet-50-sized model (25.6M parameters, built by
   tools/make_bench_model.py) on one core, stage by stage, validation included; and the peak
   memory growth of a fresh process during one prune.
2. Fixtures: for every model in models/, parameters, MACs and ONNX Runtime CPU latency (1 thread,
   batch 1, interleaved) before and after pruning to half the MACs at the default rounding.

Usage: python tools/benchmark.py [--skip-large] [--target-macs 0.5]
Run it pinned to one core for the speed figure: taskset -c 0 python tools/benchmark.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import onnxprune  # noqa: E402
from onnxprune.apply import apply_plan  # noqa: E402
from onnxprune.config import Importance  # noqa: E402
from onnxprune.groups import analyse_graph  # noqa: E402
from onnxprune.importance import weight_scores  # noqa: E402
from onnxprune.model import default_opset, export_graph, import_graph, infer_graph_shapes, load_model  # noqa: E402
from onnxprune.plan import make_plan  # noqa: E402
from onnxprune.validate import check_pruned, reference_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LARGE = Path("/tmp/resnet50_like.onnx")
MOBILENET = Path("/tmp/mobilenetv2_like.onnx")


def stage_times(path: Path) -> dict[str, float]:
    """Seconds spent in each pipeline stage for one prune of ``path`` at ratio 0.3, in pipeline order."""
    times: dict[str, float] = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        times[name] = time.perf_counter() - start
        return value

    reference = timed("reference run of the original (ONNX Runtime)", reference_run, str(path))
    model = timed("load", load_model, path)
    graph = timed("import + shape inference", import_graph, model)
    analysis = timed("dependency groups", analyse_graph, graph, default_opset(model))
    scores = timed("importance (L1)", weight_scores, analysis, Importance.L1)
    plan = timed("plan", make_plan, analysis, scores, 0.3, 8)
    timed("apply", apply_plan, analysis, plan)
    timed("shape inference", infer_graph_shapes, analysis.graph, model)
    pruned = timed("export + serialize", lambda: export_graph(analysis.graph, model).SerializeToString())
    timed("validate (full checker + ONNX Runtime)", check_pruned, pruned, reference)
    return times


# VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's peak on Linux.
PEAK_SCRIPT = """
import re, sys
import onnxprune
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
base = peak()
onnxprune.prune(sys.argv[1])
print(peak() - base)
"""


def peak_memory_growth(path: Path) -> int:
    """Bytes by which a fresh process's peak RSS grows during one ``onnxprune.prune(path)``."""
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1])


def fixture_table(target: float) -> None:
    print(f"\n## Fixtures at --target-macs {target} (default --round-to), ONNX Runtime CPU, 1 thread, batch 1")
    print("| model | params | MACs kept | latency (ms, median, interleaved) | speed-up | speed-up / MACs reduction |")
    print("|---|---|---|---|---|---|")
    for path in sorted((ROOT / "models").glob("*.onnx")):
        result = onnxprune.prune(path, target_macs=target, latency=True)
        kept = result.pruned.macs / result.original.macs
        lat = result.latency
        print(f"| {path.stem} | {result.original.params:,} -> {result.pruned.params:,} | {kept:.3f} | "
              f"{lat.original.median_ms:.3f} -> {lat.pruned.median_ms:.3f} | {lat.speedup:.2f}x | "
              f"{lat.speedup * kept:.2f} |")


def full_size_latency(target: float) -> None:
    """The latency target on full-size ResNet-50-like and MobileNetV2-1.0-like models (random weights)."""
    print(f"\n## Full-size models at --target-macs {target}, ONNX Runtime CPU, 1 thread, batch 1")
    print("| model | MACs | latency (ms) | speed-up | speed-up / MACs reduction |")
    print("|---|---|---|---|---|")
    for path, script in ((LARGE, "make_bench_model.py"), (MOBILENET, "make_mobilenetv2_bench.py")):
        if not path.exists():
            subprocess.run([sys.executable, str(ROOT / "tools" / script), str(path)], check=True)
        result = onnxprune.prune(path, target_macs=target, latency=True)
        kept = result.pruned.macs / result.original.macs
        lat = result.latency
        print(f"| {path.stem} | {result.original.macs / 1e6:.0f}M -> {result.pruned.macs / 1e6:.0f}M | "
              f"{lat.original.median_ms:.2f} -> {lat.pruned.median_ms:.2f} | {lat.speedup:.2f}x | {lat.speedup * kept:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="skip the 25M-parameter speed benchmark")
    parser.add_argument("--target-macs", type=float, default=0.5)
    args = parser.parse_args()
    if not args.skip_large:
        if not LARGE.exists():
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_bench_model.py"), str(LARGE)], check=True)
        times = stage_times(LARGE)
        print(f"## Pruning {LARGE.name} (25.6M params, {LARGE.stat().st_size / 1e6:.0f} MB)")
        for name, seconds in times.items():
            print(f"| {name} | {seconds:.2f} s |")
        print(f"| **total** | **{sum(times.values()):.2f} s** |")
        growth = peak_memory_growth(LARGE)
        print(f"\npeak memory growth during prune(): {growth / 1e6:.0f} MB = {growth / LARGE.stat().st_size:.2f}x the model file")
        full_size_latency(args.target_macs)
    fixture_table(args.target_macs)


if __name__ == "__main__":
    main()
