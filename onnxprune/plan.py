"""Which channels each group keeps. Pure: a plan is data that can be printed, saved and re-applied."""

from __future__ import annotations

import fnmatch
import heapq
import math
from dataclasses import dataclass

import numpy as np

from onnxprune.groups import Analysis, ChannelGroup


@dataclass(frozen=True)
class GroupPlan:
    """The decision for one group: the indices (0..channels-1) of the channels it keeps."""

    group: int
    channels: int
    kept: tuple[int, ...]
    skipped_reason: str | None = None

    @property
    def removed(self) -> tuple[int, ...]:
        kept = set(self.kept)
        return tuple(i for i in range(self.channels) if i not in kept)


@dataclass(frozen=True)
class Plan:
    """One decision per group of an analysis."""

    groups: tuple[GroupPlan, ...]

    def removed_units(self, analysis: Analysis) -> np.ndarray:
        """Global unit ids of every removed channel."""
        parts = [analysis.groups[p.group].units[list(p.removed)] for p in self.groups if p.removed]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def to_dict(self) -> dict:
        return {"groups": [{"group": p.group, "channels": p.channels, "kept": list(p.kept)} for p in self.groups]}

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(tuple(GroupPlan(g["group"], g["channels"], tuple(g["kept"])) for g in data["groups"]))


