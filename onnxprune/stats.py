"""Parameter count, multiply-accumulate count and serialized size of a model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from onnxprune.model import infer_shapes

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


@dataclass(frozen=True)
class ModelStats:
    """Size figures of one model. MACs count Conv, ConvTranspose, Gemm and MatMul at batch 1."""

    params: int
    macs: int
    size_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def model_stats(model: onnx.ModelProto, shaped: onnx.ModelProto | None = None) -> ModelStats:
    """Measure ``model``; pass ``shaped`` when a copy with inferred shapes is already at hand."""
    shaped = shaped or infer_shapes(model)
    return ModelStats(_param_count(model), _mac_count(shaped), model.ByteSize())


def _param_count(model: onnx.ModelProto) -> int:
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in tensors if t.data_type in FLOAT_TYPES))


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    infos = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    for info in infos:
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            # Symbolic dims (the batch) count as 1.
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in info.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _mac_count(model: onnx.ModelProto) -> int:
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        dims = [shapes.get(name) for name in list(node.input[:2]) + [node.output[0]]]
        if any(d is None for d in dims):
            continue
        x, w, y = dims
        if node.op_type == "Conv":
            total += int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose":
            total += int(np.prod(x)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and x:
            attrs = {a.name: a.i for a in node.attribute}
            inner = x[0] if attrs.get("transA") else x[-1]
            total += int(np.prod(y)) * inner
    return total
