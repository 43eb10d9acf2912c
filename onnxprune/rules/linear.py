"""Gemm and MatMul with a constant weight.

Gemm: Y = A' B' + C with A [M, K] (features on axis 1), B [K, N] or [N, K] when transB; C broadcasts
to [M, N] and is sliced on its last axis when it has N entries there.
MatMul: Y = A @ W with W [K, N]; features are A's last axis and Y's last axis (batched A is fine). A MatMul
of two activations is traced only where both carry the same channels on a batch axis (attention heads).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, Rule, Unprunable


class GemmRule(Rule):
    op_types = ("Gemm",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        weight = ctx.weight_shape(node.inputs[1])
        if weight is None:
            raise Unprunable("its B input is not a constant weight")
        if int(node.attrs.get("transA", 0)):
            raise Unprunable("transA=1 puts the features on axis 0")
        trans_b = int(node.attrs.get("transB", 0))
        in_axis, out_axis = (1, 0) if trans_b else (0, 1)
        bias = node.inputs[2] if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
        slice_bias = False
        if bias is not None:
            bias_shape = ctx.shape(bias)
            if ctx.weight_shape(bias) is None or bias_shape is None:
                raise Unprunable("its C input is not a constant")
            slice_bias = len(bias_shape) > 0 and bias_shape[-1] == weight[out_axis]
        a = ctx.expect(node.inputs[0], 1)
        y = ctx.declare(node.outputs[0], 1, weight[out_axis])
        ctx.slice_param(node, 1, in_axis, a.slots, scored=True)
        ctx.slice_param(node, 1, out_axis, y.slots, scored=True)
        if slice_bias:
            ctx.slice_param(node, 2, len(ctx.shape(bias)) - 1, y.slots)
        ctx.record_io(node, a, y)


class MatMulRule(Rule):
    op_types = ("MatMul",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        weight = ctx.weight_shape(node.inputs[1])
        if weight is None and ctx.weight_shape(node.inputs[0]) is None and self._batched(node, ctx):
            return
        if weight is None or ctx.weight_shape(node.inputs[0]) is not None:
            raise Unprunable("only MatMul of an activation by a constant weight, or of two activations over "
                             "shared channels on a batch axis (attention heads), is pruned")
        if len(weight) != 2:
            raise Unprunable(f"its weight has rank {len(weight)}, not 2")
        a = ctx.expect(node.inputs[0], -1)
        y = ctx.declare(node.outputs[0], ctx.rank(node.outputs[0]) - 1, weight[1])
        ctx.slice_param(node, 1, 0, a.slots, scored=True)
        ctx.slice_param(node, 1, 1, y.slots, scored=True)
        ctx.record_io(node, a, y)

    @staticmethod
    def _batched(node: gs.Node, ctx: ChannelContext) -> bool:
        """Two activations [.., heads, M, K] @ [.., heads, K, N] with their channels on the same batch axis
        (an attention's scores and output per head): each channel is one independent product."""
        a, b = ctx.channel(node.inputs[0]), ctx.channel(node.inputs[1])
        if a is None or b is None or a.axis != b.axis or a.size != b.size:
            return False
        ranks = {ctx.rank(t) for t in (node.inputs[0], node.inputs[1], node.outputs[0])}
        if len(ranks) != 1 or a.axis >= ranks.pop() - 2:
            return False
        y = ctx.declare(node.outputs[0], a.axis, a.size)
        ctx.couple(a.slots, b.slots)
        ctx.couple(a.slots, y.slots)
        return True
