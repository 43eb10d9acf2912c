"""ONNX Runtime's fused contrib ops, split back into standard ops on load.

A model that ONNX Runtime's optimizer saved (``SessionOptions.optimized_model_filepath``, or the
transformer optimizer) holds fusions in the ``com.microsoft`` domain: FusedConv and FusedGemm (a Conv
or Gemm with its activation, and FusedConv's residual Add), FusedMatMul (a MatMul of transposed inputs,
scaled), BiasGelu and FastGelu (a bias Add before the activation), SkipLayerNormalization and
SkipSimplifiedLayerNormalization (a residual Add before a LayerNorm or an RMS norm), and BERT's
Attention (a packed q/k/v projection, heads, a padding mask), MultiHeadAttention (the same after the
projections) and EmbedLayerNormalization. Split into the standard ops they stand for, every rule,
criterion and compensation step applies to them; ONNX Runtime fuses them again when it loads the pruned
model, except the last three (``TRANSFORMER_OPTIMIZER_OPS``), which only its transformer optimizer writes. The activations with no standard op (Gelu before opset 20, QuickGelu,
FastGelu) stay contrib ops, which ``CONTRIB_UNARY_OPS`` lets channels pass through.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

CONTRIB_DOMAIN = "com.microsoft"

# Fusions that only ONNX Runtime's transformer optimizer writes (a session's own optimisations do not).
TRANSFORMER_OPTIMIZER_OPS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization")

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
    # Attention first: it recognises the key counts of EmbedLayerNormalization by their producer.
    for node in sorted(graph.nodes, key=lambda n: "Attention" not in n.op):
        if node.domain != CONTRIB_DOMAIN:
            continue
        split = _SPLITTERS.get(node.op)
        node.name = node.name or f"{node.op}_{node.outputs[0].name}"  # the split nodes are named after it
        replacement = split(node, graph) if split is not None else None
        if replacement is None:
            continue
        swap_in(graph, node, replacement)
        split_ops.append(node.op)
    if split_ops:
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return tuple(split_ops)


def swap_in(graph: gs.Graph, node: gs.Node, replacement: list[gs.Node]) -> None:
    """Put ``replacement`` (which writes ``node``'s outputs) in place of ``node``, which is left unlinked
    for ``graph.cleanup`` to drop."""
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes.extend(replacement)


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
    # FusedMatMul: Y = alpha * op(A) @ op(B), op a swap of the last two axes, after moving the first axis
    # behind the other batch axes with transBatch (A [d0, d1, .., dr-1] as [d1, .., d0, dr-1]: ONNX Runtime
    # fuses such a Transpose of an attention's [tokens, batch x heads, head size]). A constant is transposed
    # in place; an activation gets a Transpose where its rank is known (ONNX Runtime saves its value infos).
    out = node.outputs[0]
    nodes: list[gs.Node] = []
    operands = []
    for tensor, batch_flag, flag in zip(node.inputs[:2], ("transBatchA", "transBatchB"), ("transA", "transB")):
        moved, swapped = node.attrs.get(batch_flag, 0), node.attrs.get(flag, 0)
        if moved or swapped:
            rank = tensor.values.ndim if isinstance(tensor, gs.Constant) else len(tensor.shape or [])
            if rank < 2:
                return None
            perm = [*range(1, rank - 1), 0, rank - 1] if moved else list(range(rank))
            if swapped:
                perm[-2:] = perm[-1], perm[-2]
            if isinstance(tensor, gs.Constant):
                tensor = gs.Constant(f"{out.name}_{flag}", np.ascontiguousarray(np.transpose(tensor.values, perm)))
            else:
                transposed = gs.Variable(f"{out.name}_{flag}", dtype=tensor.dtype)
                nodes.append(gs.Node("Transpose", f"{node.name}_{flag}", {"perm": perm}, [tensor], [transposed]))
                tensor = transposed
        operands.append(tensor)
    alpha = float(node.attrs.get("alpha", 1.0))
    if alpha == 1.0:
        return [*nodes, gs.Node("MatMul", node.name, inputs=operands, outputs=[out])]
    product = gs.Variable(f"{out.name}_product", dtype=out.dtype)
    scale = gs.Constant(f"{out.name}_alpha", np.array(alpha, _float_type(node)))
    return [*nodes, gs.Node("MatMul", node.name, inputs=operands, outputs=[product]),
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
    # SkipSimplifiedLayerNormalization(input, skip, gamma, bias) is the RMS norm's: the norm is written as
    # the SimplifiedLayerNormalization that ONNX Runtime registers in ONNX's domain (and itself writes).
    used = [t for t in node.outputs[1:3] if not t.is_empty() and (t.outputs or t in graph.outputs)]
    simplified = node.op == "SkipSimplifiedLayerNormalization"
    if graph.opset < 17 and not simplified or used:  # LayerNormalization is a standard op from opset 17
        return None
    x, skip, gamma = node.inputs[:3]
    optional = [t if not t.is_empty() else None for t in node.inputs[3:5]] + [None, None]
    beta, bias = (None, optional[0]) if simplified else optional[:2]
    out = node.outputs[0]
    total = node.outputs[3] if len(node.outputs) > 3 and not node.outputs[3].is_empty() else \
        gs.Variable(f"{out.name}_sum", dtype=out.dtype)
    summed = gs.Variable(f"{out.name}_skip", dtype=out.dtype) if bias is not None else total
    nodes = [gs.Node("Add", f"{node.name}_skip", inputs=[x, skip], outputs=[summed])]
    if bias is not None:
        nodes.append(gs.Node("Add", f"{node.name}_bias", inputs=[summed, bias], outputs=[total]))
    attrs = {"axis": -1, "epsilon": float(node.attrs.get("epsilon", 1e-5))}
    norm_inputs = [total, gamma] + ([beta] if beta is not None else [])
    norm = "SimplifiedLayerNormalization" if simplified else "LayerNormalization"
    return [*nodes, gs.Node(norm, node.name, attrs, norm_inputs, [out])]


class _Chain:
    """Nodes written one after another, each output a new tensor named after ``prefix``."""

    def __init__(self, prefix: str, dtype) -> None:
        self.prefix, self.dtype, self.nodes, self.constants = prefix, dtype, [], 0

    def add(self, op: str, inputs: list, attrs: dict | None = None, out: gs.Tensor | None = None, dtype=None) -> gs.Tensor:
        name = f"{self.prefix}_{len(self.nodes)}_{op}"
        out = out if out is not None else gs.Variable(name, dtype=dtype or self.dtype)
        self.nodes.append(gs.Node(op, name, attrs or {}, inputs, [out]))
        return out

    def const(self, values, dtype=np.int64) -> gs.Constant:
        self.constants += 1
        return gs.Constant(f"{self.prefix}_const{self.constants}", np.array(values, dtype=dtype))

    def tokens(self, x: gs.Tensor) -> gs.Tensor:
        """The size of ``x``'s second axis (its tokens), as a 1-D int64 tensor."""
        return self.add("Slice", [self.add("Shape", [x], dtype=np.int64), self.const([1]), self.const([2])], dtype=np.int64)

    def unsqueeze(self, x: gs.Tensor, axes: list[int], opset: int, dtype=None) -> gs.Tensor:
        if opset >= 13:  # axes became an input in opset 13
            return self.add("Unsqueeze", [x, self.const(axes)], dtype=dtype)
        return self.add("Unsqueeze", [x], {"axes": axes}, dtype=dtype)


def present_input(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of ``node``, or None where it is missing or empty (an omitted optional input)."""
    return node.inputs[index] if len(node.inputs) > index and not node.inputs[index].is_empty() else None


def _used(tensor: gs.Tensor, graph: gs.Graph) -> bool:
    return not tensor.is_empty() and bool(tensor.outputs or tensor in graph.outputs)


def _attention(node: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    # Attention(input, weights [in, q + k + v], bias, mask_index): self-attention with a packed projection.
    # Written out as BERT exports it: a MatMul and bias Add per projection, then ``_attend``. Past state,
    # an attention bias and rotary embeddings stay fused.
    attrs = node.attrs
    if (any(present_input(node, i) is not None for i in (4, 5, 6)) or any(_used(t, graph) for t in node.outputs[1:])
            or attrs.get("unidirectional", 0) and graph.opset < 14  # the causal mask needs Trilu
            or attrs.get("do_rotary", 0) or attrs.get("past_present_share_buffer", 0)):
        return None
    weights, bias = node.inputs[1], present_input(node, 2)
    if not isinstance(weights, gs.Constant) or weights.values.ndim != 2:
        return None
    width = weights.values.shape[1]
    sizes = list(attrs.get("qkv_hidden_sizes", [])) or [width // 3] * 3
    if sum(sizes) != width:
        return None
    chain = _Chain(node.name, node.outputs[0].dtype)
    x = node.inputs[0]
    parts = [gs.Constant(f"{node.name}_{'qkv'[i]}_weight", np.ascontiguousarray(weights.values[:, start:start + size]))
             for i, (start, size) in enumerate(zip(np.cumsum([0, *sizes[:2]]), sizes))]
    return _attend(chain, node, graph, [chain.add("MatMul", [x, part]) for part in parts], bias, present_input(node, 3), sizes)


def _multi_head_attention(node: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    # MultiHeadAttention(query, key, value, bias, key_padding_mask): projected q, k and v (the optimizer
    # leaves their MatMuls outside, their biases packed in ``bias``), then ``_attend``. Packed q/k/v,
    # past keys and values, an attention bias and causal masking stay fused.
    attrs = node.attrs
    q, k, v = (present_input(node, i) for i in range(3))
    sizes = [_projection(t) for t in (q, k, v)]
    if (any(present_input(node, i) is not None for i in range(5, 10)) or any(_used(t, graph) for t in node.outputs[1:])
            or attrs.get("unidirectional", 0) or None in sizes):
        return None
    chain = _Chain(node.name, node.outputs[0].dtype)
    return _attend(chain, node, graph, [q, k, v], present_input(node, 3), present_input(node, 4), sizes)


def _projection(tensor: gs.Tensor | None) -> int | None:
    """The width of a [batch, tokens, width] projection: a MatMul's output by a 2D constant weight (not a
    graph input, whose packed or per-head forms MultiHeadAttention also takes)."""
    producer = tensor.inputs[0] if tensor is not None and tensor.inputs else None
    if producer is None or producer.op != "MatMul" or not isinstance(producer.inputs[1], gs.Constant):
        return None
    weight = producer.inputs[1].values
    return int(weight.shape[1]) if weight.ndim == 2 else None


def _attend(chain: _Chain, node: gs.Node, graph: gs.Graph, projected: list[gs.Tensor], bias: gs.Tensor | None,
            mask: gs.Tensor | None, sizes: list[int]) -> list[gs.Node] | None:
    """softmax(q k^T * scale + mask) v over ``node``'s heads, from the projections ``projected`` ([batch,
    tokens, size] each) and their packed ``bias``, heads by Reshape and Transpose and merged back into
    ``node``'s output; a causal one (unidirectional) adds a Trilu of the mask value above the diagonal.
    None where the sizes do not split into the heads, or the mask has no plain form here."""
    attrs = node.attrs
    heads = int(attrs.get("num_heads", 0))
    if (heads <= 0 or sizes[0] != sizes[1] or any(size % heads for size in sizes)
            or bias is not None and (not isinstance(bias, gs.Constant) or bias.values.shape != (sum(sizes),))):
        return None
    dtype = _float_type(node) if bias is None else bias.values.dtype
    fill = float(attrs.get("mask_filter_value", -10000.0))
    additive = _additive_mask(chain, mask, projected[1], fill, dtype, graph)
    if mask is not None and additive is None:
        return None
    arranged = []
    for index, (y, start, size) in enumerate(zip(projected, np.cumsum([0, *sizes[:2]]), sizes)):
        if bias is not None:
            part = gs.Constant(f"{node.name}_{'qkv'[index]}_bias", np.ascontiguousarray(bias.values[start:start + size]))
            y = chain.add("Add", [y, part])
        y = chain.add("Reshape", [y, chain.const([0, 0, heads, size // heads])])
        arranged.append(chain.add("Transpose", [y], {"perm": [0, 2, 3, 1] if index == 1 else [0, 2, 1, 3]}))
    scale = float(attrs.get("scale", 0.0)) or 1.0 / float(np.sqrt(sizes[0] // heads))
    scores = chain.add("Mul", [chain.add("MatMul", arranged[:2]), gs.Constant(f"{node.name}_scale", np.array(scale, dtype))])
    if additive is not None:
        scores = chain.add("Add", [scores, additive])
    if attrs.get("unidirectional", 0):
        scores = chain.add("Add", [scores, _causal_mask(chain, projected[0], fill, dtype)])
    context = chain.add("MatMul", [chain.add("Softmax", [scores], {"axis": -1}), arranged[2]])
    merged = chain.add("Transpose", [context], {"perm": [0, 2, 1, 3]})
    chain.add("Reshape", [merged, chain.const([0, 0, sizes[2]])], out=node.outputs[0])
    return chain.nodes


def _additive_mask(chain: _Chain, mask: gs.Tensor | None, keys: gs.Tensor, fill: float, dtype: np.dtype,
                   graph: gs.Graph) -> gs.Tensor | None:
    """An attention mask as scores to add, [batch, 1, 1, keys] (``keys`` [batch, keys, ..]): 0 where a key
    is attended, ``fill`` where not. From a raw [batch, keys] mask (0 masks), or the key counts [batch] of
    right-padded inputs that EmbedLayerNormalization computes; None for the other forms (or without a mask)."""
    if mask is None:
        return None
    producer = mask.inputs[0] if mask.inputs else None
    source = mask
    while source.shape is None and source.inputs and source.inputs[0].op in ("Cast", "Identity"):
        source = source.inputs[0].inputs[0]  # the optimizer casts a model input mask to int32 first
    if source.shape is not None and len(source.shape) == 2:  # int32, the one type Attention takes
        keep = chain.add("Greater", [mask, chain.const(0, np.int32)], dtype=np.bool_)
    elif producer is not None and producer.op == "EmbedLayerNormalization" and producer.outputs[1] is mask:
        length = chain.add("Gather", [chain.add("Shape", [keys], dtype=np.int64), chain.const(1)], dtype=np.int64)
        length = chain.add("Cast", [length], {"to": onnx.TensorProto.INT32}, dtype=np.int32)
        positions = chain.add("Range", [chain.const(0, np.int32), length, chain.const(1, np.int32)], dtype=np.int32)
        keep = chain.add("Less", [chain.unsqueeze(positions, [0], graph.opset, np.int32),
                                  chain.unsqueeze(mask, [1], graph.opset, np.int32)], dtype=np.bool_)
    else:
        return None
    scores = chain.add("Where", [keep, chain.const(0.0, dtype), chain.const(fill, dtype)])
    return chain.unsqueeze(scores, [1, 2], graph.opset)


def _causal_mask(chain: _Chain, x: gs.Tensor, fill: float, dtype: np.dtype) -> gs.Tensor:
    """[tokens, tokens] scores to add: ``fill`` where a key comes after its query, else 0."""
    length = chain.tokens(x)
    square = chain.add("Concat", [length, length], {"axis": 0}, dtype=np.int64)
    filled = chain.add("ConstantOfShape", [square], {"value": gs.Constant(f"{chain.prefix}_fill", np.array([fill], dtype))})
    return chain.add("Trilu", [filled, chain.const(1)], {"upper": 1})


def _embed_layer_norm(node: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    # EmbedLayerNormalization: LayerNormalization(word[ids] + position[positions] + segment[segment ids]),
    # positions 0.. by default; its mask_index output is the count of attended tokens (1 in the mask).
    if graph.opset < 17 or (len(node.outputs) > 2 and _used(node.outputs[2], graph)):
        return None
    ids, segments, words, positions, segment_table, gamma, beta = (present_input(node, i) for i in range(7))
    mask, position_ids = present_input(node, 7), present_input(node, 8)
    if any(t is None for t in (words, positions, gamma)) or (segments is None) != (segment_table is None):
        return None
    index_output = node.outputs[1] if len(node.outputs) > 1 and _used(node.outputs[1], graph) else None
    if index_output is not None and mask is None:
        return None
    out = node.outputs[0]
    chain = _Chain(node.name, out.dtype)
    total = chain.add("Gather", [words, ids])
    if position_ids is not None:
        position = chain.add("Gather", [positions, position_ids])
    else:
        position = chain.add("Slice", [positions, chain.const([0]), chain.tokens(ids), chain.const([0])])
    total = chain.add("Add", [total, position])
    if segments is not None:
        total = chain.add("Add", [total, chain.add("Gather", [segment_table, segments])])
    norm_inputs = [total, gamma] + ([beta] if beta is not None else [])
    chain.add("LayerNormalization", norm_inputs, {"axis": -1, "epsilon": float(node.attrs.get("epsilon", 1e-12))}, out=out)
    if index_output is not None:
        counted = chain.add("Cast", [mask], {"to": onnx.TensorProto.INT32}, dtype=np.int32)
        counted = chain.add("ReduceSum", [counted, chain.const([1])], {"keepdims": 0}, dtype=np.int32) \
            if graph.opset >= 13 else chain.add("ReduceSum", [counted], {"axes": [1], "keepdims": 0}, dtype=np.int32)
        chain.add("Identity", [counted], out=index_output)
    return chain.nodes


# The name ``unfuse_contrib_ops``' companion gives ONNX's Attention in the 3-D form that it rewrites.
PACKED_ATTENTION = "Attention (3-D)"
# The suffix of the name of the 4-D Attention that ``write_attention_heads_apart`` writes, by which
# ``write_attention_heads_packed`` finds it again.
_HEADS_APART = "_heads_apart"


def has_packed_attention(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds an ONNX Attention (opset 23) of the 3-D form, whose ``q_num_heads`` attribute
    the 4-D form leaves out."""
    return any(node.op_type == "Attention" and node.domain in ("", "ai.onnx")
               and any(a.name == "q_num_heads" for a in node.attribute) for node in model.graph.node)


