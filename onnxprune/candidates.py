"""Loading the original once, and building pruned candidates from plans: apply, export, validate, measure."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.apply import NodeChange, apply_plan
from onnxprune.groups import Analysis, analyse_graph
from onnxprune.model import (
    PROTOBUF_SAFE_BYTES,
    ModelSource,
    check_model_file,
    default_opset,
    export_graph,
    external_data_bytes,
    import_graph,
    infer_graph_shapes,
    read_model,
    write_external,
)
from onnxprune.plan import Plan
from onnxprune.report import group_rows
from onnxprune.stats import ModelStats, graph_stats
from onnxprune.validate import EvalData, Evaluation, ReferenceRun, check_pruned, reference_run, release_freed_memory


@dataclass
class Loaded:
    """The original model, where it came from, its size, and its reference run."""

    model: onnx.ModelProto | None
    path: str | None
    size: int | None
    external: bool
    reference: ReferenceRun | None = None


def load_with_reference(source: ModelSource, validate: bool, seed: int, data: EvalData | None = None) -> Loaded:
    """Load the original and run it once in ONNX Runtime on the evaluation inputs.

    From a path, the file is checked first (no data file outside its folder is ever read), then ONNX
    Runtime runs it from the file before we load it, so the two copies never coexist in memory.
    """
    path = str(source) if isinstance(source, (str, os.PathLike)) else None
    reference = None
    if path:
        check_model_file(path)
        release_freed_memory()
        reference = reference_run(path, seed, data) if validate else None
    loaded = read_model(source)
    model, size = loaded.model, loaded.size_bytes
    if path is None:
        size, reference = _measure_and_run(model, loaded.external_data, validate, seed, data)
    return Loaded(model, path, size, loaded.external_data, reference)


def _measure_and_run(model: onnx.ModelProto, external: bool, validate: bool, seed: int,
                     data: EvalData | None) -> tuple[int, ReferenceRun | None]:
    """Size of a ModelProto given in memory, and its reference run, serializing it only once."""
    if external:  # too big to serialize: go through a temporary file with external data
        with tempfile.TemporaryDirectory() as tmp:
            target = write_external(model, Path(tmp), "original.onnx")
            size = sum(f.stat().st_size for f in Path(tmp).iterdir())
            return size, reference_run(str(target), seed, data) if validate else None
    serialized = model.SerializeToString()  # upb's ByteSize() serializes too: do it once
    return len(serialized), reference_run(serialized, seed, data) if validate else None


@dataclass
class Candidate:
    """A pruned model built from a plan, validated and measured."""

    plan: Plan
    model: onnx.ModelProto
    groups: list[dict]
    changes: list[NodeChange]
    evaluation: Evaluation | None
    stats: ModelStats
    external: bool

    def serialized(self) -> bytes:
        return self.model.SerializeToString()


_EMPTY = np.zeros(0, dtype=np.float32)


def _detach_constants(graph: gs.Graph) -> None:
    """Drop a consumed graph's lazy weights: each one keeps the whole original proto alive."""
    constants = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    constants += [v for node in graph.nodes for v in node.attrs.values() if isinstance(v, gs.Constant)]
    for tensor in constants:
        tensor.values = _EMPTY


class CandidateBuilder:
    """Builds candidates from plans of the original's analysis (plans index groups identically)."""

    def __init__(self, loaded: Loaded, reference: ReferenceRun | None, quiet: bool = True) -> None:
        self.loaded = loaded
        self.reference = reference
        self.quiet = quiet
        self.opset = default_opset(loaded.model) or 1

    def original(self) -> onnx.ModelProto:
        """The original model, read again from its file if it was released."""
        if self.loaded.model is None:
            self.loaded.model = read_model(self.loaded.path).model
        return self.loaded.model

    def analysis(self, model: onnx.ModelProto | None = None) -> Analysis:
        """A fresh analysis of the original (or of ``model``); applying a plan consumes it."""
        model = model or self.original()
        return analyse_graph(import_graph(model), default_opset(model) or 1)

    def original_source(self) -> str | bytes:
        """The original for ONNX Runtime: its path when there is one."""
        return self.loaded.path or self.original().SerializeToString()

    def build(self, plan: Plan, analysis: Analysis | None = None, model: onnx.ModelProto | None = None,
              last: bool = False) -> Candidate:
        """Apply ``plan`` (to ``analysis``, else a fresh one of ``model`` or the original), export and validate.

        ``last`` promises no further use of the original, whose memory is released before validation
        when it can be read again from its file.
        """
        template = model or self.original()
        analysis = analysis or self.analysis(template)
        groups = group_rows(analysis, plan)
        changes = apply_plan(analysis, plan)
        infer_graph_shapes(analysis.graph, template)
        pruned = export_graph(analysis.graph, template)
        if last and self.loaded.path:
            _detach_constants(analysis.graph)
            self.loaded.model = None
        del analysis, template
        release_freed_memory()
        external = self.loaded.external or external_data_bytes(pruned) > PROTOBUF_SAFE_BYTES
        size, evaluation = self._validate(pruned, external)
        stats = graph_stats(gs.import_onnx(pruned), size)
        return Candidate(plan, pruned, groups, changes, evaluation, stats, external)

    def _validate(self, pruned: onnx.ModelProto, external: bool) -> tuple[int, Evaluation | None]:
        if external:
            with tempfile.TemporaryDirectory() as tmp:
                target = write_external(pruned, Path(tmp), "pruned.onnx")
                size = sum(f.stat().st_size for f in Path(tmp).iterdir())
                return size, check_pruned(str(target), self.reference) if self.reference else None
        serialized = pruned.SerializeToString()
        return len(serialized), check_pruned(serialized, self.reference) if self.reference else None
