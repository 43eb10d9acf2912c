"""Concat, Split, Slice, Gather, GatherND and GatherElements.

On the channel axis these ops move channel indices by offsets: Concat's input k channel i is output
channel offset_k + i; Split's output k channel i is input channel offset_k + i; Slice (step 1) output
channel i is input channel start + i; Gather of constant indices, output channel j is input channel
indices[j] (a reorder or a selection; one index alone keeps that channel). Split sizes, Slice bounds and
Gather indices are rewritten from the kept channels. On any other axis every input and output shares the same channels (a Gather moves the
channel axis by the rank of its indices less one: ``x[:, 0]`` of [N, T, C], ``h_n[-1]`` of an LSTM).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, ChannelTensor, RewriteView, Rule, Unprunable
from onnxprune.rules.elementwise import broadcast_expand, follow_broadcast


class ConcatRule(Rule):
    op_types = ("Concat",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        known = [ctx.channel(t) for t in node.inputs if ctx.channel(t) is not None]
        if not known:
            return
        rank = ctx.rank(node.outputs[0])
        concat_axis = int(node.attrs["axis"]) % rank
        if len({c.axis for c in known}) == 1 and known[0].axis == concat_axis:
            parts = [ctx.expect(t, concat_axis) for t in node.inputs]
            y = ctx.declare(node.outputs[0], concat_axis, sum(p.size for p in parts))
            offset = 0
            for part in parts:
                ctx.couple(part.slots, y.slots[offset:offset + part.size])
                offset += part.size
            return
        # A part may copy one entry to every channel of the others (a rotary key shared by every head,
        # TorchScript's MiniCPM3 and DeepSeek-V3): its count follows theirs, and its own channels stay.
        axis, shared = _broadcast_parts(node, ctx, known, concat_axis)
        parts = [ctx.expect(t, axis) for t, expand in zip(node.inputs, shared) if expand is None]
        if len({p.size for p in parts}) > 1:
            raise Unprunable("its inputs have different channel counts")
        y = ctx.declare(node.outputs[0], axis, parts[0].size)
        for part in parts:
            ctx.couple(part.slots, y.slots)
        for tensor, expand in zip(node.inputs, shared):
            if expand is not None:
                if ctx.channel(tensor) is not None:
                    ctx.pin(ctx.channel(tensor), "a Concat copies them to every channel of its other inputs")
                follow_broadcast(expand, y, ctx)


def _broadcast_parts(node: gs.Node, ctx: ChannelContext, known: list[ChannelTensor], concat_axis: int
                     ) -> tuple[int, list[tuple | None]]:
    """The channel axis of a Concat along another axis, and for each input the ``broadcast_expand`` that copies
    it along that axis where it has no channels there (None for the others)."""
    for axis in sorted({c.axis for c in known} - {concat_axis}):
        count = next(c.size for c in known if c.axis == axis)
        shared = [broadcast_expand(t, axis, count, ctx) if ctx.channel(t) is None or ctx.channel(t).axis != axis else None
                  for t in node.inputs]
        if all(expand is not None for t, expand in zip(node.inputs, shared)
               if ctx.channel(t) is not None and ctx.channel(t).axis != axis):
            return axis, shared
    raise Unprunable("its inputs carry channels on different axes")


class SplitRule(Rule):
    op_types = ("Split",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        axis = int(node.attrs.get("axis", 0)) % ctx.rank(node.inputs[0])
        if axis != x.axis:
            for out in node.outputs:
                ctx.same_channels(out, x)
            return
        sizes = [ctx.shape(out)[axis] for out in node.outputs]
        if not all(isinstance(s, int) for s in sizes) or sum(sizes) != x.size:
            raise Unprunable("its split sizes are unknown after shape inference")
        offset = 0
        for out, size in zip(node.outputs, sizes):
            y = ctx.declare(out, axis, size)
            ctx.couple(x.slots[offset:offset + size], y.slots)
            offset += size
        ctx.add_rewrite(self, node)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        sizes = np.array([len(view.kept(out.name)) for out in node.outputs], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if view.opset < 13:
            node.attrs["split"] = [int(s) for s in sizes]
        elif len(node.inputs) > 1 and not node.inputs[1].is_empty():
            view.replace_input(node, 1, sizes)
        else:
            node.inputs.append(gs.Constant(f"{node.name}_split_sizes", sizes))


def slice_arguments(node: gs.Node, rank: int) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
    """Slice's starts, ends, normalised axes and steps, all constants, or Unprunable."""
    values = [None] * 5
    for index, tensor in enumerate(node.inputs[:5]):
        if index and not tensor.is_empty():
            if not isinstance(tensor, gs.Constant):
                raise Unprunable("its starts, ends, axes or steps are computed at run time")
            values[index] = np.array(tensor.values, dtype=np.int64)  # a copy: constants can be shared
    starts, ends = values[1], values[2]
    axes = values[3] if values[3] is not None else np.arange(len(starts))
    steps = values[4] if values[4] is not None else np.ones(len(starts), np.int64)
    return starts, ends, [int(a) % rank for a in axes], steps


