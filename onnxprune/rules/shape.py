"""Ops that change shapes: Flatten, Reshape, Transpose, Squeeze, Unsqueeze, and Shape.

Flatten / a flattening Reshape turns channel c of X [N, C, *S] into the block of features
[c * prod(S), (c + 1) * prod(S)) of the output, so a feature is removed with its channel. A Reshape
may merge dimensions on either side of the channel axis too: Keras' Flatten, as tf2onnx exports it,
merges [N, H, W, C] into [N, H * W * C], where channel c holds every C-th feature (and a channel
shuffle's merge back, whose channels are the shuffle groups). A Reshape that keeps the channel axis
whole moves it; one that splits it makes the axis its consumers read channels from (a decoder's dense
output reshaped into a feature map) the channel axis, or else the heads of [.., heads, head size]; one
that regroups whole channels (a GroupNorm's [N, G, -1]) makes the groups the channels; one that spreads
it over several axes otherwise is not traced. Reshape targets with hard-coded counts are
rewritten. Transpose, Squeeze and Unsqueeze only move the channel axis. DepthToSpace (a sub-pixel
convolution's pixel shuffle) makes each output channel of blocksize^2 input channels, strided (DCR) or
consecutive (CRD), and SpaceToDepth the reverse, so those go together. Expand and Tile keep the channels
where they leave the channel axis's size alone (an Expand's shape entry for it becomes 1, "the input's
size"). Shape reads no channel values: its output is a plain integer tensor.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.model import Dim
from onnxprune.rules.base import (
    ChannelContext,
    ChannelTensor,
    ConstantEntry,
    RewriteView,
    Rule,
    SizeOf,
    Unprunable,
    shape_entry,
)
from onnxprune.shape_targets import shape_values


def _couple_flattened(ctx: ChannelContext, x: ChannelTensor, out: gs.Tensor, out_axis: int, inner: int,
                      outer: int = 1) -> None:
    """Declare ``out`` whose axis ``out_axis`` holds x's channels each repeated ``inner`` times, the whole
    run repeated ``outer`` times (the sizes merged after and before the channel axis)."""
    y = ctx.declare(out, out_axis, outer * x.size * inner)
    ctx.couple(np.tile(np.repeat(x.slots, inner), outer), y.slots)


def _static(dims: tuple[Dim, ...], what: str) -> list[int]:
    if any(not isinstance(d, int) for d in dims):
        raise Unprunable(f"the {what} dimensions are not known statically")
    return [int(d) for d in dims]


class FlattenRule(Rule):
    op_types = ("Flatten",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        shape = ctx.shape(node.inputs[0])
        axis = int(node.attrs.get("axis", 1)) % len(shape)
        if axis == 0 or x.axis < axis:
            raise Unprunable("it flattens the channel axis into the batch axis")
        if x.axis > axis and any(d != 1 for d in _static(shape[axis:x.axis], "leading")):
            raise Unprunable("it flattens dimensions before the channel axis into the features")
        inner = int(np.prod(_static(shape[x.axis + 1:], "trailing")))
        _couple_flattened(ctx, x, node.outputs[0], 1, inner)


def _blocks(in_shape: list[Dim], out_shape: list[Dim]) -> list[tuple[list[int], list[int]]]:
    """Pair runs of input and output dims with equal products; size-1 dims are left out.

    Runs are closed from the front and from the back while their sizes are known (or are the same symbolic
    size, such as the batch); whatever is left in between (symbolic sizes a Reshape merges, say batch x
    tokens, or an image's height x width) is one run on each side.
    """
    ins = [i for i, d in enumerate(in_shape) if d != 1]
    outs = [j for j, d in enumerate(out_shape) if d != 1]
    front: list[tuple[list[int], list[int]]] = []
    back: list[tuple[list[int], list[int]]] = []
    a, b, end_a, end_b = 0, 0, len(ins), len(outs)  # ins[a:end_a] and outs[b:end_b] are not paired yet
    while a < end_a and b < end_b:
        run = _run(in_shape, ins[a:end_a], out_shape, outs[b:end_b])
        if run is None:
            break
        front.append((ins[a:a + run[0]], outs[b:b + run[1]]))
        a, b = a + run[0], b + run[1]
    while a < end_a and b < end_b:
        run = _run(in_shape, ins[a:end_a][::-1], out_shape, outs[b:end_b][::-1])
        if run is None:
            break
        back.insert(0, (ins[end_a - run[0]:end_a], outs[end_b - run[1]:end_b]))
        end_a, end_b = end_a - run[0], end_b - run[1]
    if (a < end_a) != (b < end_b):
        raise Unprunable("its input and output dimensions could not be matched")
    middle = [(ins[a:end_a], outs[b:end_b])] if a < end_a else []
    return front + middle + back


def _run(in_shape: list[Dim], ins: list[int], out_shape: list[Dim], outs: list[int]) -> tuple[int, int] | None:
    """How many of ``ins`` and ``outs`` (in the order given) form the first run with equal products, or None
    where that depends on a symbolic size (one symbolic size on both sides, the same, is a run)."""
    p, q = in_shape[ins[0]], out_shape[outs[0]]
    if isinstance(p, str) and p == q:
        return 1, 1
    if not isinstance(p, int) or not isinstance(q, int):
        return None
    count_in = count_out = 1
    while p != q:
        if p < q and count_in < len(ins) and isinstance(in_shape[ins[count_in]], int):
            p *= in_shape[ins[count_in]]
            count_in += 1
        elif q < p and count_out < len(outs) and isinstance(out_shape[outs[count_out]], int):
            q *= out_shape[outs[count_out]]
            count_out += 1
        else:
            return None
    return count_in, count_out


class ReshapeRule(Rule):
    op_types = ("Reshape",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        try:
            self._analyse(node, ctx, x)
        except Unprunable as exc:
            if ctx.const(node.inputs[1]) is None:  # the likelier cause, and what the user can change
                raise Unprunable("its target shape is computed at run time") from exc
            raise

    def _analyse(self, node: gs.Node, ctx: ChannelContext, x: ChannelTensor) -> None:
        in_shape, out_shape = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
        if out_shape is None or x.size == 1:
            raise Unprunable("its output shape is unknown after shape inference")
        for block_in, block_out in _blocks(list(in_shape), list(out_shape)):
            if x.axis not in block_in:
                continue
            if block_in == [x.axis] and len(block_out) > 1:
                read = _channel_axes_read(node.outputs[0])
                if len(read) == 1 and read <= set(block_out):
                    axis = read.pop()
                elif node.name in ctx.head_dims:  # traced again within the heads (see groups.analyse_graph)
                    axis = block_out[-1]
                else:
                    axis = block_out[-2]
                    if not read and len(block_out) >= 3 and _selected_along(node.outputs[0], axis):
                        axis = block_out[-3]  # BLOOM's fused [.., heads, 3, head size]: q, k and v picked along the 3
                    ctx.head_splits[node.name] = node.outputs[0].name
                self._split_channels(node, ctx, x, [out_shape[j] for j in block_out], block_out, axis)
                return
            if self._groups(node, ctx, x, block_in, block_out, out_shape):
                return
            if len(block_out) != 1 and self._within_merged_heads(node, ctx, x, block_in, block_out, out_shape):
                return
            if len(block_out) != 1:
                raise Unprunable("it spreads the channel axis over several axes (other than into attention heads "
                                 "or normalisation groups)")
            position = block_in.index(x.axis)
            outer = int(np.prod(_static([in_shape[i] for i in block_in[:position]], "leading")))
            inner = int(np.prod(_static([in_shape[i] for i in block_in[position + 1:]], "trailing")))
            _couple_flattened(ctx, x, node.outputs[0], block_out[0], inner, outer)
            self._follow_target(node, ctx)
            return
        raise Unprunable("its channel axis could not be matched to an output axis")

    def _groups(self, node: gs.Node, ctx: ChannelContext, x: ChannelTensor, block_in: list[int], block_out: list[int],
                out_shape: list[Dim]) -> bool:
        """A block that starts at the channel axis, merged and split again with a first axis that divides the
        channels or is a multiple of them: each output index along it holds whole channels (a group, as in
        PyTorch's GroupNorm export [N, C, H, W] -> [N, G, -1] before its InstanceNormalization) or a part of
        one channel (the way back). Groups become channels tied to their C / G input channels, so whole groups
        go (which leaves the others' statistics as they were). Returns whether ``node`` is such a reshape."""
        if block_in[0] != x.axis or len(block_in) < 2 or len(block_out) < 2 or not isinstance(out_shape[block_out[0]], int):
            return False
        first = int(out_shape[block_out[0]])
        if first < x.size and x.size % first == 0:
            y = ctx.declare(node.outputs[0], block_out[0], first)  # into groups
            ctx.couple(x.slots, y.slots[np.arange(x.size) // (x.size // first)])
        elif first > x.size and first % x.size == 0:
            y = ctx.declare(node.outputs[0], block_out[0], first)  # back from groups
            ctx.couple(x.slots[np.arange(first) // (first // x.size)], y.slots)
        else:
            return False
        self._follow_target(node, ctx)
        return True

    def _within_merged_heads(self, node: gs.Node, ctx: ChannelContext, x: ChannelTensor, block_in: list[int],
                             block_out: list[int], out_shape: list[Dim]) -> bool:
        """[.., N, heads x D] -> [.., N x heads, D], a block that ends with the channel axis and whose last output
        axis divides it (PyTorch's ``multi_head_attention_forward`` views its projections so, merging the batch
        with the heads), or the way back, where the channel axis divides the last output axis: the output's
        channel i is the input's channel i mod D (a reshape keeps the innermost order), so the dimensions
        within the heads are the channels, the same ones in every head. Returns whether ``node`` is such a
        reshape."""
        last = out_shape[block_out[-1]]
        if block_in[-1] != x.axis or len(block_in) < 2 or not isinstance(last, int) or last <= 1 or last == x.size:
            return False
        longer = max(last, x.size)
        if longer % min(last, x.size):
            return False
        y = ctx.declare(node.outputs[0], block_out[-1], last)
        ctx.couple(x.slots[np.arange(longer) % x.size], y.slots[np.arange(longer) % last])
        self._follow_target(node, ctx)
        return True

    def _split_channels(self, node: gs.Node, ctx: ChannelContext, x: ChannelTensor, sizes: list[Dim],
                        block: list[int], axis: int) -> None:
        """[.., C] -> [.., a, b, ..] (the output axes ``block``, of ``sizes``): the output axis ``axis`` carries
        the channels, each tied to the input channels whose index has it as that axis' digit. Where the
        consumers read channels on one of these axes (through Transposes), that one: a dense layer's output
        reshaped into a feature map (a decoder), [N, C x H x W] -> [N, C, H, W], or Keras' [N, H, W, C] moved to
        NCHW. Otherwise [.., (3,) heads, head size] (an attention's query, key and value): the heads. Other
        splits ([.., C] -> [.., C, 4, 4] read as a sequence, say) then put the channels on an axis their
        consumers do not read channels from, which pins them."""
        sizes = _static(sizes, "split")
        if int(np.prod(sizes)) != x.size:
            raise Unprunable("its split sizes do not multiply to the channel count")
        position = block.index(axis)
        inner = int(np.prod(sizes[position + 1:]))
        y = ctx.declare(node.outputs[0], axis, sizes[position])
        ctx.couple(x.slots, y.slots[(np.arange(x.size) // inner) % sizes[position]])
        self._follow_target(node, ctx)

    def _follow_target(self, node: gs.Node, ctx: ChannelContext) -> None:
        """A constant target is rewritten with the kept count. One computed at run time must get the output's
        channel count from a constant that only it reads (rewritten too: onnxsim's Reshape back to 3-D after
        the Gemm it makes of a MatMul, Concat(Shape(x)[:2], [C])), or read it off a tensor with the same
        channels (PyTorch's GroupNorm export with a dynamic image size reshapes back to Shape(x)), which then
        keeps it right; its other entries must not count channels."""
        if ctx.const(node.inputs[1]) is not None:
            ctx.add_rewrite(self, node)
            return
        y = ctx.channel(node.outputs[0])
        for position in range(len(node.outputs[0].shape)):
            other = shape_entry(node, 1, position) if position != y.axis else None
            read = ctx.channel(other.tensor) if isinstance(other, SizeOf) else None
            if position != y.axis and (other is None or read is not None and read.axis == other.axis):
                raise Unprunable("its target shape is computed at run time")  # it may count other channels
        entry = shape_entry(node, 1, y.axis)
        if isinstance(entry, ConstantEntry) and entry_value(entry) in (y.size, -1):
            ctx.add_rewrite(self, node)
        elif not ctx.follow_size(entry, y):
            raise Unprunable("its target shape is computed at run time")

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        y = view.channel(node.outputs[0].name)
        entry = shape_entry(node, 1, y.axis)
        if entry_value(entry) > 0:  # -1 infers the kept count itself
            view.replace_entry(entry, len(view.kept(y.name)))


def _selected_along(tensor: gs.Tensor, axis: int) -> bool:
    """Whether every op reading ``tensor`` picks parts along ``axis``: a Gather of one index there, a Slice
    of that axis alone (Falcon's fused [.., key/value heads, queries per head + 2, head size] takes the
    queries as [..., :-2, :]) or a Split of it."""
    rank = len(tensor.shape)

    def picks(node: gs.Node) -> bool:
        if node.inputs[0] is not tensor:
            return False
        if node.op == "Gather":
            return (int(node.attrs.get("axis", 0)) % rank == axis and isinstance(node.inputs[1], gs.Constant)
                    and node.inputs[1].values.size == 1)
        if node.op == "Split":  # ONNX Runtime fuses those Gathers and Slices into one Split
            return int(node.attrs.get("axis", 0)) % rank == axis
        axes = node.inputs[3] if node.op == "Slice" and len(node.inputs) > 3 else None
        return (isinstance(axes, gs.Constant) and axes.values.size == 1
                and int(np.asarray(axes.values).reshape(-1)[0]) % rank == axis)

    return bool(tensor.outputs) and all(picks(node) for node in tensor.outputs)


# Ops that read channels on axis 1 of their first input, and elementwise ops that pass a tensor's axes on
# (a QDQ model quantizes a decoder's reshaped dense output before its transposed conv reads it).
_READS_AXIS_1 = ("Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization")
_KEEPS_AXES = ("Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "HardSwish", "Clip",
               "Identity", "Softplus", "Mish", "Gelu", "QuantizeLinear", "DequantizeLinear")


def _channel_axes_read(tensor: gs.Tensor, depth: int = 0) -> set[int]:
    """The axes of ``tensor`` that the ops reading it read channels from: axis 1 for a Conv or a
    normalisation, through Transposes and unary elementwise ops (a few levels deep)."""
    axes: set[int] = set()
    for node in tensor.outputs if depth < 8 else []:
        if node.op in _READS_AXIS_1 and node.inputs[0] is tensor:
            axes.add(1)
        elif node.op == "Transpose":
            rank = len(tensor.shape) if tensor.shape is not None else 0
            perm = list(node.attrs.get("perm", range(rank)[::-1]))
            axes |= {perm[a] for a in _channel_axes_read(node.outputs[0], depth + 1) if a < len(perm)}
        elif node.op in _KEEPS_AXES and node.inputs[0] is tensor:
            axes |= _channel_axes_read(node.outputs[0], depth + 1)
        elif node.op == "Reshape" and node.inputs[0] is tensor:
            axes |= _axes_kept_whole(node, _channel_axes_read(node.outputs[0], depth + 1))
    return axes


def _axes_kept_whole(reshape: gs.Node, out_axes: set[int]) -> set[int]:
    """The input axes of ``reshape`` that reach ``out_axes`` of its output unchanged, each on its own (a
    pixel shuffle's [N, C, H, b, W, b] -> [N, C, H x b, W x b] keeps axis 1)."""
    in_shape, out_shape = reshape.inputs[0].shape, reshape.outputs[0].shape
    if not out_axes or in_shape is None or out_shape is None:
        return set()
    try:
        blocks = _blocks(list(in_shape), list(out_shape))
    except Unprunable:
        return set()
    return {block_in[0] for block_in, block_out in blocks if len(block_in) == len(block_out) == 1 and block_out[0] in out_axes}


class TransposeRule(Rule):
    op_types = ("Transpose",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        perm = list(node.attrs.get("perm", range(ctx.rank(node.inputs[0]) - 1, -1, -1)))
        ctx.same_channels(node.outputs[0], x, axis=perm.index(x.axis))


class SqueezeRule(Rule):
    op_types = ("Squeeze", "Unsqueeze")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        axes = ctx.int_attr_or_input(node, "axes", 1)
        if node.op == "Squeeze":
            shape = ctx.shape(node.inputs[0])
            rank = len(shape)
            squeezed = {int(a) % rank for a in axes} if axes is not None else {i for i, d in enumerate(shape) if d == 1}
            if x.axis in squeezed:
                raise Unprunable("it removes the channel axis")
            new_axis = x.axis - sum(a < x.axis for a in squeezed)
        else:
            rank = ctx.rank(node.outputs[0])
            inserted = sorted(int(a) % rank for a in axes)
            kept_positions = [i for i in range(rank) if i not in inserted]
            new_axis = kept_positions[x.axis]
        ctx.same_channels(node.outputs[0], x, axis=new_axis)


class DepthSpaceRule(Rule):
    op_types = ("DepthToSpace", "SpaceToDepth")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        if x.axis != 1:
            raise Unprunable("it moves its channel axis into space")
        block = int(node.attrs["blocksize"]) ** 2
        if node.op == "SpaceToDepth":  # output channel k * C + c holds a block position of input channel c
            y = ctx.declare(node.outputs[0], 1, x.size * block)
            ctx.couple(x.slots[np.arange(y.size) % x.size], y.slots)
            return
        if x.size % block:
            raise Unprunable(f"its {x.size} channels are not a multiple of blocksize^2 = {block}")
        y = ctx.declare(node.outputs[0], 1, x.size // block)
        if node.attrs.get("mode", "DCR") == "CRD":  # output channel c of input channels c * b^2 .. (c + 1) * b^2 - 1
            ctx.couple(x.slots, y.slots[np.arange(x.size) // block])
        else:  # DCR: output channel c of input channels c, c + C / b^2, c + 2 C / b^2, ..
            ctx.couple(x.slots, y.slots[np.arange(x.size) % y.size])


class ShapeRule(Rule):
    """Shape reads only the dimensions; its output carries no channels."""

    op_types = ("Shape",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        return


class ExpandRule(Rule):
    """Expand broadcasts to a shape: channels stay, on their axis moved right by the ranks it adds
    (``y.expand_as(x)`` in a squeeze-excite block). The shape's entry for the channel axis must follow the
    kept count: a constant one (in the shape, or in the constant part of a Concat that builds it) becomes
    1, which takes the input's size; a shape read off a tensor with the same channels follows them."""

    op_types = ("Expand",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        axis = x.axis + ctx.rank(node.outputs[0]) - ctx.rank(node.inputs[0])
        size = ctx.shape(node.outputs[0])[axis]
        if not isinstance(size, int):
            raise Unprunable("its output's channel count is unknown after shape inference")
        if size != x.size:
            raise Unprunable("it broadcasts a single channel")
        y = ctx.same_channels(node.outputs[0], x, axis)
        entry = expand_shape_entry(node, axis)
        if isinstance(entry, SizeOf) and not ctx.follow_size(entry, y):
            raise Unprunable(f"its shape is read off '{entry.tensor.name}', whose channels are not its input's")
        if isinstance(entry, ConstantEntry):
            ctx.add_rewrite(self, node)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        view.replace_entry(expand_shape_entry(node, view.channel(node.outputs[0].name).axis), 1)


def entry_value(entry: ConstantEntry) -> int:
    return int(np.asarray(entry.node.inputs[entry.index].values).reshape(-1)[entry.position])


def expand_shape_entry(node: gs.Node, axis: int) -> SizeOf | ConstantEntry | None:
    """Where an Expand's shape gets its size for output axis ``axis`` (see ``shape_entry``); None where the
    shape is too short to reach it."""
    shape = node.inputs[1]
    if shape.shape is None or not isinstance(shape.shape[0], int):
        raise Unprunable("the length of its shape is unknown")
    position = axis - (len(node.outputs[0].shape) - shape.shape[0])
    if position < 0:
        return None
    entry = shape_entry(node, 1, position)
    if entry is None:
        values = shape_values(shape)
        if values is not None and position < len(values) and values[position] == 1:
            return None  # 1 at run time, however computed: the input's size (MPNet's expand(n, -1, t, t))
        raise Unprunable("the size of its channel axis is computed at run time")
    return entry


class TileRule(Rule):
    """Tile repeats whole axes: channels stay where the channel axis is repeated once (the repeats may be
    computed at run time: a per-head bias tiled to the batch, [N, 1, 1, 1])."""

    op_types = ("Tile",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        if not tiled_once(node, x.axis):
            raise Unprunable("it repeats the channel axis, or a number of times computed at run time")
        ctx.same_channels(node.outputs[0], x)


def tiled_once(node: gs.Node, axis: int) -> bool:
    """Whether the Tile ``node`` repeats ``axis`` once (its repeats followed where computed at run time)."""
    repeats = shape_values(node.inputs[1])
    return repeats is not None and axis < len(repeats) and repeats[axis] == 1
