"""BatchNormalization and InstanceNormalization: per-channel parameters on axis 0, output = input channels.

Both normalise each channel on its own (over batch and space), so channels pass through unchanged in
number and order; scale, bias, mean and variance lose the removed channels' entries. LayerNormalization
normalises over the channels themselves (a transformer's token stream, a ConvNeXt block): removing one
changes every other's output, so its channels are pinned, unless it normalises only axes after them; so do
the RMS norms (SimplifiedLayerNormalization, RMSNormalization).
GroupNormalization normalises each group of consecutive channels together: a group's channels are one
unit, removed whole (the other groups' statistics stay as they were), and ``num_groups`` is rewritten.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, RewriteView, Rule, Unprunable


class PerChannelNormRule(Rule):
    op_types = ("BatchNormalization", "InstanceNormalization")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        if any(not t.is_empty() and t.outputs for t in node.outputs[1:]):
            raise Unprunable("it runs in training mode (running statistics are outputs)")
        traced = ctx.channel(node.inputs[0])
        if node.op == "InstanceNormalization" and traced is not None and traced.axis >= 2:
            # PyTorch's GroupNorm export reshapes [N, C, H, W] to [N, groups, -1]; of one group, the channels
            # land in the normalised axis.
            raise Unprunable("it normalises over the channel axis (a GroupNorm of one group: all channels together)")
        x = ctx.expect(node.inputs[0], 1)
        y = ctx.same_channels(node.outputs[0], x)
        for index in range(1, len(node.inputs)):
            ctx.slice_param(node, index, 0, x.slots)
        ctx.record_io(node, x, y)


class LayerNormRule(Rule):
    # ONNX Runtime's optimizer writes an RMS norm as SimplifiedLayerNormalization, which it registers in
    # ONNX's own domain; opset 23 has it as RMSNormalization. Both normalise as LayerNormalization does.
    op_types = ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization")

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.channel(node.inputs[0])
        if x is None:
            return
        axis = int(node.attrs.get("axis", -1)) % ctx.rank(node.inputs[0])
        if x.axis >= axis:
            raise Unprunable("it normalises over the channel axis (a LayerNorm of the channels)" if node.op == "LayerNormalization"
                             else "it normalises over the channel axis (an RMS norm of the channels)")
        if any(not t.is_empty() and t.outputs for t in node.outputs[1:]):
            raise Unprunable("its mean and inverse standard deviation are read")
        ctx.same_channels(node.outputs[0], x)  # scale and bias span the normalised axes only


class GroupNormRule(Rule):
    op_types = ("GroupNormalization",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        x = ctx.expect(node.inputs[0], 1)
        groups = int(node.attrs["num_groups"])
        if groups < 1 or x.size % groups:
            raise Unprunable(f"its {groups} groups do not divide its {x.size} channels")
        size = x.size // groups
        group_of = np.arange(x.size) // size
        ctx.couple(x.slots, x.slots[group_of * size])  # a group's channels are one unit
        y = ctx.same_channels(node.outputs[0], x)
        for index in (1, 2):
            # opset 18: one scale and bias per group; from opset 21, one per channel
            per_group = node.inputs[index].shape is not None and list(node.inputs[index].shape) == [groups]
            ctx.slice_param(node, index, 0, x.slots[::size] if per_group and size > 1 else x.slots)
        ctx.record_io(node, x, y)
        ctx.add_rewrite(self, node)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        x = view.channel(node.inputs[0].name)
        size = x.size // int(node.attrs["num_groups"])
        node.attrs["num_groups"] = len(view.kept(node.inputs[0].name)) // size
