"""Element-wise ops.

Unary ops (Relu, Sigmoid, Clip, Cast, ...) keep channels index for index. Broadcasting ops (Add, Mul,
Where, PRelu, ...) align inputs to the right: every input whose aligned channel axis has the full
channel count is coupled with the output (residual Adds, squeeze-excite Muls, x*sigmoid(x)); a constant
with the full count there is sliced; a size-1 axis broadcasts and is left alone. QuantizeLinear and
DequantizeLinear of activations (QDQ models) keep channels too; per-channel scales are sliced with them
(one scale for the whole tensor may be computed at run time), and so does DynamicQuantizeLinear.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from onnxprune.contrib import CONTRIB_DOMAIN, CONTRIB_UNARY_OPS
from onnxprune.rules.base import (
    ChannelContext,
    ChannelTensor,
    ConstantEntry,
    RewriteView,
    Rule,
    SizeOf,
    Unprunable,
    broadcast_axis,
    quantization_axis,
    shape_entry,
)
from onnxprune.rules.shape import ExpandRule, entry_value, expand_shape_entry, tiled_once

UNARY_OPS = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Erf", "Gelu", "Mish", "ThresholdedRelu", "Shrink", "Cast", "Identity", "Dropout", "Abs",
    "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Not",
    "IsNaN", "IsInf", "Clip", "CastLike",  # CastLike reads only the type of its second input
)
BROADCAST_OPS = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Less",
    "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "BitShift",
)


# How many ops back a tensor computed from per-channel constants is followed (see ``constant_derived_channels``).
_DERIVED_DEPTH = 4


class UnaryRule(Rule):
    op_types = UNARY_OPS

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        for extra in node.inputs[1:] if node.op != "CastLike" else ():  # Clip min/max, Dropout ratio: scalars
            shape = ctx.shape(extra) if not extra.is_empty() else ()
            if shape is None or any(d != 1 for d in shape):
                raise Unprunable(f"its input '{extra.name}' is not a scalar")
        if any(not t.is_empty() and t.outputs for t in node.outputs[1:]):
            raise Unprunable("its second output (mask) is used")
        x = ctx.channel(node.inputs[0])
        if x is not None:
            ctx.same_channels(node.outputs[0], x)


class ContribUnaryRule(UnaryRule):
    """ONNX Runtime's element-wise contrib activations (Gelu, QuickGelu, FastGelu without a bias)."""

    op_types = CONTRIB_UNARY_OPS
    domain = CONTRIB_DOMAIN


class BroadcastRule(Rule):
    op_types = BROADCAST_OPS

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        out_rank = ctx.rank(node.outputs[0])
        present = [(i, t) for i, t in enumerate(node.inputs) if not t.is_empty()]
        channel_inputs = [(i, ctx.channel(t), ctx.rank(t)) for i, t in present if ctx.channel(t) is not None]
        if not channel_inputs:
            return
        axes = {broadcast_axis(ch.axis, rank, out_rank) for _, ch, rank in channel_inputs}
        if len(axes) > 1:
            raise Unprunable("its inputs carry channels on different axes")
        axis = axes.pop()
        out_shape = ctx.shape(node.outputs[0])
        count = out_shape[axis] if isinstance(out_shape[axis], int) else max(ch.size for _, ch, _ in channel_inputs)
        to_slice = []
        for index, tensor in present:
            local_axis = axis - (out_rank - ctx.rank(tensor))
            if local_axis < 0:  # a lower-rank input broadcasts over the channel axis
                continue
            dim = ctx.shape(tensor)[local_axis]
            channel = ctx.channel(tensor)
            if dim == 1 and count != 1 or channel is not None and dim == count:
                continue
            if dim != count:
                raise Unprunable(f"input '{tensor.name}' has {dim} entries on the channel axis, expected {count} or 1")
            if ctx.weight_shape(tensor) is not None:
                to_slice.append((index, local_axis))
                continue
            derived = constant_derived_channels(tensor, local_axis, count, ctx)
            if derived is None:
                raise Unprunable(f"input '{tensor.name}' has a channel axis that cannot be traced to its producer")
            channel_inputs.append((index, derived, ctx.rank(tensor)))
        y = ctx.declare(node.outputs[0], axis, count)
        for _, channel, _ in channel_inputs:
            if channel.size == count:
                ctx.couple(channel.slots, y.slots)
        for index, local_axis in to_slice:
            ctx.slice_param(node, index, local_axis, y.slots)
        if to_slice:
            ctx.record_io(node, y, y)


