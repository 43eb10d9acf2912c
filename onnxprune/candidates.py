"""Loading the original once, and building pruned candidates from plans: apply, export, validate, measure."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.apply import NodeChange, apply_plan
from onnxprune.calibrate import (
    GRAM_MAX_CHANNELS,
    ChannelStats,
    PairSpec,
    TensorSpec,
    collect_pairs,
    consumer_inputs,
    record_consumer_inputs,
    runtime_shapes,
)
from onnxprune.compensate import CompensationRecord, Refits, compensate, kernel_refit_geometry, residual_sum
from onnxprune.config import DEFAULT_REFIT_PASSES, REFIT_BUDGET_MACS, Importance
from onnxprune.consumers import consumer_levels, find_consumers
from onnxprune.contrib import write_attention_heads_packed
from onnxprune.errors import InputError, PrunedModelError
from onnxprune.groups import Analysis, analyse_graph
from onnxprune.importance import importance_scores
from onnxprune.model import (
    PROTOBUF_SAFE_BYTES,
    ModelSource,
    check_model_file,
    default_opset,
    export_graph,
    external_data_bytes,
    forget_made_up_sizes,
    import_graph,
    infer_graph_shapes,
    read_model,
    shapes_at,
    size_names,
    write_external,
)
from onnxprune.plan import Plan
from onnxprune.report import group_rows
from onnxprune.stats import ModelStats, graph_stats, mac_scales, static_mac_count, unresolved_mac_tensors
from onnxprune.validate import (
    EvalData,
    Evaluation,
    ReferenceRun,
    check_pruned,
    reference_run,
    release_freed_memory,
    weights_apart,
)


@dataclass
class Loaded:
    """The original model, where it came from, its size, and its reference run."""

    model: onnx.ModelProto | None
    path: str | None
    size: int | None
    external: bool
    reference: ReferenceRun | None = None
    unfused: tuple[str, ...] = ()
    written_as_qdq: tuple[str, ...] = ()


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
    return Loaded(model, path, size, loaded.external_data, reference, loaded.unfused, loaded.written_as_qdq)


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
    compensation: list[CompensationRecord] = field(default_factory=list)
    serial: int = -1

    def serialized(self) -> bytes:
        return self.model.SerializeToString()


_EMPTY = np.zeros(0, dtype=np.float32)


def _detach_constants(graph: gs.Graph) -> None:
    """Drop a consumed graph's lazy weights: each one keeps the whole original proto alive."""
    constants = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    constants += [v for node in graph.nodes for v in node.attrs.values() if isinstance(v, gs.Constant)]
    for tensor in constants:
        tensor.values = _EMPTY


@dataclass(frozen=True)
class Activations:
    """Calibration batches, and what is recorded on them for ``importance`` and ``compensate``."""

    batches: list[dict[str, np.ndarray]]
    importance: Importance
    compensate: bool
    refit_passes: int | None = None  # 0: no refit; None: see PruneConfig.refit_passes
    scans: bool = False  # candidates will be built without refit (a sensitivity scan)

    @property
    def gram(self) -> bool:
        """Whether the first recording takes Gram matrices: for the redundancy criterion, or for a first
        pass without refit (compensation otherwise reads those of its refit's recording)."""
        first_pass_alone = self.compensate and (self.scans or self.refit_passes == 0)
        return self.importance is Importance.REDUNDANCY or first_pass_alone

    @property
    def sums(self) -> tuple[str, ...]:
        """The per-channel sums (keys of calibrate.SUMS) the criterion reads; compensation reads the sums."""
        reads = {Importance.ACTIVATION: ("total_abs",), Importance.APOZ: ("zeros",),
                 Importance.FLUCTUATION: ("total_sq",), Importance.WANDA: ("total_sq",),
                 Importance.REDUNDANCY: ("total_sq",)}  # tensors too wide for a Gram matrix: the variance
        return ("total", *reads.get(self.importance, ()))


def _upstream_names(graph: gs.Graph, inputs: set[str]) -> set[str]:
    """Names of the nodes that the tensors ``inputs`` depend on, or the other inputs of the nodes after their
    readers (the other term of a residual Add after a consumer, which a kernel refit records too)."""
    tensors = graph.tensors()
    pending = [tensors[name] for name in inputs if name in tensors]
    pending += [t for name in list(inputs) if name in tensors for reader in tensors[name].outputs
                for out in reader.outputs for after in out.outputs for t in after.inputs]
    seen: dict[int, str] = {}
    while pending:
        for node in pending.pop().inputs:
            if id(node) not in seen:
                seen[id(node)] = node.name
                pending.extend(node.inputs)
    return set(seen.values())


