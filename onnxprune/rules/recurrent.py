"""RNN, GRU and LSTM: their input features and their hidden units.

X is [sequence, batch, features] (layout 0) or [batch, sequence, features] (layout 1): the features are
axis 2 either way, and W [directions, gates x hidden, features] reads feature i through W[:, :, i].
Hidden unit j is row g x hidden + j of W, R and each half of B in every gate g and direction, column j of R
(the recurrence), entry j of the initial states and of the outputs (Y [.., directions, hidden], the last
states [.., directions, hidden]); the directions share the hidden size, so a unit goes from all of them and
``hidden_size`` is rewritten. An initial state computed at run time is kept only where it is zero by
construction (exporters feed zeros this way), and is then dropped: a missing state is zero.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules.base import ChannelContext, ChannelTensor, RewriteView, Rule, Unprunable

RECURRENT_OPS = ("RNN", "GRU", "LSTM")
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_INITIAL_STATES = (5, 6)  # initial_h; initial_c (LSTM)
_SHAPE_ONLY_OPS = ("Expand", "Slice", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast", "Tile", "Transpose")


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
        size = int(node.attrs.get("hidden_size", weight[1] // _GATES[node.op]))  # the attribute is optional
        hidden = self._declare_hidden(node, ctx, size)
        ctx.record_io(node, x, hidden)
        if hidden is None:
            return
        reason = self._fixed_hidden(node, ctx)
        if reason is not None:
            ctx.pin(hidden, reason)
            return
        gates = weight[1] // hidden.size
        ctx.slice_param(node, 1, 1, np.tile(hidden.slots, gates), scored=True)
        ctx.slice_param(node, 2, 1, np.tile(hidden.slots, gates), scored=True)
        ctx.slice_param(node, 2, 2, hidden.slots, scored=True)
        if _present(node, 3):
            ctx.slice_param(node, 3, 1, np.tile(hidden.slots, 2 * gates))
        for index in _INITIAL_STATES:
            if _present(node, index) and ctx.weight_shape(node.inputs[index]) is not None:
                ctx.slice_param(node, index, 2, hidden.slots)
        if _present(node, 7):  # LSTM peepholes [directions, 3 x hidden]
            ctx.slice_param(node, 7, 1, np.tile(hidden.slots, 3))
        ctx.add_rewrite(self, node)

    @staticmethod
    def _declare_hidden(node: gs.Node, ctx: ChannelContext, size: int) -> ChannelTensor | None:
        """The hidden units, on every output that is used (Y on axis 3, the last states on axis 2)."""
        hidden = None
        for output, axis in zip(node.outputs, (3, 2, 2)):
            if output.is_empty():
                continue
            channels = ctx.declare(output, axis, size)
            if hidden is not None:
                ctx.couple(hidden.slots, channels.slots)
            hidden = hidden or channels
        return hidden

    @staticmethod
    def _fixed_hidden(node: gs.Node, ctx: ChannelContext) -> str | None:
        """Why the hidden units cannot be removed, or None."""
        if ctx.weight_shape(node.inputs[2]) is None:
            return "its recurrence weight R is not a constant"
        if _present(node, 3) and ctx.weight_shape(node.inputs[3]) is None:
            return "its bias B is not a constant"
        if _present(node, 7) and ctx.weight_shape(node.inputs[7]) is None:
            return "its peephole weights P are not a constant"
        for index in _INITIAL_STATES:
            state = node.inputs[index] if _present(node, index) else None
            if state is not None and ctx.weight_shape(state) is None and not _zero(state):
                return f"its initial state '{state.name}' is computed at run time"
        return None

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        output = next(t for t in node.outputs if not t.is_empty())
        node.attrs["hidden_size"] = len(view.kept(output.name))
        for index in _INITIAL_STATES:
            if _present(node, index) and not isinstance(node.inputs[index], gs.Constant):
                node.inputs[index] = gs.Variable.empty()  # zero by construction, as a missing state is


def _present(node: gs.Node, index: int) -> bool:
    return len(node.inputs) > index and not node.inputs[index].is_empty()


def _zero(tensor: gs.Tensor, depth: int = 0) -> bool:
    """Whether ``tensor`` is all zeros by construction: a zero constant, a ConstantOfShape of zero, an
    Expand, Slice, Reshape (and the like) of one, or a Concat of such."""
    if isinstance(tensor, gs.Constant):
        return not np.any(tensor.values)
    if not tensor.inputs or depth > 8:
        return False
    producer = tensor.inputs[0]
    if producer.op == "ConstantOfShape":
        value = producer.attrs.get("value")
        return value is None or not np.any(value.values if isinstance(value, gs.Constant) else value)
    if producer.op == "Concat":  # tf2onnx joins a bidirectional layer's two zero states so
        return all(_zero(part, depth + 1) for part in producer.inputs)
    return producer.op in _SHAPE_ONLY_OPS and bool(producer.inputs) and _zero(producer.inputs[0], depth + 1)
