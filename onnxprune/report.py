"""The JSON report (as a dict) and the text the CLI prints."""

from __future__ import annotations

import os
from dataclasses import asdict, fields, is_dataclass
from typing import TYPE_CHECKING

import numpy as np

from onnxprune.config import PruneConfig

if TYPE_CHECKING:
    from onnxprune.calibdata import CalibrationData
    from onnxprune.candidates import Candidate
    from onnxprune.groups import Analysis
    from onnxprune.latency import LatencyComparison
    from onnxprune.plan import Plan
    from onnxprune.search import SensitivityRow
    from onnxprune.stats import ModelStats
    from onnxprune.validate import Evaluation

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
            "fixed": group.fixed,
            "fixed_reason": group.fixed_reason,
        })
    return rows


def build_report(
    source: str | None,
    config: PruneConfig,
    before: ModelStats,
    chosen: Candidate,
    latency: LatencyComparison | None = None,
    sensitivity: list[SensitivityRow] | None = None,
    calibration: CalibrationData | None = None,
    notes: list[str] | None = None,
    history: list[tuple[int, int, Evaluation]] | None = None,
) -> dict:
    """The report of one pruning run, ready for ``json.dump`` (schema in the README)."""
    # Not asdict(config): it deep-copies ``calib``, which may be every calibration array, or a generator.
    settings = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in ("calib", "images")}
    settings["calib"] = _calib_setting(config.calib)
    images = asdict(config.images) if is_dataclass(config.images) else None
    settings["images"] = {k: list(v) if isinstance(v, tuple) else v for k, v in images.items()} if images else None
    settings["importance"] = config.importance.value
    settings["round_to"] = config.rounding
    settings["exclude"] = list(config.exclude)
    settings["providers"] = list(config.providers) if config.providers else None
    evaluation = chosen.evaluation
    return {
        "report_version": REPORT_VERSION,
        "input": source,
        "settings": settings,
        "original": before.to_dict(),
        "pruned": chosen.stats.to_dict(),
        "groups": chosen.groups,
        "nodes": [
            {"name": c.name, "op_type": c.op_type, "in_removed": list(c.in_removed), "out_removed": list(c.out_removed)}
            for c in chosen.changes
        ],
        "fidelity": evaluation.fidelity_dict() if evaluation else None,
        "accuracy": evaluation.accuracy_dict() if evaluation else None,
        "latency": latency.to_dict() if latency else None,
        "sensitivity": [row.to_dict() for row in sensitivity] if sensitivity else None,
        "calibration": _calibration_dict(calibration),
        "compensation": [record.to_dict() for record in chosen.compensation],
        "notes": list(notes or []),
        "tradeoff": tradeoff_points(before, history or [], chosen, latency),
    }


def quality_metric(evaluation: Evaluation) -> tuple[float, str]:
    """The number the trade-off plots: accuracy with labels, else top-1 agreement, else the worst cosine."""
    if evaluation.accuracy_pruned is not None:
        return evaluation.accuracy_pruned, "accuracy"
    if evaluation.top1_agreement is not None:
        return evaluation.top1_agreement, "top-1 agreement"
    return min(o.cosine for o in evaluation.outputs), "cosine similarity"


def tradeoff_points(before: ModelStats, history: list[tuple[int, int, Evaluation]], chosen: Candidate,
                    latency: LatencyComparison | None) -> list[dict]:
    """Quality against MACs (and latency, where measured) of every candidate the run validated."""
    points = []
    for serial, macs, evaluation in history:
        metric, name = quality_metric(evaluation)
        is_chosen = serial == chosen.serial
        points.append({
            "label": "chosen" if is_chosen else f"candidate {serial + 1}",
            "macs_fraction": macs / before.macs if before.macs else 1.0,
            "latency_fraction": 1 / latency.speedup if is_chosen and latency else None,
            "metric": metric,
            "metric_name": name,
            "chosen": is_chosen,
        })
    return points


