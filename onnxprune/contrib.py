"""ONNX Runtime's fused contrib ops, split back into standard ops on load.

A model that ONNX Runtime's optimizer saved (``SessionOptions.optimized_model_filepath``, or the
transformer optimizer) holds fusions in the ``com.microsoft`` domain: FusedConv and FusedGemm (a Conv
or Gemm with its activation, and FusedConv's residual Add), FusedMatMul (a MatMul of transposed inputs,
scaled), BiasGelu and FastGelu (a bias Add before the activation). Split into the standard ops they
stand for, every rule, criterion and compensation step applies to them; ONNX Runtime fuses them again
when it loads the pruned model. The activations with no standard op (Gelu before opset 20, QuickGelu,
FastGelu) stay contrib ops, which ``CONTRIB_UNARY_OPS`` lets channels pass through.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

CONTRIB_DOMAIN = "com.microsoft"

# Element-wise contrib activations (one input, its shape kept): QuickGelu is x * sigmoid(alpha x).
CONTRIB_UNARY_OPS = ("Gelu", "QuickGelu", "FastGelu")

_CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def has_fused_contrib_ops(model: onnx.ModelProto) -> bool:
    """Whether ``model``'s graph holds a contrib op that :func:`unfuse_contrib_ops` may split."""
    return any(node.domain == CONTRIB_DOMAIN and node.op_type in _SPLITTERS for node in model.graph.node)


def unfuse_contrib_ops(graph: gs.Graph) -> tuple[str, ...]:
    """Replace the fused contrib ops of ``graph`` that have a standard equivalent, in place; returns the
    op types split, one entry per node. One whose activation has no standard op is left as it is (and
    pins its channels)."""
    split_ops = []
    for node in list(graph.nodes):
        if node.domain != CONTRIB_DOMAIN:
            continue
        split = _SPLITTERS.get(node.op)
        replacement = split(node, graph) if split is not None else None
        if replacement is None:
            continue
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes.extend(replacement)
        split_ops.append(node.op)
    if split_ops:
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return tuple(split_ops)


def _float_type(node: gs.Node) -> np.dtype:
    """The float type of ``node``'s computation, from its constant inputs (activations may have none yet)."""
    types = [t.values.dtype for t in node.inputs if isinstance(t, gs.Constant) and t.values.dtype.kind == "f"]
    return types[0] if types else np.dtype(np.float32)


def _activation(name: str, params: list[float], x: gs.Tensor, y: gs.Tensor, prefix: str,
                dtype: np.dtype) -> list[gs.Node] | None:
    """The standard node computing ``y = name(x)`` with FusedConv's or FusedGemm's parameters, or None."""
    if name in ("Relu", "Sigmoid", "Tanh"):
        return [gs.Node(name, f"{prefix}_{name}", inputs=[x], outputs=[y])]
    if name == "LeakyRelu":
        return [gs.Node(name, f"{prefix}_{name}", {"alpha": params[0] if params else 0.01}, [x], [y])]
    if name == "HardSigmoid":
        alpha, beta = (params + [0.2, 0.5][len(params):])[:2]
        return [gs.Node(name, f"{prefix}_{name}", {"alpha": alpha, "beta": beta}, [x], [y])]
    if name == "Clip" and len(params) == 2:
        bounds = [gs.Constant(f"{y.name}_clip_{end}", np.array(value, dtype)) for end, value in zip(("min", "max"), params)]
        return [gs.Node("Clip", f"{prefix}_Clip", inputs=[x, *bounds], outputs=[y])]
    return None


