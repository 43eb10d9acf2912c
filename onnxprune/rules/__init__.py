"""The explicit registry of channel rules: which op types onnxprune can trace channels through."""

from __future__ import annotations

from onnxprune.contrib import CONTRIB_DOMAIN, CONTRIB_UNARY_OPS
from onnxprune.rules.base import ChannelContext, ChannelTensor, ParamSlice, RewriteView, Rule, Unprunable
from onnxprune.rules.concat_split import ConcatRule, GatherRule, SliceRule, SplitRule
from onnxprune.rules.conv import ConvRule, ConvTransposeRule
from onnxprune.rules.elementwise import BroadcastRule, QuantizeRule, UnaryRule
from onnxprune.rules.linear import EinsumRule, GemmRule, MatMulRule
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
    OtherAxesRule,
    PadRule,
    PoolRule,
    ReduceRule,
    ResizeRule,
    SoftmaxRule,
)

DEFAULT_RULES: tuple[Rule, ...] = (
    ConvRule(), ConvTransposeRule(), GemmRule(), MatMulRule(), PerChannelNormRule(), LayerNormRule(),
    UnaryRule(), BroadcastRule(), ConcatRule(), SplitRule(), SliceRule(), FlattenRule(), ReshapeRule(),
    TransposeRule(), SqueezeRule(), ShapeRule(), PoolRule(), PadRule(), ResizeRule(), ReduceRule(), SoftmaxRule(),
    QuantizeRule(), GroupNormRule(), DepthSpaceRule(), RecurrentRule(), GatherRule(), ExpandRule(), TileRule(), EinsumRule(),
    AlongAxisRule(), OtherAxesRule(),
)


class RuleRegistry:
    """Maps op types of the default ONNX domain to rules; registering an op twice is an error. ONNX
    Runtime's contrib activations (``com.microsoft``) are element-wise."""

    def __init__(self, rules: tuple[Rule, ...] = DEFAULT_RULES) -> None:
        self._rules: dict[str, Rule] = {}
        self._contrib_unary = UnaryRule()
        for rule in rules:
            self.register(rule)

    def register(self, rule: Rule) -> None:
        """Add a rule for each of its op types."""
        for op_type in rule.op_types:
            if op_type in self._rules:
                raise ValueError(f"op type {op_type} already has the rule {type(self._rules[op_type]).__name__}")
            self._rules[op_type] = rule

    def get(self, op_type: str, domain: str = "") -> Rule | None:
        """The rule for an op, or None when channels cannot be traced through it."""
        if domain == CONTRIB_DOMAIN and op_type in CONTRIB_UNARY_OPS:
            return self._contrib_unary
        if domain not in ("", "ai.onnx"):
            return None
        return self._rules.get(op_type)

    @property
    def op_types(self) -> list[str]:
        return sorted(self._rules)


__all__ = [
    "DEFAULT_RULES", "ChannelContext", "ChannelTensor", "ParamSlice", "RewriteView", "Rule", "RuleRegistry",
    "Unprunable",
]
