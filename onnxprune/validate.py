"""Check a pruned model against its original with ONNX Runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.errors import InputError, PrunedModelError

_NUMPY_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class OutputCheck:
    """How one output of the pruned model compares with the original on the same random input."""

    name: str
    shape: list[int]
    cosine: float
    relative_l2: float

    def to_dict(self) -> dict:
        return asdict(self)


def session(model: onnx.ModelProto, optimize: bool = True, threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session; ``optimize=False`` turns graph optimisations off for exact comparisons."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def random_feeds(sess: ort.InferenceSession, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs for every model input; symbolic dims become ``batch`` (first) or 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in sess.get_inputs():
        shape = [d if isinstance(d, int) else (batch if i == 0 else 1) for i, d in enumerate(arg.shape)]
        dtype = _NUMPY_TYPES.get(arg.type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[arg.name] = np.zeros(shape, dtype=dtype)
    return feeds


def check_pruned(original: onnx.ModelProto, pruned: onnx.ModelProto, seed: int = 0) -> list[OutputCheck]:
    """Raise PrunedModelError unless ``pruned`` passes the full checker, runs, and keeps every output's name and shape.

    Returns:
        Per-output fidelity on one seeded random batch of 2.
    """
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise PrunedModelError(f"the pruned model fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    try:
        reference = session(original)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
        raise InputError(
            f"ONNX Runtime cannot load the input model ({str(exc).splitlines()[0][:200]}); "
            "check it runs in ONNX Runtime before pruning"
        ) from None
    try:
        candidate = session(pruned)
        feeds = random_feeds(reference, batch=2, seed=seed)
        expected = reference.run(None, feeds)
        actual = candidate.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - any ONNX Runtime failure means the pruned model is unusable
        raise PrunedModelError(f"ONNX Runtime cannot run the pruned model: {str(exc).splitlines()[0]}") from None
    names = [o.name for o in reference.get_outputs()]
    if [o.name for o in candidate.get_outputs()] != names:
        raise PrunedModelError("the pruned model's outputs differ in name or order from the original's")
    checks = []
    for name, a, b in zip(names, expected, actual):
        if a.shape != b.shape:
            raise PrunedModelError(f"output '{name}' has shape {list(b.shape)} after pruning, {list(a.shape)} before")
        checks.append(OutputCheck(name, list(a.shape), *fidelity(a, b)))
    return checks


def fidelity(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Cosine similarity and relative L2 error of ``actual`` against ``expected``."""
    a = expected.astype(np.float64).ravel()
    b = actual.astype(np.float64).ravel()
    norm = float(np.linalg.norm(a))
    cosine = float(a @ b / (norm * np.linalg.norm(b))) if norm and np.linalg.norm(b) else float(norm == np.linalg.norm(b))
    relative = float(np.linalg.norm(a - b) / norm) if norm else float(np.linalg.norm(b))
    return cosine, relative