def _fused_conv(node: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    # FusedConv: Y = activation(Conv(X, W, B) + Z), Z optional (a residual the optimizer folded in).
    out = node.outputs[0]
    conv_out = gs.Variable(f"{out.name}_conv", dtype=out.dtype)
    attrs = {k: v for k, v in node.attrs.items() if k in _CONV_ATTRIBUTES}
    conv_inputs = list(node.inputs[:3])
    while conv_inputs[-1].is_empty():
        conv_inputs.pop()
    nodes = [gs.Node("Conv", node.name, attrs, conv_inputs, [conv_out])]
    pre = conv_out
    if len(node.inputs) > 3 and not node.inputs[3].is_empty():
        pre = gs.Variable(f"{out.name}_sum", dtype=out.dtype)
        nodes.append(gs.Node("Add", f"{node.name}_Add", inputs=[conv_out, node.inputs[3]], outputs=[pre]))
    act = _activation(str(node.attrs.get("activation", "")), list(node.attrs.get("activation_params", [])), pre, out, node.name,
                      _float_type(node))
    return None if act is None else nodes + act


def _fused_gemm(node: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    # FusedGemm: Y = activation(Gemm(A, B, C)); LeakyRelu's alpha is activation_alpha.
    out = node.outputs[0]
    gemm_out = gs.Variable(f"{out.name}_gemm", dtype=out.dtype)
    attrs = {k: v for k, v in node.attrs.items() if k in ("alpha", "beta", "transA", "transB")}
    name = str(node.attrs.get("activation", ""))
    params = [node.attrs[k] for k in ("activation_alpha", "activation_beta") if k in node.attrs]
    act = _activation(name, params, gemm_out, out, node.name, _float_type(node))
    return None if act is None else [gs.Node("Gemm", node.name, attrs, list(node.inputs), [gemm_out]), *act]


def _fused_matmul(node: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    # FusedMatMul: Y = alpha * op(A) @ op(B), op a swap of the last two axes. Only a constant B may be
    # transposed here (its rank is known); transposed batches are left fused.
    if node.attrs.get("transBatchA", 0) or node.attrs.get("transBatchB", 0) or node.attrs.get("transA", 0):
        return None
    a, b = node.inputs[:2]
    out = node.outputs[0]
    if node.attrs.get("transB", 0):
        if not isinstance(b, gs.Constant) or b.values.ndim < 2:
            return None
        b = gs.Constant(f"{out.name}_B", np.ascontiguousarray(np.swapaxes(b.values, -1, -2)))
    alpha = float(node.attrs.get("alpha", 1.0))
    if alpha == 1.0:
        return [gs.Node("MatMul", node.name, inputs=[a, b], outputs=[out])]
    product = gs.Variable(f"{out.name}_product", dtype=out.dtype)
    scale = gs.Constant(f"{out.name}_alpha", np.array(alpha, _float_type(node)))
    return [gs.Node("MatMul", node.name, inputs=[a, b], outputs=[product]),
            gs.Node("Mul", f"{node.name}_alpha", inputs=[product, scale], outputs=[out])]


def _bias_activation(node: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    # BiasGelu(A, B) = Gelu(A + B); FastGelu(X, bias) = FastGelu(X + bias). B is per hidden unit.
    if len(node.inputs) < 2 or node.inputs[1].is_empty():
        return None
    out = node.outputs[0]
    biased = gs.Variable(f"{out.name}_biased", dtype=out.dtype)
    op = "Gelu" if node.op == "BiasGelu" else node.op
    return [gs.Node("Add", f"{node.name}_bias", inputs=list(node.inputs[:2]), outputs=[biased]),
            gs.Node(op, node.name, domain=CONTRIB_DOMAIN, inputs=[biased], outputs=[out])]


def _skip_layer_norm(node: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    # SkipLayerNormalization(input, skip, gamma, beta, bias) = LayerNormalization(input + skip + bias)
    # over the last axis; its fourth output is that sum. Mean and inverse deviation outputs stay fused.
    used = [t for t in node.outputs[1:3] if not t.is_empty() and (t.outputs or t in graph.outputs)]
    if graph.opset < 17 or used:  # LayerNormalization is a standard op from opset 17
        return None
    x, skip, gamma = node.inputs[:3]
    beta = node.inputs[3] if len(node.inputs) > 3 and not node.inputs[3].is_empty() else None
    bias = node.inputs[4] if len(node.inputs) > 4 and not node.inputs[4].is_empty() else None
    out = node.outputs[0]
    total = node.outputs[3] if len(node.outputs) > 3 and not node.outputs[3].is_empty() else \
        gs.Variable(f"{out.name}_sum", dtype=out.dtype)
    summed = gs.Variable(f"{out.name}_skip", dtype=out.dtype) if bias is not None else total
    nodes = [gs.Node("Add", f"{node.name}_skip", inputs=[x, skip], outputs=[summed])]
    if bias is not None:
        nodes.append(gs.Node("Add", f"{node.name}_bias", inputs=[summed, bias], outputs=[total]))
    attrs = {"axis": -1, "epsilon": float(node.attrs.get("epsilon", 1e-5))}
    norm_inputs = [total, gamma] + ([beta] if beta is not None else [])
    return [*nodes, gs.Node("LayerNormalization", node.name, attrs, norm_inputs, [out])]


_SPLITTERS = {"FusedConv": _fused_conv, "FusedGemm": _fused_gemm, "FusedMatMul": _fused_matmul,
              "BiasGelu": _bias_activation, "FastGelu": _bias_activation, "SkipLayerNormalization": _skip_layer_norm}
