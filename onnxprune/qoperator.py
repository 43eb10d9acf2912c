"""Quantized models in the operator format, written in the QDQ format on load.

ONNX Runtime's ``quantize_static`` with ``QuantFormat.QOperator`` (and older int8 models) computes with
integer ops that hold their weights, scales and zero points as inputs: QLinearConv and QLinearMatMul, and
in the ``com.microsoft`` domain QGemm, QLinearAdd, QLinearMul, QLinearConcat, QLinearSigmoid,
QLinearLeakyRelu, QLinearAveragePool, QLinearGlobalAveragePool and QLinearSoftmax. Each stands for the
float op between DequantizeLinear of its inputs and QuantizeLinear of its output (QLinearConv's int32
bias is dequantized on the input scale times the weight scale), which is the QDQ format that the channel
rules, criteria and compensation already handle. ONNX Runtime fuses that form back into the same integer
kernels when it loads the pruned model.

Dynamic quantization (``quantize_dynamic``) writes ConvInteger and MatMulInteger of an input quantized
at run time (DynamicQuantizeLinear), then a Cast to float and a Mul by the input's scale times the
weight's: that is the Conv or MatMul of the input and weight dequantized on those scales, and is written
so (ONNX Runtime fuses the MatMuls back into its integer ones; the convs run in float).

A node whose form this cannot write exactly (a scale per channel before opset 13, whose DequantizeLinear
has no axis; a scale computed at run time; QGemm's alpha other than 1; a channels-last pool) is left as
it is, and pins its channels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.contrib import CONTRIB_DOMAIN, swap_in

_POOL_ATTRIBUTES = ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides")


def has_operator_format(model: onnx.ModelProto) -> bool:
    """Whether ``model``'s graph holds an integer op that :func:`write_as_qdq` rewrites."""
    return any(_key(node.domain, node.op_type) in _WRITERS for node in model.graph.node)


def write_as_qdq(graph: gs.Graph) -> tuple[str, ...]:
    """Replace the operator-format integer ops of ``graph`` with their QDQ form, in place; returns the op
    types rewritten, one entry per node."""
    if graph.opset < 10:
        return ()  # DequantizeLinear comes with opset 10
    written = []
    for node in list(graph.nodes):
        writer = _WRITERS.get(_key(node.domain, node.op))
        if writer is None:
            continue
        node.name = node.name or f"{node.op}_{node.outputs[0].name}"
        built = _Writer(node, graph.opset)
        try:
            replacement = writer(built)
        except _NotWritable:
            replacement = None
        if replacement is None:
            for unused in built.nodes:  # graphsurgeon links a node to its tensors when it is made
                unused.inputs.clear()
                unused.outputs.clear()
            continue
        swap_in(graph, node, replacement)
        written.append(node.op)
    if written:
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return tuple(written)


def _key(domain: str | None, op: str) -> tuple[str, str]:
    return ("" if domain in (None, "", "ai.onnx") else domain, op)


class _NotWritable(Exception):
    """The node's QDQ form needs what its graph's opset lacks."""


class _Writer:
    """Builds the QDQ form of one integer node: dequantized inputs, the float op, the quantized output."""

    def __init__(self, node: gs.Node, opset: int) -> None:
        self.node = node
        self.opset = opset
        self.nodes: list[gs.Node] = []

    def input(self, index: int) -> gs.Tensor | None:
        inputs = self.node.inputs
        return inputs[index] if len(inputs) > index and not inputs[index].is_empty() else None

    def scale_type(self) -> np.dtype:
        scale = next((t for t in self.node.inputs if isinstance(t, gs.Constant) and t.values.dtype.kind == "f"), None)
        return scale.values.dtype if scale is not None else np.dtype(np.float32)

    def dequantized(self, x: int, scale: int, zero_point: int | None, axis: int | None = None) -> gs.Variable:
        """DequantizeLinear of input ``x`` on the scale and zero point at those inputs."""
        inputs = [self.node.inputs[x], self.node.inputs[scale]]
        if zero_point is not None and self.input(zero_point) is not None:
            inputs.append(self.node.inputs[zero_point])
        return self.dequantize(inputs, f"{self.node.name}_dq{x}", axis)

    def dequantize(self, inputs: list[gs.Tensor], name: str, axis: int | None = None) -> gs.Variable:
        out = gs.Variable(f"{name}_out", dtype=self.scale_type())
        per_channel = isinstance(inputs[1], gs.Constant) and inputs[1].values.size > 1
        if per_channel and self.opset < 13:
            raise _NotWritable  # DequantizeLinear's axis, for a scale per channel, comes with opset 13
        attrs = {"axis": axis} if per_channel and axis is not None else {}
        self.nodes.append(gs.Node("DequantizeLinear", name, attrs, inputs, [out]))
        return out

    def float_op(self, op: str, inputs: list[gs.Tensor], attrs: dict | None = None) -> gs.Variable:
        out = gs.Variable(f"{self.node.name}_float", dtype=self.scale_type())
        self.nodes.append(gs.Node(op, f"{self.node.name}_{op}", attrs or {}, inputs, [out]))
        return out

    def quantized(self, x: gs.Variable, scale: int, zero_point: int | None) -> list[gs.Node]:
        """QuantizeLinear of ``x`` into the node's output, on the scale and zero point at those inputs;
        returns every node built."""
        inputs = [x, self.node.inputs[scale]]
        if zero_point is not None and self.input(zero_point) is not None:
            inputs.append(self.node.inputs[zero_point])
        self.nodes.append(gs.Node("QuantizeLinear", f"{self.node.name}_q", inputs=inputs, outputs=[self.node.outputs[0]]))
        return self.nodes

    def add_bias(self, inputs: list[gs.Tensor], index: int) -> bool:
        """Append the dequantized int32 bias at ``index`` (if any) to ``inputs``: it is on the input scale
        (input 1) times each weight scale (input 4), zero point 0. False where it is not a constant."""
        bias = self.input(index)
        if bias is None:
            return True
        if not isinstance(bias, gs.Constant):
            return False
        scale = (self.node.inputs[1].values * self.node.inputs[4].values).astype(self.scale_type()).reshape(-1)
        bias_scale = gs.Constant(f"{self.node.name}_bias_scale", scale if scale.size > 1 else scale.reshape(()))
        inputs.append(self.dequantize([bias, bias_scale], f"{self.node.name}_dq{index}", axis=0))
        return True

    def constant_scales(self, *indices: int) -> bool:
        """Whether the inputs at ``indices`` (scales and zero points) are present constants or absent."""
        return all(self.input(i) is None or isinstance(self.input(i), gs.Constant) for i in indices)