def kept_count(channels: int, ratio: float, round_to: int) -> int:
    """How many of ``channels`` stay: the ratio's share is removed, then the rest is rounded to a multiple.

    The count never drops below one channel, and rounding never turns a segment smaller than
    ``round_to`` into nothing: such segments keep every channel.
    """
    keep = channels - math.floor(ratio * channels + 1e-9)
    if round_to > 1 and keep < channels:
        rounded = round_to * math.floor(keep / round_to + 0.5)
        if rounded > channels:
            rounded = round_to * (channels // round_to)
        keep = rounded if rounded >= round_to else min(round_to, channels)
    return max(1, keep)


def unit_rounding(group: ChannelGroup, round_to: int) -> int:
    """``round_to`` in units of ``group``: an attention head of 64 channels is a multiple of 16 channels by
    itself, so its heads are rounded to 1, where a conv channel is rounded to ``round_to``."""
    return max(1, round_to // math.gcd(round_to, group.unit_width))


def excluded_by(group: ChannelGroup, patterns: tuple[str, ...]) -> str | None:
    """The first node of the group that an --exclude pattern names, as a reason, or None."""
    for name in group.nodes:
        for pattern in patterns:
            if fnmatch.fnmatchcase(name, pattern):
                return f"excluded by the user: node '{name}' matches '{pattern}'"
    return None


def select_kept(scores: np.ndarray, segments: tuple[np.ndarray, ...], ratio: float, round_to: int) -> tuple[int, ...]:
    """Keep the highest-scoring channels of each segment (ties keep the lower index)."""
    removed: list[int] = []
    for segment in segments:
        keep = kept_count(len(segment), ratio, round_to)
        by_score = segment[np.lexsort((segment, scores[segment]))]
        removed.extend(int(i) for i in by_score[:len(segment) - keep])
    removed_set = set(removed)
    return tuple(i for i in range(len(scores)) if i not in removed_set)


def make_plan(analysis: Analysis, scores: np.ndarray, ratio: float, round_to: int, exclude: tuple[str, ...] = ()) -> Plan:
    """Decide, group by group, which channels stay.

    Args:
        analysis: the traced graph and its groups.
        scores: one importance score per unit (higher is more important).
        ratio: fraction of each prunable group's channels to remove.
        round_to: kept counts are multiples of this (per segment).
        exclude: node-name glob patterns whose groups stay whole.
    """
    decisions = []
    for group in analysis.groups:
        everything = tuple(range(group.channels))
        reason = group.pinned_reason or excluded_by(group, exclude)
        if reason is not None:
            decisions.append(GroupPlan(group.index, group.channels, everything, reason))
            continue
        kept = select_kept(scores[group.units], group.segments, ratio, unit_rounding(group, round_to))
        decisions.append(GroupPlan(group.index, group.channels, kept))
    return Plan(tuple(decisions))


def normalised_scores(analysis: Analysis, scores: np.ndarray) -> np.ndarray:
    """Each unit's score divided by its group's mean, so groups of different scales rank together."""
    normalised = np.zeros_like(scores, dtype=np.float64)
    for group in analysis.groups:
        mean = float(scores[group.units].mean()) if group.channels else 0.0
        normalised[group.units] = scores[group.units] / mean if mean > 0 else 0.0
    return normalised


class GlobalRanking:
    """Ranks the channels of every prunable group together; a threshold on the normalised score gives a plan.

    Each segment loses the channels scoring below the threshold, at most ``cap`` of it, then keeps a
    multiple of ``round_to`` (rounded up, so raising the threshold never removes less).
    """

    def __init__(self, analysis: Analysis, scores: np.ndarray, round_to: int, cap: float, exclude: tuple[str, ...] = (),
                 caps: dict[int, float] | None = None):
        self.analysis = analysis
        self.round_to = round_to
        self.cap = cap
        self.caps = caps or {}  # per group index, in place of ``cap``
        self.roundings = {g.index: unit_rounding(g, round_to) for g in analysis.groups}
        normalised = normalised_scores(analysis, scores)
        self.reasons = {g.index: g.pinned_reason or excluded_by(g, exclude) for g in analysis.groups}
        self.segments: list[tuple[int, np.ndarray, np.ndarray]] = []  # (group, local units by score, their scores)
        for group in analysis.groups:
            if self.reasons[group.index] is None:
                local = normalised[group.units]
                for segment in group.segments:
                    order = segment[np.lexsort((segment, local[segment]))]
                    self.segments.append((group.index, order, local[order]))
        self.thresholds = np.unique(np.concatenate([s for _, _, s in self.segments])) if self.segments else np.zeros(0)

    def _removed_count(self, count: int, below: int, cap: float, round_to: int) -> int:
        """How many of a segment's ``count`` channels go when ``below`` score under the threshold."""
        removable = max(min(below, math.floor(cap * count + 1e-9), count - 1), 0)
        keep = count - removable
        if round_to > 1 and keep < count:
            keep = count if count < round_to else min(count, round_to * math.ceil(keep / round_to))
        return count - keep

    def counts(self, threshold: float) -> list[int]:
        """Channels removed per segment at ``threshold``."""
        return [self._removed_count(len(order), int(np.searchsorted(values, threshold, side="left")),
                                    self.caps.get(group, self.cap), self.roundings[group])
                for group, order, values in self.segments]

    def plan_from_counts(self, counts: list[int]) -> Plan:
        """The plan removing the ``counts[i]`` lowest-scoring channels of segment ``i``."""
        removed: dict[int, list[int]] = {}
        for (group, order, _), count in zip(self.segments, counts):
            removed.setdefault(group, []).extend(int(i) for i in order[:count])
        decisions = []
        for group in self.analysis.groups:
            gone = set(removed.get(group.index, ()))
            kept = tuple(i for i in range(group.channels) if i not in gone)
            decisions.append(GroupPlan(group.index, group.channels, kept, self.reasons[group.index]))
        return Plan(tuple(decisions))

    def plan(self, threshold: float) -> Plan:
        """The plan removing, segment by segment, the channels whose normalised score is below ``threshold``."""
        return self.plan_from_counts(self.counts(threshold))

    def _next_count(self, segment: int, count: int) -> int | None:
        """The next larger removal count that keeps rounding and the cap, or None."""
        group, order, _ = self.segments[segment]
        size, cap = len(order), self.caps.get(group, self.cap)
        for below in range(count + 1, size):
            candidate = self._removed_count(size, below, cap, self.roundings[group])
            if candidate > count:
                return candidate
        return None

    def smallest_plan_within(self, measure, limit: float, tolerance: float = 0.0) -> Plan:
        """A plan with ``measure(plan) <= limit`` removing as little as it can (or the most it can, if none
        gets there). With a ``tolerance``, further single steps are tried to land within it of the limit.
        """
        # Thresholds just above each distinct score: the k-th removes every channel scoring <= thresholds[k].
        candidates = np.concatenate([[-np.inf], np.nextafter(self.thresholds, np.inf)])
        low, high = 0, len(candidates) - 1
        if measure(self.plan(candidates[high])) > limit:
            return self.plan(candidates[high])  # the cap stops short of the limit: remove all it allows
        while low < high:
            middle = (low + high) // 2
            if measure(self.plan(candidates[middle])) <= limit:
                high = middle
            else:
                low = middle + 1
        best = self.plan(candidates[low])
        if tolerance <= 0 or low == 0 or measure(best) >= limit - tolerance:
            return best
        return self._fill(self.counts(candidates[low - 1]), measure, limit, tolerance) or best

    def _fill(self, counts: list[int], measure, limit: float, tolerance: float, max_steps: int = 400) -> Plan | None:
        """From a plan above ``limit``, take removal steps in score order, skipping any that would land
        more than ``tolerance`` below it, until one lands within it."""
        counts = list(counts)
        heap = []
        for segment, count in enumerate(counts):
            self._push_step(heap, segment, count)
        for _ in range(max_steps):
            if not heap:
                return None
            _, segment, step_count = heapq.heappop(heap)
            trial = counts.copy()
            trial[segment] = step_count
            value = measure(self.plan_from_counts(trial))
            if value < limit - tolerance:
                continue  # too big a step: try the next one in line
            counts = trial
            if value <= limit:
                return self.plan_from_counts(counts)
            self._push_step(heap, segment, step_count)
        return None

    def _push_step(self, heap: list, segment: int, count: int) -> None:
        step = self._next_count(segment, count)
        if step is not None:
            scores = self.segments[segment][2][count:step]
            heapq.heappush(heap, (float(scores.mean()), segment, step))
