"""Channel importance from weights: one score per unit, summed over every member of its group."""

from __future__ import annotations

import numpy as np

from onnxprune.config import Importance
from onnxprune.groups import Analysis
from onnxprune.model import read_values


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
        weight = read_values(param.node.inputs[param.input_index])  # a private copy: safe to change in place
        np.abs(weight, out=weight) if criterion is Importance.L1 else np.square(weight, out=weight)
        other_axes = tuple(i for i in range(weight.ndim) if i != param.axis)
        per_position = weight.sum(axis=other_axes, dtype=np.float64)
        np.add.at(scores, analysis.unit_of_slot[param.slots], per_position)
    return np.sqrt(scores) if criterion is Importance.L2 else scores
