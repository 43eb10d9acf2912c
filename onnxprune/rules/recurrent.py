"""RNN, GRU and LSTM: their input features.

X is [sequence, batch, features] (layout 0) or [batch, sequence, features] (layout 1): the features are
axis 2 either way. W is [directions, gates x hidden, features], so removing an input feature slices W on
axis 2. The hidden size is not pruned: R, B and the states stay, and the outputs (Y [.., directions,
hidden] and the last states [.., directions, hidden], either layout) carry pinned channels, so what reads
them says why it is left whole.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, Rule, Unprunable

RECURRENT_OPS = ("RNN", "GRU", "LSTM")


class RecurrentRule(Rule):
    op_types = RECURRENT_OPS

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        weight = ctx.weight_shape(node.inputs[1])
        if weight is None or len(weight) != 3:
            raise Unprunable("its input weight W is not a constant of rank 3")
        x = ctx.expect(node.inputs[0], 2)
        if x.size != weight[2]:
            raise Unprunable(f"its input has {x.size} features but W expects {weight[2]}")
        ctx.slice_param(node, 1, 2, x.slots, scored=True)
        ctx.record_io(node, x, None)
        hidden = None
        for output, axis in zip(node.outputs, (3, 2, 2)):
            if output.is_empty():
                continue
            channels = ctx.declare(output, axis)
            if hidden is not None:
                ctx.couple(hidden.slots, channels.slots)
            hidden = hidden or channels
        if hidden is not None:
            ctx.pin(hidden, f"the hidden size of {node.op} nodes is not pruned")
