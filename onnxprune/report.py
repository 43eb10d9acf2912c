"""The JSON report (as a dict) and the text the CLI prints."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from onnxprune.config import PruneConfig

if TYPE_CHECKING:
    from onnxprune.apply import NodeChange
    from onnxprune.groups import Analysis
    from onnxprune.plan import Plan
    from onnxprune.stats import ModelStats
    from onnxprune.validate import OutputCheck

REPORT_VERSION = 1


def group_rows(analysis: Analysis, plan: Plan) -> list[dict]:
    """One dict per group: member tensors, channel count, kept count, and why it is left whole (or None)."""
    rows = []
    for group, decision in zip(analysis.groups, plan.groups):
        if not group.members:
            continue  # fresh pinned slots of a consumer, not a tensor of the graph
        rows.append({
            "index": group.index,
            "members": [{"tensor": m.name, "axis": m.axis, "channels": m.size} for m in group.members],
            "channels": group.channels,
            "kept": len(decision.kept),
            "pinned_reason": decision.skipped_reason,
        })
    return rows


def build_report(
    source: str | None,
    config: PruneConfig,
    before: ModelStats,
    after: ModelStats,
    groups: list[dict],
    changes: list[NodeChange],
    outputs: list[OutputCheck],
) -> dict:
    """The report of one pruning run, ready for ``json.dump``."""
    settings = asdict(config)
    settings["importance"] = config.importance.value
    settings["round_to"] = config.rounding
    settings["exclude"] = list(config.exclude)
    return {
        "report_version": REPORT_VERSION,
        "input": source,
        "settings": settings,
        "original": before.to_dict(),
        "pruned": after.to_dict(),
        "groups": groups,
        "nodes": [
            {"name": c.name, "op_type": c.op_type, "in_removed": list(c.in_removed), "out_removed": list(c.out_removed)}
            for c in changes
        ],
        "validation": {"outputs": [o.to_dict() for o in outputs]},
    }


def _change(before: int, after: int) -> str:
    return f"{(after - before) / before * 100:+.1f}%" if before else "n/a"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def format_summary(report: dict, output: str | None) -> str:
    """A short before/after table for the terminal."""
    before, after = report["original"], report["pruned"]
    lines = [f"{'':12}{'original':>14}{'pruned':>14}{'change':>10}"]
    for key, label, fmt in (("params", "params", "{:,}"), ("macs", "MACs", "{:,}"), ("size_bytes", "file size", None)):
        show = _megabytes if fmt is None else fmt.format
        lines.append(f"{label:12}{show(before[key]):>14}{show(after[key]):>14}{_change(before[key], after[key]):>10}")
    groups = report["groups"]
    pinned = sum(1 for g in groups if g["pinned_reason"])
    pruned = sum(1 for g in groups if not g["pinned_reason"] and g["kept"] < g["channels"])
    lines.append(f"groups: {pruned} pruned, {len(groups) - pruned - pinned} unchanged, {pinned} pinned (left whole)")
    outputs = report["validation"]["outputs"]
    if outputs:
        worst = min(o["cosine"] for o in outputs)
        lines.append(f"validated in ONNX Runtime: outputs keep names and shapes; lowest cosine vs original {worst:.4f} (random input)")
    if output:
        lines.append(f"written: {output}")
    return "\n".join(lines)


def format_groups(groups: list[dict], max_members: int = 4) -> str:
    """The ``--dry-run`` listing: every group, its channel count, what stays, and why pinned groups stay."""
    prunable = [g for g in groups if g["pinned_reason"] is None]
    lines = [f"{len(groups)} channel groups: {len(prunable)} prunable, {len(groups) - len(prunable)} pinned", ""]
    lines.append(f"{'group':>5} {'channels':>8} {'kept':>5}  members / reason")
    for g in groups:
        names = [m["tensor"] for m in g["members"]]
        shown = ", ".join(names[:max_members]) + (f" (+{len(names) - max_members} more)" if len(names) > max_members else "")
        lines.append(f"{g['index']:>5} {g['channels']:>8} {g['kept']:>5}  {shown}")
        if g["pinned_reason"]:
            lines.append(f"{'':21}pinned: {g['pinned_reason']}")
    return "\n".join(lines)