@dataclass
class _DerivedStep:
    """A tensor to give channels: its producer's constant inputs to slice with it (input index, axis), the
    tensors it is computed from that get channels first, how its producer's shape entry for the axis is
    rewritten (an Expand's to 1, "one", once its input has the channels; an Expand from one channel's or a
    ConstantOfShape's to the kept count, "kept"), or the tensor whose size that entry reads (``follow``)."""

    tensor: gs.Tensor
    axis: int
    slices: list[tuple[int, int]]
    sources: list[gs.Tensor]
    rewrite: str | None = None
    follow: SizeOf | None = None


def constant_derived_channels(tensor: gs.Tensor, axis: int, count: int, ctx: ChannelContext,
                              readers: tuple[str, ...] = BROADCAST_OPS) -> ChannelTensor | None:
    """Channels on ``axis`` for a tensor computed from constants with ``count`` entries there by broadcasting
    ops, Expands, Tiles and Transposes (with inputs that broadcast over the axis, or repeat it once), and
    read only by ``readers``: its constants are sliced with it. The dynamo exporter folds T5's relative
    position bias, shared by every layer, into a constant [1, heads, T, T] that a Where masks, MPNet's into
    one expanded to the batch, and DeBERTa's relative position keys into a constant [heads, positions, head
    size] tiled to the batch and transposed for a MatMul. Its channels may also be all alike: a
    ConstantOfShape's, or an Expand's of one channel (multi-head latent attention's key, written into zeros
    per head, with a rotary part shared by every head)."""
    steps = _derived_steps(tensor, axis, count, ctx, 0, readers)
    if steps is None:
        return None
    channels: dict[str, ChannelTensor] = {}
    for step in steps:  # sources first
        producer = step.tensor.inputs[0]
        channel = channels[step.tensor.name] = ctx.declare(step.tensor, step.axis, count)
        for index, local_axis in step.slices:
            ctx.slice_param(producer, index, local_axis, channel.slots)
        for source in step.sources:
            ctx.couple(channels[source.name].slots, channel.slots)
        if step.follow is not None:
            ctx.follow_size(step.follow, channel)
        if step.rewrite is not None:
            ctx.add_rewrite(ExpandRule() if step.rewrite == "one" else _KEPT_COUNT, producer)
        ctx.record_io(producer, channel, channel)
    return channels[tensor.name]


class KeptCountRewrite(Rule):
    """Sets the shape entry for the channel axis of an Expand of one channel, or of a ConstantOfShape, to
    the count its output keeps (see ``constant_derived_channels``); registered for no op."""

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        axis = view.channel(node.outputs[0].name).axis
        entry = expand_shape_entry(node, axis) if node.op == "Expand" else shape_entry(node, 0, axis)
        view.replace_entry(entry, len(view.kept(node.outputs[0].name)))


_KEPT_COUNT = KeptCountRewrite()

# Ops a tensor computed from constants may pass through on the way (see ``constant_derived_channels``); a
# QDQ model quantizes it per tensor on the way (DETR's learned queries, expanded to the batch).
_DERIVING_OPS = (*BROADCAST_OPS, "Expand", "Tile", "Transpose", "ConstantOfShape", "QuantizeLinear", "DequantizeLinear")


