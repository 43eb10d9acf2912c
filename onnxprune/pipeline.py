"""The pruning pipeline: load, trace groups, score, plan, apply, validate, report."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from onnxprune.apply import NodeChange, apply_plan
from onnxprune.config import Importance, PruneConfig
from onnxprune.errors import InputError
from onnxprune.groups import Analysis, analyse_graph
from onnxprune.importance import weight_scores
from onnxprune.model import (
    PROTOBUF_SAFE_BYTES,
    ModelSource,
    check_model_file,
    default_opset,
    export_graph,
    external_data_bytes,
    import_graph,
    infer_graph_shapes,
    load_model,
    read_model,
    write_external,
)
from onnxprune.plan import Plan, make_plan
from onnxprune.report import build_report, group_rows
from onnxprune.stats import ModelStats, graph_stats
from onnxprune.validate import OutputCheck, ReferenceRun, check_pruned, reference_run, release_freed_memory


@dataclass(frozen=True)
class GroupsResult:
    """What ``--dry-run`` shows: the groups, and what the plan would keep of each."""

    groups: list[dict]
    plan: Plan

    @property
    def prunable(self) -> int:
        return sum(1 for g in self.groups if g["pinned_reason"] is None)


@dataclass(frozen=True)
class PruneResult:
    """The pruned model and everything measured about it."""

    model: onnx.ModelProto
    plan: Plan
    original: ModelStats
    pruned: ModelStats
    changes: list[NodeChange]
    outputs: list[OutputCheck]
    report: dict
    external_data: bool = False


def _resolve_config(config: PruneConfig | None, **options) -> PruneConfig:
    config = config or PruneConfig()
    given = {k: v for k, v in options.items() if v is not None}
    if "importance" in given:
        given["importance"] = _importance(given["importance"])
    if "exclude" in given:
        given["exclude"] = tuple(given["exclude"])
    config = replace(config, **given)
    if not 0.0 <= config.ratio < 1.0:
        raise InputError(f"ratio must be at least 0 and below 1, got {config.ratio}")
    if config.rounding < 1:
        raise InputError(f"round-to must be a positive integer, got {config.rounding}")
    return config


def _importance(value: Importance | str) -> Importance:
    try:
        return Importance(value)
    except ValueError:
        allowed = ", ".join(i.value for i in Importance)
        raise InputError(f"unknown importance '{value}'; choose one of: {allowed}") from None


def _analyse(model: onnx.ModelProto) -> Analysis:
    return analyse_graph(import_graph(model), default_opset(model) or 1)


def find_groups(model: ModelSource, config: PruneConfig | None = None, **options) -> GroupsResult:
    """Analyse a model without changing it: its channel groups, why some are pinned, and what would be kept.

    Args:
        model: a path or a ModelProto.
        config: options; keyword arguments (ratio, importance, round_to, exclude) override it.
    """
    config = _resolve_config(config, **options)
    analysis = _analyse(load_model(model))
    plan = make_plan(analysis, weight_scores(analysis, config.importance), config.ratio, config.rounding, config.exclude)
    return GroupsResult(group_rows(analysis, plan), plan)


def prune(model: ModelSource, config: PruneConfig | None = None, **options) -> PruneResult:
    """Remove the least important channels of every prunable group and check the result runs.

    Args:
        model: a path or a ModelProto (never modified).
        config: options; keyword arguments (ratio, importance, round_to, exclude, validate, seed)
            override its fields.

    Returns:
        A PruneResult holding the pruned ModelProto and the report as a dict.

    Raises:
        InputError: bad model or options.
        PrunedModelError: the pruned model failed validation (nothing should be written).
    """
    config = _resolve_config(config, **options)
    path = str(model) if isinstance(model, (str, os.PathLike)) else None
    reference = None
    if path:
        check_model_file(path)  # before anything else reads it: refuses data files outside its folder
        # ONNX Runtime runs the original from its file before we load it, so the two copies never coexist.
        reference = reference_run(path, config.seed) if config.validate else None
    loaded = read_model(model)
    original = loaded.model
    if path is None:
        original_size, proto_reference = _measure_and_run(original, loaded.external_data, config)
        reference = reference or proto_reference
    else:
        original_size = loaded.size_bytes
    analysis = _analyse(original)
    before = graph_stats(analysis.graph, original_size)
    plan = make_plan(analysis, weight_scores(analysis, config.importance), config.ratio, config.rounding, config.exclude)
    groups = group_rows(analysis, plan)
    changes = apply_plan(analysis, plan)
    infer_graph_shapes(analysis.graph, original)
    pruned = export_graph(analysis.graph, original)
    external = loaded.external_data or external_data_bytes(pruned) > PROTOBUF_SAFE_BYTES
    del analysis, original, loaded  # the pruned model holds everything still needed
    release_freed_memory()
    size, outputs = _validate(pruned, reference, external)
    after = graph_stats(gs.import_onnx(pruned), size)
    report = build_report(path, config, before, after, groups, changes, outputs)
    return PruneResult(pruned, plan, before, after, changes, outputs, report, external)


def _measure_and_run(original: onnx.ModelProto, external: bool, config: PruneConfig) -> tuple[int, ReferenceRun | None]:
    """Size of a ModelProto given in memory, and its reference run, serializing it only once."""
    if external:  # too big to serialize: go through a temporary file with external data
        with tempfile.TemporaryDirectory() as tmp:
            target = write_external(original, Path(tmp), "original.onnx")
            size = sum(f.stat().st_size for f in Path(tmp).iterdir())
            return size, reference_run(str(target), config.seed) if config.validate else None
    serialized = original.SerializeToString()  # upb's ByteSize() serializes too: do it once
    return len(serialized), reference_run(serialized, config.seed) if config.validate else None


def _validate(pruned: onnx.ModelProto, reference: ReferenceRun | None, external: bool) -> tuple[int, list[OutputCheck]]:
    """Serialized size of the pruned model and its checks against the reference run."""
    if external:
        with tempfile.TemporaryDirectory() as tmp:
            target = write_external(pruned, Path(tmp), "pruned.onnx")
            size = sum(f.stat().st_size for f in Path(tmp).iterdir())
            return size, check_pruned(str(target), reference) if reference is not None else []
    serialized = pruned.SerializeToString()
    return len(serialized), check_pruned(serialized, reference) if reference is not None else []
