"""Gemm, MatMul and Einsum with a constant weight; ONNX's Attention and RotaryEmbedding.

Gemm: Y = A' B' + C with A [M, K] (features on axis 1), B [K, N] or [N, K] when transB; C broadcasts
to [M, N] and is sliced on its last axis when it has N entries there.
MatMul: Y = A @ W with W [K, N]; features are A's last axis and Y's last axis (batched A is fine). A MatMul
of two activations [.., M, K] @ [.., K, N] passes channels that both carry on a batch axis (attention
heads), A's on M or B's on N where the other carries none (each row of A, or column of B, is one of Y's),
and removes a channel k of A's K and B's K together (an attention's scores over query and key channels,
as in a non-local block: the product loses the term of k); where one of them is computed from constants
(tiled, transposed), those are sliced.
Einsum: a label that carries channels and stays in the output keeps them there (every input with that label
shares them; constants are sliced along it); one that is summed over is a linear layer when the other
input is a constant weight, whose other label (the first in the output, where it has several: heads, then
head size) is the output's channels ("ntd,dh->nth", "ibh,hnd->ibnd"), and otherwise loses them from every
input with that label, as MatMul does what it multiplies over.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, ChannelTensor, RewriteView, Rule, Unprunable
from onnxprune.rules.elementwise import constant_derived_channels


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
        if weight is None and ctx.weight_shape(node.inputs[0]) is None and self._two_activations(node, ctx):
            return
        if weight is None or ctx.weight_shape(node.inputs[0]) is not None:
            raise Unprunable("only MatMul of an activation by a constant weight, or of two activations with "
                             "channels on a batch axis of both, on the rows of one or the columns of the other, "
                             "or on the axis they multiply over, is pruned")
        if len(weight) != 2:
            raise Unprunable(f"its weight has rank {len(weight)}, not 2")
        a = ctx.expect(node.inputs[0], -1)
        y = ctx.declare(node.outputs[0], ctx.rank(node.outputs[0]) - 1, weight[1])
        ctx.slice_param(node, 1, 0, a.slots, scored=True)
        ctx.slice_param(node, 1, 1, y.slots, scored=True)
        ctx.record_io(node, a, y)

    @staticmethod
    def _two_activations(node: gs.Node, ctx: ChannelContext) -> bool:
        """Declare the channels of a product of two activations [.., M, K] @ [.., K, N] (see the module
        docstring); False where neither input's channels can be followed through it."""
        a, b = ctx.channel(node.inputs[0]), ctx.channel(node.inputs[1])
        rank_a, rank_b, rank_y = (ctx.rank(t) for t in (node.inputs[0], node.inputs[1], node.outputs[0]))
        if min(rank_a, rank_b) < 2:
            return False  # a vector's product drops its axis
        # Multiplied over constants (tiled, transposed): DeBERTa's queries by its relative position keys.
        if a is not None and b is None and a.axis == rank_a - 1:
            b = constant_derived_channels(node.inputs[1], rank_b - 2, a.size, ctx, ("MatMul",))
        elif b is not None and a is None and b.axis == rank_b - 2:
            a = constant_derived_channels(node.inputs[0], rank_a - 1, b.size, ctx, ("MatMul",))
        if a is not None and b is not None:
            if a.size != b.size:
                return False
            if a.axis == b.axis and rank_a == rank_b == rank_y and a.axis < rank_y - 2:
                # [.., heads, M, K] @ [.., heads, K, N] (an attention's scores and output per head)
                ctx.same_channels(node.outputs[0], a)
            elif a.axis == rank_a - 1 and b.axis == rank_b - 2:
                # Multiplied over: Y carries none of them; the report shows what A and B lose.
                ctx.record_io(node, a, None)
            elif a.axis == rank_a - 2 and b.axis == rank_b - 1:
                raise Unprunable("its product would carry channels on two axes, its rows' and its columns' "
                                 "(a channel attention's energy, X X^T)")
            else:
                return False
            ctx.couple(a.slots, b.slots)
            return True
        if a is not None and a.axis == rank_a - 2:
            ctx.same_channels(node.outputs[0], a, rank_y - 2)
        elif b is not None and b.axis == rank_b - 1:
            ctx.same_channels(node.outputs[0], b, rank_y - 1)
        else:
            return False
        return True


