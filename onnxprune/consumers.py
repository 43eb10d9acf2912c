"""Weighted consumers of channels: the Conv, Gemm, MatMul, Einsum and recurrent (RNN, GRU, LSTM) nodes
whose weights read a tensor's channels.

Activation criteria weigh a channel by what its consumers do with it, and compensation rewrites those
consumers' weights, so both need the same view: the consumer's input tensor, its weight, and which
weight axis holds the input channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.groups import Analysis
from onnxprune.model import param_values
from onnxprune.rules import ChannelTensor
from onnxprune.rules.base import ParamSlice
from onnxprune.rules.recurrent import RECURRENT_OPS

CONSUMER_OPS = ("Conv", "Gemm", "MatMul", "Einsum", *RECURRENT_OPS)


@dataclass(frozen=True)
class Consumer:
    """A weighted node reading ``source``'s channels through weight axis ``weight.axis``."""

    node: gs.Node
    source: ChannelTensor
    weight: ParamSlice
    out_weight: ParamSlice | None

    def matrix(self) -> np.ndarray:
        """The weight as [rows, input channels]: rows are (output channel, kernel tap) pairs."""
        values = param_values(self.weight.node, self.weight.input_index).astype(np.float64)
        # Conv [O, C, *K] -> [O, *K, C]; Gemm/MatMul/Einsum [C, O] or [O, C] -> [O, C]: output channel first;
        # recurrent W [directions, gates x hidden, C] -> [directions x gates x hidden, C].
        return np.moveaxis(values, self.weight.axis, -1).reshape(-1, values.shape[self.weight.axis])

    def out_channels(self) -> int:
        """The node's output channel count (a recurrent node's: the rows of its input projection)."""
        shape = self.weight.node.inputs[self.weight.input_index].shape
        if self.recurrent:
            return int(shape[0]) * int(shape[1])
        out_axis = 1 if self.weight.axis == 0 else 0
        return int(shape[out_axis])

    @property
    def recurrent(self) -> bool:
        """An RNN, GRU or LSTM: its bias is input 3, [directions, 2 x gates x hidden], W's part first."""
        return self.node.op in RECURRENT_OPS

    @property
    def bias_index(self) -> int:
        """The input that holds (or would hold) the node's bias."""
        return 3 if self.recurrent else 2

    def directions(self) -> int:
        """A recurrent node's directions (1 for other nodes)."""
        return int(self.weight.node.inputs[self.weight.input_index].shape[0]) if self.recurrent else 1

    def store_dtype(self) -> np.dtype:
        """The dtype the node computes in (a Cast or a DequantizeLinear in front of a stored weight sets it)."""
        holder = self.weight.node
        if holder is self.node:
            return self.node.inputs[self.weight.input_index].values.dtype
        if holder.op == "DequantizeLinear":
            return np.dtype(holder.inputs[1].values.dtype)
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(holder.attrs["to"])))


def find_consumers(analysis: Analysis) -> list[Consumer]:
    """Every Conv (group 1), Gemm, MatMul, Einsum and recurrent node whose weight is sliced along its input channels."""
    ctx = analysis.context
    by_owner: dict[int, list[ParamSlice]] = {}
    for param in ctx.params:
        owner = param.owner or param.node
        if owner.op in CONSUMER_OPS and param.scored:
            by_owner.setdefault(id(owner), []).append(param)
    consumers = []
    for params in by_owner.values():
        node = params[0].owner or params[0].node
        if node.op == "Conv" and int(node.attrs.get("group", 1)) != 1:
            continue
        in_name = ctx.node_io.get(node.name, (None, None))[0]
        source = ctx.channels.get(in_name) if in_name else None
        if source is None:
            continue
        weight = next((p for p in params if np.array_equal(p.slots, source.slots)), None)
        if weight is None:
            continue
        # The same weight's other channel axis (a recurrent node's R reads its hidden units too).
        out_weight = next((p for p in params if p is not weight and p.node is weight.node
                           and p.input_index == weight.input_index), None)
        consumers.append(Consumer(node, source, weight, out_weight))
    return consumers


def consumer_levels(analysis: Analysis, consumers: list[Consumer], most: int) -> list[list[list[str]]]:
    """The consumers' input tensors grouped by depth: level k holds the inputs of consumers that have
    k weighted consumers upstream of them. Beyond ``most`` levels, neighbouring levels are merged: the
    result is ``most`` (or fewer) groups of consecutive levels, each a list of levels."""
    depth: dict[str, int] = {}
    weighted = {id(c.node) for c in consumers}
    for node in analysis.graph.nodes:  # topologically sorted
        level = max((depth.get(t.name, 0) for t in node.inputs), default=0)
        for tensor in node.outputs:
            depth[tensor.name] = level + (1 if id(node) in weighted else 0)
    by_level: dict[int, list[str]] = {}
    for name in dict.fromkeys(c.source.name for c in consumers):
        by_level.setdefault(depth.get(name, 0), []).append(name)
    levels = [by_level[k] for k in sorted(by_level)]
    if len(levels) <= most:
        return [[level] for level in levels]
    bounds = np.linspace(0, len(levels), most + 1).round().astype(int)
    return [levels[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
