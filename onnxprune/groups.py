"""Channel dependency groups: walk the graph through the rules, then join coupled channels.

Slots joined by couplings form *units*: the smallest sets of channels that can be removed at all (a
residual Add's input and output channel i, a Flatten's block of features, ...). Units that share a
tensor form a *group*. Within a group, units touching exactly the same tensors form a *segment*
(the part of a Concat that came from one input); each segment keeps a multiple of the rounding unit,
so every tensor does. Pinned channels keep their units, not their whole group: a group is pinned where
all of its units are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules import ChannelContext, ChannelTensor, RuleRegistry, Unprunable, claimed_nodes


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be removed together, and whether they can be removed at all."""

    index: int
    members: tuple[ChannelTensor, ...]
    units: np.ndarray
    segments: tuple[np.ndarray, ...]
    nodes: tuple[str, ...]
    pinned_reason: str | None
    # Channels per unit in the weight that has fewest of them: 1 for a conv channel, the head size for an
    # attention head (whose weights hold head-size columns per head).
    unit_width: int = 1
    # Channels of the group's tensors that always stay, outside ``units`` (pinned ones: a model input or a
    # constant that a Concat joins to prunable channels), and why (the first pin's reason).
    fixed: int = 0
    fixed_reason: str | None = None

    @property
    def channels(self) -> int:
        """How many removable units (channels) the group has."""
        return len(self.units)


# Ops of quantized models in the operator format, whose integer weights onnxprune does not slice (it
# prunes the QDQ format: QuantizeLinear and DequantizeLinear around float ops, and writes most of these so
# on load, see ``qoperator.py``; those left are the ones it could not).
QUANTIZED_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                 "QLinearConcat", "QLinearGlobalAveragePool", "QLinearSigmoid"}


@dataclass
class Analysis:
    """The traced channels of one graph and the groups they form."""

    graph: gs.Graph
    context: ChannelContext
    unit_of_slot: np.ndarray
    groups: list[ChannelGroup]
    # Factors from MACs with symbolic sizes as 1 to MACs at real sizes, by node output (stats.mac_scales).
    mac_scales: dict[str, float] = field(default_factory=dict)

    @property
    def unit_count(self) -> int:
        return int(self.unit_of_slot.max()) + 1 if self.unit_of_slot.size else 0

    def why_nothing_is_prunable(self) -> str | None:
        """Why no group can be pruned, where the groups themselves do not say it (None otherwise)."""
        if any(group.pinned_reason is None for group in self.groups):
            return None
        quantized = sorted({node.op for node in self.graph.nodes} & QUANTIZED_OPS)
        if quantized:
            return (f"the model is quantized ({', '.join(quantized)}) in a form onnxprune cannot write in the QDQ "
                    "format (scales per channel before opset 13, or computed at run time); prune the float model, then "
                    "quantize it (or quantize to QDQ)")
        if any(node.domain == "com.microsoft.nchwc" for node in self.graph.nodes):
            # ONNX Runtime's "all" optimization level saves convs in its blocked layout for this machine's CPU.
            return ("it was saved by ONNX Runtime at the 'all' optimization level (com.microsoft.nchwc ops, a "
                    "layout for one CPU); prune the model it was made from, or one saved at the extended level")
        if not self.groups:
            return "it has no Conv, ConvTranspose, Gemm, MatMul, Einsum, RNN, GRU or LSTM with a constant weight"
        return None


