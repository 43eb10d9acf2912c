"""--iterative K: reach the MACs target in K rounds of rank, remove, check; stop before the guard breaks.

Each round re-ranks the channels of the model the previous round produced. Tensor and node names
survive every round, so the indices each round removes are mapped back to the original numbering.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onnxprune.apply import NodeChange
from onnxprune.candidates import Candidate, CandidateBuilder
from onnxprune.config import PruneConfig
from onnxprune.errors import GuardError
from onnxprune.groups import Analysis
from onnxprune.plan import GroupPlan, Plan
from onnxprune.progress import progress
from onnxprune.report import group_rows
from onnxprune.search import quality_drop, rounded_plan_for_macs, slot_mask
from onnxprune.stats import MacModel


class IndexTracker:
    """Maps indices removed in later rounds back to the original numbering of each tensor and node side."""

    def __init__(self) -> None:
        self.alive: dict[tuple[str, str], np.ndarray] = {}
        self.removed: dict[tuple[str, str], list[int]] = {}
        self.op_types: dict[str, str] = {}

    def _remove(self, key: tuple[str, str], count: int, positions: np.ndarray) -> None:
        alive = self.alive.get(key, np.arange(count))
        self.removed.setdefault(key, []).extend(int(i) for i in alive[positions])
        self.alive[key] = np.delete(alive, positions)

    def record(self, analysis: Analysis, removed_slots: np.ndarray) -> None:
        """Note what one round removes, before its plan is applied."""
        ctx = analysis.context
        for name, channel in ctx.channels.items():
            self._remove(("tensor", name), channel.size, np.nonzero(removed_slots[channel.slots])[0])
        ops = {node.name: node.op for node in analysis.graph.nodes}
        for node, names in ctx.node_io.items():
            for side, name in zip(("in", "out"), names):
                if name is not None:
                    channel = ctx.channels[name]
                    self._remove((side, node), channel.size, np.nonzero(removed_slots[channel.slots])[0])
            self.op_types[node] = ops.get(node, "")

    def changes(self) -> list[NodeChange]:
        """Every node with removed channels, in original numbering."""
        result = []
        for node, op_type in self.op_types.items():
            removed_in = sorted(self.removed.get(("in", node), []))
            removed_out = sorted(self.removed.get(("out", node), []))
            if removed_in or removed_out:
                result.append(NodeChange(node, op_type, tuple(removed_in), tuple(removed_out)))
        return result

    def plan_of(self, original: Analysis) -> Plan:
        """The original analysis's groups with the channels still alive after every round."""
        alive_slots = np.ones(original.context.slot_count, dtype=bool)
        for name, channel in original.context.channels.items():
            alive = self.alive.get(("tensor", name))
            if alive is not None:
                alive_slots[channel.slots] = False
                alive_slots[channel.start + alive] = True
        unit_alive = np.zeros(original.unit_count, dtype=bool)
        unit_alive[original.unit_of_slot[alive_slots]] = True
        decisions = []
        for group in original.groups:
            kept = tuple(i for i, unit in enumerate(group.units) if unit_alive[unit])
            decisions.append(GroupPlan(group.index, group.channels, kept, group.pinned_reason))
        return Plan(tuple(decisions))


def prune_iteratively(builder: CandidateBuilder, config: PruneConfig, target: float) -> Candidate:
    """Prune to ``target`` (a fraction of the original MACs) in ``config.iterative`` rounds.

    Raises:
        GuardError: the first round already breaks --max-drop.
    """
    original = builder.analysis()
    total = MacModel(original).total
    original_channels = {member.name: group.channels for group in original.groups for member in group.members}
    tracker, model, last, broke = IndexTracker(), None, None, False
    steps = config.iterative
    for step in progress(range(1, steps + 1), "iterative pruning", config.quiet):
        analysis = builder.analysis(model)
        macs = MacModel(analysis)
        # --group-cap holds for the original groups: a group already cut keeps what the cap leaves of it.
        caps = {group.index: max(0.0, 1 - (1 - config.group_cap) * original_channels.get(group.members[0].name,
                                                                                          group.channels) / group.channels)
                for group in analysis.groups if group.channels}
        goal = (1 - (1 - target) * step / steps) * total
        plan = rounded_plan_for_macs(analysis, builder.scores(analysis, config.importance, model), macs,
                                     min(1.0, goal / macs.total), config.rounding, config.group_cap, config.exclude, caps)
        removed = slot_mask(analysis, plan)
        if not removed.any():
            continue
        candidate = builder.build(plan, analysis, model)
        if config.max_drop is not None and quality_drop(candidate.evaluation)[0] > config.max_drop:
            broke = True
            break  # keep the previous round's model
        tracker.record(analysis, removed)  # its channel bookkeeping outlives the apply
        model, last = candidate.model, candidate
    if broke and last is None:
        raise GuardError("the first pruning round already breaks --max-drop; nothing was written")
    if last is None:  # no round could remove a channel (every group pinned, say): the model as it is
        return builder.build(tracker.plan_of(original), original)
    plan = tracker.plan_of(original)
    return replace(last, plan=plan, changes=tracker.changes(), groups=group_rows(original, plan))
