"""Check a pruned model against its original with ONNX Runtime."""

from __future__ import annotations

import ctypes
import gc
import math
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from onnxprune.errors import InputError, PrunedModelError

_NUMPY_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class OutputCheck:
    """How one output of the pruned model compares with the original on the same inputs; ``shape`` is
    that output's over all of them (its batches stacked; [] for a scalar)."""

    name: str
    shape: list[int]
    cosine: float
    relative_l2: float

    def to_dict(self) -> dict:
        """As a dict; a figure that could not be measured (the original's values are all NaN) is None."""
        return {key: None if isinstance(value, float) and math.isnan(value) else value
                for key, value in asdict(self).items()}


def session(model: onnx.ModelProto | ModelApart | str | bytes, optimize: bool = True, threads: int = 1,
            providers: list[str] | None = None, lean: bool = False) -> ort.InferenceSession:
    """An ONNX Runtime session from a model (its large weights passed apart, see ``weights_apart``), a path
    or serialized bytes.

    Args:
        optimize: False turns graph optimisations off (for exact comparisons).
        threads: intra-op threads.
        providers: execution providers (default CPU).
        lean: no weight prepacking and no memory arena, to keep memory low for one-off runs.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 4  # failures become our own one-line errors; ONNX Runtime's log would repeat them
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if lean:
        options.enable_cpu_mem_arena = False
        options.add_session_config_entry("session.disable_prepacking", "1")
        # Graph optimisations rewrite weights (fusions, layouts) into extra copies; one-off runs skip them.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers = providers or ["CPUExecutionProvider"]
    if isinstance(model, onnx.ModelProto):
        model = weights_apart(model)
    if not isinstance(model, ModelApart):
        return ort.InferenceSession(model, options, providers=providers)
    if model.names:
        options.add_external_initializers(model.names, [ort.OrtValue.ortvalue_from_numpy(a) for a in model.arrays])
    return ort.InferenceSession(model.skeleton.SerializeToString(), options, providers=providers)


# Initializers at least this large go to ONNX Runtime as arrays rather than serialized; the small ones stay
# in the model, where ONNX's shape inference reads them (shapes, axes).
WEIGHTS_APART_BYTES = 1 << 16
# The location of their data in the model: no file, ONNX Runtime takes it from the session options.
_APART = "onnxprune-in-memory"


@dataclass(frozen=True)
class ModelApart:
    """A model whose large initializers are held beside it as arrays (see ``weights_apart``)."""

    skeleton: onnx.ModelProto
    names: list[str]
    arrays: list[np.ndarray]

    @property
    def size(self) -> int:
        """About the bytes of the model serialized whole, counted without serializing it (upb's ByteSize()
        serializes)."""
        return self.skeleton.ByteSize() + sum(a.nbytes for a in self.arrays)


def weights_apart(model: onnx.ModelProto) -> ModelApart:
    """A copy of ``model`` whose large initializers (of the main graph) hold no data but a reference to
    external data, with those initializers' names and values, which a session takes through
    ``add_external_initializers``: serializing 100 MB of weights and parsing them again cost a
    ResNet-50-sized model 0.28 s a session, this 0.03 s."""
    if sys.byteorder != "little":  # (raw data is little-endian)
        return ModelApart(model, [], [])
    large = {t.name for t in model.graph.initializer if _is_large(t)}
    if large:
        large &= _names_read(model.graph)  # (ONNX Runtime drops the others before it would replace them)
    if not large:
        return ModelApart(model, [], [])  # nothing to move: a small model serializes faster than it is copied
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip="graph")
    _copy_fields(model.graph, skeleton.graph, skip="initializer")
    names, arrays = [], []
    for tensor in model.graph.initializer:
        raw = tensor.raw_data if tensor.name in large else b""
        if not raw:  # small, unread, or in typed data fields rather than raw data: it stays
            skeleton.graph.initializer.append(tensor)
            continue
        stub = skeleton.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                                              data_location=TensorProto.EXTERNAL)
        for key, value in (("location", _APART), ("offset", "0"), ("length", str(len(raw)))):
            stub.external_data.add(key=key, value=value)
        names.append(tensor.name)
        arrays.append(np.frombuffer(raw, _APART_TYPES[tensor.data_type]).reshape(tuple(tensor.dims)))
    return ModelApart(skeleton, names, arrays)


def _is_large(tensor: TensorProto) -> bool:
    """Whether ``tensor`` holds at least WEIGHTS_APART_BYTES of a type ``weights_apart`` moves (from its dims:
    reading its data would copy it)."""
    dtype = _APART_TYPES.get(tensor.data_type)
    return (dtype is not None and tensor.data_location != TensorProto.EXTERNAL
            and math.prod(tensor.dims) * np.dtype(dtype).itemsize >= WEIGHTS_APART_BYTES)


def _names_read(graph: onnx.GraphProto) -> set[str]:
    """The names the nodes of ``graph`` and of their subgraphs read."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for inner in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                names |= _names_read(inner)
    return names