def write_attention_heads_apart(graph: gs.Graph) -> tuple[str, ...]:
    """Write every ONNX Attention of the 3-D form in ``graph`` (Q, K, V [batch, tokens, heads x head size],
    their heads packed in the hidden size) in its 4-D form, in place: a Reshape to [batch, tokens, heads,
    head size] and a Transpose to [batch, heads, tokens, head size] before each input, the reverse after
    the output, which computes the same. The heads are then an axis that the rules follow (see
    ``AttentionRule``) and compensation reads, as in the dynamo exporter's attention; once pruned, it is
    written back in the 3-D form (``write_attention_heads_packed``). One that reads or
    writes a key/value cache, or outputs its scores, stays as it is (and keeps its heads). Returns
    PACKED_ATTENTION once per node written."""
    written = []
    for node in list(graph.nodes):
        if node.op != "Attention" or (node.domain or "") not in ("", "ai.onnx") or "q_num_heads" not in node.attrs:
            continue
        node.name = node.name or f"Attention_{node.outputs[0].name}"
        replacement = _packed_attention(node, graph)
        if replacement is not None:
            swap_in(graph, node, replacement)
            written.append(PACKED_ATTENTION)
    if written:
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return tuple(written)


def _packed_attention(node: gs.Node, graph: gs.Graph) -> list[gs.Node] | None:
    attrs = node.attrs
    heads = (int(attrs.get("q_num_heads", 0)), int(attrs.get("kv_num_heads", 0)))
    if (min(heads) <= 0 or len(node.inputs) < 3 or any(present_input(node, i) is None for i in range(3))
            or any(present_input(node, i) is not None for i in range(4, len(node.inputs)))
            or any(_used(t, graph) for t in node.outputs[1:])):
        return None
    chain = _Chain(node.name, node.outputs[0].dtype)
    inputs = []
    for index, count in enumerate((heads[0], heads[1], heads[1])):
        split = chain.add("Reshape", [node.inputs[index], chain.const([0, 0, count, -1])])
        inputs.append(chain.add("Transpose", [split], {"perm": [0, 2, 1, 3]}))
    mask = present_input(node, 3)
    attention = chain.add("Attention", inputs + ([mask] if mask is not None else []),
                          {k: v for k, v in attrs.items() if k not in ("q_num_heads", "kv_num_heads")})
    chain.nodes[-1].name = node.name + _HEADS_APART
    merged = chain.add("Transpose", [attention], {"perm": [0, 2, 1, 3]})
    chain.add("Reshape", [merged, chain.const([0, 0, -1])], out=node.outputs[0])
    return chain.nodes


