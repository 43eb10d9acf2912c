"""The interface between the channel rules and the graph walk.

Every channel-carrying tensor gets a contiguous range of integer *slots*, one per index on its channel
axis. A rule declares which of its tensors carry channels, which slots must be removed together
(``couple``), which parameters are sliced along which axis, and which slots must stay (``pin``, with a
reason). ``groups.py`` turns the couplings into channel groups; ``apply.py`` slices what rules declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.model import Dim, constant_value, static_shape
from onnxprune.shape_targets import shape_values, split_sizes


class Unprunable(Exception):
    """Raised by a rule when channels cannot be traced through its node; carries the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ChannelTensor:
    """A tensor that carries channels: its name, channel axis, channel count and first slot."""

    name: str
    axis: int
    size: int
    start: int

    @property
    def slots(self) -> np.ndarray:
        """Slot ids of the channels, in channel order."""
        return np.arange(self.start, self.start + self.size)


@dataclass(frozen=True)
class ParamSlice:
    """A constant input of a node that loses the positions whose slots are removed, along ``axis``.

    ``owner`` is the node the parameter belongs to (the Conv); ``node`` holds the constant, which is the
    owner itself or the Cast in front of a weight stored in another dtype.
    """

    node: gs.Node
    input_index: int
    axis: int
    slots: np.ndarray
    scored: bool = False
    owner: gs.Node | None = None
    width: int = 1  # output features per position: a head's size, where a weight [.., heads, head size] holds them


class RewriteView(Protocol):
    """What a rule's ``rewrite`` sees of the plan being applied."""

    opset: int

    def channel(self, name: str) -> ChannelTensor:
        """The channels ``name`` had before pruning."""

    def kept(self, name: str) -> np.ndarray:
        """Original indices of the channels that ``name`` keeps on its channel axis."""

    def replace_input(self, node: gs.Node, index: int, values: np.ndarray) -> None:
        """Give ``node`` a fresh constant as input ``index`` (shared constants stay untouched)."""

    def replace_entry(self, entry: ConstantEntry, value: int) -> None:
        """Set ``entry`` (see ``shape_entry``) to ``value`` for the node that reads the shape alone: the
        steps of its chain that other nodes read too are copied for it first."""


class Rule:
    """Channel behaviour of one family of ops. Subclasses set ``op_types`` (of ``domain``, the default
    ONNX domain unless set) and override ``analyse``."""

    op_types: tuple[str, ...] = ()
    domain: str = ""

    def analyse(self, node: gs.Node, ctx: ChannelContext) -> None:
        """Declare output channels, couplings, parameter slices and pins for ``node``."""
        raise NotImplementedError

    def rewrite(self, node: gs.Node, view: RewriteView) -> None:
        """Fix attributes and shape constants of ``node`` after the parameters are sliced."""


# How far up a chain of traced ops without channels ``ChannelContext._origin`` looks for what feeds it.
_ORIGIN_DEPTH = 8
_JOINING_OPS = {"Concat", "Add", "Sub", "Mul", "Div", "Where", "Max", "Min", "Sum", "Mean"}


