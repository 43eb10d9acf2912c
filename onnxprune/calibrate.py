"""Activation statistics recorded with ONNX Runtime on calibration data.

The statistics are computed inside ONNX Runtime: for every recorded tensor, a few nodes appended to the
graph take an evenly strided sample of its spatial positions and reduce it. Without Gram matrices, each
sample's mean of x (and of x^2, |x| or x <= 0, as asked) per channel, all packed into one output
(``sample_means``; a mean alone is taken over every position); with them, the sample laid out as
[channels, positions] is reduced to per-channel sums and the Gram matrix of the channels (``add``). The
sample is sized so that a Gram matrix costs at most GRAM_BUDGET of the MACs of the nodes that consume
the tensor. Only these small results leave the runtime, so memory stays bounded by one batch whatever
the number of samples. Batches alternate between two folds, so a fit made on one fold can be checked on
the other.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import ThreadpoolController

from onnxprune.consumers import find_consumers
from onnxprune.contrib import CONTRIB_DOMAIN
from onnxprune.groups import Analysis
from onnxprune.model import PROTOBUF_SAFE_BYTES, default_opset, external_data_bytes, write_external
from onnxprune.progress import progress
from onnxprune.rules.base import Unprunable
from onnxprune.rules.concat_split import slice_arguments
from onnxprune.validate import session

# Tensors with more channels get no Gram matrix (its cost grows with the square of the channels).
GRAM_MAX_CHANNELS = 1024
# The Gram matrix of a tensor's sample costs at most this share of the MACs of its consumers.
GRAM_BUDGET = 0.25
# At most about this many positions per sample enter the statistics (the rest are strided over).
SAMPLE_POSITIONS = 64
# ...and at least this many where the map has them, whatever the budget: fits need samples, and on small
# maps these cost little (a 4x4 map read by a narrow 1x1 conv was sampled at 1 position per image).
MIN_SAMPLE_POSITIONS = 16
# Tensors with fewer channels always get their Gram matrix from ONNX Runtime (see ``_gram_mode``).
ROWS_MIN_CHANNELS = 256
# ONNX Runtime's blocked conv layout holds channels in blocks of this many (8 with AVX2, 16 with AVX-512).
NCHWC_BLOCK = 16
# Float32 Gram matrices of this many batches are summed in float32 before they join the float64 totals
# (a float64 sum of a float32 matrix costs three times as much, which shows on small, wide models).
FLOAT32_BATCHES = 8
# Gram matrices are taken on pairs of runs (one per fold) spread over the calibration data, enough for this
# share of the samples and at least GRAM_MIN_SAMPLES samples per fold (see ``gram_runs``); the other runs skip
# their nodes. A correlation between channels needs far fewer samples than the means, and the Gram matrices'
# products and transposes were most of what yolo's `redundancy` recording cost over plain inference.
GRAM_SHARE = 0.25
GRAM_MIN_SAMPLES = 64
# ...unless a tensor's would then cover fewer positions per fold than this many times its channels: it then
# takes them on every run.
GRAM_ROWS_PER_CHANNEL = 4
# Runs skip Gram matrices only where that saves at least this many multiply-adds in all: the If costs the
# session about 1 ms to build (shufflenet), what about 30 M multiply-adds of small products cost.
GRAM_BRANCH_MIN_MACS = 30e6
# Consecutive calibration batches are run as one, up to this many samples and this many bytes of the
# recorded tensors, where every input takes any batch size: a small model's run costs little more per
# batch of 64 than of 16, nor do the appended nodes (yolo `redundancy` 2.5x -> 2.1x the time of plain
# inference at the faster of the two batchings).
RECORD_SAMPLES = 64
RECORD_BYTES = 8 << 20
RECORD_MIN_BATCHES = 8
# Per-channel sums a recording can hold: the sum is always recorded, the sums of squares (also the Gram
# matrix's diagonal), of |x| and of zeros only where a criterion reads them. "zeros" counts x <= 0, the zeros
# of a ReLU of x (for a ReLU's output, its zeros): SiLU or Hardswish outputs are rarely exactly 0.
SUMS = ("total", "total_sq", "total_abs", "zeros")


@dataclass
class ChannelStats:
    """Running per-channel sums of one tensor (``keys`` of SUMS), in two folds, and optionally its Gram matrices.

    The Gram matrices may cover only some of the batches (see ``gram_runs``): ``gram_counts`` and
    ``gram_totals`` are the positions they cover and the sum of x over those, per fold."""

    channels: int
    with_gram: bool = True
    keys: tuple[str, ...] = SUMS
    counts: np.ndarray = field(init=False)
    sums: dict[str, np.ndarray] = field(init=False)
    gram_counts: np.ndarray = field(init=False)
    gram_totals: np.ndarray = field(init=False)
    _gram_sums: np.ndarray | None = field(init=False)
    _rows: tuple[list[np.ndarray], list[np.ndarray]] = field(init=False)
    _pending: list = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(2)
        self.sums = {key: np.zeros((2, self.channels)) for key in self.keys}
        self.gram_counts = np.zeros(2)
        self.gram_totals = np.zeros((2, self.channels))
        self._gram_sums = np.zeros((2, self.channels, self.channels)) if self.with_gram else None
        self._rows = ([], [])
        self._pending = [None, None]  # per fold: [float32 sum of recent Gram matrices, their count]

    def add(self, fold: int, count: int, sums: dict[str, np.ndarray]) -> None:
        """Add one batch's per-channel sums (over ``count`` positions) to ``fold``, in float64."""
        self.counts[fold] += count
        for key, value in sums.items():
            self.sums[key][fold] += value

    def add_gram_sample(self, fold: int, count: int, total: np.ndarray) -> None:
        """Count ``count`` positions, whose values sum to ``total``, as covered by the Gram matrix of ``fold``."""
        self.gram_counts[fold] += count
        self.gram_totals[fold] += total

    def add_gram(self, fold: int, gram: np.ndarray) -> None:
        """Add one batch's Gram matrix to ``fold`` (a float32 one is taken over, and summed with a few others
        in float32 first)."""
        if self._gram_sums is None:
            return
        if gram.dtype != np.float32:
            self._gram_sums[fold] += gram
        elif self._pending[fold] is None:
            self._pending[fold] = [gram, 1]
        else:
            self._pending[fold][0] += gram
            self._pending[fold][1] += 1
            if self._pending[fold][1] >= FLOAT32_BATCHES:
                self._flush(fold)

    def _flush(self, fold: int) -> None:
        if self._pending[fold] is not None:
            self._gram_sums[fold] += self._pending[fold][0]
            self._pending[fold] = None

    def add_rows(self, fold: int, rows: np.ndarray) -> None:
        """Keep one batch's sampled [channels, positions] rows for the Gram matrix of ``fold``.

        Wide tensors sample fewer positions per batch than they have channels: their rows are
        smaller than a Gram matrix, so they are gathered and multiplied once per many batches.
        """
        self._rows[fold].append(rows)
        if sum(r.shape[1] for r in self._rows[fold]) >= max(4 * self.channels, 4096):
            self._multiply(fold)

    def _multiply(self, fold: int) -> None:
        if self._rows[fold]:
            rows = np.concatenate(self._rows[fold], axis=1)
            self._gram_sums[fold] += rows @ rows.T
            self._rows[fold].clear()

    @property
    def grams(self) -> np.ndarray | None:
        """The Gram matrices of the two folds, float64 [2, channels, channels], or None."""
        if self._gram_sums is not None:
            for fold in (0, 1):
                self._multiply(fold)
                self._flush(fold)
        return self._gram_sums

    def add_values(self, values: np.ndarray, axis: int, fold: int = 0) -> None:
        """Add one batch of raw values (channels on ``axis``), reduced in numpy."""
        rows = np.moveaxis(values, axis, -1).reshape(-1, self.channels).astype(np.float64)
        sums = {"total": rows.sum(0), "total_sq": np.square(rows).sum(0), "total_abs": np.abs(rows).sum(0),
                "zeros": (rows <= 0).sum(0)}
        self.add(fold, len(rows), {key: sums[key] for key in self.keys})
        if self.with_gram:
            self.add_gram(fold, rows.T @ rows)
            self.add_gram_sample(fold, len(rows), sums["total"])

    def squares_from_grams(self) -> None:
        """Set the sums of squares from the Gram matrices' diagonals, scaled from the positions they cover
        to all the fold's positions."""
        covered = np.maximum(self.gram_counts, 1)[:, None]
        self.sums["total_sq"] = np.diagonal(self.grams, axis1=1, axis2=2) * (self.counts[:, None] / covered)

    def channel_slice(self, start: int, channels: int) -> ChannelStats:
        """The statistics of ``channels`` consecutive channels from ``start``, as if recorded on their own
        (at the same positions)."""
        grams = self.grams
        part = ChannelStats(channels, grams is not None, tuple(self.sums))
        part.counts = self.counts.copy()
        part.gram_counts = self.gram_counts.copy()
        part.gram_totals = self.gram_totals[:, start:start + channels].copy()
        part.sums = {key: value[:, start:start + channels].copy() for key, value in self.sums.items()}
        if grams is not None:
            part._gram_sums = grams[:, start:start + channels, start:start + channels].copy()
        return part

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def _mean_of(self, key: str) -> np.ndarray:
        if key not in self.sums:
            raise ValueError(f"{key} was not recorded (recorded: {', '.join(self.sums)})")
        return self.sums[key].sum(0) / max(self.count, 1)

    @property
    def mean(self) -> np.ndarray:
        return self._mean_of("total")

    @property
    def mean_abs(self) -> np.ndarray:
        return self._mean_of("total_abs")

    @property
    def mean_sq(self) -> np.ndarray:
        return self._mean_of("total_sq")

    @property
    def variance(self) -> np.ndarray:
        return np.maximum(self.mean_sq - np.square(self.mean), 0.0)

    @property
    def zero_fraction(self) -> np.ndarray:
        """Per channel, the fraction of positions where x <= 0 (where a ReLU of x is 0)."""
        return self._mean_of("zeros")

    @property
    def has_gram(self) -> bool:
        return self.grams is not None and self.gram_counts.sum() > 0

    def second_moment(self, fold: int | None = None) -> np.ndarray:
        """E[z z^T] for z = [x, 1] over the positions the Gram matrices cover, of one fold or both (None)."""
        folds = [0, 1] if fold is None else [fold]
        count = max(self.gram_counts[folds].sum(), 1)
        total = self.gram_totals[folds].sum(0)
        moment = np.empty((self.channels + 1, self.channels + 1))
        moment[:-1, :-1] = self.grams[folds].sum(0)
        moment[:-1, -1] = moment[-1, :-1] = total
        moment[-1, -1] = count
        return moment / count

    def correlation(self) -> np.ndarray:
        """Pearson correlation between channels (0 where a channel is constant)."""
        moment = self.second_moment()
        mean = moment[-1, :-1]
        cov = moment[:-1, :-1] - np.outer(mean, mean)
        std = np.sqrt(np.maximum(np.diag(cov), 0.0))
        scale = np.outer(std, std)
        return np.divide(cov, scale, out=np.zeros_like(cov), where=scale > 1e-12)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to record: its channel axis and count, shape (ints or symbolic names), and whether it is float32."""

    axis: int
    channels: int
    shape: tuple
    float32: bool = True
    sample_fraction: float = 1.0
    nonnegative: bool = False  # provably >= 0 (after a ReLU, say): its mean |x| is its mean
    fit: bool = False  # sampled for a fit: an even stride becomes the odd one below it, not above (see odd_step)


def odd_step(step: int, down: bool) -> int:
    """``step``, or the odd number next to it (below it with ``down``, more positions; else above) where it
    is even. An even stride samples only even rows and columns, and maps made by a stride-2 conv or a 2x
    upsampling differ between even and odd positions: fits on such samples missed what the odd positions
    carry (the unet fixture's refit error: 0.021 with stride 2, 0.0027 with stride 1)."""
    if step < 2 or step % 2:
        return step
    return step - 1 if down else step + 1


@dataclass(frozen=True)
class Unfold:
    """The geometry of a 2-D Conv whose input patches are recorded, and the stride ``step`` over its
    output positions that samples them."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    step: int = 1


@dataclass(frozen=True)
class PairSpec:
    """Rows to pair: tensor ``original`` of the original model with tensor ``pruned`` of the pruned one,
    at the same positions. With ``unfold``, the pruned rows are the input patches of the Conv that
    produces ``original`` (see ``_StatsGraph.patches``), so a refit can change every kernel tap."""

    original: str
    original_spec: TensorSpec
    pruned: str
    pruned_spec: TensorSpec
    unfold: Unfold | None = None
    # A tensor of the pruned model, sampled like ``original``, whose channels (the original's channels
    # ``offset_channels``) are subtracted from the original rows: the rest of a residual sum.
    offset: str | None = None
    offset_channels: tuple[int, ...] = ()


class _StatsGraph:
    """Builds the reduction nodes appended to a graph, for the model's opset."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.outputs: list[str] = []
        self.inputs: list[onnx.ValueInfoProto] = []  # inputs the appended nodes add (see ``branch``)
        self.domains: set[str] = set()  # operator domains besides ONNX's that the appended nodes use
        self.summed: set[str] = set()  # outputs of ``sample_means`` that hold per-sample sums, not means
        self.positive: set[str] = set()  # outputs of ``sample_means`` of max(x, 0) that stand for |x|
        self._samples: dict[tuple[str, str], str] = {}  # ``_strided``'s nodes, by tensor and key
        self._constants: dict[tuple, str] = {}

    def session(self, model: onnx.ModelProto, upstream: bool = False) -> ort.InferenceSession:
        """An ONNX Runtime session of ``model`` with the nodes appended; ``model`` itself is restored.
        ``upstream`` keeps only the nodes that the appended outputs depend on, and no other output:
        ONNX Runtime runs every node of a session whatever the outputs asked for, so a recording of early
        tensors would pay for the whole model."""
        graph = model.graph
        sizes = (len(graph.node), len(graph.initializer), len(graph.output), len(graph.input), len(model.opset_import))
        known = {entry.domain for entry in model.opset_import}
        model.opset_import.extend(helper.make_opsetid(domain, 1) for domain in sorted(self.domains - known))
        graph.node.extend(self.nodes)
        graph.initializer.extend(self.initializers)
        graph.input.extend(self.inputs)
        nodes, outputs = None, None
        if upstream and self.outputs:  # (no outputs: nothing to record, the model as it is)
            needed = upstream_nodes(graph, self.outputs)
            if len(needed) < len(graph.node):
                nodes = list(graph.node)
                del graph.node[:]
                graph.node.extend(nodes[i] for i in needed)
            outputs = list(graph.output)
            del graph.output[:]
        graph.output.extend(onnx.ValueInfoProto(name=name) for name in self.outputs)
        try:
            if external_data_bytes(model) <= PROTOBUF_SAFE_BYTES:
                return session(model, threads=0)  # (its large weights go apart, see ``weights_apart``)
            with tempfile.TemporaryDirectory() as folder:  # protobuf cannot serialize 2 GB in one piece
                return session(str(write_external(model, Path(folder), "statistics.onnx")), threads=0)
        finally:
            if nodes is not None:
                del graph.node[:]
                graph.node.extend(nodes)
            del graph.node[sizes[0]:], graph.initializer[sizes[1]:], graph.input[sizes[3]:]
            del model.opset_import[sizes[4]:]
            if outputs is not None:
                del graph.output[:]
                graph.output.extend(outputs)
            del graph.output[sizes[2]:]

    def branch(self, outputs: list[str], switch: str) -> dict[str, str]:
        """Move the appended nodes that only the float32 ``outputs`` (of rank 2) need into an If on a new
        boolean input ``switch``: where it is false, the run skips them and its outputs are empty. (ONNX
        Runtime runs every node of a session whatever outputs a run asks for.) Returns the If's names of
        the ``outputs`` that other outputs need too (the rows of a [batch, channels] tensor, say), which
        the If returns under new names."""
        producer = {name: index for index, node in enumerate(self.nodes) for name in node.output}

        def needed(names: list[str]) -> set[int]:
            found, stack = set(), [producer[name] for name in names if name in producer]
            while stack:
                index = stack.pop()
                if index not in found:
                    found.add(index)
                    stack.extend(producer[name] for name in self.nodes[index].input if name in producer)
            return found

        moved = needed(outputs) - needed([name for name in self.outputs if name not in outputs])
        inner = [self.nodes[i] for i in sorted(moved)]
        made = {name for node in inner for name in node.output}
        renamed = {name: f"{name}_taken" for name in outputs if name not in made}
        # (a branch cannot return an outer value itself)
        inner += [helper.make_node("Identity", [name], [f"{name}_inner"]) for name in renamed]
        then = helper.make_graph(inner, "onnxprune_taken", [],
                                 [helper.make_tensor_value_info(f"{name}_inner" if name in renamed else name,
                                                                TensorProto.FLOAT, None) for name in outputs])
        empty = numpy_helper.from_array(np.zeros((0, 0), np.float32))
        skipped = helper.make_graph([helper.make_node("Constant", [], [f"{name}_skipped"], value=empty) for name in outputs],
                                    "onnxprune_skipped", [],
                                    [helper.make_tensor_value_info(f"{name}_skipped", TensorProto.FLOAT, None)
                                     for name in outputs])
        self.nodes = [node for index, node in enumerate(self.nodes) if index not in moved]
        self.nodes.append(helper.make_node("If", [switch], [renamed.get(name, name) for name in outputs], name=switch,
                                           then_branch=then, else_branch=skipped))
        self.inputs.append(helper.make_tensor_value_info(switch, TensorProto.BOOL, []))
        self.outputs = [renamed.get(name, name) for name in self.outputs]
        return renamed

    def _node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def _constant(self, values: np.ndarray, name: str) -> str:
        """An initializer holding ``values``, named ``name`` unless an equal one was added before: ONNX
        Runtime's ConstantSharing would merge the copies, at about 0.4 ms of a small model's session start."""
        key = (values.dtype.str, values.shape, values.tobytes())
        if key not in self._constants:
            self.initializers.append(numpy_helper.from_array(values, name))
            self._constants[key] = name
        return self._constants[key]

    def _const(self, name: str, values: list[int]) -> str:
        return self._constant(np.array(values, np.int64), name)

    def _is_off(self, x: str, key: str) -> str:
        """1.0 where the float32 ``x`` <= 0 (where a ReLU of it is 0), else 0.0 (0 < x < 2^-126, subnormal,
        gives a fraction): clip(1 - 2^126 x, 0, 1), one HardSigmoid where a comparison and a Cast would be
        two nodes, and in ONNX Runtime's blocked conv layout it stays there."""
        return self._node("HardSigmoid", [x], f"{key}_off_f", alpha=-(2.0 ** 126), beta=1.0)

    def _is_off_blocked(self, x: str, channels: int, key: str, step: int = 1) -> str:
        """``_is_off`` of an NCHW float32 tensor at every ``step``-th row and column: sampled, one strided
        depthwise 1x1 Conv with its Clip fused, which samples as it goes. (At every position, the
        HardSigmoid, a node with no weights, costs a small model's session less than the Conv did:
        se_hardswish `apoz` 1.55x -> 1.45x, yolo 1.58x -> 1.50x.)"""
        if step == 1:
            return self._is_off(x, key)
        big = self._constant(np.full((channels, 1, 1, 1), -2.0 ** 126, np.float32), f"{key}_big")
        one = self._constant(np.ones(channels, np.float32), f"{key}_one")
        scaled = self._node("Conv", [x, big, one], f"{key}_scaled", group=channels, kernel_shape=[1, 1], strides=[step, step])
        if self.opset < 11:  # Clip's bounds were attributes
            return self._node("Clip", [scaled], f"{key}_off_f", min=0.0, max=1.0)
        low = self._constant(np.array(0.0, np.float32), f"{key}_clip_low")
        high = self._constant(np.array(1.0, np.float32), f"{key}_clip_high")
        return self._node("Clip", [scaled, low, high], f"{key}_off_f")

    def _reduce(self, op: str, x: str, name: str, axes: list[int], keepdims: int = 0) -> str:
        # Reduce ops take axes as an input from opset 18 (ReduceSum from 13), as an attribute before.
        if self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13):
            return self._node(op, [x, self._const(f"{name}_axes", axes)], name, keepdims=keepdims)
        return self._node(op, [x], name, keepdims=keepdims, axes=axes)

    @staticmethod
    def _step(spec: TensorSpec) -> int:
        """The stride on every spatial axis (not batch, not channels) that keeps ``spec.sample_fraction``."""
        shape, axis = spec.shape, spec.axis
        spatial = [i for i in range(1, len(shape)) if i != axis]
        if not spatial or not all(isinstance(shape[i], int) for i in spatial) or spec.sample_fraction >= 1:
            return 1
        step = odd_step(int(round(spec.sample_fraction ** (-1 / len(spatial)))), down=spec.fit)
        return max(1, min(step, min(shape[i] for i in spatial)))

    @classmethod
    def sample_dims(cls, spec: TensorSpec) -> tuple[int, ...] | None:
        """The spatial dims (not batch, not channels) that ``_strided`` keeps; None when some are symbolic."""
        shape, step = spec.shape, cls._step(spec)
        dims = [shape[i] for i in range(1, len(shape)) if i != spec.axis]
        if not all(isinstance(d, int) for d in dims):
            return None
        # MaxPool keeps positions 0, step, ...; Slice starts at min(step // 2, d - 1) (see ``_strided``).
        if spec.axis == 1 and len(shape) == 4:
            return tuple((d - 1) // step + 1 for d in dims)
        return tuple(-(-(d - min(step // 2, d - 1)) // step) for d in dims)

    @classmethod
    def sampled_positions(cls, spec: TensorSpec) -> int:
        """Positions per sample that ``_strided`` keeps (1 when the spatial dims are symbolic)."""
        dims = cls.sample_dims(spec)
        return 1 if dims is None else math.prod(dims)

    def _strided(self, tensor: str, spec: TensorSpec, key: str) -> str:
        """``tensor`` with its spatial axes (not batch, not channels) strided to keep ``spec.sample_fraction``."""
        step = self._step(spec)
        if step < 2:
            return tensor
        if (tensor, key) not in self._samples:  # (a Gram matrix and the sums beside it share the sample)
            self._samples[tensor, key] = self._sample(tensor, spec, step, key)
        return self._samples[tensor, key]

    def _sample(self, tensor: str, spec: TensorSpec, step: int, key: str) -> str:
        """A node keeping every ``step``-th position of ``tensor`` on its spatial axes."""
        shape, axis = spec.shape, spec.axis
        if axis == 1 and len(shape) == 4:
            # A 1x1 pooling with strides subsamples without leaving ONNX Runtime's blocked (NCHWc)
            # conv layout, where a Slice would first copy the whole tensor back to NCHW. Pooling stays
            # blocked only for channel counts that fill whole blocks; a depthwise 1x1 Conv of ones
            # does the same for any count.
            if _pools_in_place(spec) or not spec.float32:
                return self._node("MaxPool", [tensor], f"{key}_strided", kernel_shape=[1, 1], strides=[step, step])
            ones = self._constant(np.ones((spec.channels, 1, 1, 1), np.float32), f"{key}_ones")
            return self._node("Conv", [tensor, ones], f"{key}_strided", group=spec.channels,
                              kernel_shape=[1, 1], strides=[step, step])
        spatial = [i for i in range(1, len(shape)) if i != axis]
        starts = self._const(f"{key}_starts", [min(step // 2, shape[i] - 1) for i in spatial])
        ends = self._const(f"{key}_ends", [shape[i] for i in spatial])
        axes = self._const(f"{key}_slice_axes", spatial)
        steps = self._const(f"{key}_steps", [step] * len(spatial))
        return self._node("Slice", [tensor, starts, ends, axes, steps], f"{key}_strided")

    def rows(self, tensor: str, spec: TensorSpec, key: str) -> str:
        """Sampled positions of ``tensor`` as a float32 [channels, positions] matrix."""
        rank = len(spec.shape)
        tensor = self._strided(tensor, spec, key)
        # Channels first, positions last: the reductions then run along contiguous memory.
        perm = [spec.axis] + [i for i in range(rank) if i != spec.axis]
        moved = self._node("Transpose", [tensor], f"{key}_t", perm=perm) if perm != list(range(rank)) else tensor
        rows = self._node("Reshape", [moved, self._const(f"{key}_shape", [spec.channels, -1])], f"{key}_rows")
        if not spec.float32:
            rows = self._node("Cast", [rows], f"{key}_f32", to=TensorProto.FLOAT)
        return rows

    def patches(self, tensor: str, spec: TensorSpec, unfold: Unfold, key: str) -> str:
        """The input patches a Conv with ``unfold``'s geometry reads, at every ``unfold.step``-th output
        position, as a float32 [channels x kernel taps, positions] matrix (channel major, taps minor)."""
        taps = int(np.prod(unfold.kernel))
        # A depthwise Conv whose kernels are one-hot copies one input value per (channel, tap): the
        # patches with the consumer's own padding, strides and dilations, and the zeros of the padding.
        one_hot = np.zeros((spec.channels * taps, 1, *unfold.kernel), dtype=np.float32)
        one_hot.reshape(spec.channels, taps, taps)[:, np.arange(taps), np.arange(taps)] = 1.0
        strides = [s * unfold.step for s in unfold.strides]
        unfolded = self._node("Conv", [tensor, self._constant(one_hot, f"{key}_one_hot")], f"{key}_patches", group=spec.channels,
                              kernel_shape=list(unfold.kernel), strides=strides, pads=list(unfold.pads),
                              dilations=list(unfold.dilations))
        return self.rows(unfolded, TensorSpec(1, spec.channels * taps, spec.shape), key)

    def sample_means(self, tensor: str, spec: TensorSpec, sums: tuple[str, ...], key: str,
                     sampled: bool = False, in_blocks: bool = False) -> list[str]:
        """Nodes reducing the sampled positions of ``tensor`` to per-sample means: of x for "total", of x^2
        for "total_sq", of |x| for "total_abs", of x <= 0 for "zeros" (keys of SUMS); where the positions
        per sample are known, |x| is summed rather than averaged (the name joins ``summed``). Returns their
        names, one per key of SUMS, [batch, channels] (or [batch, channels, 1, 1] for a channels-second
        tensor of rank 4, and so on), or an empty string where not asked for; they are not outputs yet
        (see ``concat``). (A Shape of the sample would cost a copy of it out of the blocked layout.)

        Far cheaper than ``add`` where no Gram matrix is needed: a channels-second tensor is averaged by
        GlobalAveragePool, which stays in ONNX Runtime's blocked conv layout, and nothing is transposed.
        ``sampled`` takes every sum over exactly the positions that ``_strided`` samples, those of a Gram
        matrix beside them. ``in_blocks``: the tensor lies in the blocked layout (see ``_in_blocks``).
        """
        rank = len(spec.shape)
        blocked = spec.float32 and spec.axis == 1 and rank == 4
        dims, step = self.sample_dims(spec), self._step(spec)
        full = self.sample_dims(replace(spec, sample_fraction=1.0))
        # A blocked map whose channels do not fill whole blocks is averaged by depthwise Convs, which keep
        # it in the layout: pooling would first copy it out whole (shufflenet `apoz` 1.82x -> 1.57x).
        padded = in_blocks and blocked and not _pools_in_place(spec) and dims is not None and not sampled
        if blocked and set(sums) == {"total", "zeros"} and not sampled:
            # ``apoz``: the zeros are counted by a HardSigmoid or a Conv that samples as it goes (see
            # ``_is_off_blocked``), and the mean of the whole map is one GlobalAveragePool; a shared sample
            # would cost one more node per tensor, which is most of what a small model's run pays for
            # (se_hardswish 1.63x -> 1.5x). Both are means.
            zeros = self._is_off_blocked(tensor, spec.channels, key, step)
            whole = tensor
            if padded and full != (1, 1):
                zeros = self._channel_means(zeros, spec.channels, dims, f"{key}_mean_zeros")
                whole = self._channel_means(tensor, spec.channels, full, f"{key}_mean_total")
            elif full != (1, 1):  # (one position: its own mean)
                zeros = self._node("GlobalAveragePool", [zeros], f"{key}_mean_zeros")
                whole = self._node("GlobalAveragePool", [tensor], f"{key}_mean_total")
            return [{"total": whole, "zeros": zeros}.get(name, "") for name in SUMS]
        base = ""
        if not padded or {"total_sq", "total_abs"} & set(sums):
            base = self._strided(tensor, spec, key)
            if not spec.float32:
                base = self._node("Cast", [base], f"{key}_f32", to=TensorProto.FLOAT)
        axes = [i for i in range(1, rank) if i != spec.axis]

        def mean(x: str, name: str) -> str:
            if spec.axis == 1 and dims == (1,) * len(axes):
                return x  # one position (a squeeze-excite vector, say): already its mean, in the right shape
            if spec.axis == 1 and rank >= 3:
                return self._node("GlobalAveragePool", [x], name)
            return self._reduce("ReduceMean", x, name, axes) if axes else x

        # |x|: one ReduceL1 reads the sample once where Abs and a mean would read it three times (and Abs,
        # unlike Mul, takes the sample out of the blocked layout anyway). A ReduceSumSquare for x^2 did
        # the same for small models but cost ResNet-50-like 11% more time: its convs lost in-place adds.
        summed = rank >= 3 and dims is not None
        keepdims = int(spec.axis == 1)  # the shape GlobalAveragePool gives
        names = []
        for name in SUMS:
            if name not in sums:
                names.append("")
            elif name == "total_abs" and in_blocks and blocked:
                # |x| = 2 max(x, 0) - x: a Relu keeps the sample in the blocked layout, where a ReduceL1 or
                # an Abs copies it out (see ``_PackedMeans.finish``)
                positive = self._node("Relu", [base], f"{key}_positive")
                names.append(self._channel_means(positive, spec.channels, dims, f"{key}_mean_{name}") if padded
                             else mean(positive, f"{key}_mean_{name}"))
                self.positive.add(names[-1])
            elif name == "total_abs" and summed:
                names.append(self._reduce("ReduceL1", base, f"{key}_sum_{name}", axes, keepdims))
                self.summed.add(names[-1])
            elif name == "total_sq" and padded:  # (the Mul stays in the blocked layout)
                squares = self._node("Mul", [base, base], f"{key}_sq")
                names.append(self._channel_means(squares, spec.channels, dims, f"{key}_mean_{name}"))
            elif name == "total_sq":
                names.append(mean(self._node("Mul", [base, base], f"{key}_sq"), f"{key}_mean_{name}"))
            elif name == "total_abs":
                names.append(mean(self._node("Abs", [base], f"{key}_abs"), f"{key}_mean_{name}"))
            elif padded and name == "zeros":
                zeros = self._is_off_blocked(tensor, spec.channels, key, step)
                names.append(self._channel_means(zeros, spec.channels, dims, f"{key}_mean_{name}"))
            elif padded:  # the total: the mean of the sampled positions, read by a dilated kernel
                names.append(self._channel_means(tensor, spec.channels, full, f"{key}_mean_{name}", step))
            elif name == "zeros" and spec.float32 and spec.axis == 1 and rank == 4:
                names.append(mean(self._is_off_blocked(base, spec.channels, key), f"{key}_mean_{name}"))
            elif name == "zeros":
                names.append(mean(self._is_off(base, key), f"{key}_mean_{name}"))
            else:
                names.append(mean(base, f"{key}_mean_{name}"))
        return names

    def _channel_means(self, x: str, channels: int, dims: tuple[int, ...], name: str, step: int = 1) -> str:
        """The mean of each channel of a float32 NCHW map ``x`` of spatial ``dims`` over its every ``step``-th
        row and column (those ``_strided`` keeps): a depthwise Conv whose kernel, dilated by ``step``, reads
        them, which stays in ONNX Runtime's blocked layout whatever the channel count."""
        taps = [(d - 1) // step + 1 for d in dims]
        weights = np.full((channels, 1, *taps), 1.0 / math.prod(taps), np.float32)
        return self._node("Conv", [x, self._constant(weights, f"{name}_w")], name, group=channels, kernel_shape=taps,
                          dilations=[step] * len(dims), strides=list(dims))

    def concat(self, tensors: list[str], name: str) -> str:
        """One output of ``tensors`` ([batch, channels, ...], all of one rank) side by side: [batch, width]."""
        self.outputs.append(self._node("Flatten", [self._node("Concat", tensors, f"{name}_c", axis=1)], name, axis=1))
        return name

    def add(self, tensor: str, spec: TensorSpec, gram: str | None, sums: tuple[str, ...], key: str,
            count: bool = True) -> list[str]:
        """Nodes reducing ``tensor`` to its count of positions and the per-channel ``sums`` (keys of SUMS);
        ``gram`` "matrix" adds its Gram matrix (whose diagonal is the sum of squares), "rows" outputs the
        sampled rows instead. Returns the output names: the shape of the sampled values (positions times
        channels; an empty string without ``count``), one per key of SUMS (an empty string where it is not
        computed here) and the Gram matrix or rows (or an empty string)."""
        rank = len(spec.shape)
        if gram == "matrix" and rank >= 3 and spec.axis == rank - 1:
            # Channels last: [positions, channels] is a Reshape away, and the Gram matrix multiplies it
            # transposed in place (MatMul fuses the Transpose), where moving the channels first copies it.
            view = self._flat(self._strided(tensor, spec, key), spec, [-1, spec.channels], key)
            matrix, axes = self._gram(view, f"{key}_gram", transposed_first=True), [0]
        elif gram == "matrix" and rank >= 3 and spec.axis == 1 and self._batched_gram(spec):
            # A map with many positions per sample: a Gram matrix per sample of its [channels, positions]
            # view, summed, costs no Transpose of the sample (yolo's recording: a third of its extra time).
            view = self._flat(self._strided(tensor, spec, key), spec, [0, spec.channels, -1], key)
            per_sample = self._gram(view, f"{key}_grams")
            matrix, axes = self._reduce("ReduceSum", per_sample, f"{key}_gram", [0]), [0, 2]
        else:
            view, axes = self.rows(tensor, spec, key), [1]  # [channels, positions]
            matrix = ""
            if gram == "rows":
                matrix = view
            elif gram == "matrix":
                matrix = self._gram(view, f"{key}_gram")
        names = [self._node("Shape", [view], f"{key}_count") if count else ""]
        for name in SUMS:
            if name not in sums or name == "total_sq" and gram:  # the Gram matrix or rows give the squares
                names.append("")
            elif name == "zeros":
                names.append(self._reduce("ReduceSum", self._is_off(view, key), f"{key}_zeros", axes))
            else:
                op = {"total": "ReduceSum", "total_sq": "ReduceSumSquare", "total_abs": "ReduceL1"}[name]
                names.append(self._reduce(op, view, f"{key}_{name}", axes))
        names.append(matrix)
        self.outputs.extend(n for n in names if n)
        return names

    def _gram(self, x: str, name: str, transposed_first: bool = False) -> str:
        """x x^T of the matrix (or batch of matrices) ``x``; x^T x with ``transposed_first``. ONNX Runtime's
        FusedMatMul reads the transposed operand in place: a MatMul of a Transpose is fused into one
        anyway, but the fusion costs the session's creation (shufflenet's `redundancy` session builds in
        8.9 ms, 9.9 ms with the fusion)."""
        self.domains.add(CONTRIB_DOMAIN)
        self.nodes.append(helper.make_node("FusedMatMul", [x, x], [name], name=name, domain=CONTRIB_DOMAIN,
                                           transA=int(transposed_first), transB=int(not transposed_first)))
        return name

    def _flat(self, tensor: str, spec: TensorSpec, shape: list[int], key: str) -> str:
        """``tensor`` reshaped to ``shape``, as float32."""
        view = self._node("Reshape", [tensor, self._const(f"{key}_shape", shape)], f"{key}_rows")
        return view if spec.float32 else self._node("Cast", [view], f"{key}_f32", to=TensorProto.FLOAT)

    @classmethod
    def _batched_gram(cls, spec: TensorSpec) -> bool:
        """Whether a channels-second map samples at least half as many positions per sample as it has
        channels: per-sample Gram matrices then cost less than moving its channels first (measured)."""
        dims = cls.sample_dims(spec)
        return dims is not None and 2 * math.prod(dims) >= spec.channels


def upstream_nodes(graph: onnx.GraphProto, outputs: list[str]) -> list[int]:
    """Indices of the nodes of ``graph`` that ``outputs`` depend on, in graph order (a node with subgraphs
    depends on every name its subgraphs read)."""
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
    needed: set[int] = set()
    stack = [producer[name] for name in outputs if name in producer]
    while stack:
        index = stack.pop()
        if index in needed:
            continue
        needed.add(index)
        stack.extend(producer[name] for name in _read_names(graph.node[index]) if name in producer)
    return sorted(needed)


def _read_names(node: onnx.NodeProto) -> list[str]:
    """The names ``node`` reads: its inputs and those of the nodes of its subgraphs (If, Loop, Scan)."""
    names = list(node.input)
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            names.extend(name for inner in attribute.g.node for name in _read_names(inner))
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            names.extend(name for graph in attribute.graphs for inner in graph.node for name in _read_names(inner))
    return names


def collect_stats(model: onnx.ModelProto, tensors: dict[str, TensorSpec], batches: Iterable[dict[str, np.ndarray]],
                  quiet: bool = True, gram: bool = False, sums: tuple[str, ...] = ("total",),
                  views: dict[str, tuple[str, int]] | None = None) -> dict[str, ChannelStats]:
    """Run ``model`` over ``batches`` and reduce ``tensors`` to per-channel statistics.

    The model is changed only for the duration of the call (nodes and outputs are appended, then
    removed). ``sums`` are the keys of SUMS to record (the sum always); ``gram`` asks for Gram matrices
    too, and with them the sums of squares (tensors over GRAM_MAX_CHANNELS channels never get one).
    ``views`` (see ``channel_views``) names tensors whose statistics are sliced from another's: that one
    then samples for them too (see ``_source_fractions``).
    """
    graph = model.graph
    known = {v.name for v in graph.input} | {name for node in graph.node for name in node.output}
    tensors = {name: spec for name, spec in tensors.items() if name in known}
    views = {name: (source, start) for name, (source, start) in (views or {}).items()
             if name in tensors and source in tensors and source not in views
             and not (gram and tensors[source].channels > GRAM_MAX_CHANNELS >= tensors[name].channels)}
    for source, fraction in _source_fractions(tensors, views, gram).items():
        tensors[source] = replace(tensors[source], sample_fraction=fraction)
    viewed = {name: tensors.pop(name) for name in views}
    builder = _StatsGraph(default_opset(model) or 13)
    in_blocks = _in_blocks(graph, tensors)
    batches = recording_batches(model, list(batches), tensors.values())
    batch = _batch_size(batches)
    means: dict[str, tuple[TensorSpec, list[str]]] = {}  # outputs of ``sample_means``, packed below
    reduced: dict[str, list[str]] = {}  # outputs of ``add``
    modes: dict[str, str | None] = {}
    stats: dict[str, ChannelStats] = {}
    per_sample: dict[str, int] = {}  # tensors reduced to per-sample means, and their positions per sample
    abs_of_total: list[str] = []  # tensors >= 0, whose sum of |x| is their sum
    for index, (name, spec) in enumerate(tensors.items()):
        modes[name] = _gram_mode(spec, batch) if gram and spec.channels <= GRAM_MAX_CHANNELS else None
        keys = tuple(k for k in SUMS if k == "total" or k in sums or k == "total_sq" and modes[name])
        if spec.nonnegative and "total_abs" in keys:
            abs_of_total.append(name)
            keys = tuple(k for k in keys if k != "total_abs")
        key = f"onnxprune_stats_{index}"
        if modes[name] is None and spec.axis != 0:
            if keys == ("total",) and _pools_in_place(spec):
                # A mean alone is taken over every position: its reduction reads the map once, as a
                # strided sample would (concat_net 1.30x -> 1.20x), and it is exact.
                spec = replace(spec, sample_fraction=1.0)
            means[name] = (spec, builder.sample_means(name, spec, keys, key, in_blocks=name in in_blocks))
            per_sample[name] = _StatsGraph.sampled_positions(spec)
        elif modes[name] == "matrix" and _means_beside_gram(spec):
            # The sums are per-sample means of the Gram matrix's sample, packed with the others, and the
            # count is known: a ReduceSum of the sample and a Shape less (se_hardswish: a ReduceSum over
            # the batch and 36 positions of a 16-channel sample took 73 us of a 1.8 ms run).
            means[name] = (spec, builder.sample_means(name, spec, tuple(k for k in keys if k != "total_sq"), key,
                                                      sampled=True))
            per_sample[name] = _StatsGraph.sampled_positions(spec)
            reduced[name] = builder.add(name, spec, modes[name], (), key, count=False)
        else:
            reduced[name] = builder.add(name, spec, modes[name], keys, key)
        stats[name] = ChannelStats(spec.channels, modes[name] is not None, keys)
    packed = _PackedMeans(builder, means)
    taken = gram_runs(len(batches), batch) if any(modes.values()) else [False] * len(batches)
    # A tensor whose Gram matrices would cover too few positions on those runs (a pooled or flat one: one
    # position a sample) takes them on every run; its products are small.
    covered = sum(taken[0::2]) * batch  # samples a fold's Gram matrices cover
    every_run = {name for name, spec in tensors.items() if modes[name] is not None
                 and covered * _StatsGraph.sampled_positions(spec) < GRAM_ROWS_PER_CHANNEL * spec.channels}
    skipped = [name for name in reduced if modes[name] is not None and name not in every_run]
    saved = sum(taken.count(False) * batch * _StatsGraph.sampled_positions(tensors[name]) * tensors[name].channels ** 2
                for name in skipped)
    if any(taken) and saved < GRAM_BRANCH_MIN_MACS:  # too little for what the If costs: every run takes them
        taken = [True] * len(batches)
    switch = None
    if any(taken) and not all(taken) and skipped:
        switch = "onnxprune_take_grams"
        renamed = builder.branch([reduced[name][-1] for name in skipped], switch)
        reduced = {name: [*names[:-1], renamed.get(names[-1], names[-1])] for name, names in reduced.items()}
    # The whole model runs: its recorded tensors reach near its end, and finding the nodes they need costs a
    # small model's session about 1 ms, more than it saves (see ``_StatsGraph.session``).
    sess = builder.session(model)
    # (BLAS keeps its threads: no products are taken between these runs, and a limit on them slowed the
    # ResNet-50-like model's runs by 8%, see ``one_blas_thread``.)
    for index, feeds in enumerate(progress(batches, "recording activations", quiet, total=len(batches))):
        if switch:
            feeds = {**feeds, switch: np.array(taken[index])}
        values = dict(zip(builder.outputs, sess.run(builder.outputs, feeds)))
        fold = index % 2
        packed.add(fold, values, taken[index])
        for name, names in reduced.items():
            _add_reduced(stats[name], names, modes[name], values, fold, taken[index] or name in every_run)
    packed.finish(stats, per_sample, every_run)
    for name, mode in modes.items():
        if mode is not None:
            stats[name].squares_from_grams()
    for name in abs_of_total:
        stats[name].sums["total_abs"] = stats[name].sums["total"]
    for name, (source, start) in views.items():
        stats[name] = stats[source].channel_slice(start, viewed[name].channels)
    return stats


def _source_fractions(tensors: dict[str, TensorSpec], views: dict[str, tuple[str, int]], gram: bool) -> dict[str, float]:
    """The sample fractions of the tensors that ``views`` are sliced from, which sample for them too. A Gram
    matrix costs its channels squared per sampled position, so with Gram matrices a source samples its own
    share of positions plus each view's at the source's width, (view channels / source channels)^2 times
    the view's share. (The view's share alone put 64 positions a sample into the Gram matrix of yolo's
    96-channel Concat of a 32-channel map, where 9 are its share: 0.2 ms of a 3 ms run.) Without Gram
    matrices the denser of the shares is taken."""
    fractions: dict[str, float] = {}
    for name, (source, _) in views.items():
        view, wide = tensors[name], tensors[source]
        fraction = fractions.get(source, wide.sample_fraction)
        if gram and wide.channels <= GRAM_MAX_CHANNELS:
            fractions[source] = min(1.0, fraction + (view.channels / wide.channels) ** 2 * view.sample_fraction)
        else:
            fractions[source] = max(fraction, view.sample_fraction)
    return fractions


def one_blas_thread() -> AbstractContextManager:
    """numpy's BLAS on one thread, for the products taken between ONNX Runtime's runs on every core: BLAS
    threads would fight its threads for the cores (2 cores: a 32 x 1936 Gram right after a run took 13 ms,
    0.06 ms alone). Elsewhere BLAS keeps all its threads (the ResNet-50-like model's large solves): the
    limit itself costs runs (the ResNet-50-like model's recording, which takes no products between its
    runs, spent 1.93-2.31 s in ONNX Runtime under it, 1.78-1.84 s without)."""
    return _thread_pools().limit(limits=1, user_api="blas")


@cache
def _thread_pools() -> ThreadpoolController:
    """The thread pools of the loaded libraries, found once: finding them reads the process's memory map
    (0.6 ms a call, a tenth of what a small model's recording costs over its plain inference)."""
    return ThreadpoolController()


def runtime_shapes(model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """The shapes of the tensors ``names`` of ``model`` in one ONNX Runtime run on ``feeds``: sizes that shape
    inference cannot follow (a position embedding sliced to the sequence length, say). Tensors the run
    cannot expose, or all where it fails, are left out."""
    graph = model.graph
    produced = {name for node in graph.node for name in node.output}
    existing = {o.name for o in graph.output}
    wanted = [name for name in dict.fromkeys(names) if name in produced]
    builder = _StatsGraph(default_opset(model) or 13)
    builder.outputs = [name for name in wanted if name not in existing]
    if not wanted:
        return {}
    try:
        values = builder.session(model).run(wanted, feeds)
    except Exception:  # noqa: BLE001 - ONNX Runtime raises several unrelated types; the sizes stay unknown
        return {}
    return {name: list(value.shape) for name, value in zip(wanted, values)}


def _add_reduced(stats: ChannelStats, names: list[str], mode: str | None, values: dict[str, np.ndarray],
                 fold: int, with_gram: bool = True) -> None:
    """Add one batch of the outputs ``names`` of ``_StatsGraph.add`` (Gram ``mode``) to ``fold`` of ``stats``;
    its Gram matrix too where ``with_gram`` (not where the run left it out, see ``gram_runs``)."""
    # sampled positions: the values over the channels (none without a count: the sums count them)
    count = int(np.prod(values[names[0]])) // stats.channels if names[0] else 0
    _, *sum_names, gram_name = names
    batch_sums = {key: values[n] for key, n in zip(SUMS, sum_names) if n}
    stats.add(fold, count, batch_sums)  # (the sums of squares: the Gram matrix's diagonal, at the end)
    if not gram_name or not with_gram:
        return
    if mode == "rows":
        stats.add_rows(fold, values[gram_name])
    else:
        stats.add_gram(fold, values[gram_name])
    if count:
        stats.add_gram_sample(fold, count, batch_sums["total"])


class _PackedMeans:
    """Per-sample means of many tensors (see ``_StatsGraph.sample_means``), concatenated in ONNX Runtime
    into one [batch, width] output per output rank and batch dimension: a batch then costs a couple of
    numpy calls rather than a few per tensor, which is most of the recording time of a small model."""

    def __init__(self, builder: _StatsGraph, means: dict[str, tuple[TensorSpec, list[str]]]) -> None:
        groups: dict[tuple, list[tuple[str, str, str, int]]] = {}
        for name, (spec, names) in means.items():
            rank = len(spec.shape) if spec.axis == 1 and len(spec.shape) >= 3 else 2  # see ``sample_means``
            for key, output in zip(SUMS, names):
                if output:
                    groups.setdefault((rank, str(spec.shape[0])), []).append((name, key, output, spec.channels))
        # ``means`` come in graph order. ONNX Runtime runs the reductions as soon as their tensors are
        # ready (not after the whole model, which would keep every tensor alive and stop the in-place
        # residual adds of its blocked convs: ResNet-50-like convs 40% slower) when the inputs of each
        # Concat are in graph order, and the Concat of the group that reaches deepest comes first.
        order = {name: index for index, name in enumerate(means)}
        self.layout = sorted(groups.values(), key=lambda entries: -order[entries[-1][0]])
        self.outputs = [builder.concat([output for _, _, output, _ in entries], f"onnxprune_means_{index}")
                        for index, entries in enumerate(self.layout)]
        self.summed, self.positive = builder.summed, builder.positive
        # by whether the run took Gram matrices, then by fold
        self.totals = [np.zeros((2, 2, sum(e[3] for e in entries))) for entries in self.layout]
        self.samples = np.zeros((len(self.layout), 2, 2))

    def add(self, fold: int, values: dict[str, np.ndarray], with_gram: bool = True) -> None:
        """Add one batch's outputs to ``fold`` (``with_gram``: the run took Gram matrices)."""
        for index, output in enumerate(self.outputs):
            means = values[output]
            self.totals[index][int(with_gram), fold] += means.sum(0, dtype=np.float64)
            self.samples[index, int(with_gram), fold] += len(means)

    def finish(self, stats: dict[str, ChannelStats], positions: dict[str, int], every_run: set[str]) -> None:
        """Add the totals to ``stats``: each sample's mean stands for its ``positions[name]`` positions (its
        sums, from ``summed`` outputs, for themselves); for a tensor with a Gram matrix, the totals of the
        runs that took it (all runs for those of ``every_run``) are also what the Gram matrix covers."""
        sums: dict[str, dict[str, np.ndarray]] = {}
        samples: dict[str, np.ndarray] = {}
        positive = []
        for index, entries in enumerate(self.layout):
            offset = 0
            for name, key, output, channels in entries:
                scale = 1 if output in self.summed else positions[name]
                sums.setdefault(name, {})[key] = self.totals[index][:, :, offset:offset + channels] * scale
                samples[name] = self.samples[index]
                offset += channels
                if output in self.positive:
                    positive.append(name)
        for name in positive:  # the sum of |x| is twice the sum of max(x, 0), less the sum of x
            sums[name]["total_abs"] = 2 * sums[name]["total_abs"] - sums[name]["total"]
        for name, by_key in sums.items():
            for fold in (0, 1):
                stats[name].add(fold, int(samples[name][:, fold].sum()) * positions[name],
                                {key: value[:, fold].sum(0) for key, value in by_key.items()})
                if stats[name].with_gram:
                    runs = slice(None) if name in every_run else slice(1, 2)
                    stats[name].add_gram_sample(fold, int(samples[name][runs, fold].sum()) * positions[name],
                                                by_key["total"][runs, fold].sum(0))


# Ops that ONNX Runtime runs in its blocked layout when their input is in it, and ops it fuses into the Conv
# before them (its NchwcTransformer).
_BLOCKED_UNARY = {"Relu", "Sigmoid", "Tanh", "BatchNormalization"}
_FUSED_INTO_CONV = {"Clip", "HardSigmoid", "LeakyRelu"}


def _in_blocks(graph: onnx.GraphProto, tensors: dict[str, TensorSpec]) -> set[str]:
    """The NCHW maps of ``tensors`` that ONNX Runtime keeps in its blocked conv layout, as far as the graph
    shows: Conv outputs, the outputs of the ops it fuses into a Conv or runs blocked after one, and Adds
    and Muls of such outputs (a residual, a SiLU)."""
    producers = {output: node for node in graph.node for output in node.output}
    readers = Counter(name for node in graph.node for name in node.input)
    known: dict[str, bool] = {}

    def fused(node: onnx.NodeProto) -> bool:  # (only into a Conv whose output it alone reads)
        conv = producers.get(node.input[0])
        return conv is not None and conv.op_type == "Conv" and readers[node.input[0]] == 1

    def blocked(name: str, depth: int = 0) -> bool:
        if name not in known:
            node = producers.get(name)
            known[name] = node is not None and depth < 16 and (
                node.op_type == "Conv"
                or node.op_type in _BLOCKED_UNARY and blocked(node.input[0], depth + 1)
                or node.op_type in _FUSED_INTO_CONV and fused(node)
                or node.op_type in ("Add", "Sum", "Mul") and all(blocked(i, depth + 1) for i in node.input))
        return known[name]
    return {name for name, spec in tensors.items() if spec.axis == 1 and len(spec.shape) == 4 and blocked(name)}


def _means_beside_gram(spec: TensorSpec) -> bool:
    """Whether the sums beside a Gram matrix of ``spec`` can be per-sample means of its sample: a float32
    map, channels second, whose sampled positions per sample are known."""
    return spec.float32 and spec.axis == 1 and len(spec.shape) >= 3 and _StatsGraph.sample_dims(spec) is not None


def _pools_in_place(spec: TensorSpec) -> bool:
    """Whether a GlobalAveragePool of the whole tensor stays in ONNX Runtime's blocked conv layout (or none
    is involved): not for an NCHW map whose channels do not fill the blocks, which pooling copies out of
    the layout whole, where the sampling Conv does not (mobilenetv2 1.27x -> 1.45x)."""
    return spec.channels % NCHWC_BLOCK == 0 or spec.axis != 1 or len(spec.shape) != 4


def recording_batches(model: onnx.ModelProto, batches: list[dict[str, np.ndarray]],
                      specs: Iterable[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """``batches`` with every few consecutive ones joined, up to RECORD_SAMPLES samples and RECORD_BYTES of
    the tensors ``specs`` describe (samples first), leaving at least RECORD_MIN_BATCHES (so that both
    folds keep several); only where every input of ``model`` has a symbolic batch size and all batches
    share their other sizes. Otherwise ``batches`` themselves."""
    if not batches or not batches[0]:
        return batches
    inputs = {v.name: v.type.tensor_type.shape.dim for v in model.graph.input}
    if not all(name in inputs and inputs[name] and not inputs[name][0].HasField("dim_value") for name in batches[0]):
        return batches
    size = len(next(iter(batches[0].values())))
    shapes = {tuple((k, v.shape[1:], v.dtype) for k, v in sorted(b.items())) for b in batches}
    if len(shapes) != 1 or any(len(v) != size for b in batches[:-1] for v in b.values()):
        return batches
    per_sample = 0
    for spec in specs:
        # The batch is the one symbolic size: first, or second in a sequence-first tensor (an LSTM's input).
        symbolic = [i for i, d in enumerate(spec.shape) if not isinstance(d, int)]
        batch_axis = symbolic[0] if symbolic else 0
        if len(symbolic) > 1 or spec.axis == batch_axis:
            return batches
        per_sample += math.prod(d for i, d in enumerate(spec.shape) if i != batch_axis) * 4
    count = min(RECORD_SAMPLES // size, RECORD_BYTES // max(per_sample * size, 1), len(batches) // RECORD_MIN_BATCHES)
    if count < 2:
        return batches
    groups = [batches[i:i + count] for i in range(0, len(batches), count)]
    return [{k: _joined([b[k] for b in group]) for k in group[0]} for group in groups]


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """``parts`` joined on their first axis: a read-only view where they lie back to back in one buffer
    (batches sliced from one array, as ``load_calibration`` makes them), else a copy."""
    first, address = parts[0], parts[0].__array_interface__["data"][0]
    for part in parts:
        if (part.base is None or part.base is not first.base or not part.flags.c_contiguous
                or part.dtype != first.dtype or part.shape[1:] != first.shape[1:]
                or part.__array_interface__["data"][0] != address):
            return np.concatenate(parts)
        address += part.nbytes
    shape = (sum(len(part) for part in parts), *first.shape[1:])
    return np.lib.stride_tricks.as_strided(first, shape, first.strides, writeable=False)


def gram_runs(runs: int, samples: int) -> list[bool]:
    """Which of ``runs`` runs of ``samples`` samples (alternating between the folds) take Gram matrices:
    pairs of consecutive runs spread evenly over them, enough for GRAM_SHARE of the samples and at least
    GRAM_MIN_SAMPLES per fold (every run where there are few)."""
    pairs = -(-runs // 2)
    wanted = min(pairs, max(math.ceil(GRAM_SHARE * pairs), math.ceil(GRAM_MIN_SAMPLES / max(samples, 1))))
    chosen = {pair * pairs // wanted for pair in range(wanted)}
    return [index // 2 in chosen for index in range(runs)]


def _batch_size(batches: list[dict[str, np.ndarray]]) -> int:
    """Samples in the first batch (1 without any)."""
    return len(next(iter(batches[0].values()))) if batches and batches[0] else 1


def _gram_mode(spec: TensorSpec, batch: int) -> str:
    """"rows" for wide feature maps whose batch samples fewer positions than they have channels (their
    rows are smaller than their Gram matrix, and are multiplied in numpy), else "matrix" (computed in
    ONNX Runtime). For narrow or flat tensors the gathering costs more than it saves (measured)."""
    if len(spec.shape) < 3 or spec.channels < ROWS_MIN_CHANNELS:  # no spatial positions, or a small Gram
        return "matrix"
    return "rows" if batch * _positions(spec) * spec.sample_fraction < spec.channels else "matrix"


def record_consumer_inputs(model: onnx.ModelProto, analysis: Analysis, batches: list[dict[str, np.ndarray]],
                           quiet: bool = True, gram: bool = False, sums: tuple[str, ...] = ("total",)
                           ) -> dict[str, ChannelStats]:
    """Statistics of the tensors that weighted consumers (see ``consumers.py``) of ``analysis`` read, where
    some of their channels can be removed (the others never need ranking or first-pass compensation)."""
    prunable = np.zeros(analysis.unit_count, dtype=bool)
    for group in analysis.groups:
        prunable[group.units] = group.pinned_reason is None
    tensors = {name: spec for name, spec in consumer_inputs(analysis).items()
               if prunable[analysis.unit_of_slot[analysis.context.channels[name].slots]].any()}
    return collect_stats(model, tensors, batches, quiet, gram, sums, channel_views(analysis.graph, tensors))


def channel_views(graph: gs.Graph, specs: dict[str, TensorSpec]) -> dict[str, tuple[str, int]]:
    """Tensors of ``specs`` whose values are a run of consecutive channels of a wider tensor of ``specs``
    at the same positions (a Split's or a channel Slice's output, a Concat's input, or so on through a few
    of these), by name: that tensor and the run's first channel. Each maps to the widest it reaches, which
    is not itself a view. Recording that tensor alone costs a small model far fewer appended nodes (yolo:
    23 tensors recorded, 13 reduced)."""
    tensors = graph.tensors()
    views = {}
    for name, spec in specs.items():
        best: tuple[str, int] | None = None
        reached = [(tensors[name], 0)]
        for index in range(_VIEW_SEARCH):
            if index >= len(reached):
                break
            tensor, start = reached[index]
            for wider, offset in _wider_channels(tensor, spec.axis):
                reached.append((wider, start + offset))
                other = specs.get(wider.name)
                if other is not None and other.axis == spec.axis and other.float32 == spec.float32 and (
                        best is None or other.channels > specs[best[0]].channels):
                    best = (wider.name, start + offset)
        if best is not None:
            views[name] = best
    return views


def _concat_offsets(concat: gs.Node, parts: list[gs.Tensor], channels) -> list[tuple[gs.Tensor, int]]:
    """[(the output of ``concat``, the offset of ``parts`` in it)] where ``concat`` reads ``parts``
    consecutively, after inputs of known ``channels``; else []."""
    inputs = list(concat.inputs)
    for index in range(len(inputs) - len(parts) + 1):
        if all(a is b for a, b in zip(inputs[index:index + len(parts)], parts)):
            sizes = [channels(t) for t in inputs[:index]]
            return [(concat.outputs[0], sum(sizes))] if None not in sizes else []
    return []


# How many tensors ``channel_views`` follows from each recorded tensor.
_VIEW_SEARCH = 16


def _wider_channels(tensor: gs.Tensor, axis: int) -> list[tuple[gs.Tensor, int]]:
    """The tensors with more channels on ``axis`` that hold ``tensor``'s channels, consecutively from an
    offset, at the same positions: the input of the Split or Slice (of that axis alone) that made it,
    the outputs of the Concats (on that axis) that read it, and those of Concats that read all the
    outputs of a Split of it, in order (as YOLOv8's C2f blocks do)."""
    def channels(t: gs.Tensor) -> int | None:
        size = t.shape[axis] if t.shape is not None and len(t.shape) > axis else None
        return size if isinstance(size, int) else None

    size = channels(tensor)
    if size is None:
        return []
    found = []
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is not None and producer.op == "Split" and int(producer.attrs.get("axis", 0)) % len(tensor.shape) == axis:
        sizes = [channels(out) for out in producer.outputs]
        index = producer.outputs.index(tensor)
        if all(s is not None for s in sizes[:index]):
            found.append((producer.inputs[0], sum(sizes[:index])))
    elif producer is not None and producer.op == "Slice":
        try:
            starts, _, axes, steps = slice_arguments(producer, len(tensor.shape))
        except Unprunable:
            starts, axes, steps = None, [], None
        source_size = channels(producer.inputs[0])
        if axes == [axis] and int(steps[0]) == 1 and source_size is not None:
            found.append((producer.inputs[0], slice(int(starts[0]), None).indices(source_size)[0]))
    for consumer in tensor.outputs:
        if consumer.op == "Concat" and int(consumer.attrs["axis"]) % len(tensor.shape) == axis:
            found += _concat_offsets(consumer, [tensor], channels)
        elif consumer.op == "Split" and int(consumer.attrs.get("axis", 0)) % len(tensor.shape) == axis:
            for concat in {id(n): n for out in consumer.outputs[:1] for n in out.outputs}.values():
                if concat.op == "Concat" and int(concat.attrs["axis"]) % len(tensor.shape) == axis:
                    found += _concat_offsets(concat, list(consumer.outputs), channels)
    return [(wider, offset) for wider, offset in found if (channels(wider) or 0) > size]


def consumer_inputs(analysis: Analysis) -> dict[str, TensorSpec]:
    """The tensors that weighted consumers of ``analysis`` read, by name, each with the share of its
    positions whose Gram matrix costs GRAM_BUDGET of its consumers' MACs."""
    tensors = {}
    signs: dict[int, bool] = {}
    graph_tensors = analysis.graph.tensors()
    work: dict[str, float] = {}  # consumer MACs per input position, divided by the channels
    for consumer in find_consumers(analysis):
        source = consumer.source
        tensor = graph_tensors.get(source.name)
        if tensor is None or tensor.shape is None:
            continue
        tensors[source.name] = TensorSpec(source.axis, source.size, tuple(tensor.shape), tensor.dtype == np.float32,
                                          nonnegative=_nonnegative(tensor, signs))
        shape = consumer.weight.node.inputs[consumer.weight.input_index].shape
        rows = math.prod(int(d) for d in shape) // int(shape[consumer.weight.axis])  # output channels x kernel taps
        work[source.name] = work.get(source.name, 0.0) + rows * _position_ratio(tensor, consumer.node.outputs[0])
    fractions = {name: min(max(GRAM_BUDGET * work[name] / spec.channels, MIN_SAMPLE_POSITIONS / _positions(spec)),
                           1.0, SAMPLE_POSITIONS / _positions(spec)) for name, spec in tensors.items()}
    return {name: replace(spec, sample_fraction=fractions[name]) for name, spec in tensors.items()}


# Ops whose output is >= 0 whatever their input, and ops that keep their (first) input's sign.
_NONNEGATIVE_OPS = {"Relu", "Sigmoid", "Softmax", "HardSigmoid", "Softplus", "Exp", "Abs", "Sqrt"}
_SIGN_KEEPING_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
                     "Transpose", "Squeeze", "Unsqueeze", "Identity", "Split", "Slice", "DepthToSpace",
                     "SpaceToDepth", "Gather"}


def _nonnegative(tensor: gs.Tensor, known: dict[int, bool], depth: int = 0) -> bool:
    """Whether ``tensor`` is >= 0 by construction: made by a ReLU-like op, a Clip at 0 or above, a
    sign-keeping op of such a tensor, or a Concat, Add or Mul of such tensors (``known`` memoises)."""
    if id(tensor) in known:
        return known[id(tensor)]
    node = tensor.inputs[0] if tensor.inputs and depth <= 64 else None
    result = False
    if node is None:
        pass  # a graph input, or too far back to follow
    elif node.op in _NONNEGATIVE_OPS:
        result = True
    elif node.op == "Clip":
        low = node.inputs[1] if len(node.inputs) > 1 else None
        value = (float(np.min(low.values)) if isinstance(low, gs.Constant) and low.values.size
                 else node.attrs.get("min") if low is None else None)
        result = value is not None and value >= 0
    elif node.op in _SIGN_KEEPING_OPS or node.op in ("Resize", "Upsample") and node.attrs.get("mode") != "cubic":
        result = _nonnegative(node.inputs[0], known, depth + 1)  # cubic interpolation overshoots below 0
    elif node.op == "DequantizeLinear":  # unsigned with zero point 0: a QDQ model's ReLU folded into its Q
        zero = node.inputs[2] if len(node.inputs) > 2 else None
        result = (np.dtype(node.inputs[0].dtype).kind == "u" if node.inputs[0].dtype is not None else False) and (
            zero is None or zero.is_empty() or isinstance(zero, gs.Constant) and not np.any(zero.values))
    elif node.op in ("Concat", "Add", "Mul", "Max"):
        result = all(_nonnegative(t, known, depth + 1) if not isinstance(t, gs.Constant)
                     else bool(np.all(t.values >= 0)) for t in node.inputs)
    known[id(tensor)] = result
    return result


def _positions(spec: TensorSpec) -> int:
    """Static positions per sample (not batch, not channels) of a tensor; symbolic dims count as 1."""
    dims = [d for i, d in enumerate(spec.shape) if i not in (0, spec.axis) and isinstance(d, int)]
    return max(1, math.prod(dims))


def _position_ratio(source: gs.Tensor, output: gs.Tensor) -> float:
    """Output positions per input position of a consumer (a strided conv has fewer), 1 when unknown."""
    def positions(tensor: gs.Tensor) -> int | None:
        dims = tensor.shape[2:] if tensor.shape is not None else None
        return math.prod(dims) if dims is not None and all(isinstance(d, int) for d in dims) else None
    source_positions, output_positions = positions(source), positions(output)
    return output_positions / source_positions if source_positions and output_positions else 1.0


@dataclass
class PairedStats:
    """Moments of an original tensor x and the same tensor x~ of a pruned model, at the same positions.

    With z = [x~, 1]: E[x x^T], E[x z^T] and E[z z^T], in two folds, which is all a refit of the
    consumer on the pruned model's inputs needs. With ``diagonal``, only the diagonal of E[x x^T] is
    kept (enough for errors summed channel by channel, and x may then have many channels).
    """

    xx: np.ndarray
    xz: np.ndarray
    zz: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls, channels: int, kept: int, diagonal: bool = False) -> PairedStats:
        xx = np.zeros((2, channels)) if diagonal else np.zeros((2, channels, channels))
        return cls(xx, np.zeros((2, channels, kept + 1)), np.zeros((2, kept + 1, kept + 1)), np.zeros(2))

    def add(self, fold: int, original: np.ndarray, pruned: np.ndarray) -> None:
        """Add one batch of [channels, positions] rows of both models. The products are taken in float32 (half
        the time of float64 products of float64 copies), of the rows less their batch means (float32
        products of uncentred rows lose the small errors a refit corrects: 1e-3 of a covariance), and
        summed in float64 with the means' terms added back."""
        if original.shape[1] == 0:
            return
        x, x_sum, x_mean = _centred(original)
        z, z_sum, z_mean = _centred(pruned)
        kept, count = len(z), x.shape[1]  # z's row of ones, the constant, is the sums and the count
        # sum x z^T = sum x~ z~^T + m_x (sum z~)^T + (sum x~) m_z^T + n m_x m_z^T, x~ = x - m_x
        if self.xx.ndim == 2:
            self.xx[fold] += np.einsum("ij,ij->i", x, x, dtype=np.float64) + 2 * x_mean * x_sum + count * x_mean ** 2
        else:
            self.xx[fold] += _product(x, x, x_mean, x_sum, x_mean, x_sum, count)
        self.xz[fold, :, :kept] += _product(x, z, x_mean, x_sum, z_mean, z_sum, count)
        self.xz[fold, :, kept] += x_sum + count * x_mean
        self.zz[fold, :kept, :kept] += _product(z, z, z_mean, z_sum, z_mean, z_sum, count)
        sums = z_sum + count * z_mean
        self.zz[fold, :kept, kept] += sums
        self.zz[fold, kept, :kept] += sums
        self.zz[fold, kept, kept] += count
        self.counts[fold] += x.shape[1]

    @cached_property
    def original_stats(self) -> ChannelStats | None:
        """The statistics of x alone, Gram matrices included (None when only the diagonal was kept); read
        once the recording is complete (they share its arrays)."""
        if self.xx.ndim == 2:
            return None
        stats = ChannelStats(len(self.xx[0]), keys=("total", "total_sq"))
        stats.counts = self.counts
        stats.sums["total"] = self.xz[:, :, -1]
        stats.sums["total_sq"] = np.diagonal(self.xx, axis1=1, axis2=2)
        stats.gram_counts, stats.gram_totals = self.counts, stats.sums["total"]
        stats._gram_sums = self.xx
        return stats

    def moments(self, fold: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(E[x x^T] or its diagonal, E[x z^T], E[z z^T]) over one fold or both (None)."""
        folds = [0, 1] if fold is None else [fold]
        count = max(self.counts[folds].sum(), 1)
        return tuple(m[folds].sum(0) / count for m in (self.xx, self.xz, self.zz))


def _centred(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 ``rows`` less their (float32) means, the float64 sums of what is left, and the means."""
    rows = rows.astype(np.float32, copy=False)
    mean = rows.mean(1, dtype=np.float64).astype(np.float32)
    centred = rows - mean[:, None]
    return centred, centred.sum(1, dtype=np.float64), mean.astype(np.float64)


def _product(a: np.ndarray, b: np.ndarray, a_mean: np.ndarray, a_sum: np.ndarray, b_mean: np.ndarray,
             b_sum: np.ndarray, count: int) -> np.ndarray:
    """sum over positions of (a~ + m_a)(b~ + m_b)^T: a~ b~^T in float32, the rest in float64."""
    return (a @ b.T + np.outer(a_mean, b_sum) + np.outer(a_sum, b_mean) + count * np.outer(a_mean, b_mean))


def collect_pairs(original: onnx.ModelProto, pruned: onnx.ModelProto, specs: dict[str, PairSpec],
                  batches: list[dict[str, np.ndarray]], quiet: bool = True, grams: dict[str, TensorSpec] | None = None
                  ) -> tuple[dict[str, PairedStats], dict[str, ChannelStats]]:
    """Run both models over ``batches`` and pair the sampled rows of each of ``specs`` (by key); also
    record the Gram matrices (and sums) of the original's tensors ``grams``, on the same run."""
    builders = (_StatsGraph(default_opset(original) or 13), _StatsGraph(default_opset(pruned) or 13))
    names: dict[str, tuple[str, str]] = {}
    for index, (key, spec) in enumerate(specs.items()):
        prefix = f"onnxprune_pair_{index}"
        pruned_rows = (builders[1].patches(spec.pruned, spec.pruned_spec, spec.unfold, prefix) if spec.unfold
                       else builders[1].rows(spec.pruned, spec.pruned_spec, prefix))
        offset_rows = ""
        if spec.offset:
            offset_spec = replace(spec.original_spec, channels=len(spec.offset_channels))
            offset_rows = builders[1].rows(spec.offset, offset_spec, f"{prefix}_offset")
        names[key] = (builders[0].rows(spec.original, spec.original_spec, prefix), pruned_rows, offset_rows)
    if not names:
        return {}, {}
    builders[0].outputs = [rows for rows, _, _ in names.values()]
    builders[1].outputs = [n for _, rows, offset in names.values() for n in (rows, offset) if n]
    recorded = [s for spec in specs.values() for s in (spec.original_spec, spec.pruned_spec)]
    batches = recording_batches(original, batches, [*recorded, *(grams or {}).values()])
    gram_modes = {name: _gram_mode(spec, _batch_size(batches)) for name, spec in (grams or {}).items()}
    gram_outputs = {name: builders[0].add(name, grams[name], mode, ("total",), f"onnxprune_gram_{i}")
                    for i, (name, mode) in enumerate(gram_modes.items())}
    gram_stats = {name: ChannelStats(grams[name].channels, keys=("total", "total_sq")) for name in gram_outputs}
    # A refit pass records a few levels of consumers: the early passes run only the part of both models
    # before them (ResNet-50-like, 51 images, 8 passes: 79 -> 64 s in all, the same weights).
    sessions = (builders[0].session(original, upstream=True), builders[1].session(pruned, upstream=True))
    pairs: dict[str, PairedStats] = {}
    with one_blas_thread():
        for index, feeds in enumerate(progress(batches, "refitting on the pruned model", quiet, total=len(batches))):
            runs = [dict(zip(b.outputs, s.run(b.outputs, feeds))) for b, s in zip(builders, sessions)]
            for name, outputs in gram_outputs.items():
                _add_reduced(gram_stats[name], outputs, gram_modes[name], runs[0], index % 2)
            for key, (original_rows, pruned_rows, offset_rows) in names.items():
                x, z = runs[0][original_rows], runs[1][pruned_rows]
                if offset_rows:
                    x = x.copy()
                    x[list(specs[key].offset_channels)] -= runs[1][offset_rows]
                if key not in pairs:  # patch pairs are scored channel by channel: the diagonal of E[x x^T] will do
                    pairs[key] = PairedStats.empty(len(x), len(z), diagonal=specs[key].unfold is not None)
                pairs[key].add(index % 2, x, z)
    return pairs, gram_stats
