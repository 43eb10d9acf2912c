"""Channel importance: one score per unit (higher is more important), summed over the members of its group.

Weight criteria (l1, l2, bn) read initializers only; activation criteria (activation, apoz,
fluctuation, wanda, redundancy) read statistics recorded with ONNX Runtime on calibration data at the
inputs of the weighted nodes that consume each channel.
"""

from __future__ import annotations

import numpy as np

from onnxprune.calibrate import ChannelStats
from onnxprune.config import Importance
from onnxprune.consumers import Consumer
from onnxprune.groups import Analysis
from onnxprune.model import param_values


def weight_scores(analysis: Analysis, criterion: Importance) -> np.ndarray:
    """L1 (sum of |w|) or L2 (root of the sum of w^2) of each unit's weights, producers and consumers alike.

    Args:
        analysis: the traced graph.
        criterion: Importance.L1 or Importance.L2.

    Returns:
        A float64 array with one score per unit.
    """
    scores = np.zeros(analysis.unit_count)
    for param in analysis.context.params:
        if not param.scored:
            continue
        weight = param_values(param.node, param.input_index)  # a private copy: safe to change in place
        np.abs(weight, out=weight) if criterion is Importance.L1 else np.square(weight, out=weight)
        other_axes = tuple(i for i in range(weight.ndim) if i != param.axis)
        per_position = weight.sum(axis=other_axes, dtype=np.float64)
        np.add.at(scores, analysis.unit_of_slot[param.slots], per_position)
    return np.sqrt(scores) if criterion is Importance.L2 else scores


def importance_scores(analysis: Analysis, criterion: Importance, stats: dict[str, ChannelStats] | None = None,
                      consumers: list[Consumer] | None = None) -> np.ndarray:
    """One score per unit by ``criterion``.

    Groups the criterion cannot see (no BatchNormalization for ``bn``; channels whose consumers were not
    recorded for the activation criteria) are ranked by L1 norm instead; scores are compared across
    groups only after normalisation by each group's mean, so the two scales never meet.
    """
    if criterion in (Importance.L1, Importance.L2):
        return weight_scores(analysis, criterion)
    if criterion is Importance.BN:
        scores, covered = _bn_scores(analysis)
    else:
        scores, covered = _activation_scores(analysis, criterion, stats or {}, consumers or [])
    fallback = None
    for group in analysis.groups:
        if group.channels and not covered[group.units].all():
            fallback = weight_scores(analysis, Importance.L1) if fallback is None else fallback
            scores[group.units] = fallback[group.units]
    return scores


def _bn_scores(analysis: Analysis) -> tuple[np.ndarray, np.ndarray]:
    """|gamma| of every BatchNormalization scale that a unit's channels pass through."""
    scores = np.zeros(analysis.unit_count)
    covered = np.zeros(analysis.unit_count, dtype=bool)
    for param in analysis.context.params:
        owner = param.owner or param.node
        if owner.op == "BatchNormalization" and param.input_index == 1:
            gamma = np.abs(param_values(param.node, param.input_index).astype(np.float64))
            units = analysis.unit_of_slot[param.slots]
            np.add.at(scores, units, gamma)
            covered[units] = True
    return scores, covered


def _activation_scores(analysis: Analysis, criterion: Importance, stats: dict[str, ChannelStats],
                       consumers: list[Consumer]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.zeros(analysis.unit_count)
    covered = np.zeros(analysis.unit_count, dtype=bool)
    seen: set[str] = set()
    for consumer in consumers:
        recorded = stats.get(consumer.source.name)
        if recorded is None or recorded.count == 0:
            continue
        if criterion in (Importance.FLUCTUATION, Importance.WANDA, Importance.REDUNDANCY):
            column = np.square(consumer.matrix()).sum(0)  # squared norm of each input channel's weights
            if criterion is Importance.FLUCTUATION:
                per_position = recorded.variance * column
            elif criterion is Importance.WANDA:
                per_position = np.sqrt(recorded.mean_sq * column)
            else:
                per_position = redundancy_scores(recorded, column)
        elif consumer.source.name in seen:
            continue  # a tensor read by several consumers counts once
        else:
            per_position = _tensor_score(criterion, recorded)
        seen.add(consumer.source.name)
        units = analysis.unit_of_slot[consumer.source.slots]
        np.add.at(scores, units, per_position)
        covered[units] = True
    return scores, covered


def _tensor_score(criterion: Importance, recorded: ChannelStats) -> np.ndarray:
    return recorded.mean_abs if criterion is Importance.ACTIVATION else 1.0 - recorded.zero_fraction


def redundancy_scores(recorded: ChannelStats, column: np.ndarray) -> np.ndarray:
    """What each channel adds that the others cannot reproduce, by greedy backward elimination.

    Removing channel c and refitting it from the channels that stay (as compensation does) leaves
    the error E[(x_c - best linear fit from the others)^2] = 1 / P_cc, with P the inverse of the
    Gram matrix of [x, 1]; times the squared norm of its consumer weights (``column``) that is what the
    consumer's output loses. The cheapest channel is eliminated first and P is downdated, so of two
    identical channels only the first goes cheaply (the second then has no twin left), and a constant
    channel (which a bias absorbs) costs nothing. Scores follow the elimination order: the running
    maximum of the costs, so a channel eliminated later never scores lower.
    """
    if not recorded.has_gram:
        return np.sqrt(recorded.variance * column)
    moment = recorded.second_moment()
    channels = recorded.channels
    scale = float(np.trace(moment[:-1, :-1])) / channels or 1.0
    precision = np.linalg.inv(moment + np.diag(np.append(np.full(channels, 1e-6 * scale), 0.0)))
    # Each elimination downdates P by P[:, c] P[:, c]^T / P_cc. Only P's diagonal picks the next channel, so
    # the downdates are kept as (column, 1 / pivot) pairs and a channel's current column is made only when
    # it is eliminated: a matrix-vector product per channel rather than a pass over all of P (ResNet-50-like,
    # 53 consumers up to 1024 wide, 2 cores: 14.4 -> 1.9 s, the same scores to 1e-11).
    columns = np.zeros((channels, channels + 1))
    inverse_pivots = np.zeros(channels)
    diagonal = np.diag(precision)[:-1].copy()
    alive = np.ones(channels, dtype=bool)
    scores = np.zeros(channels)
    running = 0.0
    for step in range(channels):
        cost = np.where(alive, column / np.maximum(diagonal, 1e-30), np.inf)
        channel = int(np.argmin(cost))
        running = max(running, float(cost[channel]))
        scores[channel] = running
        alive[channel] = False
        done = columns[:step]
        current = precision[:, channel] - done.T @ (inverse_pivots[:step] * done[:, channel])
        if current[channel] <= 0:  # rounding left nothing of it: the channels left lose nothing more
            continue
        columns[step], inverse_pivots[step] = current, 1.0 / current[channel]
        diagonal -= current[:-1] ** 2 * inverse_pivots[step]
    return scores
