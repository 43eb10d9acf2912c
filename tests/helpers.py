"""Shared test utilities: exact ONNX Runtime runs, small graph builders, and the masking oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxprune.model import export_graph, import_graph
from onnxprune.rules.linear import einsum_terms

MODELS = Path(__file__).resolve().parent.parent / "models"
FIXTURES = sorted(p for p in MODELS.glob("*.onnx") if not p.name.endswith(".pruned.onnx"))


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run with every ONNX Runtime graph optimisation off, so results are exact enough to compare."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def feeds_for(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded normal inputs; symbolic dims become ``batch`` (first axis) or 3."""
    rng = np.random.default_rng(seed)
    feeds = {}
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else (batch if i == 0 else 3) for i, d in enumerate(dims)]
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.ones(shape, dtype)
    return feeds


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    """||expected - actual|| / ||expected|| (absolute error when expected is all zero)."""
    norm = np.linalg.norm(expected.astype(np.float64))  # a float16 output's squared norm overflows
    diff = np.linalg.norm(expected.astype(np.float64) - actual.astype(np.float64))
    return float(diff / norm) if norm else float(diff)


def _zero_inputs(node: gs.Node, removed: list[int]) -> gs.Node | None:
    """Zero the weights that read the removed input channels; a product of two activations gets a Mul that
    zeroes them in its first input instead, which is returned to be added to the graph."""
    if node.op not in ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "RNN", "GRU", "LSTM", "Attention"):
        return  # per-channel constants (a bias Add, say) are sliced with their channels: nothing reads them
    # removed channels: those it multiplies over (ONNX's Attention: the query's and key's within the heads)
    if node.op in ("MatMul", "Einsum", "Attention") and _two_activations(node):
        axis = len(node.inputs[0].shape) - 1
        if node.op == "Einsum":  # the label the inputs share and the output lacks
            terms, out = einsum_terms(node.attrs["equation"], [len(t.shape) for t in node.inputs])
            axis = next(i for i, c in enumerate(terms[0]) if c in terms[1] and c not in out)
        mask = np.ones([node.inputs[0].shape[axis] if i == axis else 1 for i in range(len(node.inputs[0].shape))],
                       np.float32)
        mask[(slice(None),) * axis + (removed,)] = 0
        masked = gs.Variable(f"{node.inputs[0].name}__masked_{node.name}", dtype=node.inputs[0].dtype)
        multiply = gs.Node("Mul", name=f"{node.name}__mask", outputs=[masked],
                           inputs=[node.inputs[0], gs.Constant(f"{node.name}__mask_values", mask)])
        node.inputs[0] = masked
        return multiply
    holder, index = node, 1
    if not isinstance(node.inputs[1], gs.Constant):  # a weight stored in bfloat16 and Cast up
        holder, index = node.inputs[1].inputs[0], 0
    weight = np.array(holder.inputs[index].values)
    if node.op == "Conv":
        groups = int(node.attrs.get("group", 1))
        per_group_in, per_group_out = weight.shape[1], weight.shape[0] // groups
        for c in removed:
            g = c // per_group_in
            weight[g * per_group_out:(g + 1) * per_group_out, c % per_group_in] = 0
    elif node.op in ("RNN", "GRU", "LSTM"):  # W [directions, gates x hidden, features]
        weight[:, :, removed] = 0
    elif node.op == "Einsum":  # the weight's label that the activation shares and the output lacks
        terms, out = einsum_terms(node.attrs["equation"], [len(t.shape) for t in node.inputs])
        x_terms, w_terms = terms  # the weight is input 1, as everywhere here
        axis = next(i for i, c in enumerate(w_terms) if c in x_terms and c not in out)
        weight[(slice(None),) * axis + (removed,)] = 0
    elif node.op in ("ConvTranspose", "MatMul") or node.op == "Gemm" and not node.attrs.get("transB", 0):
        weight[removed] = 0
    else:
        weight[:, removed] = 0
    old = holder.inputs[index]
    holder.inputs[index] = gs.Constant(f"{old.name}__masked_{node.name}", weight, export_dtype=old.export_dtype)


def _two_activations(node: gs.Node) -> bool:
    """A MatMul or Einsum whose second input is neither a constant nor a stored weight cast up."""
    second = node.inputs[1]
    if isinstance(second, gs.Constant):
        return False
    return not (second.inputs and second.inputs[0].op == "Cast" and isinstance(second.inputs[0].inputs[0], gs.Constant))


def _zero_recurrence(node: gs.Node, removed: list[int]) -> None:
    """Zero the columns of R [directions, gates x hidden, hidden] that read the removed hidden units."""
    recurrence = np.array(node.inputs[2].values)
    recurrence[:, :, removed] = 0
    node.inputs[2] = gs.Constant(f"{node.inputs[2].name}__masked", recurrence)


def masked_reference(original: onnx.ModelProto, report: dict) -> onnx.ModelProto:
    """The original model with every removed input channel's weights zeroed (the report's ``in_removed``),
    and a recurrent node's removed hidden units kept from the units that stay."""
    graph = import_graph(original)
    nodes = {n.name: n for n in graph.nodes}
    for entry in report["nodes"]:
        if entry["in_removed"]:
            mask = _zero_inputs(nodes[entry["name"]], entry["in_removed"])
            if mask is not None:
                graph.nodes.append(mask)
        if entry["out_removed"] and entry["op_type"] in ("RNN", "GRU", "LSTM"):
            _zero_recurrence(nodes[entry["name"]], entry["out_removed"])
    graph.cleanup().toposort()
    return export_graph(graph, original)


def assert_matches_masked(original: onnx.ModelProto, pruned: onnx.ModelProto, report: dict, tol: float = 1e-4) -> None:
    """The oracle: pruned outputs equal the masked original's, output by output, within ``tol`` relative error."""
    feeds = feeds_for(original)
    expected = run(masked_reference(original, report), feeds)
    actual = run(pruned, feeds)
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        assert relative_error(e, a) <= tol, f"relative error {relative_error(e, a):.2e} > {tol}"


# ---- tiny graph builders for per-rule tests ----------------------------------------------------
def weight(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    """A seeded random initializer (values well away from zero so every channel matters)."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1, 1], size=shape)
    return numpy_helper.from_array(values.astype(np.float32), name)


def make_model(nodes: list[onnx.NodeProto], inputs: dict[str, list], outputs: list[str | tuple[str, list]],
               initializers: list[onnx.TensorProto], opset: int = 17, extra_inputs: tuple = ()) -> onnx.ModelProto:
    """A float32 model from nodes; inputs maps names to shapes (strings are symbolic dims); an output is a
    name, or a name and its shape where shape inference cannot give one."""
    shaped_outputs = [output if isinstance(output, tuple) else (output, None) for output in outputs]
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()] + list(extra_inputs),
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in shaped_outputs],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 18 else 10  # onnx writes a newer IR than ONNX Runtime reads
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model


def conv(name: str, x: str, y: str, c_in: int, c_out: int, seed: int, group: int = 1, k: int = 3, bias: bool = True):
    """A Conv node and its initializers (pads keep the spatial size)."""
    inits = [weight(f"{name}.w", (c_out, c_in // group, k, k), seed)]
    inputs = [x, f"{name}.w"]
    if bias:
        inits.append(weight(f"{name}.b", (c_out,), seed + 1000))
        inputs.append(f"{name}.b")
    node = helper.make_node("Conv", inputs, [y], name=name, group=group, pads=[k // 2] * 4)
    return node, inits
