"""Check a pruned model against its original with ONNX Runtime."""

from __future__ import annotations

import ctypes
import gc
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


def session(model: onnx.ModelProto | str, optimize: bool = True, threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session from a model or a path; ``optimize=False`` turns graph optimisations off."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _lean_session(model: onnx.ModelProto | str | bytes) -> ort.InferenceSession:
    """A session for one validation run: no weight prepacking and no memory arena, to keep memory low."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.disable_prepacking", "1")
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


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


@dataclass(frozen=True)
class ReferenceRun:
    """The original model's outputs on seeded random inputs, kept so the original can be freed."""

    feeds: dict[str, np.ndarray]
    names: list[str]
    outputs: list[np.ndarray]


def reference_run(model: onnx.ModelProto | str | bytes, seed: int = 0) -> ReferenceRun:
    """Run the original model (a proto, a path or serialized bytes) once on a seeded random batch of 2.

    Raises:
        InputError: ONNX Runtime cannot load or run the original model.
    """
    try:
        sess = _lean_session(model)
        feeds = random_feeds(sess, batch=2, seed=seed)
        outputs = sess.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
        raise InputError(
            f"ONNX Runtime cannot run the input model ({str(exc).splitlines()[0][:200]}); "
            "check it runs in ONNX Runtime before pruning"
        ) from None
    names = [o.name for o in sess.get_outputs()]
    del sess
    release_freed_memory()
    return ReferenceRun(feeds, names, outputs)


def release_freed_memory() -> None:
    """Free unreachable graphs and hand freed memory back to the OS, so the peaks of stages don't stack.

    graphsurgeon graphs are reference cycles (only the cyclic GC frees them), and glibc keeps freed
    memory for reuse unless asked to return it.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def check_pruned(pruned: bytes, reference: ReferenceRun) -> list[OutputCheck]:
    """Raise PrunedModelError unless the serialized ``pruned`` model passes the full checker, runs in ONNX
    Runtime, and keeps every output's name and shape.

    Returns:
        Per-output fidelity against the reference run.
    """
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise PrunedModelError(f"the pruned model fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    try:
        candidate = _lean_session(pruned)
        actual = candidate.run(None, reference.feeds)
    except Exception as exc:  # noqa: BLE001 - any ONNX Runtime failure means the pruned model is unusable
        raise PrunedModelError(f"ONNX Runtime cannot run the pruned model: {str(exc).splitlines()[0]}") from None
    if [o.name for o in candidate.get_outputs()] != reference.names:
        raise PrunedModelError("the pruned model's outputs differ in name or order from the original's")
    checks = []
    for name, a, b in zip(reference.names, reference.outputs, actual):
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
