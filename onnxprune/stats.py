"""Parameter count, multiply-accumulate count and serialized size of a model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from onnxprune.rules.linear import einsum_terms
from onnxprune.rules.recurrent import RECURRENT_OPS


@dataclass(frozen=True)
class ModelStats:
    """Size figures of one model. MACs count Conv, ConvTranspose, Gemm, MatMul, Einsum, RNN, GRU and LSTM at
    batch 1 (symbolic sizes at the calibration data's, or as 1 without it)."""

    params: int
    macs: int
    size_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def graph_stats(graph: gs.Graph, size_bytes: int, scales: dict[str, float] | None = None) -> ModelStats:
    """Measure a graph whose shapes have been inferred; ``size_bytes`` is its serialized size (``scales``:
    see ``mac_scales``)."""
    return ModelStats(_param_count(graph), mac_count(graph, scales), size_bytes)


def _is_float(dtype: object) -> bool:
    """float16/32/64 and bfloat16, whether graphsurgeon reports a numpy dtype or an ONNX type number."""
    if isinstance(dtype, (int, np.integer)):
        return int(dtype) in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
    return np.dtype(dtype).kind == "f" or np.dtype(dtype).name == "bfloat16"


def _param_count(graph: gs.Graph) -> int:
    """Float constants, and the integer weights of QDQ models (constants a DequantizeLinear reads first)."""
    return int(sum(
        int(np.prod(t.shape, dtype=np.int64))
        for t in graph.tensors().values()
        if isinstance(t, gs.Constant) and (_is_float(t.dtype) or _dequantized(t))
    ))


def _dequantized(tensor: gs.Constant) -> bool:
    return any(node.op == "DequantizeLinear" and node.inputs[0] is tensor for node in tensor.outputs)


def _dims(shape: list | None) -> list[int] | None:
    if shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else 1 for d in shape]  # symbolic dims count as 1


_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "Attention", *RECURRENT_OPS)


def _macs(node: gs.Node, shapes: dict[str, list] | None = None) -> int:
    """``node_macs`` with the activation shapes of ``shapes`` where it has them."""
    if node.op not in _MAC_OPS or len(node.inputs) < 2:
        return 0
    if node.op in RECURRENT_OPS:  # X W^T and H R^T at every step: W [dirs, rows, in], R [dirs, rows, hidden]
        x = _dims(shapes.get(node.inputs[0].name, node.inputs[0].shape) if shapes else node.inputs[0].shape)
        w, r = _dims(node.inputs[1].shape), _dims(node.inputs[2].shape) if len(node.inputs) > 2 else None
        if x is None or w is None or r is None or len(x) != 3 or len(w) != 3 or len(r) != 3:
            return 0
        return x[0] * x[1] * w[0] * w[1] * (w[2] + r[2])
    raw = [shapes.get(t.name, t.shape) if shapes else t.shape for t in (*node.inputs[:2], node.outputs[0])]
    if any(shape is None for shape in raw) or not raw[0]:
        return 0
    x, w, y = (_dims(shape) for shape in _channels_from_operands(node, *raw))
    if node.op == "Einsum":  # one multiply-accumulate per combination of its labels' values
        terms, out = einsum_terms(node.attrs["equation"], [len(x), len(w)])
        sizes: dict[str, int] = {}
        for label, size in zip(terms[0] + terms[1] + out, x + w + y):
            sizes[label] = max(size, sizes.get(label, 1))
        return int(np.prod(list(sizes.values()))) if len(node.inputs) == 2 else 0
    if node.op == "Attention":  # Q K^T and the scores times V: [.., Sq, Skv] x (D + Dv), in 3-D or 4-D form
        return int(np.prod(y[:-1])) * w[-2] * (x[-1] + y[-1]) if len(x) == len(w) == len(y) >= 3 else 0
    if node.op == "Conv":
        return int(np.prod(y)) * int(np.prod(w[1:]))
    if node.op == "ConvTranspose":
        return int(np.prod(x)) * int(np.prod(w[1:]))
    inner = x[0] if node.attrs.get("transA", 0) else x[-1]
    return int(np.prod(y)) * inner


def _channels_from_operands(node: gs.Node, x: list, w: list, y: list) -> tuple[list, list, list]:
    """The shapes with the symbolic sizes of channel axes taken from the operand or output that shares
    them (a weight's are known). Left symbolic they would count as 1, and ``mac_scales`` would then
    stand for the original's channel count there, however many channels pruning leaves."""
    x, w, y = list(x), list(w), list(y)

    def share(a: list, i: int, b: list, j: int) -> None:
        if -len(a) <= i < len(a) and -len(b) <= j < len(b):
            if not _is_size(a[i]):
                a[i] = b[j]
            elif not _is_size(b[j]):
                b[j] = a[i]

    if node.op == "MatMul" and len(w) >= 2:  # x [..., k] @ w [..., k, n] -> y [..., n]
        share(x, -1, w, -2)
        share(y, -1, w, -1)
    elif node.op == "MatMul" and len(w) == 1:
        share(x, -1, w, 0)
    elif node.op == "Gemm" and len(x) == 2 and len(w) == 2 and len(y) == 2:
        trans_a, trans_b = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
        share(x, 0 if trans_a else 1, w, 1 if trans_b else 0)
        share(y, 1, w, 0 if trans_b else 1)
    elif node.op == "Conv" and len(y) >= 2 and w:
        share(y, 1, w, 0)
    elif node.op == "ConvTranspose" and len(x) >= 2 and w:
        share(x, 1, w, 0)
    return x, w, y


def _is_size(dim: object) -> bool:
    return isinstance(dim, int) and dim >= 0