def _conv(w: _Writer) -> list[gs.Node] | None:
    # QLinearConv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B)
    if not w.constant_scales(1, 4, 5) or not isinstance(w.node.inputs[3], gs.Constant):
        return None
    inputs = [w.dequantized(0, 1, 2), w.dequantized(3, 4, 5, axis=0)]
    if not w.add_bias(inputs, 8):
        return None
    attrs = {k: v for k, v in w.node.attrs.items() if k in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")}
    return w.quantized(w.float_op("Conv", inputs, attrs), 6, 7)


def _matmul(w: _Writer) -> list[gs.Node] | None:
    # QLinearMatMul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point); b's scale
    # may hold one entry per column.
    if not w.constant_scales(1, 4, 5):
        return None
    b_shape, per_column = w.node.inputs[3].shape, w.node.inputs[4].values.size > 1
    if per_column and b_shape is None:
        return None
    inputs = [w.dequantized(0, 1, 2), w.dequantized(3, 4, 5, axis=len(b_shape) - 1 if per_column else None)]
    return w.quantized(w.float_op("MatMul", inputs), 6, 7)


def _gemm(w: _Writer) -> list[gs.Node] | None:
    # QGemm(A, a_scale, a_zero_point, B, b_scale, b_zero_point, C, y_scale, y_zero_point): C is int32 on
    # a_scale times b_scale; without y_scale the output is float.
    if float(w.node.attrs.get("alpha", 1.0)) != 1.0 or not w.constant_scales(1, 4, 5):
        return None
    trans_b = int(w.node.attrs.get("transB", 0))
    inputs = [w.dequantized(0, 1, 2), w.dequantized(3, 4, 5, axis=0 if trans_b else 1)]
    if not w.add_bias(inputs, 6):
        return None
    attrs = {"transA": int(w.node.attrs.get("transA", 0)), "transB": trans_b}
    if w.input(7) is None:  # a float output: the Gemm writes it
        w.nodes.append(gs.Node("Gemm", f"{w.node.name}_Gemm", attrs, inputs, [w.node.outputs[0]]))
        return w.nodes
    return w.quantized(w.float_op("Gemm", inputs, attrs), 7, 8)


def _binary(op: str) -> Callable[[_Writer], list[gs.Node] | None]:
    def write(w: _Writer) -> list[gs.Node] | None:
        # QLinearAdd / QLinearMul(A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point)
        return w.quantized(w.float_op(op, [w.dequantized(0, 1, 2), w.dequantized(3, 4, 5)]), 6, 7)
    return write


def _unary(op: str, attributes: tuple[str, ...] = ()) -> Callable[[_Writer], list[gs.Node] | None]:
    def write(w: _Writer) -> list[gs.Node] | None:
        # QLinearSigmoid and the like (X, X_scale, X_zero_point, Y_scale, Y_zero_point)
        if int(w.node.attrs.get("channels_last", 0)):
            return None
        attrs = {k: v for k, v in w.node.attrs.items() if k in attributes}
        return w.quantized(w.float_op(op, [w.dequantized(0, 1, 2)], attrs), 3, 4)
    return write


def _softmax(w: _Writer) -> list[gs.Node] | None:
    # QLinearSoftmax's axis follows Softmax's meaning in the opset it names (before 13: flattened to 2-D),
    # the Softmax written the graph's.
    if (int(w.node.attrs.get("opset", 13)) >= 13) != (w.opset >= 13):
        return None
    return _unary("Softmax", ("axis",))(w)


def _concat(w: _Writer) -> list[gs.Node] | None:
    # QLinearConcat(Y_scale, Y_zero_point, X1, X1_scale, X1_zero_point, X2, ...)
    parts = [w.dequantized(i, i + 1, i + 2) for i in range(2, len(w.node.inputs), 3)]
    return w.quantized(w.float_op("Concat", parts, {"axis": int(w.node.attrs["axis"])}), 0, 1)


def _integer_product(w: _Writer) -> list[gs.Node] | None:
    # Dynamic quantization: ConvInteger / MatMulInteger(A, W, A's zero point, W's zero point) -> Cast to
    # float -> Mul by A's scale times W's (one, or one per output channel). Its float value is the Conv or
    # MatMul of A and W dequantized on those scales, whichever scalar A's scale is.
    node = w.node
    cast = _only_reader(node.outputs[0])
    scaled = _only_reader(cast.outputs[0]) if cast is not None and cast.op == "Cast" else None
    if scaled is None or scaled.op != "Mul" or not isinstance(node.inputs[1], gs.Constant):
        return None
    scale = scaled.inputs[1] if scaled.inputs[0] is cast.outputs[0] else scaled.inputs[0]
    factors = scale.inputs[0].inputs if len(scale.inputs) == 1 and scale.inputs[0].op == "Mul" else []
    weight_scale = next((t for t in factors if isinstance(t, gs.Constant)), None)
    input_scale = next((t for t in factors if t is not weight_scale), None)
    if weight_scale is None or input_scale is None or input_scale.shape is None or any(d != 1 for d in input_scale.shape):
        return None
    zero = w.input(3)
    if zero is not None and not isinstance(zero, gs.Constant):
        return None
    channels = weight_scale.values.size
    if zero is not None and zero.values.size not in (1, channels) and channels == 1:
        channels = zero.values.size
    # DequantizeLinear wants the weight's scale and zero point of one shape.
    scales = np.broadcast_to(weight_scale.values.reshape(-1), (channels,)).astype(weight_scale.values.dtype)
    weight_inputs = [node.inputs[1], gs.Constant(f"{node.name}_weight_scale", scales if channels > 1 else scales.reshape(()))]
    if zero is not None:
        zeros = np.broadcast_to(zero.values.reshape(-1), (channels,)).astype(zero.values.dtype)
        weight_inputs.append(gs.Constant(f"{node.name}_weight_zero", zeros if channels > 1 else zeros.reshape(())))
    shape = node.inputs[1].shape
    axis = 0 if node.op == "ConvInteger" else (len(shape) - 1 if shape is not None else None)
    if channels > 1 and axis is None:
        return None
    if list(input_scale.shape):  # DequantizeLinear's scale for the whole tensor is a scalar
        scalar = gs.Variable(f"{node.name}_input_scale", dtype=w.scale_type())
        w.nodes.append(gs.Node("Reshape", f"{node.name}_input_scale", outputs=[scalar],
                               inputs=[input_scale, gs.Constant(f"{node.name}_scalar", np.zeros(0, np.int64))]))
        input_scale = scalar
    inputs = [w.dequantize([node.inputs[0], input_scale] + ([node.inputs[2]] if w.input(2) is not None else []), f"{node.name}_dq0"),
              w.dequantize(weight_inputs, f"{node.name}_dq1", axis)]
    op = "Conv" if node.op == "ConvInteger" else "MatMul"
    attrs = {k: v for k, v in node.attrs.items() if k in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")}
    result = scaled.outputs[0]
    scaled.outputs.clear()
    w.nodes.append(gs.Node(op, f"{node.name}_{op}", attrs, inputs, [result]))
    return w.nodes


def _only_reader(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.outputs[0] if len(tensor.outputs) == 1 else None


_WRITERS: dict[tuple[str, str], Callable[[_Writer], list[gs.Node] | None]] = {
    ("", "ConvInteger"): _integer_product,
    ("", "MatMulInteger"): _integer_product,
    ("", "QLinearConv"): _conv,
    ("", "QLinearMatMul"): _matmul,
    (CONTRIB_DOMAIN, "QGemm"): _gemm,
    (CONTRIB_DOMAIN, "QLinearAdd"): _binary("Add"),
    (CONTRIB_DOMAIN, "QLinearMul"): _binary("Mul"),
    (CONTRIB_DOMAIN, "QLinearConcat"): _concat,
    (CONTRIB_DOMAIN, "QLinearSigmoid"): _unary("Sigmoid"),
    (CONTRIB_DOMAIN, "QLinearLeakyRelu"): _unary("LeakyRelu", ("alpha",)),
    (CONTRIB_DOMAIN, "QLinearAveragePool"): _unary("AveragePool", _POOL_ATTRIBUTES),
    (CONTRIB_DOMAIN, "QLinearGlobalAveragePool"): _unary("GlobalAveragePool"),
    (CONTRIB_DOMAIN, "QLinearSoftmax"): _softmax,
}
