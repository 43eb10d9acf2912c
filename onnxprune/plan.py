"""Which channels each group keeps. Pure: a plan is data that can be printed, saved and re-applied."""

from __future__ import annotations

import fnmatch
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
        kept = select_kept(scores[group.units], group.segments, ratio, round_to)
        decisions.append(GroupPlan(group.index, group.channels, kept))
    return Plan(tuple(decisions))
