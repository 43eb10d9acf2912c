"""Conv and ConvTranspose.

Conv: X [N, C, *S], W [M, C/g, *K], B [M]. Output channel m is W[m] and B[m]; input channel c is
W[:, c % (C/g)] within its group. Plain (g = 1): input and output are independent channel spaces.
Depthwise (g = C, W [C*k, 1, *K]): output channel i*k + j is computed from input channel i only, so
they are removed together and ``group`` is rewritten. Other grouped convs: every group must keep the
same count, so position p is removed from all groups at once and ``group`` stays.
ConvTranspose: W [C, M/g, *K], input on axis 0 and output within its group on axis 1; grouped the same
way (depthwise, g = C: output channels i*k .. i*k + k - 1 come from input channel i alone, as a sub-pixel
upsampling by a bilinear-initialised depthwise ConvTranspose in CenterNet's DLA neck).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, ChannelTensor, RewriteView, Rule, Unprunable


def _weight_shape(node: gs.Node, ctx: ChannelContext) -> tuple[int, ...]:
    shape = ctx.weight_shape(node.inputs[1]) if len(node.inputs) > 1 else None
    if shape is None:
        raise Unprunable("its weight is not a constant")
    return shape


def _has_bias(node: gs.Node) -> bool:
    return len(node.inputs) > 2 and not node.inputs[2].is_empty()


def _same_positions_in_every_group(ctx: ChannelContext, x: ChannelTensor, y: ChannelTensor, groups: int) -> None:
    """Tie position p of every group of x's channels, and of y's: a grouped conv keeps equal groups."""
    per_group_in, per_group_out = x.size // groups, y.size // groups
    for g in range(1, groups):
        ctx.couple(x.slots[:per_group_in], x.slots[g * per_group_in:(g + 1) * per_group_in])
        ctx.couple(y.slots[:per_group_out], y.slots[g * per_group_out:(g + 1) * per_group_out])


class ConvRule(Rule):
    op_types = ("Conv",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        weight = _weight_shape(node, ctx)
        groups = int(node.attrs.get("group", 1))
        in_channels = weight[1] * groups
        out_channels, per_group_in = weight[0], weight[1]
        x = ctx.expect(node.inputs[0], 1)
        if x.size != in_channels:
            raise Unprunable(f"its input has {x.size} channels but the weight expects {in_channels}")
        y = ctx.declare(node.outputs[0], 1, out_channels)
        if groups == 1:
            ctx.slice_param(node, 1, 1, x.slots, scored=True)
        elif per_group_in == 1:  # depthwise, possibly with a channel multiplier
            multiplier = out_channels // in_channels
            ctx.couple(np.repeat(x.slots, multiplier), y.slots)
            ctx.add_rewrite(self, node)
        else:
            _same_positions_in_every_group(ctx, x, y, groups)
            ctx.slice_param(node, 1, 1, x.slots[:per_group_in], scored=True)
        ctx.slice_param(node, 1, 0, y.slots, scored=True)
        if _has_bias(node):
            ctx.slice_param(node, 2, 0, y.slots)
        ctx.record_io(node, x, y)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        node.attrs["group"] = len(view.kept(node.inputs[0].name))


class ConvTransposeRule(Rule):
    op_types = ("ConvTranspose",)

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        weight = _weight_shape(node, ctx)
        groups = int(node.attrs.get("group", 1))
        in_channels, per_group_out = weight[0], weight[1]
        x = ctx.expect(node.inputs[0], 1)
        if x.size != in_channels:
            raise Unprunable(f"its input has {x.size} channels but the weight expects {in_channels}")
        y = ctx.declare(node.outputs[0], 1, per_group_out * groups)
        ctx.slice_param(node, 1, 0, x.slots, scored=True)
        if groups == 1:
            ctx.slice_param(node, 1, 1, y.slots, scored=True)
        elif groups == in_channels:  # depthwise, possibly with a channel multiplier
            ctx.couple(np.repeat(x.slots, per_group_out), y.slots)
            ctx.add_rewrite(self, node)
        else:
            _same_positions_in_every_group(ctx, x, y, groups)
            ctx.slice_param(node, 1, 1, y.slots[:per_group_out], scored=True)
        if _has_bias(node):
            ctx.slice_param(node, 2, 0, y.slots)
        ctx.record_io(node, x, y)

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        node.attrs["group"] = len(view.kept(node.inputs[0].name))