def write_attention_heads_packed(graph: gs.Graph) -> None:
    """Write every Attention that ``write_attention_heads_apart`` wrote in the 4-D form (its chain of nodes
    intact) back in the 3-D form, in place: once pruned, with the head counts its Reshapes now give."""
    folded = False
    for node in list(graph.nodes):
        if node.op != "Attention" or not node.name.endswith(_HEADS_APART):
            continue
        found = _heads_apart_chain(node)
        if found is None:
            continue
        sources, heads, merge = found
        for index, source in enumerate(sources):
            node.inputs[index] = source
        node.attrs["q_num_heads"], node.attrs["kv_num_heads"] = heads
        node.name = node.name.removesuffix(_HEADS_APART)
        output = merge.outputs[0]
        merge.outputs.clear()
        node.outputs[0] = output
        folded = True
    if folded:
        graph.cleanup(remove_unused_graph_inputs=False).toposort()


def _heads_apart_chain(node: gs.Node) -> tuple[list[gs.Tensor], tuple[int, int], gs.Node] | None:
    """For an Attention that ``_packed_attention`` wrote: its 3-D inputs, its query's and key's head counts,
    and the Reshape that merges its heads; None where its chain changed."""
    def only_reader(tensor: gs.Tensor, op: str) -> gs.Node | None:
        readers = tensor.outputs
        return readers[0] if len(readers) == 1 and readers[0].op == op else None

    def made_for(tensor: gs.Tensor, op: str, reader: gs.Node) -> gs.Node | None:
        """The ``op`` node that makes ``tensor`` for ``reader`` alone."""
        made = tensor.inputs[0] if len(tensor.inputs) == 1 else None
        alone = len(tensor.outputs) == 1 and tensor.outputs[0] is reader
        return made if made is not None and made.op == op and alone else None

    sources, heads = [], []
    for tensor in node.inputs[:3]:
        turn = made_for(tensor, "Transpose", node)
        split = made_for(turn.inputs[0], "Reshape", turn) if turn is not None else None
        if split is None or not isinstance(split.inputs[1], gs.Constant) or split.inputs[1].values.shape != (4,):
            return None
        sources.append(split.inputs[0])
        heads.append(int(split.inputs[1].values[2]))
    turn = only_reader(node.outputs[0], "Transpose")
    merge = only_reader(turn.outputs[0], "Reshape") if turn is not None else None
    if merge is None or heads[1] != heads[2] or min(heads) <= 0:
        return None
    return sources, (heads[0], heads[1]), merge


_SPLITTERS = {"FusedConv": _fused_conv, "FusedGemm": _fused_gemm, "FusedMatMul": _fused_matmul,
              "BiasGelu": _bias_activation, "FastGelu": _bias_activation, "SkipLayerNormalization": _skip_layer_norm,
              "SkipSimplifiedLayerNormalization": _skip_layer_norm,
              "Attention": _attention, "MultiHeadAttention": _multi_head_attention,
              "EmbedLayerNormalization": _embed_layer_norm}