class AttentionRule(Rule):
    """ONNX's Attention (opset 23), as PyTorch's dynamo exporter writes ``scaled_dot_product_attention`` from
    opset 23: Q [B, heads, Sq, D], K [B, heads, Skv, D], V [B, heads, Skv, Dv] -> Y [B, heads, Sq, Dv]. Heads
    (axis 1) are one set of channels in Q, K, V and Y, each head attending on its own; channels within the
    heads are removed from Q and K together (the scores lose their term, as a MatMul of two activations loses
    what it multiplies over), and pass from V to Y. The default scale, 1 / sqrt(D), would change with D: it is
    written out as an attribute first. With grouped key/value heads (fewer than the query's) a key/value head
    and its group of query heads go together; a mask or bias per head follows the heads (or keeps them). The
    3-D form (heads packed in the hidden size) is pruned in the 4-D form (see
    ``contrib.write_attention_heads_apart``) but where it has a key/value cache; a cache and scores as an
    output are not traced."""

    op_types = ("Attention",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        q, k, v = (ctx.channel(t) for t in node.inputs[:3])
        if q is None and k is None and v is None:
            return
        if any(ctx.rank(t) != 4 for t in node.inputs[:3]):
            raise Unprunable("it takes 3-D inputs, its heads packed in the hidden size")
        if any(not t.is_empty() for t in node.inputs[4:]) or any(t.outputs for t in node.outputs[1:]):
            raise Unprunable("it reads or writes a key/value cache, or outputs its scores")
        if any(c is not None and c.axis == 1 for c in (q, k, v)):
            channels = [c for c in (q, k, v) if c is not None]
            if len(channels) < 3 or any(c.axis != 1 for c in channels) or k.size != v.size or q.size % k.size:
                raise Unprunable("its query, key and value carry their heads differently")
            self._mask_heads(node, ctx, q)
            # Grouped key/value heads: query head j attends with key/value head j // group, so each key/value
            # head goes with its group of query heads.
            ctx.couple(np.repeat(k.slots, q.size // k.size), q.slots)
            ctx.couple(k.slots, v.slots)
            ctx.same_channels(node.outputs[0], q)
            return
        self._mask_heads(node, ctx, None)
        if q is not None or k is not None:  # within the heads: the query's and key's dimensions, multiplied over
            if q is None or k is None or q.axis != 3 or k.axis != 3 or q.size != k.size:
                raise Unprunable("its query and key carry channels on different axes")
            ctx.couple(q.slots, k.slots)
            ctx.record_io(node, q, None)
            ctx.add_rewrite(self, node)
        if v is not None:
            if v.axis != 3:
                raise Unprunable("its value carries channels on its sequence axis")
            ctx.same_channels(node.outputs[0], v)

    @staticmethod
    def _mask_heads(node: gs.Node, ctx: ChannelContext, heads: ChannelTensor | None) -> None:
        """A mask or bias [.., heads, Sq, Skv] follows the query's ``heads`` where they are the channels: its own
        channels there, coupled, or a constant's, sliced. Otherwise (``heads`` None) its heads stay."""
        mask = node.inputs[3] if len(node.inputs) > 3 and not node.inputs[3].is_empty() else None
        shape = ctx.shape(mask) if mask is not None else None
        if mask is None or shape is not None and (len(shape) < 3 or shape[-3] == 1):
            return  # no mask, or one that every head shares
        channel = ctx.channel(mask)
        if heads is None:
            if channel is not None:
                ctx.pin(channel, f"the attention '{node.name}' keeps its heads, and its mask has one per head")
            return
        if shape is None:
            raise Unprunable("the shape of its mask is unknown after shape inference")
        axis = len(shape) - 3
        if channel is not None and (channel.axis, channel.size) == (axis, heads.size):
            ctx.couple(channel.slots, heads.slots)
        elif channel is None and ctx.weight_shape(mask) is not None and shape[axis] == heads.size:
            ctx.slice_param(node, 3, axis, heads.slots)
        else:
            raise Unprunable("its mask or bias differs between heads in a way that cannot follow them")

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        if "scale" not in node.attrs:
            node.attrs["scale"] = 1.0 / math.sqrt(view.channel(node.inputs[0].name).size)


class RotaryEmbeddingRule(Rule):
    """ONNX's RotaryEmbedding (opset 23), which the dynamo exporter writes for some models' rotary position
    embeddings (ModernBERT's decoder): on X [B, heads, S, head size] every head is rotated alike, so heads
    pass through (a ``num_heads`` attribute follows the kept count); the rotation mixes pairs of dimensions
    within each head, which therefore stay, as do the heads of the 3-D form (packed in the hidden size)."""

    op_types = ("RotaryEmbedding",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        if ctx.rank(node.inputs[0]) != 4 or x.axis != 1:
            raise Unprunable("it rotates pairs of dimensions within each head (or takes heads packed in 3-D)")
        if any(ctx.channel(t) is not None for t in node.inputs[1:]):
            raise Unprunable("its cos or sin cache carries channels")
        ctx.same_channels(node.outputs[0], x)
        if "num_heads" in node.attrs:
            ctx.add_rewrite(self, node)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        node.attrs["num_heads"] = len(view.kept(node.inputs[0].name))


class EinsumRule(Rule):
    op_types = ("Einsum",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        terms, out = einsum_terms(node.attrs["equation"], [ctx.rank(t) for t in node.inputs])
        if self._linear(node, ctx, terms, out):
            return
        channels = [(i, ctx.channel(t)) for i, t in enumerate(node.inputs) if ctx.channel(t) is not None]
        if not channels:
            return
        labels = {terms[i][channel.axis] for i, channel in channels}
        if len(labels) > 1:
            raise Unprunable("its inputs carry channels on different labels")
        label = labels.pop()
        if label not in out:
            self._summed_label(node, ctx, terms, label, channels)
            return
        self._kept_label(node, ctx, terms, out.index(label), label, channels)

    @staticmethod
    def _summed_label(node: gs.Node, ctx: ChannelContext, terms: list[str], label: str, channels: list) -> None:
        """A label with channels that is summed over, as MatMul multiplies over them: every input with the label
        loses them together (constants sliced, also through tiles and transposes), and the output carries none
        (SAM's queries times its relative position table, "bhwc,hkc->bhwk", within each head). A tensor times
        itself stays whole: a sum of squares over the channels is a norm, which every channel changes."""
        size = channels[0][1].size
        if any(channel.size != size for _, channel in channels):
            raise Unprunable("its inputs carry different channel counts")
        if len({node.inputs[i].name for i, _ in channels}) < len(channels):
            raise Unprunable("it sums over the channels of a tensor times itself (a norm over the channels)")
        first = channels[0][1]
        for index, tensor in enumerate(node.inputs):
            if label not in terms[index]:
                continue
            position = terms[index].index(label)
            channel = ctx.channel(tensor)
            if channel is None and ctx.shape(tensor)[position] == 1:
                continue  # broadcast
            if channel is None and ctx.weight_shape(tensor) is not None:
                ctx.slice_param(node, index, position, first.slots)
                continue
            if channel is None:
                channel = constant_derived_channels(tensor, position, size, ctx, ("Einsum",))
            if channel is None:
                raise Unprunable(f"input '{tensor.name}' is summed with the channels but has none that can be traced")
            ctx.couple(first.slots, channel.slots)
        ctx.record_io(node, first, None)

    @staticmethod
    def _linear(node: gs.Node, ctx: ChannelContext, terms: list[str], out: str) -> bool:
        """An activation times a constant weight over one label, the weight's other labels output axes of
        their own ("ntd,dh->nth", "ibh,hnd->ibnd"): a linear layer, traced as MatMul is."""
        weights = [i for i, t in enumerate(node.inputs) if ctx.weight_shape(t) is not None]
        if len(node.inputs) != 2 or len(weights) != 1 or len(terms[weights[0]]) < 2:
            return False
        w_index = weights[0]
        w_terms, x_terms = terms[w_index], terms[1 - w_index]
        summed = [c for c in w_terms if c in x_terms and c not in out]
        free = sorted((c for c in w_terms if c not in x_terms and c in out), key=out.index)
        if len(summed) != 1 or not free or len(summed) + len(free) != len(w_terms):
            return False
        # A weight with several output labels ("ibh,hnd->ibnd": XLNet's projections to heads x head size): the
        # first in the output carries the channels (the heads), as a Reshape that splits them does.
        weight = ctx.weight_shape(node.inputs[w_index])
        x = ctx.expect(node.inputs[1 - w_index], x_terms.index(summed[0]))
        y = ctx.declare(node.outputs[0], out.index(free[0]), weight[w_terms.index(free[0])])
        ctx.slice_param(node, w_index, w_terms.index(summed[0]), x.slots, scored=True)
        width = math.prod(weight[w_terms.index(c)] for c in free[1:])  # a head's size
        ctx.slice_param(node, w_index, w_terms.index(free[0]), y.slots, scored=True, width=width)
        ctx.record_io(node, x, y)
        return True

    @staticmethod
    def _kept_label(node: gs.Node, ctx: ChannelContext, terms: list[str], axis: int, label: str,
                    channels: list) -> None:
        size = channels[0][1].size
        if any(channel.size != size for _, channel in channels):
            raise Unprunable("its inputs carry different channel counts")
        y = ctx.declare(node.outputs[0], axis, size)
        for _, channel in channels:
            ctx.couple(channel.slots, y.slots)
        for index, tensor in enumerate(node.inputs):
            if label not in terms[index] or ctx.channel(tensor) is not None:
                continue
            position = terms[index].index(label)
            if ctx.shape(tensor)[position] == 1:
                continue  # broadcast
            if ctx.weight_shape(tensor) is None:
                raise Unprunable(f"input '{tensor.name}' has the channel label but no channels that can be traced")
            ctx.slice_param(node, index, position, y.slots)


def einsum_terms(equation: str | bytes, ranks: list[int]) -> tuple[list[str], str]:
    """An Einsum equation as one label per axis for each input and for the output: an ellipsis becomes
    labels of its own (right-aligned, as it broadcasts), and an implicit output is the labels used once,
    in alphabetical order, after the ellipsis."""
    equation = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    inputs = lhs.split(",")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in equation]
    widths = [rank - (len(term) - 3) for term, rank in zip(inputs, ranks) if "..." in term]
    ellipsis = "".join(spare[:max(widths, default=0)])
    terms = [term.replace("...", ellipsis[len(ellipsis) - (rank - len(term) + 3):]) if "..." in term else term
             for term, rank in zip(inputs, ranks)]
    if arrow:
        return terms, rhs.replace("...", ellipsis)
    named = "".join(inputs).replace(".", "")
    return terms, ellipsis + "".join(sorted(c for c in set(named) if named.count(c) == 1))