def _copy_fields(source, target, skip: str) -> None:
    """Copy every field of the protobuf message ``source`` that is set, but ``skip``, into ``target``."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(target, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


_APART_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64,
                 TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.INT32: np.int32,
                 TensorProto.INT64: np.int64}


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
class EvalData:
    """Held-out inputs (batches of feeds) and, when known, their labels in the same order."""

    batches: list[dict[str, np.ndarray]]
    labels: np.ndarray | None
    description: str
    random: bool = False  # seeded random inputs, whose symbolic sizes beyond the batch are 1

    @property
    def samples(self) -> int:
        return sum(len(next(iter(b.values()))) for b in self.batches)


# Random evaluation inputs: 16 samples in batches of 8, or 4 batches of 1 for large inputs
# (over 64k values per sample), so one batch of activations stays small.
LARGE_SAMPLE = 1 << 16


def random_eval_data(sess: ort.InferenceSession, seed: int = 0) -> EvalData:
    """Seeded random inputs, used when no calibration data is given."""
    per_sample = sum(int(np.prod([d for d in arg.shape[1:] if isinstance(d, int)])) for arg in sess.get_inputs())
    samples, batch = (4, 1) if per_sample > LARGE_SAMPLE else (16, 8)
    fixed = [arg.shape[0] for arg in sess.get_inputs() if arg.shape and isinstance(arg.shape[0], int)]
    if fixed:
        batch = max(fixed[0], 1)  # a static batch dimension keeps its size: as many batches as make the samples
    count = max(1, -(-samples // batch))
    batches = [random_feeds(sess, batch=batch, seed=seed + i) for i in range(count)]
    return EvalData(batches, None, f"{count * batch} random inputs (seed {seed})", random=True)


@dataclass(frozen=True)
class ReferenceRun:
    """The original model's outputs on the evaluation inputs, kept so the original can be freed."""

    data: EvalData
    names: list[str]
    outputs: list[list[np.ndarray]]
    checker_error: str | None = None  # the first line of the full checker's error on the original, if any

    def non_finite(self, output: int | None = None) -> tuple[int, int]:
        """How many of the original's floating-point output values (of output ``output``, else all) are NaN or
        infinite, and how many there are."""
        values = [np.asarray(v) for batch in self.outputs for index, v in enumerate(batch) if output in (None, index)]
        values = [v for v in values if np.issubdtype(v.dtype, np.floating)]
        return sum(int(v.size - np.isfinite(v).sum()) for v in values), sum(v.size for v in values)


def shape_text(shape: tuple | list) -> str:
    """An input shape for messages: samples first as N, unknown (symbolic) sizes as ?."""
    return "[" + ", ".join("N" if i == 0 else str(d) if isinstance(d, int) else "?" for i, d in enumerate(shape)) + "]"


def _not_runnable(exc: Exception) -> InputError:
    return InputError(f"ONNX Runtime cannot run the input model ({str(exc).splitlines()[0][:200]}); "
                      "check it runs in ONNX Runtime before pruning")


def reference_run(model: onnx.ModelProto | str | bytes, seed: int = 0,
                  data: EvalData | Callable[[ort.InferenceSession], EvalData] | None = None) -> ReferenceRun:
    """Run the original model (a proto, a path or serialized bytes) on the evaluation inputs.

    Args:
        data: held-out inputs, or a function making them from the session; None uses seeded random inputs.

    Raises:
        InputError: ONNX Runtime cannot load or run the original model.
    """
    try:
        sess = session(model, lean=True, threads=0)  # (all cores: the evaluation runs are most of a scan's time)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
        raise _not_runnable(exc) from None
    if callable(data):
        data = data(sess)  # calibration data, checked against the session's inputs
    data = data or random_eval_data(sess, seed)
    try:
        outputs = [sess.run(None, feeds) for feeds in data.batches]
    except Exception as exc:  # noqa: BLE001
        symbolic = [f"'{arg.name}' {shape_text(arg.shape)}" for arg in sess.get_inputs()
                    if any(not isinstance(d, int) for d in arg.shape[1:])] if data.random else []
        if symbolic:
            raise InputError(f"the model does not run on random inputs whose symbolic sizes are 1 (inputs "
                             f"{', '.join(symbolic)}: {str(exc).splitlines()[0][:160]}); give inputs of a real "
                             "size with --calib") from None
        raise _not_runnable(exc) from None
    names = [o.name for o in sess.get_outputs()]
    del sess
    release_freed_memory()
    return ReferenceRun(data, names, outputs, _checker_error(model))


