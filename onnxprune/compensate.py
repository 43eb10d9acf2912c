"""Compensation: after channels are chosen, adjust what stays so each consumer's output moves least.

For a consumer (Conv, Gemm, MatMul) that loses input channels R and keeps K, a removed channel is
approximated from what stays, position by position: x_R ~ B [x_K, 1]. Folding B into the weights
(W_K += W_R B_K) and the bias (b += sum over kernel taps of W_R B_1) makes the consumer compute its
output from that approximation instead of from zeros. B comes from the Gram matrix of [x, 1]
recorded on calibration data:
- ``bias``: B_K = 0, B_1 = mean of x_R (the removed channels' mean contribution goes to the bias);
- ``merge``: each removed channel that nearly duplicates a kept one (|correlation| >= 0.9) becomes a
  scaled copy of its twin, whose weights absorb its own; the others get ``bias``;
- ``ls``: ridge-regularised least squares over all kept channels (exact when x_R is linear in x_K).
Each method is fitted on one Gram fold and scored on the other (and the other way round); the one with
the smallest output error on held-out positions wins, ``none`` included, so a consumer never gets a
fit that makes it worse on data the fit did not see.

A second pass (``refit``) uses the pruned model itself: with x~ the consumer's input in the model
pruned and compensated as above, and x the original input, it fits x ~ T [x~, 1] and gives the
consumer W T, so its output matches the original's although everything upstream changed too; every
consumer is refitted this way (those that lost nothing as well), so errors do not pile up layer after
layer. Again the held-out fold decides between the first pass's result, no change, and the refit.

A 2-D Conv gets a kernel refit instead where its patches are narrow enough: with z its input patches
in the pruned model (channels x kernel taps, and 1) and y its original output, the whole kernel and
bias become the least-squares map z -> y, so a kept channel can stand in for a removed one at another
tap. A Conv feeding a residual Add is fitted to the Add's original output minus the other term as the
pruned model computes it, which repairs the other branch's error too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.calibrate import ChannelStats, PairedStats, Unfold, odd_step
from onnxprune.consumers import Consumer, find_consumers
from onnxprune.groups import Analysis
from onnxprune.model import param_values, store_param
from onnxprune.plan import Plan
from onnxprune.rules.base import ParamSlice, stored_constant

# A constant term folds into the bias exactly only where the kernel misses the zero padding (a padded
# position reads 0, not the constant); below this share of output positions clear of it, none is used.
MIN_INTERIOR = 0.5
# Ridge strengths tried (relative to the mean energy of the kept channels); held-out error picks one.
RIDGES = (1e-6, 1e-4, 1e-2, 1e-1)
# A removed channel merges into a kept one when their |correlation| reaches this.
MERGE_CORRELATION = 0.9
# A refit needs this many samples per fitted input in each fold. With fewer, its cross-validated output
# error can still look best while the model loses accuracy (on Fashion-MNIST, refitting a Gemm's 397
# inputs from 800 samples a fold cost 0.25 points; from 2,000 it gained 0.08), and with one fold it
# would be checked on the very data it was fitted to. (The first pass's ``ls`` is not held to it: there
# the same Gemm lost 0.2 points without it.)
SAMPLES_PER_FITTED_INPUT = 4
# Convs whose kept input patches (channels x kernel taps) are wider than this get no kernel refit: the
# cost of its moments grows with their square.
KERNEL_REFIT_MAX_FEATURES = 1024
# Output positions per sample whose patches enter a kernel refit: more than the statistics sample, as
# the refit has a parameter per kernel tap (on Fashion-MNIST, 256 rather than 64 lost 0.08 points less).
KERNEL_SAMPLE_POSITIONS = 256


@dataclass(frozen=True)
class Refits:
    """Paired statistics for the refit on the pruned model's inputs: ``channels`` by consumer input
    tensor, ``kernels`` by Conv node (its original output against its input patches in the pruned model)."""

    channels: dict[str, PairedStats]
    kernels: dict[str, PairedStats]


@dataclass(frozen=True)
class CompensationRecord:
    """What compensation did to one consumer; errors are its output error energy relative to ``none``."""

    node: str
    method: str
    removed: int
    kept: int
    error_ratio: float

    def to_dict(self) -> dict:
        return {"node": self.node, "method": self.method, "removed": self.removed, "kept": self.kept,
                "error_ratio": self.error_ratio}


def compensate(analysis: Analysis, plan: Plan, stats: dict[str, ChannelStats],
               refits: Refits | None = None, decisions: dict | None = None,
               only: set[str] | None = None) -> list[CompensationRecord]:
    """Rewrite the consumers of ``plan``'s removed channels in ``analysis.graph`` (before the plan is applied).

    With ``refits`` (recorded on the model this same call made without them), every consumer is also
    considered for a refit on the pruned model's inputs. ``decisions`` keeps the fits of earlier calls
    with the same plan on analyses of the same model, for reuse. ``only`` limits the rewrite to the
    consumers of those node names.
    """
    refits = refits or Refits({}, {})
    slot_removed = np.isin(analysis.unit_of_slot, plan.removed_units(analysis))
    records = []
    for consumer in find_consumers(analysis):
        if only is not None and consumer.node.name not in only:
            continue
        removed = slot_removed[consumer.weight.slots]
        pair = refits.channels.get(consumer.source.name)
        # The refit's recording holds the original input's Gram matrices too, at the same positions.
        recorded = pair.original_stats if pair is not None else stats.get(consumer.source.name)
        recorded = recorded if recorded is not None and recorded.count else None
        kernel = refits.kernels.get(consumer.node.name)
        if removed.all() or pair is None and kernel is None and (recorded is None or not removed.any()):
            continue
        out_kept = ~slot_removed[consumer.out_weight.slots] if consumer.out_weight is not None else None
        if out_kept is not None and consumer.recurrent:  # W's rows are direction major: one mask per direction
            out_kept = np.tile(out_kept, consumer.out_channels() // len(out_kept))
        records.append(_compensate_consumer(analysis, consumer, removed, recorded, pair, kernel, out_kept, decisions))
    return records


@dataclass(frozen=True)
class _Decision:
    """What compensation gives one consumer: ``patches`` (a kernel refit, see ``_kernel_form``) or
    ``transform`` (see ``_write``; None for no change)."""

    method: str
    ratio: float
    transform: np.ndarray | None = None
    patches: np.ndarray | None = None


def _compensate_consumer(analysis: Analysis, consumer: Consumer, removed: np.ndarray, recorded: ChannelStats | None,
                         pair: PairedStats | None, kernel: PairedStats | None, out_kept: np.ndarray | None,
                         decisions: dict | None) -> CompensationRecord:
    # The same consumer with the same recordings gets the same fit: the refit's passes ask again and again.
    key = (consumer.node.name, id(recorded), id(pair), id(kernel))
    decision = decisions.get(key) if decisions is not None else None
    weights = consumer.matrix()
    if decision is None:
        decision = _decide(consumer, weights, removed, recorded, pair, kernel, out_kept)
        if decisions is not None:
            decisions[key] = decision
    kept_idx = np.nonzero(~removed)[0]
    if decision.patches is not None:
        _write_kernel(analysis, consumer, weights, kept_idx, decision.patches)
    elif decision.transform is not None:
        _write(analysis, consumer, weights, kept_idx, decision.transform, _bias_input(consumer))
    return CompensationRecord(consumer.node.name, decision.method, int(removed.sum()), len(kept_idx), decision.ratio)


def _decide(consumer: Consumer, weights: np.ndarray, removed: np.ndarray, recorded: ChannelStats | None,
            pair: PairedStats | None, kernel: PairedStats | None, out_kept: np.ndarray | None) -> _Decision:
    """The first pass, then the refit where one was recorded, of a consumer with ``weights``
    (``Consumer.matrix``), each kept only where it beats the simpler options on held-out data."""
    intercept = _bias_input(consumer) is not None
    kept_idx, removed_idx = np.nonzero(~removed)[0], np.nonzero(removed)[0]
    # Errors count on the output channels that stay (rows are output channel major, kernel taps minor).
    scored = weights if out_kept is None else weights[np.repeat(out_kept, len(weights) // len(out_kept))]
    method, transform, ratio = "none", _identity(len(removed), kept_idx), 1.0
    # Without removed inputs (or without their statistics) only the refit can help.
    if recorded is not None and removed.any() and recorded.has_gram:
        method, mapping, ratio = _choose_method(recorded, kept_idx, removed_idx, scored[:, removed_idx], intercept)
        transform[removed_idx] = mapping
    elif recorded is not None and removed.any() and intercept:  # no Gram: the mean is the best constant stand-in
        method, ratio = "bias", float("nan")
        transform[removed_idx, -1] = recorded.mean[removed_idx]
    if kernel is not None and _enough_samples(kernel):
        none = _kernel_form(consumer, weights, _identity(len(removed), kept_idx))
        first = _kernel_form(consumer, weights, transform)
        method, patches, ratio = _choose_kernel_refit(kernel, none, first, method, out_kept)
        if method == "refit":
            return _Decision(method, ratio, patches=patches)
    elif pair is not None and _enough_samples(pair):
        method, transform, ratio = _choose_refit(pair, kept_idx, scored, intercept, method, transform)
    return _Decision(method, ratio, transform if method != "none" else None)


def _enough_samples(pair: PairedStats) -> bool:
    """Whether each fold holds SAMPLES_PER_FITTED_INPUT samples per input of the refit (the constant included)."""
    return bool(pair.counts.min() >= SAMPLES_PER_FITTED_INPUT * pair.zz.shape[1])


def kernel_refit_geometry(consumer: Consumer, kept: int) -> Unfold | None:
    """How to record the input patches of a 2-D Conv consumer with ``kept`` input channels left, for a
    refit of its whole kernel and bias; None where a channel refit has to do (other shapes, dtypes and
    paddings are not handled)."""
    node = consumer.node
    source, output = node.inputs[0], node.outputs[0]
    kernel = tuple(consumer.weight.node.inputs[consumer.weight.input_index].shape[2:])
    shapes = (source.shape, output.shape)
    if (node.op != "Conv" or len(kernel) != 2 or not _can_take_bias(consumer)
            or conv_pads(node) is None or source.dtype != np.float32
            or any(s is None or len(s) != 4 or not all(isinstance(d, int) for d in s[1:]) for s in shapes)
            or kept * kernel[0] * kernel[1] > KERNEL_REFIT_MAX_FEATURES):
        return None
    height, width = output.shape[2:]
    step = max(1, min(odd_step(int(round(np.sqrt(height * width / KERNEL_SAMPLE_POSITIONS))), down=True), height, width))
    pads = tuple(conv_pads(node))
    return Unfold(kernel, tuple(node.attrs.get("strides", [1, 1])), pads, tuple(node.attrs.get("dilations", [1, 1])),
                  step)


def conv_pads(node: gs.Node) -> list[int] | None:
    """A Conv's padding as explicit [begins..., ends...]: its ``pads``, or what ``auto_pad`` SAME_UPPER or
    SAME_LOWER (tf2onnx's "same" padding) amounts to at its input's static size; None where that size is
    unknown."""
    shape, weight = node.inputs[0].shape, node.inputs[1].shape
    if shape is None or weight is None:
        return None
    spatial = len(shape) - 2
    mode = node.attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        return list(node.attrs.get("pads", [0] * 2 * spatial)) if mode == "NOTSET" else [0] * 2 * spatial
    if not all(isinstance(d, int) for d in shape[2:]) or not all(isinstance(d, int) for d in weight[2:]):
        return None
    strides = node.attrs.get("strides", [1] * spatial)
    dilations = node.attrs.get("dilations", [1] * spatial)
    begins, ends = [], []
    for size, kernel, stride, dilation in zip(shape[2:], weight[2:], strides, dilations):
        total = max(0, (-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size)
        small, large = total // 2, total - total // 2  # SAME_UPPER puts the odd one at the end
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends


def residual_sum(graph: gs.Graph, output: gs.Tensor, refitted_together: set[int]) -> tuple[gs.Tensor, gs.Tensor] | None:
    """(sum, other term) when ``output`` feeds nothing but an Add with a same-shaped computed tensor (and
    is no graph output): a residual branch, which a refit should fit to the sum's original value minus
    what the other term carries in the pruned model, so that it corrects the other branch's error too.

    Not when the other term depends on a node in ``refitted_together`` (ids of the nodes refitted from
    the same recording): that node's refit would then correct the same error a second time.
    """
    readers = output.outputs
    if (len(readers) != 1 or readers[0].op != "Add" or len(readers[0].inputs) != 2
            or any(t is output for t in graph.outputs)):
        return None
    add = readers[0]
    other = add.inputs[1] if add.inputs[0] is output else add.inputs[0]
    if (other is output or isinstance(other, gs.Constant) or other.shape != output.shape
            or add.outputs[0].shape != output.shape):
        return None
    pending, seen = [other], set()
    while pending:
        tensor = pending.pop()
        for node in tensor.inputs:
            if id(node) in refitted_together:
                return None
            if id(node) not in seen:
                seen.add(id(node))
                pending.extend(t for t in node.inputs if not isinstance(t, gs.Constant))
    return add.outputs[0], other


def _kernel_form(consumer: Consumer, weights: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The consumer's weights after ``transform`` (see ``_write``) as [output channels, kept x taps + 1]:
    the map from its kept input patches (channel major, taps minor) and a constant to its output."""
    out = consumer.out_channels()
    taps, kept = len(weights) // out, transform.shape[1] - 1
    patches = np.empty((out, kept * taps + 1))
    patches[:, :-1] = (weights @ transform[:, :-1]).reshape(out, taps, kept).transpose(0, 2, 1).reshape(out, -1)
    patches[:, -1] = _current_bias(consumer) + (weights @ transform[:, -1]).reshape(out, taps).sum(1)
    return patches


def _choose_kernel_refit(kernel: PairedStats, none: np.ndarray, first: np.ndarray, first_method: str,
                         out_kept: np.ndarray | None) -> tuple[str, np.ndarray, float]:
    """Between no change (``none``), the first pass's result (``first``), both in kernel form, and a
    least-squares fit of the Conv's original output from its input patches in the pruned model: the one
    with the least output error on the held-out fold (cross-validated over both folds)."""
    rows = np.ones(len(none)) if out_kept is None else out_kept.astype(float)

    def weights_of(option: tuple[str, float], moments: tuple) -> np.ndarray:
        if option[0] != "refit":
            return none if option[0] == "none" else first
        _, xz, zz = moments
        return _ridge_solve(zz, xz.T, option[1], intercept=True)

    best, weights, ratio = _cross_validate(_refit_options(first_method), kernel.counts, kernel.moments, weights_of,
                                           lambda moments, weights: _row_error(moments, weights, rows))
    return best[0], weights, ratio


def _row_error(moments: tuple, weights: np.ndarray, rows: np.ndarray) -> float:
    """sum over output channels o of rows[o] E(y_o - weights_o z)^2, from the diagonal of E[y y^T],
    E[y z^T] and E[z z^T] (without ever forming an output-by-output matrix)."""
    yy, yz, zz = moments
    per_row = yy - 2.0 * np.einsum("ij,ij->i", weights, yz) + np.einsum("ij,ij->i", weights @ zz, weights)
    return float(rows @ per_row)


def _identity(channels: int, kept: np.ndarray) -> np.ndarray:
    """T with x = T [x_kept, 1] when nothing changes: the kept channels map to themselves, the rest to 0."""
    transform = np.zeros((channels, len(kept) + 1))
    transform[kept, np.arange(len(kept))] = 1.0
    return transform


def _choose_refit(pair: PairedStats, kept: np.ndarray, weights: np.ndarray, intercept: bool, first: str,
                  first_transform: np.ndarray) -> tuple[str, np.ndarray, float]:
    """Between no change, the first pass's transform and a refit on the pruned model's inputs: the one
    with the least output error on the held-out fold (cross-validated over both folds)."""
    energy = weights.T @ weights
    none = _identity(weights.shape[1], kept)
    best, transform, ratio = _cross_validate(
        _refit_options(first), pair.counts, pair.moments,
        lambda option, moments: _option_transform(option, moments, none, first_transform, intercept),
        lambda moments, transform: _residual_energy(*moments, transform, energy))
    return best[0], transform, ratio


def _refit_options(first: str) -> list[tuple[str, float]]:
    """(method, ridge) options for a refit choice, simplest first: no change, the first pass's method, refits."""
    return [("none", 0.0)] + ([(first, 0.0)] if first != "none" else []) + [("refit", r) for r in RIDGES]


def _cross_validate(options: list[tuple[str, float]], counts: np.ndarray, moments_of, fit, error
                    ) -> tuple[tuple[str, float], np.ndarray, float]:
    """The option with the least output error over the folds, each fold's fit (``fit(option, moments)``)
    scored by ``error(moments, fitted)`` on the other fold's moments (``moments_of(fold)``; ties go to
    the earlier, simpler option). Returns it, its fit on both folds, and its error relative to the first
    option's."""
    errors = [0.0] * len(options)
    for fit_fold, check_fold in _fold_pairs(counts):
        fitted_on, checked_on = moments_of(fit_fold), moments_of(check_fold)
        for index, option in enumerate(options):
            errors[index] += error(checked_on, fit(option, fitted_on))
    best = min(range(len(options)), key=lambda i: (errors[i], i))
    ratio = errors[best] / errors[0] if errors[0] > 0 else 1.0
    return options[best], fit(options[best], moments_of(None)), float(ratio)


def _option_transform(option: tuple[str, float], moments: tuple, none: np.ndarray, first: np.ndarray,
                      intercept: bool) -> np.ndarray:
    method, ridge = option
    if method == "none":
        return none
    if method != "refit":
        return first
    _, xz, zz = moments
    columns = np.arange(zz.shape[0]) if intercept else np.arange(zz.shape[0] - 1)
    transform = np.zeros_like(none)
    transform[:, columns] = _ridge_solve(zz[np.ix_(columns, columns)], xz[:, columns].T, ridge, intercept)
    return transform


def _residual_energy(aa: np.ndarray, ab: np.ndarray, bb: np.ndarray, transform: np.ndarray,
                     energy: np.ndarray) -> float:
    """tr(energy E[e e^T]) for the residual e = a - T b, from E[a a^T], E[a b^T] and E[b b^T] (``energy``
    symmetric): sum(energy aa) - 2 sum(ab (energy T)) + sum((T bb) (energy T)), elementwise products,
    without the channels-by-channels residual (a third of the multiplications)."""
    weighted = energy @ transform
    return float(np.sum(energy * aa) - 2.0 * np.sum(ab * weighted) + np.sum((transform @ bb) * weighted))


def _ridge_solve(gram: np.ndarray, cross: np.ndarray, ridge: float, intercept: bool) -> np.ndarray:
    """The least-squares map M with target ~ M z, from E[z z^T] (``gram``, the constant last when
    ``intercept``) and E[z target^T] (``cross``); ridge relative to the mean energy, the constant unshrunk."""
    scale = float(np.trace(gram)) / len(gram) or 1.0
    regulariser = np.full(len(gram), ridge * scale)
    if intercept:
        regulariser[-1] = 1e-9 * scale
    return np.linalg.solve(gram + np.diag(regulariser), cross).T


def _fold_pairs(counts: np.ndarray) -> list[tuple[int, int]]:
    """(fit fold, check fold) pairs: both ways round, or the one fold with data checked on itself."""
    folds = [f for f in (0, 1) if counts[f]]
    return [(0, 1), (1, 0)] if len(folds) == 2 else [(folds[0], folds[0])]


def _choose_method(recorded: ChannelStats, kept: np.ndarray, removed: np.ndarray, w_removed: np.ndarray,
                   intercept: bool) -> tuple[str, np.ndarray, float]:
    """The method with the least cross-validated output error, fitted again on all the data."""
    columns = np.append(kept, recorded.channels) if intercept else kept
    energy = w_removed.T @ w_removed  # output error = tr(energy E[e e^T]) for the residual e = x_R - B z
    methods = [("none", 0.0)] + [("bias", 0.0)] * intercept + [("merge", 0.0)] + [("ls", r) for r in RIDGES]
    best, mapping, ratio = _cross_validate(
        methods, recorded.gram_counts, recorded.second_moment,
        lambda method, moment: _fit(method[0], moment, columns, removed, intercept, method[1]),
        lambda moment, mapping: _error(moment, columns, removed, mapping, energy))
    if not intercept:
        mapping = np.hstack([mapping, np.zeros((len(removed), 1))])
    return best[0], mapping, ratio


def _fit(method: str, moment: np.ndarray, columns: np.ndarray, removed: np.ndarray, intercept: bool,
         ridge: float = 0.0) -> np.ndarray:
    """B with x_R ~ B z, z the ``columns`` of [x, 1]."""
    mapping = np.zeros((len(removed), len(columns)))
    if method == "none":
        return mapping
    if method == "bias":
        mapping[:, -1] = moment[removed, -1]
        return mapping
    if method == "ls":
        return _ridge_solve(moment[np.ix_(columns, columns)], moment[np.ix_(columns, removed)], ridge, intercept)
    return _fit_merge(moment, columns, removed, intercept)


def _fit_merge(moment: np.ndarray, columns: np.ndarray, removed: np.ndarray, intercept: bool) -> np.ndarray:
    kept = columns[:-1] if intercept else columns
    mapping = np.zeros((len(removed), len(columns)))
    mean = moment[-1, :-1]
    cov = moment[:-1, :-1] - (np.outer(mean, mean) if intercept else 0.0)
    var = np.diag(cov)
    for row, channel in enumerate(removed):
        denominator = np.sqrt(np.maximum(var[channel] * var[kept], 0.0))
        correlation = np.divide(cov[channel, kept], denominator, out=np.zeros(len(kept)), where=denominator > 1e-12)
        twin = int(np.argmax(np.abs(correlation))) if len(kept) else -1
        if twin >= 0 and abs(correlation[twin]) >= MERGE_CORRELATION:
            scale = cov[channel, kept[twin]] / var[kept[twin]]
            mapping[row, twin] = scale
            if intercept:
                mapping[row, -1] = mean[channel] - scale * mean[kept[twin]]
        elif intercept:
            mapping[row, -1] = mean[channel]
    return mapping


def _error(moment: np.ndarray, columns: np.ndarray, removed: np.ndarray, mapping: np.ndarray,
           energy: np.ndarray) -> float:
    """E|W_R (x_R - B z)|^2 under ``moment``."""
    return _residual_energy(moment[np.ix_(removed, removed)], moment[np.ix_(removed, columns)],
                            moment[np.ix_(columns, columns)], mapping, energy)


def _bias_input(consumer: Consumer) -> int | None:
    """The input index of the consumer's bias (2, or 3 for a recurrent node), existing or to be created;
    None when it cannot take one or when a constant term would be wrong too often (see ``_interior_share``)."""
    node = consumer.node
    if not _can_take_bias(consumer) or (node.op == "Conv" and _interior_share(node) < MIN_INTERIOR):
        return None
    return consumer.bias_index


def _can_take_bias(consumer: Consumer) -> bool:
    """Whether the consumer has a per-output-channel bias that can be rewritten, or can be given one."""
    node = consumer.node
    if node.op in ("MatMul", "Einsum"):
        return False
    index = consumer.bias_index
    if len(node.inputs) > index and not node.inputs[index].is_empty():
        stored = stored_constant(node.inputs[index])
        expected = (consumer.out_channels(),)
        if consumer.recurrent:  # [directions, W's biases then R's]
            expected = (consumer.directions(), 2 * consumer.out_channels() // consumer.directions())
        return stored is not None and stored.values.shape == expected
    return True


def _write(analysis: Analysis, consumer: Consumer, weights: np.ndarray, kept: np.ndarray, transform: np.ndarray,
           bias: int | None) -> None:
    """Give the consumer the weights W T (kept input channels) and the bias b + W t_1."""
    new_weights = weights.copy()
    new_weights[:, kept] = weights @ transform[:, :-1]
    _store_weights(consumer, new_weights)
    if bias is None or not transform[:, -1].any():
        return
    delta = (weights @ transform[:, -1]).reshape(consumer.out_channels(), -1).sum(1)
    node = consumer.node
    if node.op == "Gemm":
        delta *= float(node.attrs.get("alpha", 1.0)) / float(node.attrs.get("beta", 1.0))
    _add_to_bias(analysis, consumer, delta)


def _write_kernel(analysis: Analysis, consumer: Consumer, weights: np.ndarray, kept: np.ndarray,
                  patches: np.ndarray) -> None:
    """Give a Conv the kernel form ``patches`` (see ``_kernel_form``) for its kept input channels."""
    out = consumer.out_channels()
    taps = len(weights) // out
    new_weights = weights.copy()
    new_weights[:, kept] = patches[:, :-1].reshape(out, len(kept), taps).transpose(0, 2, 1).reshape(out * taps, -1)
    _store_weights(consumer, new_weights)
    _add_to_bias(analysis, consumer, patches[:, -1] - _current_bias(consumer))


def _store_weights(consumer: Consumer, matrix: np.ndarray) -> None:
    """Store a weight given in ``Consumer.matrix`` layout, in the weight's own layout and dtype."""
    holder, index, axis = consumer.weight.node, consumer.weight.input_index, consumer.weight.axis
    moved_shape = np.moveaxis(np.empty(holder.inputs[index].shape, dtype=np.uint8), axis, -1).shape
    store_param(holder, index, np.moveaxis(matrix.reshape(moved_shape), -1, axis))


def _current_bias(consumer: Consumer) -> np.ndarray:
    """The consumer's bias (zeros without one), as stored."""
    node = consumer.node
    if len(node.inputs) > 2 and not node.inputs[2].is_empty():
        holder, index = _holder(node, 2)
        return param_values(holder, index).astype(np.float64)
    return np.zeros(consumer.out_channels())


def _add_to_bias(analysis: Analysis, consumer: Consumer, delta: np.ndarray) -> None:
    """Add ``delta`` to the consumer's bias input, creating the bias where there is none. A recurrent node's
    B [directions, 2 x rows] takes it in W's half: it is added to X W^T at every step, outside every gate."""
    node, index = consumer.node, consumer.bias_index
    axis, slots = 0, consumer.out_weight.slots if consumer.out_weight is not None else None
    if consumer.recurrent:
        directions = consumer.directions()
        delta = np.concatenate([delta.reshape(directions, -1), np.zeros((directions, len(delta) // directions))], 1)
        axis, slots = 1, None if slots is None else np.tile(slots, 2)  # hidden units go from both halves
    if len(node.inputs) > index and not node.inputs[index].is_empty():
        bias_holder, bias_index = _holder(node, index)
        store_param(bias_holder, bias_index, param_values(bias_holder, bias_index) + delta)
        return
    tensor = gs.Constant(f"{node.name}__compensation_bias", delta.astype(consumer.store_dtype()))
    if len(node.inputs) > index:
        node.inputs[index] = tensor  # an empty optional input
    else:
        node.inputs.append(tensor)
    if slots is not None:  # the new bias loses the same output channels as the weight
        analysis.context.params.append(ParamSlice(node, index, axis, slots, False, node))


def _holder(node: gs.Node, index: int) -> tuple[gs.Node, int]:
    """Where the constant behind ``node.inputs[index]`` lives (the node, or the Cast or DequantizeLinear in
    front of it)."""
    tensor = node.inputs[index]
    return (node, index) if isinstance(tensor, gs.Constant) else (tensor.inputs[0], 0)


def _interior_share(node: gs.Node) -> float:
    """The share of a Conv's output positions whose kernel window lies wholly inside the input."""
    shape = node.inputs[0].shape
    kernel = node.inputs[1].shape[2:] if node.inputs[1].shape is not None else None
    if shape is None or kernel is None or not all(isinstance(d, int) for d in shape[2:]):
        return 0.0
    spatial = len(shape) - 2
    pads = conv_pads(node)
    if pads is None:
        return 0.0
    if not any(pads):
        return 1.0
    strides = node.attrs.get("strides", [1] * spatial)
    dilations = node.attrs.get("dilations", [1] * spatial)
    share = 1.0
    for axis in range(spatial):
        size, begin, end = shape[2 + axis], pads[axis], pads[axis + spatial]
        reach = (kernel[axis] - 1) * dilations[axis]
        outputs = (size + begin + end - reach - 1) // strides[axis] + 1
        inside = sum(1 for i in range(outputs) if i * strides[axis] - begin >= 0
                     and i * strides[axis] - begin + reach <= size - 1)
        share *= inside / outputs if outputs > 0 else 0.0
    return share
