"""Ops that work within each channel: pooling and unpooling, Pad, Resize/Upsample, reductions, Softmax, ops
along one axis (ArgMax, TopK, CumSum, LpNormalization), and ops over other axes (Trilu,
MeanVarianceNormalization, LRN, GridSample, RoiAlign).

They keep channels index for index as long as they do not act along the channel axis: pools and
resizes work on spatial axes (a Resize ``sizes`` input names the channel count and is rewritten);
Pad must not pad the channel axis; a reduction or Softmax over the channel axis mixes channels and is
not traced. A reduction with keepdims=0 moves the channel axis left by the number of reduced axes
before it.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, ChannelTensor, RewriteView, Rule, SizeOf, Unprunable, shape_entry
from onnxprune.rules.shape import entry_value
from onnxprune.shape_targets import shape_values

REDUCE_OPS = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
)


class PoolRule(Rule):
    """Pools keep the channels. MaxPool's indices output is flat over the whole input [N, C, H, W], so its
    values name the channel count; the pruned MaxPool computes them over the kept channels, so the indices
    carry the pooled channels where they are read in ways that stay right (see ``_reads_indices_safely``)."""

    op_types = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        indices = node.outputs[1] if len(node.outputs) > 1 and not node.outputs[1].is_empty() else None
        if indices is not None and not all(_reads_indices_safely(r, indices, node, ctx) for r in indices.outputs):
            raise Unprunable("its indices output is read other than by a MaxUnpool or to make it local to "
                             "each channel's plane")
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        if x.axis != 1:
            raise Unprunable("it pools over the channel axis")
        ctx.same_channels(node.outputs[0], x)
        if indices is not None and indices.outputs:
            ctx.same_channels(indices, x)


def _reads_indices_safely(reader: gs.Node, indices: gs.Tensor, pool: gs.Node, ctx: ChannelContext) -> bool:
    """Whether ``reader`` uses ``pool``'s ``indices`` in a way that stays right after pruning: as a MaxUnpool's
    indices, or to make them local to each channel's plane, as both PyTorch exporters write
    ``max_pool2d(.., return_indices=True)``: Sub(indices, Slice(indices of a 1x1 MaxPool of the same input,
    the first position)), where the sliced indices are where each (sample, channel) plane starts."""
    names = [t.name for t in reader.inputs]
    if reader.op == "MaxUnpool":
        return names[1:2] == [indices.name] and names.count(indices.name) == 1
    if reader.op == "Sub" and len(names) == 2 and names[0] == indices.name:
        return _plane_starts(reader.inputs[1], pool.inputs[0], ctx)
    if reader.op == "Slice" and _plane_starts(reader.outputs[0], pool.inputs[0], ctx):
        starts = reader.outputs[0]
        return all(sub.op == "Sub" and [t.name for t in sub.inputs][1:] == [starts.name]
                   and _pool_indices(sub.inputs[0], pool.inputs[0]) is not None for sub in starts.outputs)
    return False


def _pool_indices(tensor: gs.Tensor, source: gs.Tensor) -> gs.Node | None:
    """The MaxPool of ``source`` whose indices ``tensor`` is, or None."""
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if producer is None or producer.op != "MaxPool" or producer.inputs[0] is not source:
        return None
    return producer if len(producer.outputs) > 1 and producer.outputs[1] is tensor else None


def _plane_starts(tensor: gs.Tensor, source: gs.Tensor, ctx: ChannelContext) -> bool:
    """Whether ``tensor`` is the first spatial position of the indices of a 1x1, stride-1 MaxPool of ``source``."""
    piece = tensor.inputs[0] if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Slice" else None
    pool = _pool_indices(piece.inputs[0], source) if piece is not None else None
    if pool is None or source.shape is None:
        return False
    spatial = len(source.shape) - 2
    unit = all(list(pool.attrs.get(name, [default] * spatial)) == [default] * spatial
               for name, default in (("kernel_shape", 1), ("strides", 1), ("dilations", 1)))
    padded = any(pool.attrs.get("pads", [0])) or pool.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET")
    if not unit or padded:
        return False
    starts, ends = ctx.int_attr_or_input(piece, "starts", 1), ctx.int_attr_or_input(piece, "ends", 2)
    axes = ctx.int_attr_or_input(piece, "axes", 3) if "axes" in piece.attrs or len(piece.inputs) > 3 else None
    steps = ctx.int_attr_or_input(piece, "steps", 4) if len(piece.inputs) > 4 else None
    spatial_axes = list(range(2, 2 + spatial))
    return (starts is not None and ends is not None and list(starts) == [0] * spatial and list(ends) == [1] * spatial
            and axes is not None and [int(a) % len(source.shape) for a in axes] == spatial_axes
            and (steps is None or list(steps) == [1] * spatial))


class MaxUnpoolRule(Rule):
    """MaxUnpool puts each channel's values back at the positions its indices name, within the channel: the
    values, the indices and the output keep one set of channels. The indices must come straight from a
    MaxPool (see ``PoolRule``). An ``output_shape`` input names the channel count: a constant entry is
    rewritten, and one computed at run time must read it off a tensor with the same channels."""

    op_types = ("MaxUnpool",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x, indices = ctx.channel(node.inputs[0]), ctx.channel(node.inputs[1])
        if x is None and indices is None:
            return
        pooled = len(node.inputs[1].inputs) == 1 and node.inputs[1].inputs[0].op == "MaxPool"
        if x is None or indices is None or not pooled:
            raise Unprunable("its indices do not come from a MaxPool whose channels are traced")
        if x.axis != 1 or indices.axis != 1 or x.size != indices.size:
            raise Unprunable("its values and indices hold their channels on different axes")
        ctx.couple(x.slots, indices.slots)
        if len(node.inputs) > 2 and not node.inputs[2].is_empty():
            _follow_shape_entry(self, node, 2, x, ctx, "output shape is")
        ctx.same_channels(node.outputs[0], x)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        x = view.channel(node.inputs[0].name)
        view.replace_entry(shape_entry(node, 2, x.axis), len(view.kept(x.name)))


def _follow_shape_entry(rule: Rule, node: gs.Node, index: int, x: ChannelTensor, ctx: ChannelContext, what: str,
                        position: int | None = None) -> None:
    """Make entry ``position`` (default: ``x``'s axis) of ``node``'s 1-D integer input ``index``, a size that
    names ``x``'s channel count, follow the kept channels: a constant is rewritten (``rule.rewrite``), a size
    read off a tensor with the same channels is coupled to them; otherwise the node is unprunable (``what``
    names the input, with its verb)."""
    entry = shape_entry(node, index, x.axis if position is None else position)
    if isinstance(entry, SizeOf):
        if not ctx.follow_size(entry, x):
            raise Unprunable(f"its {what} read off '{entry.tensor.name}', whose channels are not its input's")
    elif entry is not None and entry_value(entry) == x.size:
        ctx.add_rewrite(rule, node)
    else:
        raise Unprunable(f"its {what} computed at run time")


class PadRule(Rule):
    op_types = ("Pad",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        pads = self._pads(node, ctx)
        rank = ctx.rank(node.inputs[0])
        axes = ctx.int_attr_or_input(node, "axes", 3) if len(node.inputs) > 3 else None
        axes = [int(a) % rank for a in axes] if axes is not None else list(range(rank))
        if pads is None:
            raise Unprunable("its pads are unknown")
        if x.axis in axes:
            k = axes.index(x.axis)
            if pads[k] is None or pads[k + len(axes)] is None:
                raise Unprunable("its pads of the channel axis are computed at run time")
            if pads[k] != 0 or pads[k + len(axes)] != 0:
                raise Unprunable("it pads the channel axis")
        ctx.same_channels(node.outputs[0], x)

    @staticmethod
    def _pads(node: gs.Node, ctx: ChannelContext) -> list | None:
        """The pads, constant or computed at run time (TorchScript's ``F.pad`` to a length it computes): an
        entry is a number where it is known, which those of the channel axis must be."""
        if "pads" in node.attrs or len(node.inputs) < 2 or node.inputs[1].is_empty() or ctx.const(node.inputs[1]) is not None:
            return ctx.int_attr_or_input(node, "pads", 1)
        pads = shape_values(node.inputs[1])
        if pads is None:
            raise Unprunable("its 'pads' input is computed at run time")
        return [p if isinstance(p, int) else None for p in pads]


class ResizeRule(Rule):
    """Resize and Upsample keep the channels where they do not scale the channel axis. A ``sizes`` input
    names the channel count: a constant entry is rewritten, and one computed at run time must read it off
    a tensor with the same channels (TorchScript's ``F.interpolate(x, size=y.shape[-2:])`` takes it from
    ``x`` itself)."""

    op_types = ("Resize", "Upsample")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        scales_index = 1 if node.op == "Upsample" else 2
        position = self._position(node, x.axis)
        for index in (scales_index, 3 if node.op == "Resize" else None):
            if index is None or len(node.inputs) <= index or node.inputs[index].is_empty():
                continue
            if index == 3 and not isinstance(node.inputs[index], gs.Constant):
                _follow_shape_entry(self, node, 3, x, ctx, "sizes are", position)
                continue
            values = ctx.const(node.inputs[index])
            if values is None:
                raise Unprunable("its scales are computed at run time")
            expected = 1.0 if index == scales_index else x.size
            if values.size and not np.isclose(values[position], expected):
                raise Unprunable("it resizes the channel axis")
            if index == 3:
                ctx.add_rewrite(self, node)
        ctx.same_channels(node.outputs[0], x)

    @staticmethod
    def _position(node: gs.Node, axis: int) -> int:
        axes = node.attrs.get("axes")
        if axes is None:
            return axis
        rank = len(node.inputs[0].shape)
        normalised = [int(a) % rank for a in axes]
        if axis not in normalised:
            raise Unprunable("its axes attribute leaves the channel axis out")
        return normalised.index(axis)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        x = view.channel(node.inputs[0].name)
        view.replace_entry(shape_entry(node, 3, self._position(node, x.axis)), len(view.kept(x.name)))


class ReduceRule(Rule):
    op_types = REDUCE_OPS

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        rank = ctx.rank(node.inputs[0])
        axes = ctx.int_attr_or_input(node, "axes", 1)
        if axes is None or axes.size == 0:
            if int(node.attrs.get("noop_with_empty_axes", 0)):
                ctx.same_channels(node.outputs[0], x)
                return
            raise Unprunable("it reduces over every axis, the channel axis included")
        reduced = {int(a) % rank for a in axes}
        if x.axis in reduced:
            raise Unprunable("it reduces over the channel axis")
        keepdims = int(node.attrs.get("keepdims", 1))
        new_axis = x.axis if keepdims else x.axis - sum(a < x.axis for a in reduced)
        ctx.same_channels(node.outputs[0], x, axis=new_axis)


class SoftmaxRule(Rule):
    op_types = ("Softmax", "LogSoftmax", "Hardmax")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        rank = ctx.rank(node.inputs[0])
        axis = int(node.attrs.get("axis", -1 if ctx.opset >= 13 else 1)) % rank
        # Before opset 13 these ops flatten every axis from `axis` on into one softmax.
        if x.axis == axis or ctx.opset < 13 and x.axis > axis:
            raise Unprunable("it normalises over the channel axis")
        ctx.same_channels(node.outputs[0], x)


class AlongAxisRule(Rule):
    """Ops that work along one axis, within each channel unless it is the channel axis."""

    op_types = ("ArgMax", "ArgMin", "TopK", "CumSum", "LpNormalization")
    _DEFAULT_AXIS = {"ArgMax": 0, "ArgMin": 0, "TopK": -1, "LpNormalization": -1}
    _WHAT = {"ArgMax": "picks", "ArgMin": "picks", "TopK": "sorts", "CumSum": "sums",
             "LpNormalization": "normalises"}

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        pin_channels_in(node.inputs[1:], ctx, "an axis or count")  # CumSum's axis, TopK's K
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        rank = ctx.rank(node.inputs[0])
        if node.op == "CumSum":
            axis = ctx.const(node.inputs[1])
            if axis is None or axis.size != 1:
                raise Unprunable("its axis is not a constant")
            axis = int(axis.reshape(-1)[0])
        else:
            axis = int(node.attrs.get("axis", self._DEFAULT_AXIS[node.op]))
        axis %= rank
        if axis == x.axis:
            raise Unprunable(f"it {self._WHAT[node.op]} along the channel axis")
        new_axis = x.axis
        if node.op in ("ArgMax", "ArgMin") and not int(node.attrs.get("keepdims", 1)):
            new_axis -= axis < x.axis
        for output in node.outputs:  # TopK's values and indices
            if not output.is_empty():
                ctx.same_channels(output, x, axis=new_axis)


class OtherAxesRule(Rule):
    """Ops that work over a fixed set of axes (Trilu: the last two; MeanVarianceNormalization: ``axes``;
    LRN: its window over axis 1) or sample the spatial axes of an [N, C, ...] map (GridSample, RoiAlign,
    MaxRoiPool): within each channel unless the channel axis is among those axes."""

    op_types = ("Trilu", "MeanVarianceNormalization", "LRN", "GridSample", "RoiAlign", "MaxRoiPool")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        pin_channels_in(node.inputs[1:], ctx, "sampling positions, boxes or a diagonal")
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        rank = ctx.rank(node.inputs[0])
        if node.op == "Trilu" and x.axis >= rank - 2:
            raise Unprunable("it masks along the channel axis")
        if node.op == "MeanVarianceNormalization" and x.axis in {int(a) % rank for a in node.attrs.get("axes", [0, 2, 3])}:
            raise Unprunable("it normalises over the channel axis")
        if node.op == "LRN" and x.axis == 1:
            raise Unprunable("it normalises over neighbouring channels")
        if node.op in ("GridSample", "RoiAlign", "MaxRoiPool") and x.axis != 1:
            raise Unprunable("it samples along the channel axis")
        ctx.same_channels(node.outputs[0], x)


def pin_channels_in(inputs: list[gs.Tensor], ctx: ChannelContext, what: str) -> None:
    """Keep the channels of inputs that an op reads as something else (an axis, a count, positions)."""
    for tensor in inputs:
        channel = None if tensor.is_empty() else ctx.channel(tensor)
        if channel is not None:
            ctx.pin(channel, f"'{tensor.name}' carries channels and is read as {what}")