def _calib_setting(calib: object) -> str | None:
    if calib is None:
        return None
    if isinstance(calib, (str, os.PathLike)):
        return str(calib)
    return "Python array" if isinstance(calib, np.ndarray) else "Python iterable"


def _calibration_dict(calibration: CalibrationData | None) -> dict | None:
    if calibration is None:
        return None
    return {"calibration": calibration.calibration.description, "calibration_samples": calibration.calibration.samples,
            "held_out": calibration.held_out.description, "held_out_samples": calibration.held_out.samples,
            "skipped_images": calibration.skipped}


def _change(before: int, after: int) -> str:
    return f"{(after - before) / before * 100:+.1f}%" if before else "n/a"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def format_summary(report: dict, output: str | None) -> str:
    """A short before/after table for the terminal, with the notes that are not warnings (the command line
    prints those on stderr)."""
    before, after = report["original"], report["pruned"]
    lines = [f"{'':12}{'original':>14}{'pruned':>14}{'change':>10}"]
    for key, label, fmt in (("params", "params", "{:,}"), ("macs", "MACs", "{:,}"), ("size_bytes", "file size", None)):
        show = _megabytes if fmt is None else fmt.format
        lines.append(f"{label:12}{show(before[key]):>14}{show(after[key]):>14}{_change(before[key], after[key]):>10}")
    groups = report["groups"]
    pinned = sum(1 for g in groups if g["pinned_reason"])
    pruned = sum(1 for g in groups if not g["pinned_reason"] and g["kept"] < g["channels"])
    lines.append(f"groups: {pruned} pruned, {len(groups) - pruned - pinned} unchanged, {pinned} pinned (left whole)")
    fidelity = report["fidelity"]
    measured = [o for o in fidelity["outputs"] if o["cosine"] is not None] if fidelity else []
    if fidelity and not measured:
        lines.append("validated in ONNX Runtime: outputs keep names and shapes; fidelity not measured (NaN or infinity "
                     "in the outputs, see the warnings)")
    elif fidelity:
        worst = min(o["cosine"] for o in measured)
        # An output with large constant parts (a detector's decoded boxes) keeps its cosine near 1 where its
        # relative error shows the change.
        error = max(o["relative_l2"] for o in measured)
        inputs = "held-out" if report.get("calibration") else "seeded random"
        line = (f"validated in ONNX Runtime: outputs keep names and shapes; on {fidelity['samples']} {inputs} inputs "
                f"cosine >= {worst:.4f}, relative L2 error <= {error:.3g}")
        if fidelity["top1_agreement"] is not None:
            line += f", top-1 agreement {fidelity['top1_agreement']:.1%}"
        lines.append(line)
    latency = report.get("latency")
    if latency:
        lines.append(f"latency (ONNX Runtime, {latency['threads']} thread(s), batch {latency['batch']}): "
                     f"{latency['original']['median_ms']:.3f} ms -> {latency['pruned']['median_ms']:.3f} ms median, "
                     f"{latency['speedup']:.2f}x")
    accuracy = report.get("accuracy")
    if accuracy:
        lines.append(f"accuracy: {accuracy['original']:.2%} -> {accuracy['pruned']:.2%} on {accuracy['samples']} labelled inputs")
    calibration = report.get("calibration")
    if calibration:
        lines.append(f"calibration: {calibration['calibration']}")
    compensation = report.get("compensation")
    if compensation:
        methods = sorted({r["method"] for r in compensation if r["method"] != "none"})
        changed = sum(1 for r in compensation if r["method"] != "none")
        lines.append(f"compensation: {changed} of {len(compensation)} consumers adjusted ({', '.join(methods) or 'none'})")
    for note in report.get("notes") or []:
        if not note.startswith("warning: "):  # the command line prints warnings on stderr
            lines.append(f"note: {note}")
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
        elif g.get("fixed"):
            lines.append(f"{'':21}and {g['fixed']} more that stay: {g['fixed_reason']}")
    return "\n".join(lines)
