"""Max unpooling as PyTorch's dynamo exporter writes it (``nn.MaxUnpool2d``, SegNet's decoder): no MaxUnpool
node, but a scatter into a flat tensor of zeros.

    offsets = Reshape(Range(0, N * C, 1), [-1, C, 1, 1]) * (H * W)   (a constant when the batch is static)
    flat    = ScatterND(Reshape(ConstantOfShape([N, C, H, W]), [-1]),
                        Unsqueeze(Reshape(local indices + offsets, [-1]), [-1]),
                        Reshape(values, [-1]))
    output  = Reshape(flat, [N, C, H, W])

Each channel's values land in its own channel's plane (the local indices are positions within a plane, see
``PoolRule``), so values, indices and output keep one set of channels, even though the nodes between them
flatten the channel axis with the others: the whole pattern is one rule (``find_scatter_unpools`` claims
its nodes), and every constant that names the channel count is rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.model import constant_value
from onnxprune.rules.base import ChannelContext, ConstantEntry, RewriteView, Rule, shape_entry
from onnxprune.rules.shape import entry_value


@dataclass
class _Parts:
    """The nodes of one matched pattern that hold the channel count."""

    values: gs.Tensor
    local: gs.Tensor
    add: gs.Node
    offsets_index: int  # the Add's input that holds the offsets
    zeros: gs.Node | None  # the ConstantOfShape; None where the flat zeros are a constant (folded)
    scatter: gs.Node
    output: gs.Node  # the final Reshape
    plane: int
    computed: _RangeOffsets | None = None  # None where the offsets are a constant


@dataclass
class _RangeOffsets:
    """Offsets computed as Mul(Reshape(Range(0, Mul(N, C), 1), [-1, C, 1, 1]), plane). The exporter shares the
    Range's part between unpoolings with one channel count; the rewrite copies it for each."""

    scale: gs.Node  # the Mul by the plane
    scale_index: int  # its input that is the Reshape's output
    shape: gs.Node  # the Reshape to [-1, C, 1, 1]
    arange: gs.Node
    count: gs.Node  # Mul(N, C), the Range's limit
    count_index: int  # its input that holds C

    def count_entry(self) -> ConstantEntry:
        """C in the Range's limit, as read through the scale's Mul (so a shared chain is copied first)."""
        via = ((self.scale, self.scale_index), (self.shape, 0), (self.arange, 1))
        return ConstantEntry(self.count, self.count_index, 0, via=via)