def _checker_error(model: onnx.ModelProto | str | bytes) -> str | None:
    """The first line of the full ONNX checker's error on ``model``, or None where it passes."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return str(exc).splitlines()[0]
    return None


def _op_without_schema(error: str) -> bool:
    """Whether a checker error is about an op type ONNX has no schema of at any version."""
    found = re.match(r"No Op registered for (\S+) with domain_version", error)
    return found is not None and not onnx.defs.has(found.group(1))


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


@dataclass(frozen=True)
class Evaluation:
    """Fidelity of the pruned model to the original on held-out inputs, and accuracy when labels exist."""

    outputs: list[OutputCheck]
    top1_agreement: float | None
    top5_overlap: float | None
    samples: int
    accuracy_original: float | None = None
    accuracy_pruned: float | None = None

    def fidelity_dict(self) -> dict:
        return {"outputs": [o.to_dict() for o in self.outputs], "top1_agreement": self.top1_agreement,
                "top5_overlap": self.top5_overlap, "samples": self.samples}

    def accuracy_dict(self) -> dict | None:
        if self.accuracy_original is None:
            return None
        return {"original": self.accuracy_original, "pruned": self.accuracy_pruned, "samples": self.samples}


def check_pruned(pruned: bytes | str | ModelApart, reference: ReferenceRun, checked: bool = True) -> Evaluation:
    """Raise PrunedModelError unless the pruned model (serialized, a path, or apart from its weights when
    not ``checked``) passes the full checker, runs in ONNX Runtime, and keeps every output's name and
    shape; then measure its fidelity. ``checked`` False skips the checker (the candidates a sensitivity
    scan measures: ResNet-50-like, 0.11 s each).
    """
    error = _checker_error(pruned) if checked else None
    # An error the original has too is the checker's, not the pruning's (ONNX 1.23 fails the function
    # body of MeanVarianceNormalization at opset 13 and later, say), as is an op ONNX has no schema of
    # (ONNX Runtime registers SimplifiedLayerNormalization in ONNX's domain): pruning writes standard ops
    # only, so it came from the original. Running the model decides then.
    if error is not None and error != reference.checker_error and not _op_without_schema(error):
        raise PrunedModelError(f"the pruned model fails the ONNX checker: {error}")
    try:
        candidate = session(pruned, lean=True, threads=0)
        actual = [candidate.run(None, feeds) for feeds in reference.data.batches]
    except Exception as exc:  # noqa: BLE001 - any ONNX Runtime failure means the pruned model is unusable
        raise PrunedModelError(f"ONNX Runtime cannot run the pruned model: {str(exc).splitlines()[0]}") from None
    if [o.name for o in candidate.get_outputs()] != reference.names:
        raise PrunedModelError("the pruned model's outputs differ in name or order from the original's")
    for batch_expected, batch_actual in zip(reference.outputs, actual):
        for name, a, b in zip(reference.names, batch_expected, batch_actual):
            if a.shape != b.shape:
                raise PrunedModelError(f"output '{name}' has shape {list(b.shape)} after pruning, {list(a.shape)} before")
    return evaluate(reference, actual)


def evaluate(reference: ReferenceRun, actual: list[list[np.ndarray]]) -> Evaluation:
    """Compare outputs batch by batch: cosine and relative L2 per output, and for classifiers top-1
    agreement, top-5 overlap and (with labels) accuracy of both models."""
    checks = []
    for index, name in enumerate(reference.names):
        expected = np.concatenate([np.atleast_1d(b[index]).ravel() for b in reference.outputs])
        got = np.concatenate([np.atleast_1d(b[index]).ravel() for b in actual])
        first = reference.outputs[0][index]
        shape = [sum(len(b[index]) for b in reference.outputs), *first.shape[1:]] if first.ndim else []
        checks.append(OutputCheck(name, shape, *fidelity(expected, got)))
    expected, got = _class_scores(reference.outputs), _class_scores(actual)
    samples = reference.data.samples
    if expected is None:
        return Evaluation(checks, None, None, samples)
    top1_e, top1_g = expected.argmax(1), got.argmax(1)
    k = min(5, expected.shape[1])
    top_e, top_g = np.argsort(-expected, 1)[:, :k], np.argsort(-got, 1)[:, :k]
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_e, top_g)]))
    labels = reference.data.labels
    accuracy = (float(np.mean(top1_e == labels)), float(np.mean(top1_g == labels))) if labels is not None else (None, None)
    return Evaluation(checks, float(np.mean(top1_e == top1_g)), overlap, samples, *accuracy)


def _class_scores(batches: list[list[np.ndarray]]) -> np.ndarray | None:
    """The first output as [samples, classes] when it looks like a classifier's scores, else None."""
    first = [b[0] for b in batches]
    if first[0].ndim != 2 or first[0].shape[1] < 2 or not np.issubdtype(first[0].dtype, np.floating):
        return None
    return np.concatenate(first).astype(np.float64)


def fidelity(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Cosine similarity and relative L2 error of ``actual`` against ``expected``, where ``expected`` is finite
    (a NaN the original gives says nothing of the pruned model; one only the pruned model gives counts)."""
    a = expected.astype(np.float64).ravel()
    b = actual.astype(np.float64).ravel()
    finite = np.isfinite(a)
    if not finite.any() and a.size:
        return float("nan"), float("nan")
    if not finite.all():
        a, b = a[finite], b[finite]
    norm = float(np.linalg.norm(a))
    cosine = float(a @ b / (norm * np.linalg.norm(b))) if norm and np.linalg.norm(b) else float(norm == np.linalg.norm(b))
    relative = float(np.linalg.norm(a - b) / norm) if norm else float(np.linalg.norm(b))
    return cosine, relative
