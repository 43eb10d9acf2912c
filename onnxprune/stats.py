"""Parameter count, multiply-accumulate count and serialized size of a model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto


@dataclass(frozen=True)
class ModelStats:
    """Size figures of one model. MACs count Conv, ConvTranspose, Gemm and MatMul at batch 1."""

    params: int
    macs: int
    size_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def graph_stats(graph: gs.Graph, size_bytes: int) -> ModelStats:
    """Measure a graph whose shapes have been inferred; ``size_bytes`` is its serialized size."""
    return ModelStats(_param_count(graph), _mac_count(graph), size_bytes)


def _is_float(dtype: object) -> bool:
    """float16/32/64 and bfloat16, whether graphsurgeon reports a numpy dtype or an ONNX type number."""
    if isinstance(dtype, (int, np.integer)):
        return int(dtype) in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
    return np.dtype(dtype).kind == "f" or np.dtype(dtype).name == "bfloat16"


def _param_count(graph: gs.Graph) -> int:
    return int(sum(
        int(np.prod(t.shape, dtype=np.int64))
        for t in graph.tensors().values()
        if isinstance(t, gs.Constant) and _is_float(t.dtype)
    ))


def _dims(tensor: gs.Tensor) -> list[int] | None:
    if tensor.shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else 1 for d in tensor.shape]  # symbolic dims count as 1


def _mac_count(graph: gs.Graph) -> int:
    total = 0
    for node in graph.nodes:
        if node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.inputs) < 2:
            continue
        x, w, y = _dims(node.inputs[0]), _dims(node.inputs[1]), _dims(node.outputs[0])
        if x is None or w is None or y is None or not x:
            continue
        if node.op == "Conv":
            total += int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op == "ConvTranspose":
            total += int(np.prod(x)) * int(np.prod(w[1:]))
        else:
            inner = x[0] if node.attrs.get("transA", 0) else x[-1]
            total += int(np.prod(y)) * inner
    return total