class ChannelContext:
    """What the graph walk knows about channels; rules read and extend it."""

    def __init__(self, opset: int, head_dims: frozenset[str] = frozenset()) -> None:
        self.opset = opset
        # Reshapes that split channels into [.., heads, head size]: those whose channels go on the head size
        # (the same dimension of every head), and the others, whose channels are the heads, with their output.
        self.head_dims = head_dims
        self.head_splits: dict[str, str] = {}
        self.channels: dict[str, ChannelTensor] = {}
        self.extra_spaces: list[ChannelTensor] = []
        self.slot_count = 0
        self.edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.pins: list[tuple[np.ndarray, str]] = []
        self.pinned_nodes: set[str] = set()  # nodes without a rule, or whose rule raised Unprunable
        self.unshown_reasons: dict[str, str] = {}  # why such a node was pinned, where it had no channels to pin
        self.params: list[ParamSlice] = []
        self.rewrites: list[tuple[Rule, gs.Node]] = []
        self.node_io: dict[str, tuple[str | None, str | None]] = {}
        self.node: gs.Node | None = None

    # ---- reading the graph -------------------------------------------------------------
    def channel(self, tensor: gs.Tensor) -> ChannelTensor | None:
        """The channels of a tensor, or None if it carries none (constants, shapes, opaque values)."""
        return self.channels.get(tensor.name)

    @staticmethod
    def shape(tensor: gs.Tensor) -> tuple[Dim, ...] | None:
        return static_shape(tensor)

    def rank(self, tensor: gs.Tensor) -> int:
        shape = self.shape(tensor)
        if shape is None:
            raise Unprunable(f"the rank of '{tensor.name}' is unknown after shape inference")
        return len(shape)

    @staticmethod
    def const(tensor: gs.Tensor) -> np.ndarray | None:
        """The value of a small constant (shape tensors, axes); use ``weight_shape`` for weights."""
        return constant_value(tensor)

    def weight_shape(self, tensor: gs.Tensor) -> tuple[int, ...] | None:
        """The shape of a constant (or of a cast-up stored weight) without loading it; None for activations."""
        stored = stored_constant(tensor)
        return tuple(int(d) for d in stored.shape) if stored is not None else None

    def int_attr_or_input(self, node: gs.Node, attr: str, index: int) -> np.ndarray | None:
        """An integer list given as attribute (older opsets) or constant input (newer ones)."""
        if attr in node.attrs:
            return np.atleast_1d(np.asarray(node.attrs[attr], dtype=np.int64))
        if len(node.inputs) > index and not node.inputs[index].is_empty():
            value = self.const(node.inputs[index])
            if value is None:
                raise Unprunable(f"its '{attr}' input is computed at run time")
            return np.atleast_1d(value.astype(np.int64))
        return None

    # ---- declaring channels ------------------------------------------------------------
    def declare(self, tensor: gs.Tensor, axis: int, size: int | None = None, register: bool = True) -> ChannelTensor:
        """Give ``tensor`` fresh slots for its channels on ``axis``."""
        if size is None:
            shape = self.shape(tensor)
            dim = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
            if not isinstance(dim, (int, np.integer)):
                raise Unprunable(f"the channel count of '{tensor.name}' is unknown after shape inference")
            size = int(dim)
            axis = axis % len(shape)
        channel = ChannelTensor(tensor.name, axis, int(size), self.slot_count)
        self.slot_count += int(size)
        if register:
            self.channels[tensor.name] = channel
        else:
            self.extra_spaces.append(channel)
        return channel

    def same_channels(self, tensor: gs.Tensor, source: ChannelTensor, axis: int | None = None) -> ChannelTensor:
        """Declare ``tensor`` with the channels of ``source`` (same count, index for index)."""
        channel = self.declare(tensor, source.axis if axis is None else axis, source.size)
        self.couple(source.slots, channel.slots)
        return channel

    def couple(self, slots_a: np.ndarray, slots_b: np.ndarray) -> None:
        """Slots at equal positions of the two arrays are removed together."""
        slots_a, slots_b = np.asarray(slots_a), np.asarray(slots_b)
        if slots_a.shape != slots_b.shape:
            raise ValueError(f"coupling {slots_a.shape} slots with {slots_b.shape}")
        if slots_a.size:
            self.edges.append((slots_a, slots_b))

    def pin(self, channel: ChannelTensor | np.ndarray, reason: str) -> None:
        """Keep these channels, and whatever is coupled to them; ``reason`` is shown to the user. The rest of
        their group can still go (see ``groups.build_groups``)."""
        slots = channel.slots if isinstance(channel, ChannelTensor) else np.asarray(channel)
        where = f"{self.node.op} node '{self.node.name}'" if self.node is not None else "the model"
        self.pins.append((slots, f"{where}: {reason}"))

    def follow_size(self, entry: SizeOf | ConstantEntry | None, channel: ChannelTensor) -> bool:
        """Whether ``entry`` (see ``shape_entry``) reads ``channel``'s count off a tensor with as many channels
        on that axis; if so, the two are coupled, so the count read at run time stays ``channel``'s."""
        source = self.channel(entry.tensor) if isinstance(entry, SizeOf) else None
        if source is None or source.axis != entry.axis or source.size != channel.size:
            return False
        self.couple(source.slots, channel.slots)
        return True

    def expect(self, tensor: gs.Tensor, axis: int) -> ChannelTensor:
        """The channels of an input that the current node consumes on ``axis``.

        Inputs with channels elsewhere, or with none that can be traced (model inputs, constants,
        outputs of unsupported ops), get fresh slots that are pinned.
        """
        existing = self.channel(tensor)
        rank = self.rank(tensor)
        axis %= rank
        if existing is not None and existing.axis == axis:
            return existing
        if existing is not None:
            self.pin(existing, f"consumes '{tensor.name}' on axis {axis} but its channels are on axis {existing.axis}")
            fresh = self.declare(tensor, axis, register=False)
        else:
            fresh = self.declare(tensor, axis)
        self.pin(fresh, self._origin(tensor))
        return fresh

    def _origin(self, tensor: gs.Tensor) -> str:
        if isinstance(tensor, gs.Constant):
            return f"its input '{tensor.name}' is a constant"
        if not tensor.inputs:
            return f"its input '{tensor.name}' is a model input, whose shape never changes"
        producer = tensor.inputs[0]
        where = f"its input '{tensor.name}' comes from {producer.op} node '{producer.name}'"
        if producer.name in self.pinned_nodes:
            return f"{where}, {self._cannot_be_pruned(producer)}"
        # A traced op whose inputs carry no channels (a Concat of slices of the model input, say): name what
        # feeds it, up the chain of such ops.
        source = producer
        for _ in range(_ORIGIN_DEPTH):
            # Only a joining op reads data from all its inputs; the others read it from their first and
            # shapes, indices or bounds from the rest (an Expand of a class token to the input's batch).
            data = [t for t in (source.inputs if source.op in _JOINING_OPS else source.inputs[:1]) if not t.is_empty()]
            feeds = [t for t in data if not isinstance(t, gs.Constant)]
            if not feeds:
                if data:
                    return f"{where}, fed by the constant '{data[0].name}'"
                break
            if not feeds[0].inputs:
                return f"{where}, fed by the model input '{feeds[0].name}'"
            source = feeds[0].inputs[0]
            if source.name in self.pinned_nodes:
                return f"{where}, fed by {source.op} node '{source.name}', {self._cannot_be_pruned(source)}"
        return f"{where}, whose channels no prunable layer makes"

    def _cannot_be_pruned(self, node: gs.Node) -> str:
        """That a pinned ``node`` cannot be pruned, and why where no group of its own shows it."""
        unshown = self.unshown_reasons.get(node.name)
        return "which cannot be pruned" + (f" ({unshown})" if unshown else "")

    # ---- declaring what apply does ------------------------------------------------------
    def slice_param(self, node: gs.Node, index: int, axis: int, slots: np.ndarray, scored: bool = False,
                    width: int = 1) -> None:
        """Slice constant input ``index`` of ``node`` along ``axis``; ``slots[i]`` owns position ``i`` (and
        ``width`` output features, see ``ParamSlice``)."""
        tensor = node.inputs[index]
        stored = stored_constant(tensor)
        if stored is None:
            raise Unprunable(f"its parameter '{tensor.name}' is not a constant")
        holder, holder_index = (node, index) if stored is tensor else (tensor.inputs[0], 0)  # the Cast's input
        if stored.shape[axis] != len(slots):
            raise Unprunable(f"parameter '{tensor.name}' has {stored.shape[axis]} entries on axis {axis}, expected {len(slots)}")
        axis %= len(stored.shape)
        self.params.append(ParamSlice(holder, holder_index, axis, np.asarray(slots), scored, node, width))
        if holder is not node and holder.op == "DequantizeLinear" and quantization_axis(holder, len(stored.shape)) == axis:
            # Per-channel scales (and zero points) along the sliced axis lose the same channels.
            for extra in (1, 2)[:len(holder.inputs) - 1]:
                if not holder.inputs[extra].is_empty():
                    self.params.append(ParamSlice(holder, extra, 0, np.asarray(slots), False, node))

    def add_rewrite(self, rule: Rule, node: gs.Node) -> None:
        """Ask for ``rule.rewrite(node, kept)`` once the parameters are sliced."""
        self.rewrites.append((rule, node))

    def record_io(self, node: gs.Node, in_channels: ChannelTensor | None, out_channels: ChannelTensor | None) -> None:
        """Remember which channels are this node's input and output side, for the report."""
        self.node_io[node.name] = (
            in_channels.name if in_channels else None,
            out_channels.name if out_channels else None,
        )

    def pin_node(self, node: gs.Node, reason: str) -> None:
        """Pin every channel input and output of ``node``; its outputs carry no channels afterwards."""
        self.pinned_nodes.add(node.name)
        pinned = 0
        for tensor in list(node.inputs) + list(node.outputs):
            channel = self.channel(tensor)
            if channel is not None:
                self.pin(channel, reason)
                pinned += 1
        if not pinned:  # no group shows the reason: the tensors after it name it (see ``_origin``)
            self.unshown_reasons[node.name] = reason
        for tensor in node.outputs:
            self.channels.pop(tensor.name, None)