def _derived_steps(tensor: gs.Tensor, axis: int, count: int, ctx: ChannelContext, depth: int,
                   readers: tuple[str, ...]) -> list[_DerivedStep] | None:
    """The steps of ``constant_derived_channels`` (sources first), or None where it does not apply."""
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if (depth > _DERIVED_DEPTH or producer is None or producer.op not in _DERIVING_OPS
            or producer.outputs[0] is not tensor or ctx.channel(tensor) is not None
            or any(consumer.op not in readers for consumer in tensor.outputs)):
        return None
    rank = ctx.rank(tensor)
    step, steps = _DerivedStep(tensor, axis, [], []), []
    if producer.op == "ConstantOfShape":
        return [step] if _follows_count(shape_entry(producer, 0, axis), step, count, ctx) else None
    for index, source, local_axis in _derived_inputs(producer, axis, rank, ctx):
        shape = ctx.shape(source) if not source.is_empty() else ()
        if local_axis is not None and local_axis < 0:
            continue
        if local_axis is None or shape[local_axis] != 1 and (shape[local_axis] != count or ctx.channel(source) is not None):
            return None
        if shape[local_axis] == 1:
            continue
        if ctx.weight_shape(source) is not None:
            step.slices.append((index, local_axis))
            continue
        inner = _derived_steps(source, local_axis, count, ctx, depth + 1, _DERIVING_OPS)
        if inner is None:
            return None
        steps += inner
        step.sources.append(source)
    if producer.op == "Expand":
        try:
            entry = expand_shape_entry(producer, axis)
        except Unprunable:
            return None
        if not step.slices and not step.sources:  # from one channel: the entry gives the count
            return [step] if _follows_count(entry, step, count, ctx) else None
        if entry is not None and not (isinstance(entry, ConstantEntry) and entry_value(entry) in (1, count)):
            return None
        step.rewrite = "one" if entry is not None and entry_value(entry) != 1 else None
    return steps + [step] if step.slices or step.sources else None


def _follows_count(entry: SizeOf | ConstantEntry | None, step: _DerivedStep, count: int, ctx: ChannelContext) -> bool:
    """Whether the shape ``entry`` that sizes ``step``'s axis can follow the kept count: a constant ``count``
    (rewritten, noted in ``step``) or the size of a tensor with ``count`` channels there (followed)."""
    if isinstance(entry, ConstantEntry) and entry_value(entry) == count:
        step.rewrite = "kept"
        return True
    source = ctx.channel(entry.tensor) if isinstance(entry, SizeOf) else None
    if source is not None and source.axis == entry.axis and source.size == count:
        step.follow = entry
        return True
    return False


def _derived_inputs(producer: gs.Node, axis: int, rank: int, ctx: ChannelContext) -> list[tuple[int, gs.Tensor, int | None]]:
    """(input index, input, its axis that becomes ``axis`` of the output, None where unknown) of the inputs
    a step of ``_derived_steps`` follows; [(0, input, None)] where the step cannot be followed."""
    source = producer.inputs[0]
    if producer.op == "Transpose":
        perm = producer.attrs.get("perm", list(range(rank))[::-1])
        return [(0, source, int(perm[axis]))]
    if producer.op == "Tile":
        return [(0, source, axis if tiled_once(producer, axis) else None)]
    if producer.op in ("QuantizeLinear", "DequantizeLinear"):  # elementwise, on one scale and zero point
        per_tensor = all(ctx.shape(t) in ((), (1,), [], [1]) for t in producer.inputs[1:3] if not t.is_empty())
        return [(0, source, axis if per_tensor else None)]
    inputs = producer.inputs[:1] if producer.op == "Expand" else producer.inputs
    found = []
    for index, tensor in enumerate(inputs):
        shape = ctx.shape(tensor) if not tensor.is_empty() else ()
        found.append((index, tensor, axis - (rank - len(shape)) if shape is not None else None))
    return found


