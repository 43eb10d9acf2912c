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
    return ModelStats(_param_count(graph), mac_count(graph), size_bytes)


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


_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def node_macs(node: gs.Node) -> int:
    """Multiply-accumulates of one Conv, ConvTranspose, Gemm or MatMul at batch 1 (0 for other ops)."""
    if node.op not in _MAC_OPS or len(node.inputs) < 2:
        return 0
    x, w, y = _dims(node.inputs[0]), _dims(node.inputs[1]), _dims(node.outputs[0])
    if x is None or w is None or y is None or not x:
        return 0
    if node.op == "Conv":
        return int(np.prod(y)) * int(np.prod(w[1:]))
    if node.op == "ConvTranspose":
        return int(np.prod(x)) * int(np.prod(w[1:]))
    inner = x[0] if node.attrs.get("transA", 0) else x[-1]
    return int(np.prod(y)) * inner


def mac_count(graph: gs.Graph) -> int:
    """Multiply-accumulates of one sample through ``graph`` (shapes inferred)."""
    return sum(node_macs(node) for node in graph.nodes)


def static_mac_count(graph: gs.Graph) -> int | None:
    """``mac_count``, or None where an output of a node that counts has a symbolic size beyond the batch
    (a dynamic image size, say), which would count as 1."""
    for node in graph.nodes:
        shape = node.outputs[0].shape if node.op in _MAC_OPS else ()
        if shape is None or not all(isinstance(d, int) for d in shape[1:]):
            return None
    return mac_count(graph)


class MacModel:
    """MACs of a graph as a function of which channel slots are removed.

    A weighted node's MACs are proportional to its weight's two channel axes, so each node costs
    ``base * kept(axis 0) * kept(axis 1)``; nodes without traced weights cost a fixed amount.
    """

    def __init__(self, analysis) -> None:
        by_owner: dict[int, list] = {}
        for param in analysis.context.params:
            if param.scored:
                by_owner.setdefault(id(param.owner or param.node), []).append(param)
        self.terms: list[tuple[float, list[np.ndarray], list[int]]] = []
        self.fixed = 0
        for node in analysis.graph.nodes:
            macs = node_macs(node)
            params = by_owner.get(id(node), [])
            if not params:
                self.fixed += macs
                continue
            sizes = [len(p.slots) for p in params]
            self.terms.append((macs / float(np.prod(sizes)), [p.slots for p in params], sizes))
        self.total = self.macs(np.zeros(analysis.context.slot_count, dtype=bool))

    def macs(self, slot_removed: np.ndarray) -> int:
        """MACs once the slots marked True are removed."""
        total = float(self.fixed)
        for base, slots, _ in self.terms:
            kept = 1.0
            for s in slots:
                kept *= len(s) - int(np.count_nonzero(slot_removed[s]))
            total += base * kept
        return int(round(total))