def stored_constant(tensor: gs.Tensor) -> gs.Constant | None:
    """The constant holding a parameter: the tensor itself, or the input of a Cast or a DequantizeLinear
    used only here.

    Models that store weights in float16 or bfloat16 and compute in float32 feed every weight
    through its own Cast; quantized models in the QDQ format feed int8 weights (and int32 biases)
    through their own DequantizeLinear, with constant scales per tensor or per channel.
    """
    if isinstance(tensor, gs.Constant):
        return tensor
    producers = tensor.inputs
    if len(producers) != 1 or len(tensor.outputs) != 1:
        return None
    producer = producers[0]
    if producer.op == "DequantizeLinear" and not _plain_dequantization(producer):
        return None
    if producer.op in ("Cast", "DequantizeLinear"):
        source = producer.inputs[0]
        if isinstance(source, gs.Constant) and len(source.outputs) == 1 and (
                producer.op == "Cast" or np.dtype(source.dtype).kind in "iu"):  # not float8
            return source
    return None


def _plain_dequantization(node: gs.Node) -> bool:
    """A DequantizeLinear with constant scales (and zero points), per tensor or along one axis (not blocked)."""
    extras = [t for t in node.inputs[1:3] if not t.is_empty()]
    return all(isinstance(t, gs.Constant) and t.values.ndim <= 1 for t in extras) and not node.attrs.get("block_size", 0)


