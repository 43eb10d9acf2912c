"""The explicit registry of channel rules: which op types onnxprune can trace channels through."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, ChannelTensor, ParamSlice, RewriteView, Rule, Unprunable
from onnxprune.rules.concat_split import ConcatRule, GatherElementsRule, GatherNDRule, GatherRule, SliceRule, SplitRule
from onnxprune.rules.conv import ConvRule, ConvTransposeRule
from onnxprune.rules.elementwise import (
    BroadcastRule,
    ContribUnaryRule,
    DynamicQuantizeRule,
    QuantizeRule,
    ScatterElementsRule,
    ScatterNDRule,
    UnaryRule,
)
from onnxprune.rules.linear import AttentionRule, EinsumRule, GemmRule, MatMulRule, RotaryEmbeddingRule
from onnxprune.rules.norm import GroupNormRule, LayerNormRule, PerChannelNormRule
from onnxprune.rules.recurrent import RecurrentRule
from onnxprune.rules.shape import (
    DepthSpaceRule,
    ExpandRule,
    FlattenRule,
    ReshapeRule,
    ShapeRule,
    SqueezeRule,
    TileRule,
    TransposeRule,
)
from onnxprune.rules.spatial import (
    AlongAxisRule,
    MaxUnpoolRule,
    OtherAxesRule,
    PadRule,
    PoolRule,
    ReduceRule,
    ResizeRule,
    SoftmaxRule,
)
from onnxprune.rules.unpool import find_scatter_unpools

DEFAULT_RULES: tuple[Rule, ...] = (
    ConvRule(), ConvTransposeRule(), GemmRule(), MatMulRule(), PerChannelNormRule(), LayerNormRule(),
    UnaryRule(), BroadcastRule(), ConcatRule(), SplitRule(), SliceRule(), FlattenRule(), ReshapeRule(),
    TransposeRule(), SqueezeRule(), ShapeRule(), PoolRule(), MaxUnpoolRule(), PadRule(), ResizeRule(), ReduceRule(),
    SoftmaxRule(), QuantizeRule(), GroupNormRule(), DepthSpaceRule(), RecurrentRule(), GatherRule(), ExpandRule(),
    TileRule(), EinsumRule(), AlongAxisRule(), OtherAxesRule(), ContribUnaryRule(), DynamicQuantizeRule(),
    ScatterNDRule(), AttentionRule(), RotaryEmbeddingRule(), GatherNDRule(), GatherElementsRule(),
    ScatterElementsRule(),
)


# Patterns of several nodes that only together keep the channels (their nodes one by one would pin them).
PATTERN_FINDERS = (find_scatter_unpools,)


def claimed_nodes(graph: gs.Graph) -> dict[str, Rule]:
    """The rule of every node that a pattern of PATTERN_FINDERS claims, by node name; it takes precedence over
    the node's op type's rule."""
    claimed: dict[str, Rule] = {}
    for find in PATTERN_FINDERS:
        claimed.update(find(graph))
    return claimed


class RuleRegistry:
    """Maps op types (of the default ONNX domain, or of a rule's own) to rules; registering an op twice is
    an error."""

    def __init__(self, rules: tuple[Rule, ...] = DEFAULT_RULES) -> None:
        self._rules: dict[tuple[str, str], Rule] = {}
        for rule in rules:
            self.register(rule)

    def register(self, rule: Rule) -> None:
        """Add a rule for each of its op types."""
        for op_type in rule.op_types:
            key = (rule.domain, op_type)
            if key in self._rules:
                raise ValueError(f"op type {op_type} already has the rule {type(self._rules[key]).__name__}")
            self._rules[key] = rule

    def get(self, op_type: str, domain: str = "") -> Rule | None:
        """The rule for an op, or None when channels cannot be traced through it."""
        return self._rules.get(("" if domain == "ai.onnx" else domain, op_type))

    @property
    def op_types(self) -> list[str]:
        """The op types with a rule (a contrib op's as ``domain:op``)."""
        return sorted(f"{domain}:{op}" if domain else op for domain, op in self._rules)


__all__ = [
    "DEFAULT_RULES", "ChannelContext", "ChannelTensor", "ParamSlice", "RewriteView", "Rule", "RuleRegistry",
    "Unprunable", "claimed_nodes",
]