class CandidateBuilder:
    """Builds candidates from plans of the original's analysis (plans index groups identically)."""

    def __init__(self, loaded: Loaded, reference: ReferenceRun | None, quiet: bool = True,
                 activations: Activations | None = None) -> None:
        self.loaded = loaded
        self.reference = reference
        self.quiet = quiet
        self.activations = activations
        self.opset = default_opset(loaded.model) or 1
        self._stats: tuple[onnx.ModelProto | None, bool, dict[str, ChannelStats]] | None = None
        self._mac_scales: dict[str, float] | None = None
        # The last model imported and its graph before analysis: each analysis starts from a copy, since
        # importing (folding, rewriting reshapes, many rounds of shape inference) costs a transformer's
        # calibrated run most of its time (GPT-2 from TorchScript: 12 imports of about 1 s each).
        self._imported: tuple[onnx.ModelProto, gs.Graph] | None = None
        # (serial, MACs, evaluation) of every validated candidate, for the trade-off in the report.
        self.history: list[tuple[int, int, Evaluation]] = []

    def activation_stats(self, analysis: Analysis | None, model: onnx.ModelProto | None = None,
                         gram: bool = False) -> dict[str, ChannelStats]:
        """Statistics of the consumer inputs of ``model`` (None: the original; ``analysis`` is its analysis
        or None) on the calibration data, recorded once per model (again if ``gram`` asks for Gram
        matrices that the first recording did not need)."""
        gram = gram or self.activations.gram
        # The model itself is the key: ids get reused.
        if self._stats is None or self._stats[0] is not model or gram and not self._stats[1]:
            activations = self.activations
            analysis = analysis or self.analysis(model)
            self._stats = (model, gram, record_consumer_inputs(model or self.original(), analysis, activations.batches,
                                                             self.quiet, gram, activations.sums))
        return self._stats[2]

    def scores(self, analysis: Analysis, importance: Importance, model: onnx.ModelProto | None = None) -> np.ndarray:
        """Importance of every unit of ``analysis`` (of ``model``, None: the original)."""
        if not importance.needs_activations:
            return importance_scores(analysis, importance)
        return importance_scores(analysis, importance, self.activation_stats(analysis, model), find_consumers(analysis))

    def original(self) -> onnx.ModelProto:
        """The original model, read again from its file if it was released."""
        if self.loaded.model is None:
            self.loaded.model = read_model(self.loaded.path).model
        return self.loaded.model

    def analysis(self, model: onnx.ModelProto | None = None) -> Analysis:
        """A fresh analysis of the original (or of ``model``); applying a plan consumes it."""
        model = model or self.original()
        if self._imported is None or self._imported[0] is not model:  # the model itself is the key: ids get reused
            self._imported = (model, import_graph(model))
        analysis = analyse_graph(self._imported[1].copy(), default_opset(model) or 1)
        if self._mac_scales is None:
            self._mac_scales = self._scales_at_data_sizes(analysis.graph, model)
        analysis.mac_scales = self._mac_scales
        return analysis

    def _scales_at_data_sizes(self, graph: gs.Graph, template: onnx.ModelProto) -> dict[str, float]:
        """``stats.mac_scales`` at the sizes of the evaluation inputs, where nodes that count have symbolic
        sizes beyond the batch: the MACs of a model with a dynamic image size or sequence length are then
        counted at the size of its calibration data (random inputs tell nothing there: their symbolic sizes
        are 1), and a Gemm over batch x tokens at the tokens of a sample. Shape inference is asked first;
        sizes it cannot follow are read from one ONNX Runtime run of one sample."""
        if static_mac_count(graph) is not None:
            return {}
        data = self.reference.data if self.reference is not None else None
        batch = data.batches[0] if data is not None and data.batches else {}
        feeds, sizes = {}, {}
        for tensor in graph.inputs:
            if tensor.shape is None:
                return {}
            fixed = bool(tensor.shape) and isinstance(tensor.shape[0], int)
            static = all(isinstance(d, int) for d in tensor.shape[1:])
            value = batch.get(tensor.name)
            if value is not None and (static or not data.random):
                # One sample, unless the model fixes its batch (its MACs then count that batch).
                feeds[tensor.name] = value if fixed or not tensor.shape else value[:1]
                sizes[tensor.name] = list(feeds[tensor.name].shape)
            elif static:
                sizes[tensor.name] = [tensor.shape[0] if fixed else 1, *tensor.shape[1:]] if tensor.shape else []
            else:
                return {}  # a symbolic input size that no data tells
        try:
            shapes = shapes_at(graph, template, sizes)
        except InputError:  # inference fails at these sizes: the MACs keep symbolic sizes at 1
            return {}
        unresolved = unresolved_mac_tensors(graph, shapes)
        if unresolved and len(feeds) == len(graph.inputs):
            shapes |= runtime_shapes(template, unresolved, feeds)
        return mac_scales(graph, shapes)

    def original_source(self) -> str | bytes:
        """The original for ONNX Runtime: its path when there is one."""
        return self.loaded.path or self.original().SerializeToString()

    def build(self, plan: Plan, analysis: Analysis | None = None, model: onnx.ModelProto | None = None,
              last: bool = False, compensated: bool = True, refit: bool = True, checked: bool = True) -> Candidate:
        """Apply ``plan`` (to ``analysis``, else a fresh one of ``model`` or the original), export and validate.

        ``last`` promises no further use of the original, whose memory is released before validation
        when it can be read again from its file. With calibration data and ``compensated``, the
        remaining weights are compensated first (``refit``: including the refit on the pruned model's
        inputs, which costs a few passes over the calibration data). ``checked`` False skips the ONNX checker
        (ONNX Runtime still runs it) for a candidate that is only measured, never written.
        """
        template = model or self.original()
        analysis = analysis or self.analysis(template)
        groups = group_rows(analysis, plan)
        records, refits = [], None
        if compensated and self.activations is not None and self.activations.compensate:
            refit = self.activations.refit_passes != 0 and refit
            # Without a refit, the first pass needs Gram matrices of its own.
            recorded = self.activation_stats(analysis, model, gram=not refit)
            decisions: dict = {}
            if refit:
                refits = self._refit_pairs(template, plan, recorded, decisions)
            records = compensate(analysis, plan, recorded, refits, decisions)
        changes = apply_plan(analysis, plan)
        write_attention_heads_packed(analysis.graph)
        infer_graph_shapes(analysis.graph, template)
        pruned = export_graph(analysis.graph, template)
        declared = [onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in template.graph.output]
        sizes = size_names(template)
        if last and self.loaded.path:
            _detach_constants(analysis.graph)
            self.loaded.model = self._imported = None
        del analysis, template
        release_freed_memory()
        external = self.loaded.external or external_data_bytes(pruned) > PROTOBUF_SAFE_BYTES
        measured = gs.import_onnx(pruned)  # with its inferred shapes, which count the MACs
        forget_made_up_sizes(pruned, sizes)
        try:
            size, evaluation = self._validate(pruned, external, checked)
        except PrunedModelError:
            # The shapes inferred for it follow ONNX Runtime where ONNX's inference disagrees with it, which
            # the checker refuses, and ONNX Runtime trusts them where they are ONNX's: TorchScript's
            # Longformer unbinds indices with SplitToSequence (a split of 1, keepdims 0), whose pieces ONNX
            # keeps 2-D and ONNX Runtime makes 1-D. Without them (and with the outputs declared as the
            # original declares them) both infer their own, as for the original; a model that still fails raises.
            del pruned.graph.value_info[:]
            del pruned.graph.output[:]
            pruned.graph.output.extend(declared)
            size, evaluation = self._validate(pruned, external, checked)
        stats = graph_stats(measured, size, self._mac_scales)
        del measured
        candidate = Candidate(plan, pruned, groups, changes, evaluation, stats, external, records, len(self.history))
        if evaluation is not None:
            self.history.append((candidate.serial, stats.macs, evaluation))
        return candidate

    def _refit_pairs(self, template: onnx.ModelProto, plan: Plan, stats: dict[str, ChannelStats],
                     decisions: dict) -> Refits:
        """Paired statistics for the refit, level by level: each level's inputs are recorded on the model
        whose earlier levels are already refitted, so a layer never corrects an error its upstream fixes too."""
        refits = Refits({}, {})
        probe = self.analysis(template)
        narrow = [c for c in find_consumers(probe) if c.source.size <= GRAM_MAX_CHANNELS]  # the rest get no Gram
        passes = consumer_levels(probe, narrow, self._refit_passes(probe)) if narrow else []
        del probe
        # Each pass's recording also gives the first pass its Gram matrices. Where a pass holds several
        # levels, the consumers of all but its last are upstream of others recorded with it, so their
        # first pass must be in place before: their Gram matrices are recorded ahead, on the first run.
        ahead = {name for levels in passes[1:] for level in levels[:-1] for name in level}
        first_pass = dict(stats)
        for index, levels in enumerate(passes):
            work = self.analysis(template)
            names = {name for level in levels for name in level}
            # Only the consumers upstream of what this pass records change its recording (the rest of both
            # models does not even run, see ``collect_pairs``); the final compensation rewrites them all.
            compensate(work, plan, first_pass, refits, decisions, _upstream_names(work.graph, names))
            level_refits, grams = self._pairs(template, plan, work, names, ahead if index == 0 else set())
            first_pass.update(grams)
            refits.channels.update(level_refits.channels)
            refits.kernels.update(level_refits.kernels)
        return refits

    def _refit_passes(self, analysis: Analysis) -> int:
        """The most refit passes: as asked, or one per consumer depth while REFIT_BUDGET_MACS covers running
        both models over the calibration data that often (at least DEFAULT_REFIT_PASSES)."""
        if self.activations.refit_passes is not None:
            return self.activations.refit_passes
        macs = static_mac_count(analysis.graph, analysis.mac_scales)
        if macs is None:
            return DEFAULT_REFIT_PASSES  # symbolic sizes: the MACs are unknown
        samples = sum(len(next(iter(batch.values()))) for batch in self.activations.batches if batch)
        per_pass = 2 * max(macs, 1) * max(samples, 1)
        return max(DEFAULT_REFIT_PASSES, int(REFIT_BUDGET_MACS // per_pass))

    def _pairs(self, template: onnx.ModelProto, plan: Plan, first: Analysis, names: set[str],
               ahead: set[str]) -> tuple[Refits, dict[str, ChannelStats]]:
        """Apply ``plan`` to the compensated analysis ``first`` and pair the inputs ``names`` with the
        template's, and the kernel patches of the Conv consumers that read them with their outputs; also
        record the Gram matrices of the template's tensors ``ahead``."""
        recorded = {name: replace(spec, fit=True) for name, spec in consumer_inputs(first).items()}
        inputs = {name: spec for name, spec in recorded.items() if name in names}
        grams = {name: spec for name, spec in recorded.items() if name in ahead}
        removed = np.isin(first.unit_of_slot, plan.removed_units(first))
        kept = {name: int((~removed[first.context.channels[name].slots]).sum()) for name in inputs}
        specs = {f"tensor {name}": PairSpec(name, spec, name, replace(spec, channels=kept[name]))
                 for name, spec in inputs.items()}
        level = [c for c in find_consumers(first) if c.source.name in inputs]
        together = {id(c.node) for c in level}
        for consumer in level:
            name = consumer.source.name
            unfold = kernel_refit_geometry(consumer, kept[name])
            output = consumer.node.outputs[0]
            residual = residual_sum(first.graph, output, together)
            if unfold is None or unfold.kernel == (1, 1) and residual is None:
                continue  # a 1x1 kernel refit is the channel refit, unless it can correct a residual sum
            target = TensorSpec(1, int(output.shape[1]), tuple(output.shape), True, unfold.step ** -2.0, fit=True)
            spec = PairSpec(output.name, target, name, TensorSpec(1, kept[name], tuple(inputs[name].shape)), unfold)
            if residual is not None:
                out_kept = (np.arange(target.channels) if consumer.out_weight is None
                            else np.nonzero(~removed[consumer.out_weight.slots])[0])
                spec = replace(spec, original=residual[0].name, offset=residual[1].name,
                               offset_channels=tuple(int(i) for i in out_kept))
            specs[f"kernel {consumer.node.name}"] = spec
        apply_plan(first, plan)
        infer_graph_shapes(first.graph, template)
        pruned = export_graph(first.graph, template)
        del first
        pairs, gram_stats = collect_pairs(template, pruned, specs, self.activations.batches, self.quiet, grams)
        return (Refits({k.removeprefix("tensor "): v for k, v in pairs.items() if k.startswith("tensor ")},
                       {k.removeprefix("kernel "): v for k, v in pairs.items() if k.startswith("kernel ")}), gram_stats)

    def _validate(self, pruned: onnx.ModelProto, external: bool, checked: bool = True) -> tuple[int, Evaluation | None]:
        if external:
            with tempfile.TemporaryDirectory() as tmp:
                target = write_external(pruned, Path(tmp), "pruned.onnx")
                size = sum(f.stat().st_size for f in Path(tmp).iterdir())
                return size, check_pruned(str(target), self.reference, checked) if self.reference else None
        if not checked:  # ONNX Runtime alone reads it: its weights go to it as arrays, not serialized
            apart = weights_apart(pruned)
            return apart.size, check_pruned(apart, self.reference, checked) if self.reference else None
        serialized = pruned.SerializeToString()
        return len(serialized), check_pruned(serialized, self.reference, checked) if self.reference else None