def quantization_axis(node: gs.Node, rank: int) -> int | None:
    """The axis of a QuantizeLinear or DequantizeLinear's per-channel scales (for an input of ``rank``), or
    None for one scale (a 1-element scale is one scale, as ONNX Runtime reads it)."""
    scale = node.inputs[1]
    if not isinstance(scale, gs.Constant) or scale.values.size <= 1:
        return None
    return int(node.attrs.get("axis", 1)) % rank


def broadcast_axis(channel_axis: int, input_rank: int, output_rank: int) -> int:
    """Where an input axis lands in the output of a numpy-broadcasting op (inputs align right)."""
    return channel_axis + output_rank - input_rank


@dataclass(frozen=True)
class SizeOf:
    """An entry of a shape computation that is the size of ``tensor`` on ``axis`` (read by a Shape node)."""

    tensor: gs.Tensor
    axis: int


@dataclass(frozen=True)
class ConstantEntry:
    """An entry of a shape computation held by a constant: input ``index`` of ``node``, at ``position``;
    ``via`` are the (node, input index) steps from the node that reads the shape down to ``node``."""

    node: gs.Node
    index: int
    position: int
    via: tuple[tuple[gs.Node, int], ...] = field(default=(), compare=False)


# Shape computations are short; longer chains are not followed.
_ENTRY_DEPTH = 12