class ScatterUnpoolRule(Rule):
    """One matched pattern (see the module docstring); ``analyse`` runs on each of its nodes and acts on the
    last, the final Reshape."""

    op_types = ()

    def __init__(self, parts: _Parts) -> None:
        self.parts = parts

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        parts = self.parts
        if node is not parts.output:
            return  # a node inside the pattern: the channels are handled at its end
        values, local = ctx.channel(parts.values), ctx.channel(parts.local)
        if values is None and local is None:
            return
        agree = values is not None and local is not None and values.axis == local.axis == 1
        if not agree or values.size != local.size or values.size != _channel_count(parts):
            # (the nodes between do nothing, so the channels that reach the pattern are pinned here)
            for channel in (values, local):
                if channel is not None:
                    ctx.pin(channel, f"the max unpooling that ends at Reshape node '{node.name}' has values, indices "
                                     "and shapes that do not agree on the channels")
            return
        ctx.couple(values.slots, local.slots)
        ctx.same_channels(node.outputs[0], values)
        ctx.add_rewrite(self, node)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        parts = self.parts
        kept = len(view.kept(parts.values.name))
        view.replace_entry(shape_entry(parts.output, 1, 1), kept)
        if parts.zeros is not None:
            view.replace_entry(shape_entry(parts.zeros, 0, 1), kept)
        else:
            old = parts.scatter.inputs[0]
            channels = view.channel(parts.values.name).size
            view.replace_input(parts.scatter, 0, np.zeros(old.shape[0] // channels * kept, old.dtype))
        if parts.computed is not None:
            computed = parts.computed
            view.replace_entry(computed.count_entry(), kept)
            # (the Reshape that the scale reads now: a copy, where another unpooling shared it)
            view.replace_entry(shape_entry(computed.scale.inputs[computed.scale_index].inputs[0], 1, 1), kept)
        else:
            old = np.asarray(constant_value(parts.add.inputs[parts.offsets_index]))
            view.replace_input(parts.add, parts.offsets_index, _offsets(old.shape[0], kept, parts.plane, old.dtype))


def find_scatter_unpools(graph: gs.Graph) -> dict[str, Rule]:
    """The rule of every node of every scatter unpooling in ``graph``, by node name."""
    claimed: dict[str, Rule] = {}
    for node in graph.nodes:
        if node.op != "ScatterND":
            continue
        matched = _match(node)
        if matched is not None:
            parts, nodes = matched
            rule = ScatterUnpoolRule(parts)
            claimed.update((n.name, rule) for n in nodes)
    return claimed


def _match(scatter: gs.Node) -> tuple[_Parts, list[gs.Node]] | None:
    """The parts of the pattern around ``scatter`` and the nodes that carry its channels, or None."""
    data, indices, updates = (scatter.inputs + [None] * 3)[:3]
    output = _only_reader(scatter.outputs[0], "Reshape")
    flat_zeros, flat_values = _producer(data, "Reshape"), _producer(updates, "Reshape")
    zeros = _producer(flat_zeros.inputs[0], "ConstantOfShape") if flat_zeros is not None else None
    folded = zeros is None and _folded_zeros(data)
    column = _producer(indices, "Unsqueeze")
    if column is not None and _ints(column.inputs[1] if len(column.inputs) > 1 else None,
                                    column.attrs.get("axes")) not in ([-1], [1]):
        column = None
    flat_indices = _producer(column.inputs[0], "Reshape") if column is not None else None
    add = _producer(flat_indices.inputs[0], "Add") if flat_indices is not None else None
    flats = [n for n in (flat_zeros, flat_values, flat_indices) if not (folded and n is flat_zeros)]
    if any(n is None for n in (output, flat_values, add)) or (zeros is None and not folded):
        return None
    if not all(map(_flattens, flats)):
        return None
    values = flat_values.inputs[0]
    shape = _shape_of(output)
    if values.shape is None or len(values.shape) != 4 or shape is None:
        return None
    plane = shape[2] * shape[3]
    nodes = [n for n in (zeros, flat_zeros) if n is not None]
    nodes += [flat_values, column, flat_indices, add, scatter, output]
    if folded and not (isinstance(values.shape[0], int) and data.shape[0] == values.shape[0] * shape[1] * plane):
        return None  # (constant zeros come with a static batch)
    for offsets_index in (0, 1):
        local, offsets = add.inputs[1 - offsets_index], add.inputs[offsets_index]
        parts = _Parts(values, local, add, offsets_index, zeros, scatter, output, plane)
        constant = constant_value(offsets)
        if constant is not None and _is_offsets(np.asarray(constant), shape[1], plane):
            return (parts, nodes) if _closed(nodes) else None
        parts.computed = _computed_offsets(offsets, plane)
        if parts.computed is not None:
            return (parts, nodes) if _closed(nodes) else None
    return None


def _closed(nodes: list[gs.Node]) -> bool:
    """Whether only the last of ``nodes`` has outputs that other nodes read: what the pattern changes in
    size or value (a flat tensor, the channel count) reaches nothing else."""
    inside = {id(n) for n in nodes}
    return all(id(reader) in inside for n in nodes[:-1] for t in n.outputs for reader in t.outputs)


def _computed_offsets(offsets: gs.Tensor, plane: int) -> _RangeOffsets | None:
    """How ``offsets`` is computed, where it is Reshape(Range(0, N * C, 1), [-1, C, 1, 1]) * plane (products in
    either order); else None."""
    scale = _producer(offsets, "Mul")
    if scale is None:
        return None
    for index in (0, 1):
        factor = constant_value(scale.inputs[1 - index])
        reshape = _producer(scale.inputs[index], "Reshape")
        if factor is None or np.asarray(factor).size != 1 or int(np.asarray(factor).reshape(-1)[0]) != plane:
            continue
        arange = _producer(reshape.inputs[0], "Range") if reshape is not None else None
        target = constant_value(reshape.inputs[1]) if reshape is not None else None
        if arange is None or target is None or len(target) != 4 or list(target[2:]) != [1, 1]:
            continue
        count = _producer(arange.inputs[1], "Mul")
        if _ints(arange.inputs[0]) != [0] or _ints(arange.inputs[2]) != [1] or count is None:
            continue
        for count_index in (0, 1):
            if _ints(count.inputs[count_index]) == [int(target[1])]:
                return _RangeOffsets(scale, index, reshape, arange, count, count_index)
    return None


def _channel_count(parts: _Parts) -> int | None:
    """The channel count that every shape of the pattern names, or None where they differ."""
    entries = [shape_entry(parts.output, 1, 1)] + ([shape_entry(parts.zeros, 0, 1)] if parts.zeros is not None else [])
    if parts.computed is not None:
        entries += [shape_entry(parts.computed.shape, 1, 1), parts.computed.count_entry()]
    counts = set()
    for entry in entries:
        if not isinstance(entry, ConstantEntry):
            return None
        counts.add(entry_value(entry))
    return counts.pop() if len(counts) == 1 else None


def _ints(tensor: gs.Tensor | None, attribute: list | None = None) -> list[int] | None:
    """A constant's (or else ``attribute``'s) values as a flat list of ints; None where neither is known."""
    values = constant_value(tensor) if tensor is not None else None
    if values is None:
        values = attribute
    return None if values is None else [int(v) for v in np.asarray(values).reshape(-1)]


def _offsets(batch: int, channels: int, plane: int, dtype: np.dtype) -> np.ndarray:
    """Where each (sample, channel) plane starts in the flat output: [batch, channels, 1, 1]."""
    return (np.arange(batch * channels).reshape(batch, channels, 1, 1) * plane).astype(dtype)


def _is_offsets(values: np.ndarray, channels: int, plane: int) -> bool:
    return (values.ndim == 4 and values.shape[1:] == (channels, 1, 1)
            and np.array_equal(values, _offsets(values.shape[0], channels, plane, values.dtype)))


def _shape_of(reshape: gs.Node) -> list[int] | None:
    """The constant [N or -1, C, H, W] target of the final Reshape, with H and W known."""
    target = constant_value(reshape.inputs[1])
    if target is None or len(target) != 4 or any(int(d) <= 0 for d in target[1:]):
        return None
    return [int(d) for d in target]


def _folded_zeros(data: gs.Tensor) -> bool:
    """Whether ``data`` is a 1-D constant of zeros (the exporter folded a static shape's ConstantOfShape)."""
    values = constant_value(data)
    return values is not None and values.ndim == 1 and not values.any()


def _flattens(reshape: gs.Node) -> bool:
    return _ints(reshape.inputs[1]) == [-1]


def _producer(tensor: gs.Tensor | None, op: str) -> gs.Node | None:
    if tensor is None or len(tensor.inputs) != 1 or tensor.inputs[0].op != op:
        return None
    return tensor.inputs[0]


def _only_reader(tensor: gs.Tensor, op: str) -> gs.Node | None:
    return tensor.outputs[0] if len(tensor.outputs) == 1 and tensor.outputs[0].op == op else None
