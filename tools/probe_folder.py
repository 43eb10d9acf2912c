"""Prune every model in a folder: the masking oracle at ``--ratio 0.5 --round-to 1``, or with ``--calibrated``
each activation criterion with and without compensation on seeded random calibration data.

For the exports ``probe_families.py`` and ``probe_architectures.py`` write, for the same exports
simplified by onnxsim or onnxslim (as deployment pipelines often do; they install beside onnxprune in a
virtual environment of their own, see ``export_foreign_fixtures.py``), and for them as ONNX Runtime saves
them at its extended optimisation level (``--ort-optimized``)::

    python tools/probe_folder.py /tmp/families
    python tools/probe_folder.py /tmp/families --calibrated
    /tmp/simenv/bin/python tools/probe_folder.py /tmp/families --simplify /tmp/simplified
    python tools/probe_folder.py /tmp/families --ort-optimized /tmp/optimized

With ``--calibrated`` each line gives the worst relative L2 error of the outputs on the held-out samples
with compensation and without (the rule the README states: with is at least as faithful).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import assert_matches_masked  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.model import read_model  # noqa: E402

CRITERIA = ("activation", "redundancy", "fluctuation")


def random_batches(path: Path, samples: int = 64, batch: int = 16) -> list[dict[str, np.ndarray]]:
    """Seeded random inputs for a one-input model (token ids below 100 for an integer input; symbolic sizes
    beyond the batch as 2)."""
    arg = ort.InferenceSession(str(path)).get_inputs()[0]
    shape = [samples, *(d if isinstance(d, int) else 2 for d in arg.shape[1:])]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 100, shape) if "int" in arg.type else rng.standard_normal(shape).astype(np.float32)
    return [{arg.name: x[i:i + batch]} for i in range(0, samples, batch)]


def worst_error(report: dict) -> float:
    return max(o["relative_l2"] for o in report["fidelity"]["outputs"])


def probe(path: Path, calibrated: bool) -> None:
    name = path.name.removesuffix(".onnx")
    if not calibrated:
        result = onnxprune.prune(path, ratio=0.5, round_to=1, latency=False)
        try:
            # The model as onnxprune reads it: ONNX Runtime's fused ops split into standard ones (exactly).
            assert_matches_masked(read_model(path).model, result.model, result.report)
            oracle = "masking oracle met"
        except AssertionError as exc:
            oracle = f"MASKING ORACLE FAILED ({exc})"
        print(f"{name}: MACs {result.original.macs:,} -> {result.pruned.macs:,}; {oracle}", flush=True)
        return
    batches = random_batches(path)
    for criterion in CRITERIA:
        on, off = (onnxprune.prune(path, ratio=0.5, round_to=1, latency=False, importance=criterion, calib=batches,
                                   compensate=compensate) for compensate in (True, False))
        verdict = "" if worst_error(on.report) <= worst_error(off.report) else "  COMPENSATION WORSE"
        print(f"{name} {criterion}: MACs {on.original.macs:,} -> {on.pruned.macs:,}; relative L2 error "
              f"{worst_error(on.report):.4f} compensated, {worst_error(off.report):.4f} not{verdict}", flush=True)


def simplify(folder: Path, into: Path) -> None:
    """Write each model of ``folder`` simplified by onnxsim and by onnxslim into ``into``."""
    import onnxsim  # noqa: PLC0415 - only --simplify needs them
    import onnxslim  # noqa: PLC0415

    into.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("*.onnx")):
        model = onnx.load(path)
        onnx.save(onnxsim.simplify(model)[0], into / f"{path.stem}.onnxsim.onnx")
        onnx.save(onnxslim.slim(model), into / f"{path.stem}.onnxslim.onnx")


def ort_optimize(folder: Path, into: Path) -> None:
    """Write each model of ``folder`` as ONNX Runtime's extended optimisation level leaves it into ``into``
    (with the external data files it refers to)."""
    into.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("*.onnx")):
        for data in folder.glob(f"{path.name}.data"):
            shutil.copy(data, into / data.name)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(into / f"{path.stem}.ort.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    ort.set_default_logger_severity(3)
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--calibrated", action="store_true")
    parser.add_argument("--simplify", type=Path, default=None, help="simplify into this folder, then probe those")
    parser.add_argument("--ort-optimized", type=Path, default=None,
                        help="save ONNX Runtime's optimized models into this folder, then probe those")
    args = parser.parse_args()
    folder = args.folder
    if args.simplify:
        simplify(folder, args.simplify)
        folder = args.simplify
    if args.ort_optimized:
        ort_optimize(folder, args.ort_optimized)
        folder = args.ort_optimized
    for path in sorted(folder.glob("*.onnx")):
        try:
            probe(path, args.calibrated)
        except Exception as exc:  # noqa: BLE001 - a probe reports every model
            print(f"{path.name}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", flush=True)


if __name__ == "__main__":
    main()
