"""Choosing how much to prune: MACs targets, the accuracy guard, sensitivity scans and latency targets.

Everything here works on plans of one analysis: a plan is cheap to make and to measure in MACs, while
building and evaluating a pruned model (a *candidate*) costs an ONNX Runtime run, so searches
bisect over plans and build as few candidates as they can.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxprune.groups import Analysis
from onnxprune.plan import GlobalRanking, GroupPlan, Plan, select_kept, unit_rounding
from onnxprune.progress import progress
from onnxprune.stats import MacModel
from onnxprune.validate import Evaluation

SENSITIVITY_RATIOS = (0.25, 0.5, 0.75)
# --target-macs aims to land within this fraction of the original MACs below the target...
MACS_TOLERANCE = 0.01
# ...and always lands within this one, rounding finer where it must.
TARGET_SLACK = 0.02


def slot_mask(analysis: Analysis, plan: Plan) -> np.ndarray:
    """True for every slot the plan removes."""
    return np.isin(analysis.unit_of_slot, plan.removed_units(analysis))


def plan_macs(analysis: Analysis, macs: MacModel, plan: Plan) -> int:
    """MACs of the model the plan would produce."""
    return macs.macs(slot_mask(analysis, plan))


def plan_for_macs(ranking: GlobalRanking, macs: MacModel, fraction: float) -> Plan:
    """The globally ranked plan that keeps at most ``fraction`` of the MACs, removing as little as it can."""
    return ranking.smallest_plan_within(lambda p: plan_macs(ranking.analysis, macs, p), fraction * macs.total,
                                        MACS_TOLERANCE * macs.total)


def rounded_plan_for_macs(analysis: Analysis, scores: np.ndarray, macs: MacModel, fraction: float, rounding: int,
                          cap: float, exclude: tuple[str, ...] = (), caps: dict[int, float] | None = None) -> Plan:
    """``plan_for_macs`` with channel counts in multiples of ``rounding``, halved until the plan lands within
    TARGET_SLACK below ``fraction``: groups of few channels rounded to large multiples can jump past the
    target or not reach it (the report shows the counts kept)."""
    return _landing(analysis, scores, macs, fraction, rounding, cap, exclude, caps)[0]


def landing_rounding(analysis: Analysis, scores: np.ndarray, macs: MacModel, fraction: float, rounding: int,
                     cap: float, exclude: tuple[str, ...] = ()) -> int:
    """The rounding at which ``rounded_plan_for_macs`` lands (``rounding``, or a power-of-two part of it)."""
    return _landing(analysis, scores, macs, fraction, rounding, cap, exclude, None)[1]


def _landing(analysis: Analysis, scores: np.ndarray, macs: MacModel, fraction: float, rounding: int, cap: float,
             exclude: tuple[str, ...], caps: dict[int, float] | None) -> tuple[Plan, int]:
    while True:
        plan = plan_for_macs(GlobalRanking(analysis, scores, rounding, cap, exclude, caps), macs, fraction)
        landed = plan_macs(analysis, macs, plan) / macs.total
        if rounding <= 1 or fraction - TARGET_SLACK <= landed <= fraction + 1e-9:
            return plan, rounding
        rounding //= 2


def plan_for_ratio(ranking: GlobalRanking, ratio: float) -> Plan:
    """The globally ranked plan removing at least ``ratio`` of all prunable channels."""
    total = sum(len(order) for _, order, _ in ranking.segments)
    return ranking.smallest_plan_within(lambda p: _prunable_kept(ranking, p), (1 - ratio) * total)


def _prunable_kept(ranking: GlobalRanking, plan: Plan) -> int:
    prunable = {g for g, _, _ in ranking.segments}
    return sum(len(d.kept) for d in plan.groups if d.group in prunable)


def quality_drop(evaluation: Evaluation) -> tuple[float, str]:
    """The loss the --max-drop guard compares: accuracy points when labels exist, else top-1 agreement
    points for classifiers, else the largest relative output error (a fraction)."""
    if evaluation.accuracy_original is not None:
        return 100 * (evaluation.accuracy_original - evaluation.accuracy_pruned), "accuracy points"
    if evaluation.top1_agreement is not None:
        return 100 * (1 - evaluation.top1_agreement), "top-1 agreement points"
    return max(o.relative_l2 for o in evaluation.outputs), "relative output error"


def bisect_fraction(build: Callable[[float], object], acceptable: Callable[[object], bool], low: float,
                    steps: int = 6) -> object | None:
    """The acceptable result for the smallest fraction in [low, 1) found by bisection (None if even
    the mildest tried fails). ``build(f)`` makes a result for fraction ``f`` of the MACs."""
    result = build(low)
    if acceptable(result):
        return result
    good, bad_fraction, good_fraction = None, low, 1.0
    for _ in range(steps):
        middle = (bad_fraction + good_fraction) / 2
        candidate = build(middle)
        if acceptable(candidate):
            good, good_fraction = candidate, middle
        else:
            bad_fraction = middle
    return good


@dataclass(frozen=True)
class SensitivityRow:
    """The output error of the model when only ``group`` is pruned at ``ratio``."""

    group: int
    ratio: float
    macs: int
    error: float

    def to_dict(self) -> dict:
        return {"group": self.group, "ratio": self.ratio, "macs": self.macs, "error": self.error}


def single_group_plan(analysis: Analysis, scores: np.ndarray, group_index: int, ratio: float, round_to: int) -> Plan:
    """A plan pruning one group at ``ratio`` and leaving every other group whole."""
    decisions = []
    for group in analysis.groups:
        kept = tuple(range(group.channels))
        if group.index == group_index:
            kept = select_kept(scores[group.units], group.segments, ratio, unit_rounding(group, round_to))
        decisions.append(GroupPlan(group.index, group.channels, kept))
    return Plan(tuple(decisions))


def sensitivity_scan(analysis: Analysis, scores: np.ndarray, macs: MacModel, prunable: list[int], round_to: int,
                     error_of: Callable[[Plan], float], quiet: bool = True) -> list[SensitivityRow]:
    """Prune each group alone at each of SENSITIVITY_RATIOS and measure the output error."""
    rows = []
    jobs = [(g, r) for g in prunable for r in SENSITIVITY_RATIOS]
    for group, ratio in progress(jobs, "sensitivity scan", quiet):
        plan = single_group_plan(analysis, scores, group, ratio, round_to)
        if not plan.removed_units(analysis).size:
            continue
        rows.append(SensitivityRow(group, ratio, plan_macs(analysis, macs, plan), error_of(plan)))
    return rows


def allocate_ratios(rows: list[SensitivityRow], total_macs: int, target_macs: float,
                    macs_of: Callable[[dict[int, float]], int]) -> dict[int, float]:
    """Per-group ratios that reach ``target_macs`` with the least summed error (greedy on error per MAC saved).

    Starting from no pruning, repeatedly take the step (one group to its next scanned ratio) that adds
    the least error per MAC it saves on its own, until ``macs_of(ratios)``, the real MACs of the
    allocation, reaches the target (savings are not additive: a conv loses input and output channels).
    """
    options: dict[int, list[SensitivityRow]] = {}
    for row in sorted(rows, key=lambda r: r.ratio):
        options.setdefault(row.group, []).append(row)
    chosen: dict[int, int] = {g: -1 for g in options}  # index into options[g]; -1 = unpruned

    def step_cost(g: int, k: int) -> tuple[float, float]:
        prev_macs = total_macs if k < 0 else options[g][k].macs
        prev_err = 0.0 if k < 0 else options[g][k].error
        step = options[g][k + 1]
        return prev_macs - step.macs, step.error - prev_err

    def ratios() -> dict[int, float]:
        return {g: options[g][k].ratio for g, k in chosen.items() if k >= 0}

    group = None
    while macs_of(ratios()) > target_macs:
        steps = [(g, *step_cost(g, k)) for g, k in chosen.items() if k + 1 < len(options[g])]
        steps = [s for s in steps if s[1] > 0]
        if not steps:
            return ratios()
        group = min(steps, key=lambda s: (max(s[2], 0.0) / s[1], s[0]))[0]
        chosen[group] += 1
    if group is None:
        return ratios()
    # The last step may overshoot (scanned ratios are 25% apart): take only as much of it as the target needs.
    result = ratios()
    low = options[group][chosen[group] - 1].ratio if chosen[group] > 0 else 0.0
    high = result[group]
    for _ in range(8):
        middle = (low + high) / 2
        if macs_of({**result, group: middle}) <= target_macs:
            high = middle
        else:
            low = middle
    return {**result, group: high}


def plan_from_ratios(analysis: Analysis, scores: np.ndarray, ratios: dict[int, float], round_to: int,
                     reasons: dict[int, str | None]) -> Plan:
    """A plan pruning each group at its own ratio (groups absent from ``ratios`` stay whole)."""
    decisions = []
    for group in analysis.groups:
        kept = tuple(range(group.channels))
        if group.index in ratios:
            kept = select_kept(scores[group.units], group.segments, ratios[group.index], unit_rounding(group, round_to))
        decisions.append(GroupPlan(group.index, group.channels, kept, reasons.get(group.index)))
    return Plan(tuple(decisions))