def shape_entry(node: gs.Node, index: int, position: int, depth: int = 0) -> SizeOf | ConstantEntry | None:
    """Where entry ``position`` of the 1-D integer input ``index`` of ``node`` comes from: a tensor's size
    (Shape -> Slice / Gather -> Unsqueeze -> Concat, as TorchScript writes ``F.interpolate(x, size=y.shape[-2:])``),
    or a constant, which ``RewriteView.replace_entry`` rewrites for ``node`` alone; None where it cannot be
    followed."""
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Constant):
        return ConstantEntry(node, index, position)
    if depth > _ENTRY_DEPTH or len(tensor.inputs) != 1:
        return None
    producer = tensor.inputs[0]
    if producer.op == "Split":  # ONNX Runtime fuses Gathers of one Shape into a Split (GatherSliceToSplitFusion)
        offset = _split_offset(producer, tensor)
        entry = None if offset is None else shape_entry(producer, 0, offset + position, depth + 1)
    else:
        entry = _producer_entry(producer, position, depth)
    if isinstance(entry, ConstantEntry):
        return replace(entry, via=((node, index), *entry.via))
    return entry


def _split_offset(split: gs.Node, piece: gs.Tensor) -> int | None:
    """Where output ``piece`` of a Split of a 1-D tensor starts in its input; None where that is unknown."""
    shape = split.inputs[0].shape
    sizes = split_sizes(split, shape[0]) if shape is not None and len(shape) == 1 else None
    return None if sizes is None else sum(sizes[:split.outputs.index(piece)])


def _producer_entry(producer: gs.Node, position: int, depth: int) -> SizeOf | ConstantEntry | None:
    data = producer.inputs[0] if producer.inputs else None
    length = data.shape[0] if data is not None and data.shape is not None and len(data.shape) == 1 else None
    if producer.op == "Shape":
        rank = len(data.shape) if data is not None and data.shape is not None else None
        if rank is None:
            return None
        start = int(producer.attrs.get("start", 0))
        axis = (start % rank if start < 0 else min(start, rank)) + position
        return SizeOf(data, axis) if axis < rank else None
    if producer.op in ("Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape"):
        # On a 0-D or 1-D shape computation these keep the elements in order.
        return shape_entry(producer, 0, position, depth + 1)
    if producer.op == "Concat":
        offset = 0
        for index, part in enumerate(producer.inputs):
            size = part.shape[0] if part.shape is not None and len(part.shape) == 1 else None
            if not isinstance(size, int):
                return None
            if position < offset + size:
                return shape_entry(producer, index, position - offset, depth + 1)
            offset += size
        return None
    if producer.op == "Where" and len(producer.inputs) == 3:
        # TorchScript writes expand(b, -1, ..) so: Where(Equal(s, -1), 1, s); where the condition's element
        # is known, the entry is that of the input it picks (if that input has one per position).
        condition = shape_values(producer.inputs[0])
        if condition is None or not condition:
            return None
        if len(condition) > 1 and position >= len(condition):
            return None
        picked = condition[position if len(condition) > 1 else 0]
        if picked not in (0, 1):
            return None
        source = producer.inputs[2 - picked]
        if source.shape is None or len(source.shape) != 1 or producer.outputs[0].shape != source.shape:
            return None
        return shape_entry(producer, 2 - picked, position, depth + 1)
    if producer.op == "Gather" and int(producer.attrs.get("axis", 0)) == 0 and isinstance(length, int):
        indices = constant_value(producer.inputs[1])
        if indices is None or indices.size <= position:
            return None
        return shape_entry(producer, 0, int(indices.reshape(-1)[position]) % length, depth + 1)
    if producer.op == "Slice" and isinstance(length, int) and len(producer.inputs) >= 3:
        bounds = [constant_value(t) if not t.is_empty() else None for t in producer.inputs[1:5]]
        if bounds[0] is None or bounds[1] is None or any(b is None for b, t in zip(bounds[2:], producer.inputs[3:5])
                                                          if not t.is_empty()):
            return None
        axes, steps = bounds[2] if len(bounds) > 2 else None, bounds[3] if len(bounds) > 3 else None
        if axes is not None and [int(a) for a in axes.reshape(-1)] not in ([0], [-1]):
            return None
        step = int(steps.reshape(-1)[0]) if steps is not None else 1
        picked = range(length)[slice(int(bounds[0].reshape(-1)[0]), int(bounds[1].reshape(-1)[0]), step)]
        return shape_entry(producer, 0, picked[position], depth + 1) if position < len(picked) else None
    return None
