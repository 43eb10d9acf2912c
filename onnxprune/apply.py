"""Execute a plan on the analysed graph: slice parameters and let rules fix attributes and shape constants."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.groups import Analysis
from onnxprune.model import read_values, replace_constant
from onnxprune.plan import Plan
from onnxprune.rules import ChannelTensor
from onnxprune.rules.base import ConstantEntry


@dataclass(frozen=True)
class NodeChange:
    """Removed indices on a node's input-channel and output-channel axes, in the original numbering."""

    name: str
    op_type: str
    in_removed: tuple[int, ...]
    out_removed: tuple[int, ...]


class _Rewriter:
    """The RewriteView handed to rules: kept channels per tensor, and safe constant replacement."""

    def __init__(self, analysis: Analysis, slot_removed: np.ndarray) -> None:
        self.opset = analysis.context.opset
        self._graph = analysis.graph
        self._channels = analysis.context.channels
        self._slot_removed = slot_removed

    def channel(self, name: str) -> ChannelTensor:
        return self._channels[name]

    def kept(self, name: str) -> np.ndarray:
        return np.nonzero(~self._slot_removed[self._channels[name].slots])[0]

    def removed(self, name: str | None) -> tuple[int, ...]:
        if name is None:
            return ()
        return tuple(int(i) for i in np.nonzero(self._slot_removed[self._channels[name].slots])[0])

    replace_input = staticmethod(replace_constant)

    def replace_entry(self, entry: ConstantEntry, value: int) -> None:
        chain = [*entry.via, (entry.node, entry.index)]  # from the reader of the shape down to the constant
        reader, index = chain[0]
        for step, step_index in chain[1:]:
            tensor = reader.inputs[index]  # made by ``step``
            if len(tensor.outputs) > 1:  # onnxsim shares one shape computation among the reshapes of q, k and v
                fresh = gs.Variable(f"{tensor.name}__{reader.name}", dtype=tensor.dtype, shape=tensor.shape)
                step = gs.Node(step.op, f"{step.name}__{reader.name}", dict(step.attrs), list(step.inputs), [fresh],
                               domain=step.domain)
                self._graph.nodes.append(step)
                reader.inputs[index] = fresh
            reader, index = step, step_index
        values = np.array(read_values(reader.inputs[index]))
        values.reshape(-1)[entry.position] = value
        replace_constant(reader, index, values)


def apply_plan(analysis: Analysis, plan: Plan) -> list[NodeChange]:
    """Remove the plan's channels from ``analysis.graph`` in place.

    Returns:
        One NodeChange for every node whose parameters were sliced, or whose inputs lost channels that it
        multiplies over (a MatMul of two activations, which has no parameters).
    """
    ctx = analysis.context
    removed_units = plan.removed_units(analysis)
    slot_removed = np.isin(analysis.unit_of_slot, removed_units)
    rewriter = _Rewriter(analysis, slot_removed)
    sliced_nodes = _slice_parameters(analysis, slot_removed, rewriter)
    for rule, node in ctx.rewrites:
        rule.rewrite(node, rewriter)
    analysis.graph.cleanup(remove_unused_graph_inputs=False).toposort()
    sliced_names = {node.name for node in sliced_nodes}
    changes = []
    for node in sliced_nodes + [n for n in analysis.graph.nodes if n.name in ctx.node_io and n.name not in sliced_names]:
        in_name, out_name = ctx.node_io.get(node.name, (None, None))
        change = NodeChange(node.name, node.op, rewriter.removed(in_name), rewriter.removed(out_name))
        if node.name in sliced_names or change.in_removed or change.out_removed:
            changes.append(change)
    return changes


def _slice_parameters(analysis: Analysis, slot_removed: np.ndarray, rewriter: _Rewriter) -> list[gs.Node]:
    by_input: dict[tuple[int, int], list] = defaultdict(list)
    for param in analysis.context.params:
        by_input[(id(param.node), param.input_index)].append(param)
    sliced: dict[int, gs.Node] = {}
    for params in by_input.values():
        node, index = params[0].node, params[0].input_index
        values = None
        for param in params:
            keep = ~slot_removed[param.slots]
            if keep.all():
                continue
            values = read_values(node.inputs[index]) if values is None else values
            values = np.take(values, np.nonzero(keep)[0], axis=param.axis)
        if values is not None:
            rewriter.replace_input(node, index, values)
            owner = params[0].owner or node
            sliced[id(owner)] = owner
    return list(sliced.values())