def _sliced_axes(node: gs.Node, rank: int) -> list[int] | None:
    """The axes a Slice (opset 10+) acts on, where they are known whatever its bounds are."""
    if len(node.inputs) < 3:
        return None
    if len(node.inputs) > 3 and not node.inputs[3].is_empty():
        if not isinstance(node.inputs[3], gs.Constant):
            return None
        return [int(a) % rank for a in np.asarray(node.inputs[3].values).reshape(-1)]
    count = node.inputs[1].shape[0] if node.inputs[1].shape is not None and len(node.inputs[1].shape) == 1 else None
    return list(range(count)) if isinstance(count, int) else None  # without axes: the first len(starts) axes


class SliceRule(Rule):
    op_types = ("Slice",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        rank = ctx.rank(node.inputs[0])
        sliced = _sliced_axes(node, rank)
        if sliced is not None and x.axis not in sliced:
            # Bounds computed at run time on other axes (a U-Net's crop to a skip's size) keep the channels.
            ctx.same_channels(node.outputs[0], x)
            return
        starts, ends, axes, steps = slice_arguments(node, rank)
        if x.axis not in axes:
            ctx.same_channels(node.outputs[0], x)
            return
        k = axes.index(x.axis)
        if int(steps[k]) != 1:
            raise Unprunable("it slices the channel axis with a step other than 1")
        start, stop, _ = slice(int(starts[k]), int(ends[k])).indices(x.size)
        y = ctx.declare(node.outputs[0], x.axis, max(0, stop - start))
        ctx.couple(x.slots[start:start + y.size], y.slots)
        ctx.add_rewrite(self, node)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        x = view.channel(node.inputs[0].name)
        starts, ends, axes, _ = slice_arguments(node, len(node.inputs[0].shape))
        k = axes.index(x.axis)
        start = slice(int(starts[k]), int(ends[k])).indices(x.size)[0]
        new_start = int(np.searchsorted(view.kept(x.name), start))
        starts[k], ends[k] = new_start, new_start + len(view.kept(node.outputs[0].name))
        view.replace_input(node, 1, starts.astype(node.inputs[1].values.dtype))
        view.replace_input(node, 2, ends.astype(node.inputs[2].values.dtype))


class GatherRule(Rule):
    op_types = ("Gather",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            self._embedding(node, ctx)
            return
        axis = int(node.attrs.get("axis", 0)) % ctx.rank(node.inputs[0])
        index_rank = ctx.rank(node.inputs[1])
        if axis != x.axis:
            ctx.same_channels(node.outputs[0], x, x.axis if x.axis < axis else x.axis + index_rank - 1)
            return
        indices = ctx.const(node.inputs[1])
        if indices is not None and indices.ndim == 0:
            # One channel taken out on its own (``x[:, 3]``): it stays, the rest of its group can go.
            ctx.pin(x.slots[int(indices) % x.size:][:1], f"it takes channel {int(indices) % x.size} alone")
            ctx.add_rewrite(self, node)
            return
        if indices is None or indices.ndim != 1:
            raise Unprunable("it gathers along the channel axis with indices that are not a constant list")
        y = ctx.declare(node.outputs[0], x.axis, len(indices))
        ctx.couple(x.slots[indices % x.size], y.slots)
        ctx.add_rewrite(self, node)

    @staticmethod
    def _embedding(node: gs.Node, ctx: ChannelContext) -> None:
        """A lookup in a constant float table [V, D] by indices computed at run time (an embedding): the
        table's D columns are the output's channels, on the axis after the indices' axes, and are sliced."""
        table = ctx.weight_shape(node.inputs[0])
        if (table is None or len(table) != 2 or int(node.attrs.get("axis", 0)) % 2 != 0
                or ctx.weight_shape(node.inputs[1]) is not None
                or np.dtype(node.outputs[0].dtype or np.int64).kind != "f"):
            return
        y = ctx.declare(node.outputs[0], ctx.rank(node.inputs[1]), table[1])
        ctx.slice_param(node, 0, 1, y.slots, scored=True)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        x = view.channel(node.inputs[0].name)
        indices = np.asarray(node.inputs[1].values)
        if indices.ndim == 0:
            view.replace_input(node, 1, np.searchsorted(view.kept(x.name), int(indices) % x.size).astype(indices.dtype))
            return
        kept = indices[view.kept(node.outputs[0].name)] % x.size
        view.replace_input(node, 1, np.searchsorted(view.kept(x.name), kept).astype(indices.dtype))


class GatherNDRule(Rule):
    """GatherND picks slices of its data by index tuples over the leading axes after ``batch_dims``: a channel
    axis past those passes to the output, after the indices' own axes (CLIP's text pooling takes the last
    hidden state [N, T, C] at each sequence's end token, ``x[arange(N), ids.argmax(-1)]``: [N, C])."""

    op_types = ("GatherND",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if ctx.channel(node.inputs[1]) is not None:
            raise Unprunable("its indices carry channels")
        if x is None:
            return
        shape = ctx.shape(node.inputs[1])
        depth = shape[-1] if shape else None
        if not isinstance(depth, int):
            raise Unprunable("the depth of its indices is unknown after shape inference")
        batch_dims = int(node.attrs.get("batch_dims", 0))
        if x.axis < batch_dims + depth:
            raise Unprunable("its indices address the channel axis, or it is one of the batch axes")
        ctx.same_channels(node.outputs[0], x, len(shape) - 1 + x.axis - batch_dims - depth)


class GatherElementsRule(Rule):
    """GatherElements picks along ``axis``, for every output position, the element its index there names: on
    another axis data, indices and output keep the channels index for index. The indices carry them too, or
    are one set of positions repeated over them (RT-DETR's top-k queries, ``x.gather(1, idx.unsqueeze(-1)
    .repeat(1, 1, C))``), whose count then follows the kept channels."""

    op_types = ("GatherElements",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x, indices = ctx.channel(node.inputs[0]), ctx.channel(node.inputs[1])
        if x is None and indices is None:
            return
        if x is None:
            raise Unprunable("its indices carry channels that its data does not")
        if x.axis == int(node.attrs.get("axis", 0)) % ctx.rank(node.inputs[0]):
            raise Unprunable("it gathers along the channel axis")
        y = ctx.same_channels(node.outputs[0], x)
        if indices is not None:
            if (indices.axis, indices.size) != (x.axis, x.size):
                raise Unprunable("its indices carry channels on another axis")
            ctx.couple(indices.slots, x.slots)
            return
        repeated = broadcast_expand(node.inputs[1], x.axis, x.size, ctx)
        if repeated is None:
            raise Unprunable("its indices have a channel axis that cannot be traced to its producer")
        follow_broadcast(repeated, y, ctx)