def node_macs(node: gs.Node, scales: dict[str, float] | None = None) -> float:
    """Multiply-accumulates of one Conv, ConvTranspose, Gemm, MatMul, Einsum, Attention, RNN, GRU or LSTM at batch 1
    (0 for other ops); symbolic sizes count as 1, or as the size that ``scales`` (see ``mac_scales``) stands for."""
    return _macs(node) * (scales or {}).get(node.outputs[0].name, 1.0)


def mac_scales(graph: gs.Graph, shapes: dict[str, list]) -> dict[str, float]:
    """For each node that counts whose shapes have symbolic sizes (beyond an input's batch), the factor from
    its MACs with those sizes as 1 to its MACs at ``shapes`` (real sizes at batch 1, say of the calibration
    data), by output name. Removing channels leaves the factor alone: it is the product of the symbolic sizes."""
    scales = {}
    batch = _batch_names(graph)
    for node in graph.nodes:
        if node.op not in _MAC_OPS or _is_static(node, batch):
            continue
        symbolic, real = _macs(node), _macs(node, shapes)
        if symbolic and all(_known(shapes.get(t.name)) for t in _activations(node)):
            scales[node.outputs[0].name] = real / symbolic
    return scales


def unresolved_mac_tensors(graph: gs.Graph, shapes: dict[str, list]) -> list[str]:
    """Activations of the nodes that count whose symbolic sizes ``shapes`` does not know."""
    batch = _batch_names(graph)
    names = [t.name for node in graph.nodes if node.op in _MAC_OPS and not _is_static(node, batch)
             for t in _activations(node) if not _known(shapes.get(t.name))]
    return list(dict.fromkeys(names))


def _activations(node: gs.Node) -> list[gs.Variable]:
    """The activations a node's MACs are counted from: its first two inputs and its output, not weights."""
    return [t for t in (*node.inputs[:2], node.outputs[0]) if isinstance(t, gs.Variable) and not t.is_empty()]


def _known(shape: list | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _batch_names(graph: gs.Graph) -> set[str]:
    """The symbolic batch sizes of the graph's inputs."""
    return {t.shape[0] for t in graph.inputs if t.shape and isinstance(t.shape[0], str)}


def _is_static(node: gs.Node, batch: set[str]) -> bool:
    """Whether the activations a node's MACs are counted from have no symbolic size but an input's batch
    in front. (A Gemm after a reshape of [batch, tokens, features] reads [batch x tokens, features]: its
    first size is symbolic and not the batch.)"""
    return all(t.shape is not None and all(isinstance(d, int) or i == 0 and d in batch for i, d in enumerate(t.shape))
               for t in _activations(node))


def mac_count(graph: gs.Graph, scales: dict[str, float] | None = None) -> int:
    """Multiply-accumulates of one sample through ``graph`` (shapes inferred; ``scales``: see ``mac_scales``)."""
    return int(round(sum(node_macs(node, scales) for node in graph.nodes)))


def static_mac_count(graph: gs.Graph, scales: dict[str, float] | None = None) -> int | None:
    """``mac_count``, or None where an output of a node that counts has a symbolic size beyond the batch
    (a dynamic image size, say) that ``scales`` does not stand for, which would count as 1."""
    batch = _batch_names(graph)
    for node in graph.nodes:
        if node.op in _MAC_OPS and not _is_static(node, batch) and node.outputs[0].name not in (scales or {}):
            return None
    return mac_count(graph, scales)


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
        channels = analysis.context.channels
        for node in analysis.graph.nodes:
            macs = node_macs(node, analysis.mac_scales)
            slots = [p.slots for p in by_owner.get(id(node), [])]
            product = analysis.context.node_io.get(node.name, (None, None))
            if not slots and macs and node.outputs[0].name in channels:
                # A product of two activations per channel on a batch axis (attention heads): MACs per channel.
                slots = [channels[node.outputs[0].name].slots]
            elif not slots and macs and node.op in ("MatMul", "Einsum") and product[0] in channels and product[1] is None:
                slots = [channels[product[0]].slots]  # ...or multiplied over them (dimensions within heads)
            if not slots:
                self.fixed += macs
                continue
            if node.op in RECURRENT_OPS:
                self._add_recurrent(node, macs, by_owner[id(node)])
                continue
            sizes = [len(s) for s in slots]
            self.terms.append((macs / float(np.prod(sizes)), slots, sizes))
        self.total = self.macs(np.zeros(analysis.context.slot_count, dtype=bool))

    def _add_recurrent(self, node: gs.Node, macs: float, params: list) -> None:
        """X W^T and H R^T, each in proportion to the channels its weight keeps on its two sliced axes (W:
        features and gates x hidden units; R: gates x hidden units and hidden units)."""
        features, hidden = node.inputs[1].shape[2], node.inputs[2].shape[2]
        for index, share in ((1, features / (features + hidden)), (2, hidden / (features + hidden))):
            slots = [p.slots for p in params if (p.node.inputs[p.input_index] if p.node is node else p.node.outputs[0])
                     is node.inputs[index]]
            if not slots:
                self.fixed += macs * share
                continue
            sizes = [len(s) for s in slots]
            self.terms.append((macs * share / float(np.prod(sizes)), slots, sizes))

    def macs(self, slot_removed: np.ndarray) -> int:
        """MACs once the slots marked True are removed."""
        total = float(self.fixed)
        for base, slots, _ in self.terms:
            kept = 1.0
            for s in slots:
                kept *= len(s) - int(np.count_nonzero(slot_removed[s]))
            total += base * kept
        return int(round(total))