def connected_labels(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Label each of ``count`` items with the smallest item joined to it by the edges (a[i], b[i])."""
    labels = np.arange(count)
    while a.size:
        low = np.minimum(labels[a], labels[b])
        np.minimum.at(labels, labels[a], low)
        np.minimum.at(labels, labels[b], low)
        while True:  # pointer jumping until every item points at its root
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels[a], labels[b]):
            break
    return labels


def trace_channels(graph: gs.Graph, opset: int, registry: RuleRegistry, head_dims: frozenset[str] = frozenset()
                   ) -> ChannelContext:
    """Walk the (topologically sorted) graph and let each node's rule declare its channels (``head_dims``: see
    ``ChannelContext``)."""
    ctx = ChannelContext(opset, head_dims)
    claimed = claimed_nodes(graph)
    for node in graph.nodes:
        ctx.node = node
        rule = claimed.get(node.name) or registry.get(node.op, node.domain or "")
        if rule is None:
            ctx.pin_node(node, f"onnxprune has no channel rule for op type '{node.op}'")
            continue
        params, rewrites = len(ctx.params), len(ctx.rewrites)
        try:
            rule.analyse(node, ctx)
        except Unprunable as exc:
            ctx.pin_node(node, exc.reason)
        except Exception as exc:  # noqa: BLE001 - a rule's bug keeps that node's channels, not the whole run
            if os.environ.get("ONNXPRUNE_DEBUG"):
                raise
            del ctx.params[params:], ctx.rewrites[rewrites:]
            ctx.pin_node(node, f"onnxprune's channel rule for '{node.op}' failed ({type(exc).__name__}: {exc}); "
                               "please report it")
    for node in graph.nodes:
        ctx.node = node
        for name in _subgraph_inputs(node):
            if name in ctx.channels:
                ctx.pin(ctx.channels[name], f"'{name}' is used inside a subgraph")
    ctx.node = None
    for tensor in graph.outputs:
        if tensor.name in ctx.channels:
            ctx.pin(ctx.channels[tensor.name], f"'{tensor.name}' is a model output, whose shape never changes")
    return ctx


def _subgraph_inputs(node: gs.Node) -> set[str]:
    names: set[str] = set()
    for value in node.attrs.values():
        for sub in value if isinstance(value, list) else [value]:
            if isinstance(sub, gs.Graph):
                for inner in sub.nodes:
                    names.update(t.name for t in inner.inputs)
                    names.update(_subgraph_inputs(inner))
    return names


def build_groups(graph: gs.Graph, ctx: ChannelContext) -> Analysis:
    """Join coupled slots into units and units into groups."""
    edges_a = np.concatenate([a for a, _ in ctx.edges]) if ctx.edges else np.zeros(0, np.int64)
    edges_b = np.concatenate([b for _, b in ctx.edges]) if ctx.edges else np.zeros(0, np.int64)
    _, unit_of_slot = np.unique(connected_labels(ctx.slot_count, edges_a, edges_b), return_inverse=True)
    # A tensor with no channels (a Slice to 0 of them, say) has no slots to tie.
    spaces = [s for s in list(ctx.channels.values()) + ctx.extra_spaces if s.size]
    unit_count = int(unit_of_slot.max()) + 1 if ctx.slot_count else 0
    tie_a = np.concatenate([np.full(s.size, unit_of_slot[s.start]) for s in spaces]) if spaces else edges_a
    tie_b = np.concatenate([unit_of_slot[s.slots] for s in spaces]) if spaces else edges_b
    _, group_of_unit = np.unique(connected_labels(unit_count, tie_a, tie_b), return_inverse=True)
    signature = _unit_signatures(spaces, unit_of_slot, unit_count)
    # A pin keeps its channels' units; the group's other units can still go, since removing them changes
    # none of the pinned tensors (a Concat of the model input with a feature map). A group whose units all
    # stay is pinned.
    reasons = _pin_reasons(ctx.pins, unit_of_slot, group_of_unit)
    fixed = np.zeros(unit_count, dtype=bool)
    for slots, _ in ctx.pins:
        fixed[unit_of_slot[slots]] = True
    order = np.argsort(group_of_unit, kind="stable")
    bounds = np.searchsorted(group_of_unit[order], np.arange(int(group_of_unit.max(initial=-1)) + 2))
    members: dict[int, list[ChannelTensor]] = {}
    for space in (s for s in ctx.channels.values() if s.size):
        members.setdefault(int(group_of_unit[unit_of_slot[space.start]]), []).append(space)
    tensors = graph.tensors()
    widths = _unit_widths(ctx, unit_of_slot, unit_count)
    groups = []
    for g in range(len(bounds) - 1):
        units = order[bounds[g]:bounds[g + 1]]
        kept = fixed[units]
        reason = reasons.get(g) if kept.all() else None
        units = units[~kept] if reason is None else units
        group_members = tuple(members.get(g, ()))
        groups.append(ChannelGroup(
            index=len(groups),
            members=group_members,
            units=units,
            segments=_segments(signature[units]),
            nodes=_touching_nodes(group_members, tensors),
            pinned_reason=reason,
            unit_width=int(widths[units].min()) if units.size else 1,
            fixed=int(kept.sum()) if reason is None else 0,
            fixed_reason=reasons.get(g) if reason is None else None,
        ))
    return Analysis(graph, ctx, unit_of_slot, groups)


def _unit_widths(ctx: ChannelContext, unit_of_slot: np.ndarray, unit_count: int) -> np.ndarray:
    """Per unit, the fewest output features it owns in a weight (1 where no weight holds it): its positions on
    the sliced axis, times the head size where the weight holds heads on one axis and their sizes on others."""
    widths = np.full(unit_count, np.iinfo(np.int64).max, dtype=np.int64)
    for param in ctx.params:
        if param.scored and param.slots.size:
            units, counts = np.unique(unit_of_slot[param.slots], return_counts=True)
            np.minimum.at(widths, units, counts * param.width)
    widths[widths == np.iinfo(np.int64).max] = 1
    return widths


def _unit_signatures(spaces: list[ChannelTensor], unit_of_slot: np.ndarray, unit_count: int) -> np.ndarray:
    """A hash per unit of the set of tensors it touches (random 64-bit keys summed, wrapping)."""
    keys = np.random.default_rng(0).integers(0, 2**63, size=len(spaces), dtype=np.uint64)
    signature = np.zeros(unit_count, dtype=np.uint64)
    for key, space in zip(keys, spaces):
        np.add.at(signature, np.unique(unit_of_slot[space.slots]), key)
    return signature


def _segments(signature: np.ndarray) -> tuple[np.ndarray, ...]:
    _, first, inverse = np.unique(signature, return_index=True, return_inverse=True)
    return tuple(np.nonzero(inverse == k)[0] for k in np.argsort(first))


def _pin_reasons(pins: list[tuple[np.ndarray, str]], unit_of_slot: np.ndarray, group_of_unit: np.ndarray
                 ) -> dict[int, str]:
    reasons: dict[int, str] = {}
    for slots, reason in pins:
        for g in np.unique(group_of_unit[unit_of_slot[slots]]):
            reasons.setdefault(int(g), reason)
    return reasons


def _touching_nodes(members: tuple[ChannelTensor, ...], tensors: dict[str, gs.Tensor]) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for member in members:
        tensor = tensors.get(member.name)
        if tensor is not None:
            names.update((n.name, None) for n in list(tensor.inputs) + list(tensor.outputs))
    return tuple(names)


def analyse_graph(graph: gs.Graph, opset: int, registry: RuleRegistry | None = None) -> Analysis:
    """Trace channels through ``graph`` and build its groups.

    Attention heads that cannot be pruned are traced again with the dimensions within the heads as the
    channels (each the same dimension of every head), and keep those where they can be pruned: DeBERTa's
    and BLOOM's attention merge the batch with the heads, which pins the heads but not the dimensions.
    """
    registry = registry or RuleRegistry()
    analysis = build_groups(graph, trace_channels(graph, opset, registry))
    pinned = _pinned_splits(analysis, analysis.context.head_splits)
    if not pinned:
        return analysis
    within = build_groups(graph, trace_channels(graph, opset, registry, pinned))
    still = _pinned_splits(within, {node: analysis.context.head_splits[node] for node in pinned})
    if still == pinned:
        return analysis
    if not still:
        return within
    # Splits pinned either way keep their heads, unless that costs channels elsewhere: OLMo2 normalises q and
    # k over all their heads, so theirs stay pinned, and heads traced through the attention weights would then
    # meet v's dimensions in one product, which pins those too.
    mixed = build_groups(graph, trace_channels(graph, opset, registry, pinned - still))
    return max((mixed, within), key=_prunable_channels)


def _prunable_channels(analysis: Analysis) -> int:
    """How many channels of ``analysis``'s groups can be pruned (a head counts its head size)."""
    return sum(group.channels * group.unit_width for group in analysis.groups if group.pinned_reason is None)


def _pinned_splits(analysis: Analysis, splits: dict[str, str]) -> frozenset[str]:
    """The nodes of ``splits`` (node name: output name) whose output's channels are all pinned."""
    pinned_units = np.zeros(analysis.unit_count, dtype=bool)
    for group in analysis.groups:
        pinned_units[group.units] = group.pinned_reason is not None
    channels = analysis.context.channels
    return frozenset(node for node, tensor in splits.items()
                     if tensor not in channels or pinned_units[analysis.unit_of_slot[channels[tensor].slots]].all())
