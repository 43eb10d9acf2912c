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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.calibrate import ChannelStats
from onnxprune.consumers import Consumer, find_consumers
from onnxprune.groups import Analysis
from onnxprune.model import read_values, replace_constant
from onnxprune.plan import Plan
from onnxprune.rules.base import ParamSlice, stored_constant

METHODS = ("none", "bias", "merge", "ls")
# Ridge strengths tried (relative to the mean energy of the kept channels); held-out error picks one.
RIDGES = (1e-6, 1e-4, 1e-2, 1e-1)
# A removed channel merges into a kept one when their |correlation| reaches this.
MERGE_CORRELATION = 0.9


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


def compensate(analysis: Analysis, plan: Plan, stats: dict[str, ChannelStats]) -> list[CompensationRecord]:
    """Rewrite the consumers of ``plan``'s removed channels in ``analysis.graph`` (before the plan is applied)."""
    slot_removed = np.isin(analysis.unit_of_slot, plan.removed_units(analysis))
    records = []
    for consumer in find_consumers(analysis):
        removed = slot_removed[consumer.weight.slots]
        recorded = stats.get(consumer.source.name)
        if not removed.any() or removed.all() or recorded is None or recorded.count == 0:
            continue
        record = _compensate_consumer(analysis, consumer, removed, recorded)
        if record is not None:
            records.append(record)
    return records


def _compensate_consumer(analysis: Analysis, consumer: Consumer, removed: np.ndarray,
                         recorded: ChannelStats) -> CompensationRecord | None:
    bias = _bias_input(consumer)
    intercept = bias is not None
    kept_idx, removed_idx = np.nonzero(~removed)[0], np.nonzero(removed)[0]
    weights = consumer.matrix()
    w_removed = weights[:, removed_idx]
    if recorded.has_gram:
        method, mapping, ratio = _choose_method(recorded, kept_idx, removed_idx, w_removed, intercept)
    elif intercept:  # no Gram (too many channels): the mean is the best constant stand-in
        method, ratio = "bias", float("nan")
        mapping = np.zeros((len(removed_idx), len(kept_idx) + 1))
        mapping[:, -1] = recorded.mean[removed_idx]
    else:
        return None
    if method != "none":
        _write(analysis, consumer, weights, kept_idx, w_removed, mapping, bias)
    return CompensationRecord(consumer.node.name, method, len(removed_idx), len(kept_idx), ratio)


def _choose_method(recorded: ChannelStats, kept: np.ndarray, removed: np.ndarray, w_removed: np.ndarray,
                   intercept: bool) -> tuple[str, np.ndarray, float]:
    """The method with the least cross-validated output error, fitted again on all the data."""
    columns = np.append(kept, recorded.channels) if intercept else kept
    energy = w_removed.T @ w_removed  # output error = tr(energy E[e e^T]) for the residual e = x_R - B z
    folds = [f for f in (0, 1) if recorded.fold_counts[f]]
    pairs = [(0, 1), (1, 0)] if len(folds) == 2 else [(folds[0], folds[0])]
    methods = [(m, r) for m in METHODS if intercept or m != "bias" for r in (RIDGES if m == "ls" else (0.0,))]
    errors = dict.fromkeys(methods, 0.0)
    for fit_fold, check_fold in pairs:
        fit_moment, check_moment = recorded.second_moment(fit_fold), recorded.second_moment(check_fold)
        for method, ridge in methods:
            mapping = _fit(method, fit_moment, columns, removed, intercept, ridge)
            errors[method, ridge] += _error(check_moment, columns, removed, mapping, energy)
    best = min(methods, key=lambda m: (errors[m], METHODS.index(m[0])))  # ties go to the simpler method
    baseline = errors["none", 0.0]
    ratio = errors[best] / baseline if baseline > 0 else 1.0
    mapping = _fit(best[0], recorded.second_moment(), columns, removed, intercept, best[1])
    if not intercept:
        mapping = np.hstack([mapping, np.zeros((len(removed), 1))])
    return best[0], mapping, float(ratio)


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
        gram = moment[np.ix_(columns, columns)]
        scale = float(np.trace(gram)) / len(columns) or 1.0
        regulariser = np.full(len(columns), ridge * scale)
        if intercept:
            regulariser[-1] = 1e-9 * scale  # the constant term is not shrunk
        cross = moment[np.ix_(columns, removed)]
        return np.linalg.solve(gram + np.diag(regulariser), cross).T
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
    rr = moment[np.ix_(removed, removed)]
    rc = moment[np.ix_(removed, columns)]
    cc = moment[np.ix_(columns, columns)]
    residual = rr - mapping @ rc.T - rc @ mapping.T + mapping @ cc @ mapping.T
    return float(np.sum(energy * residual))


def _bias_input(consumer: Consumer) -> int | None:
    """The input index of the consumer's bias (2), existing or to be created; None when it cannot take one."""
    node = consumer.node
    if node.op == "MatMul":
        return None
    if len(node.inputs) > 2 and not node.inputs[2].is_empty():
        stored = stored_constant(node.inputs[2])
        if stored is None or stored.values.shape != (consumer.out_channels(),):
            return None
    return 2


def _write(analysis: Analysis, consumer: Consumer, weights: np.ndarray, kept: np.ndarray, w_removed: np.ndarray,
           mapping: np.ndarray, bias: int | None) -> None:
    """Fold ``mapping`` into the consumer's weight and bias constants."""
    weights[:, kept] += w_removed @ mapping[:, :-1]
    holder, index, axis = consumer.weight.node, consumer.weight.input_index, consumer.weight.axis
    stored = holder.inputs[index]
    moved_shape = np.moveaxis(np.empty(stored.shape, dtype=np.uint8), axis, -1).shape
    values = np.moveaxis(weights.reshape(moved_shape), -1, axis).astype(stored.values.dtype)
    replace_constant(holder, index, values)
    if bias is None or not mapping[:, -1].any():
        return
    out = consumer.out_channels()
    delta = (w_removed @ mapping[:, -1]).reshape(out, -1).sum(1)
    node = consumer.node
    if node.op == "Gemm":
        delta *= float(node.attrs.get("alpha", 1.0)) / float(node.attrs.get("beta", 1.0))
    if len(node.inputs) > 2 and not node.inputs[2].is_empty():
        bias_holder, bias_index = _holder(node, 2)
        current = read_values(bias_holder.inputs[bias_index])
        replace_constant(bias_holder, bias_index, (current + delta).astype(current.dtype))
        return
    tensor = gs.Constant(f"{node.name}__compensation_bias", delta.astype(consumer.store_dtype()))
    if len(node.inputs) > 2:
        node.inputs[2] = tensor  # an empty optional input
    else:
        node.inputs.append(tensor)
    if consumer.out_weight is not None:  # the new bias loses the same output channels as the weight
        analysis.context.params.append(ParamSlice(node, 2, 0, consumer.out_weight.slots, False, node))


def _holder(node: gs.Node, index: int) -> tuple[gs.Node, int]:
    """Where the constant behind ``node.inputs[index]`` lives (the node, or the Cast in front of it)."""
    tensor = node.inputs[index]
    return (node, index) if isinstance(tensor, gs.Constant) else (tensor.inputs[0], 0)
