"""BatchNormalization and InstanceNormalization: per-channel parameters on axis 0, output = input channels.

Both normalise each channel on its own (over batch and space), so channels pass through unchanged in
number and order; scale, bias, mean and variance lose the removed channels' entries. LayerNormalization
normalises over the channels themselves (a transformer's token stream, a ConvNeXt block): removing one
changes every other's output, so its channels are pinned, unless it normalises only axes after them.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, Rule, Unprunable


class PerChannelNormRule(Rule):
    op_types = ("BatchNormalization", "InstanceNormalization")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        if any(not t.is_empty() and t.outputs for t in node.outputs[1:]):
            raise Unprunable("it runs in training mode (running statistics are outputs)")
        x = ctx.expect(node.inputs[0], 1)
        y = ctx.same_channels(node.outputs[0], x)
        for index in range(1, len(node.inputs)):
            ctx.slice_param(node, index, 0, x.slots)
        ctx.record_io(node, x, y)


class LayerNormRule(Rule):
    op_types = ("LayerNormalization",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        axis = int(node.attrs.get("axis", -1)) % ctx.rank(node.inputs[0])
        if x.axis >= axis:
            raise Unprunable("it normalises over the channel axis (a LayerNorm of the channels)")
        if any(not t.is_empty() and t.outputs for t in node.outputs[1:]):
            raise Unprunable("its mean and inverse standard deviation are read")
        ctx.same_channels(node.outputs[0], x)  # scale and bias span the normalised axes only