class ScatterNDRule(Rule):
    """ScatterND writes slices of its updates into a copy of its data at the positions its indices give
    for the first q axes: on an axis after those, data, updates and output keep channels index for index.
    Multi-head latent attention's key (DeepSeek-V3, MiniCPM3) is written this way, head by head, into a
    ConstantOfShape of zeros: that, or an Expand of a part shared by every head, takes the channels too."""

    op_types = ("ScatterND",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        data, indices, updates = node.inputs[:3]
        x, u = ctx.channel(data), ctx.channel(updates)
        if x is None and u is None:
            return
        if ctx.channel(indices) is not None:
            raise Unprunable("its indices carry channels")
        depth = ctx.shape(indices)[-1] if ctx.shape(indices) else None
        if not isinstance(depth, int):
            raise Unprunable("the depth of its indices is unknown after shape inference")
        offset = ctx.rank(indices) - 1 - depth  # updates' axis for data's axis a: a + offset
        axis = x.axis if x is not None else u.axis - offset
        if axis < depth:
            raise Unprunable("its indices address the channel axis")
        y = ctx.declare(node.outputs[0], axis, (x or u).size)
        scatter_inputs(node, ctx, y, ((0, x, axis, False), (2, u, axis + offset, True)))


def scatter_inputs(node: gs.Node, ctx: ChannelContext, y: ChannelTensor,
                   inputs: tuple[tuple[int, ChannelTensor | None, int, bool], ...]) -> None:
    """Give the inputs of a scatter (ScatterND, ScatterElements; ``inputs``: index, channels, channel axis, and
    whether it may be a part shared by every channel, broadcast to them) the channels of its output ``y``: its
    own, coupled; a constant's, sliced; those of a tensor computed from constants (a ConstantOfShape of zeros);
    or a shared part's, whose count then follows ``y``'s."""
    count = y.size
    for index, channel, local_axis, shared in inputs:
        tensor = node.inputs[index]
        shape = ctx.shape(tensor)
        if channel is None and ctx.weight_shape(tensor) is not None and shape[local_axis] == count:
            ctx.slice_param(node, index, local_axis, y.slots)
            ctx.record_io(node, y, y)
            continue
        if channel is None:
            channel = constant_derived_channels(tensor, local_axis, count, ctx, readers=(node.op,))
        if channel is not None and channel.axis == local_axis and channel.size == count:
            ctx.couple(channel.slots, y.slots)
            continue
        expand = broadcast_expand(tensor, local_axis, count, ctx) if shared else None
        if expand is None:
            raise Unprunable(f"input '{tensor.name}' has a channel axis that cannot be traced to its producer")
        if channel is not None:  # the shared part's own channels, written at the positions the indices give
            ctx.pin(channel, f"a {node.op} writes them where its indices say")
        follow_broadcast(expand, y, ctx)


class ScatterElementsRule(Rule):
    """ScatterElements writes each update into a copy of its data along ``axis``, at the position its index
    there gives: on another axis data, indices, updates and output keep the channels index for index. Doge's
    dynamic mask per head is written so, its ones into a ConstantOfShape of zeros at each head's top-k
    positions; indices and updates may also be one part repeated over the channels."""

    op_types = ("ScatterElements",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        channels = [ctx.channel(t) for t in node.inputs[:3]]
        known = [c for c in channels if c is not None]
        if not known:
            return
        axis = known[0].axis
        if any(c.axis != axis or c.size != known[0].size for c in known):
            raise Unprunable("its inputs carry channels on different axes")
        if axis == int(node.attrs.get("axis", 0)) % ctx.rank(node.inputs[0]):
            raise Unprunable("it scatters along the channel axis")
        y = ctx.declare(node.outputs[0], axis, known[0].size)
        scatter_inputs(node, ctx, y, tuple((index, channels[index], axis, index > 0) for index in range(3)))


def broadcast_expand(tensor: gs.Tensor, axis: int, count: int, ctx: ChannelContext
                     ) -> tuple[gs.Node, int, SizeOf | ConstantEntry] | None:
    """The Expand or Tile (its output axis, and the entry of its shape or repeats for it) that ``tensor`` copies
    unchanged from, through Transposes read by nothing else, where that node broadcasts or repeats one entry
    along ``axis`` to ``count``: a constant, or the size of a tensor with ``count`` channels there. Its copies
    along the axis are alike, so the count can follow a channel count it has no channels of
    (``follow_broadcast``)."""
    for _ in range(_DERIVED_DEPTH):
        producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
        if producer is None or len(tensor.outputs) != 1:
            return None
        if producer.op == "Transpose":
            perm = producer.attrs.get("perm", list(range(ctx.rank(tensor)))[::-1])
            tensor, axis = producer.inputs[0], int(perm[axis])
            continue
        if producer.op not in ("Expand", "Tile"):
            return None
        source = ctx.shape(producer.inputs[0])
        local_axis = axis - (ctx.rank(tensor) - len(source)) if source is not None else None
        try:
            entry = _broadcast_entry(producer, axis)
        except Unprunable:
            return None
        if local_axis is None or local_axis >= 0 and source[local_axis] != 1:
            return None
        if isinstance(entry, ConstantEntry) and entry_value(entry) == count:
            return producer, axis, entry
        read = ctx.channel(entry.tensor) if isinstance(entry, SizeOf) else None
        return (producer, axis, entry) if read is not None and (read.axis, read.size) == (entry.axis, count) else None
    return None


def follow_broadcast(expand: tuple[gs.Node, int, SizeOf | ConstantEntry], y: ChannelTensor, ctx: ChannelContext) -> None:
    """Make the count that a ``broadcast_expand`` copies its entry to follow ``y``'s kept channels."""
    producer, axis, entry = expand
    if isinstance(entry, SizeOf):
        ctx.follow_size(entry, y)
    else:
        ctx.add_rewrite(_BroadcastCount(axis, y.name), producer)


@dataclass(frozen=True)
class _BroadcastCount(Rule):
    """Sets an Expand's shape entry for output ``axis`` to the count that channels ``name`` keep."""

    axis: int
    name: str

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        view.replace_entry(_broadcast_entry(node, self.axis), len(view.kept(self.name)))


def _broadcast_entry(node: gs.Node, axis: int) -> SizeOf | ConstantEntry | None:
    """The entry of an Expand's shape, or of a Tile's repeats (``x.repeat(1, 1, C)``), for output ``axis``."""
    return expand_shape_entry(node, axis) if node.op == "Expand" else shape_entry(node, 1, axis)


class DynamicQuantizeRule(Rule):
    """DynamicQuantizeLinear: its integer output keeps the input's channels (its scale and zero point,
    computed at run time, are one for the whole tensor)."""

    op_types = ("DynamicQuantizeLinear",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is not None:
            ctx.same_channels(node.outputs[0], x)


class QuantizeRule(Rule):
    op_types = ("QuantizeLinear", "DequantizeLinear")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return  # a weight's dequantization: sliced with the weight (see ``stored_constant``)
        extras = [index for index in (1, 2) if index < len(node.inputs) and not node.inputs[index].is_empty()]
        computed = [index for index in extras if not isinstance(node.inputs[index], gs.Constant)]
        if any(ctx.shape(node.inputs[index]) is None or any(d != 1 for d in ctx.shape(node.inputs[index]))
               for index in computed):
            # (One for the whole tensor, as DynamicQuantizeLinear computes them, is fine.)
            raise Unprunable("its scale or zero point is computed at run time, per channel")
        if node.attrs.get("block_size", 0):
            raise Unprunable("it quantizes in blocks")
        axis = quantization_axis(node, ctx.rank(node.inputs[0]))
        if axis is not None and axis != x.axis:
            raise Unprunable(f"its scales are per channel on axis {axis}, not on the channel axis {x.axis}")
        ctx.same_channels(node.outputs[0], x)
        for index in extras if axis is not None else ():
            ctx.slice_param(node, index, 0, x.slots)
