"""The pruning pipeline: load, trace groups, score, plan, apply, validate, measure, report."""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace

import onnx

from onnxprune.calibdata import CalibrationData, ImageOptions, input_specs, load_calibration
from onnxprune.candidates import Activations, Candidate, CandidateBuilder, Loaded, load_with_reference
from onnxprune.config import Importance, PruneConfig
from onnxprune.contrib import PACKED_ATTENTION, TRANSFORMER_OPTIMIZER_OPS
from onnxprune.errors import GuardError, InputError
from onnxprune.groups import Analysis
from onnxprune.importance import importance_scores
from onnxprune.latency import LatencyComparison, LatencySettings, compare_latency
from onnxprune.model import ModelSource, read_model
from onnxprune.plan import GlobalRanking, Plan, make_plan, unit_rounding
from onnxprune.report import build_report, group_rows
from onnxprune.search import (
    TARGET_SLACK,
    SensitivityRow,
    allocate_ratios,
    bisect_fraction,
    landing_rounding,
    plan_for_ratio,
    plan_from_ratios,
    plan_macs,
    quality_drop,
    rounded_plan_for_macs,
    sensitivity_scan,
)
from onnxprune.stats import MacModel, ModelStats, graph_stats, static_mac_count
from onnxprune.validate import EvalData, Evaluation, ReferenceRun, random_feeds, release_freed_memory, session

# A pruned model counts as slower only beyond this much measurement noise: a share of the original's time,
# and a few microseconds of the run call itself (a 12-microsecond model measured 13 once).
SLOWER_TOLERANCE = 1.05
SLOWER_NOISE_MS = 0.005


@dataclass(frozen=True)
class GroupsResult:
    """What ``--dry-run`` shows: the groups, and what the plan would keep of each."""

    groups: list[dict]
    plan: Plan
    why_nothing: str | None = None  # why no group can be pruned, where the groups do not say it
    notes: list[str] = field(default_factory=list)  # what loading changed, and how MACs are counted

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
    evaluation: Evaluation | None
    latency: LatencyComparison | None
    report: dict
    external_data: bool = False
    notes: list[str] = field(default_factory=list)


def _resolve_config(config: PruneConfig | None, **options) -> PruneConfig:
    config = config or PruneConfig()
    given = {k: v for k, v in options.items() if v is not None}
    if "importance" in given:
        given["importance"] = _importance(given["importance"])
    for key in ("exclude", "providers"):
        if key in given:
            given[key] = tuple(given[key])
    config = replace(config, **given)
    _check_ranges(config)
    return config


def _check_ranges(config: PruneConfig) -> None:
    if not 0.0 <= config.ratio < 1.0:
        raise InputError(f"ratio must be at least 0 and below 1, got {config.ratio}")
    if config.rounding < 1:
        raise InputError(f"round-to must be a positive integer, got {config.rounding}")
    for name in ("target_macs", "target_latency"):
        value = getattr(config, name)
        if value is not None and not 0.0 < value <= 1.0:
            raise InputError(f"{name.replace('_', '-')} must be a fraction above 0 and at most 1, got {value}")
    if config.max_drop is not None and config.max_drop < 0:
        raise InputError(f"max-drop must not be negative, got {config.max_drop}")
    if config.iterative is not None and config.iterative < 1:
        raise InputError(f"iterative must be a positive number of steps, got {config.iterative}")
    if config.calib_samples is not None and config.calib_samples < 1:
        raise InputError(f"calib-samples must be a positive number, got {config.calib_samples}")
    if config.refit_passes is not None and config.refit_passes < 0:
        raise InputError(f"refit-passes must be 0 or more, got {config.refit_passes}")
    if config.calib_batch < 1:
        raise InputError(f"calib-batch must be a positive number, got {config.calib_batch}")
    if not 0.0 < config.held_out < 1.0:
        raise InputError(f"held-out must be a fraction above 0 and below 1, got {config.held_out}")
    if not 0.0 < config.group_cap < 1.0:
        raise InputError(f"the group cap must be above 0 and below 1, got {config.group_cap}")
    if (config.max_drop is not None or config.sensitivity or config.target_latency) and not config.validate:
        raise InputError("--max-drop, --sensitivity and --target-latency need validation; drop --no-validate")


def _importance(value: Importance | str) -> Importance:
    try:
        return Importance(value)
    except ValueError:
        allowed = ", ".join(i.value for i in Importance)
        raise InputError(f"unknown importance '{value}'; choose one of: {allowed}") from None


def _latency_settings(config: PruneConfig) -> LatencySettings:
    settings = LatencySettings(config.providers, config.threads, config.batch)
    settings.check()
    return settings


def find_groups(model: ModelSource, config: PruneConfig | None = None, **options) -> GroupsResult:
    """Analyse a model without changing it: its channel groups, why some are pinned, and what would be kept.

    Args:
        model: a path or a ModelProto.
        config: options; keyword arguments (ratio, importance, round_to, exclude) override it.
    """
    config = _resolve_config(config, **options)
    loaded = read_model(model)
    builder = CandidateBuilder(Loaded(loaded.model, None, None, False), None, config.quiet)
    analysis = builder.analysis()
    # A dry run records no activations: activation criteria are previewed with L1.
    scores = importance_scores(analysis, Importance.L1 if config.importance.needs_activations else config.importance)
    plan = _single_plan(analysis, scores, config)
    notes = _loading_notes(loaded.unfused, loaded.written_as_qdq, analysis, calibrated=False)
    if config.importance.needs_activations:
        notes.append(f"--importance {config.importance.value} needs activations, which a dry run does not record: "
                     "the kept counts rank by l1")
    return GroupsResult(group_rows(analysis, plan), plan, analysis.why_nothing_is_prunable(), notes)


def _loading_notes(unfused: tuple[str, ...], written_as_qdq: tuple[str, ...], analysis: Analysis,
                   calibrated: bool) -> list[str]:
    """Notes on what loading changed (ONNX Runtime fusions split, integer ops written as QDQ) and on
    symbolic sizes in the MAC count."""
    notes = []
    if written_as_qdq:
        counts = Counter(written_as_qdq)
        dynamic = {"ConvInteger", "MatMulInteger"} & set(counts)
        notes.append("the model's integer ops (" + ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
                     + ") were written in the QDQ format (DequantizeLinear, the float op, QuantizeLinear), which "
                     "ONNX Runtime fuses into integer ops again when it loads the pruned model"
                     + ("; of dynamic quantization, it fuses the MatMuls and runs the convs in float on their "
                        "dequantized weights" if dynamic else ""))
    if PACKED_ATTENTION in unfused:
        notes.append(f"{unfused.count(PACKED_ATTENTION)} Attention op(s) of the 3-D form (heads packed in the "
                     "hidden size) were pruned in the 4-D form (a Reshape and a Transpose around each input and "
                     "the output, which computes the same) and written back in the 3-D form with the heads they keep")
        unfused = tuple(op for op in unfused if op != PACKED_ATTENTION)
    if unfused:
        counts = Counter(unfused)
        optimizer_only = _optimizer_only(unfused)
        notes.append("ONNX Runtime's fused ops were split into the standard ops they stand for ("
                     + ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
                     + "); ONNX Runtime fuses them again when it loads the pruned model"
                     + (f", except {' and '.join(optimizer_only)}, which only its transformer optimizer writes and "
                        "which it does not fuse again from this form: to keep them fused, prune the model the "
                        "optimizer read and optimize the pruned one" if optimizer_only else ""))
    if static_mac_count(analysis.graph, analysis.mac_scales) is None:
        notes.append("MACs count the model's symbolic sizes beyond the batch (a dynamic image size or sequence "
                     "length) as 1" + ("" if calibrated else "; give --calib data to count them at the data's sizes"))
    return notes


def _optimizer_only(unfused: tuple[str, ...]) -> tuple[str, ...]:
    """The split ops that only ONNX Runtime's transformer optimizer writes (it does not fuse them again)."""
    return tuple(sorted(set(unfused) & set(TRANSFORMER_OPTIMIZER_OPS)))


def prune(model: ModelSource, config: PruneConfig | None = None, **options) -> PruneResult:
    """Remove the least important channels and check the result in ONNX Runtime.

    Args:
        model: a path or a ModelProto (never modified).
        config: options; keyword arguments named like PruneConfig's fields override it.

    Returns:
        A PruneResult holding the pruned ModelProto and the report as a dict.

    Raises:
        InputError: bad model or options.
        GuardError: the result breaks --max-drop, or is slower than the original.
        PrunedModelError: the pruned model failed validation (a bug; nothing should be written).
    """
    config = _resolve_config(config, **options)
    settings = _latency_settings(config) if config.latency or config.target_latency else None
    calibration = _CalibrationSource(config) if config.calib is not None else None
    loaded = load_with_reference(model, config.validate, config.seed, calibration)
    builder = CandidateBuilder(loaded, loaded.reference, config.quiet)
    notes: list[str] = []
    _note_non_finite_outputs(loaded.reference, notes)
    builder.activations = _activations(builder, config, calibration, notes)
    analysis = builder.analysis()
    unfused, written_as_qdq = loaded.unfused, loaded.written_as_qdq
    del loaded  # the builder holds it, and may release it
    why_nothing = analysis.why_nothing_is_prunable()
    if why_nothing:
        notes.append(f"nothing can be pruned: {why_nothing}")
    before = graph_stats(analysis.graph, builder.loaded.size, analysis.mac_scales)
    notes[:0] = _loading_notes(unfused, written_as_qdq, analysis, calibration is not None)
    scores = builder.scores(analysis, config.importance)
    release_freed_memory()
    chosen, sensitivity = _choose(builder, analysis, scores, config, settings)
    chosen = _keep_better_compensation(builder, chosen, notes)
    latency = None
    if config.latency:
        chosen, latency = _never_slower(builder, chosen, analysis, scores, config, settings, _optimizer_only(unfused))
    _note_unreached_target(config, before, chosen, notes)
    _note_finer_rounding(analysis, config, chosen.plan, notes)
    _note_non_finite_pruned(builder.reference, chosen, notes)
    path = str(model) if isinstance(model, (str, os.PathLike)) else None
    report = build_report(path, config, before, chosen, latency, sensitivity,
                          calibration.data if calibration else None, notes, builder.history)
    for note in notes:
        if note.startswith("warning: "):
            warnings.warn(note.removeprefix("warning: "), stacklevel=2)
    return PruneResult(chosen.model, chosen.plan, before, chosen.stats, chosen.evaluation, latency, report,
                       chosen.external, notes)


class _CalibrationSource:
    """Loads ``config.calib`` against the model's inputs once ONNX Runtime has opened the model."""

    def __init__(self, config: PruneConfig) -> None:
        self.config = config
        self.data: CalibrationData | None = None

    def __call__(self, sess) -> EvalData:
        config = self.config
        self.data = load_calibration(config.calib, input_specs(sess), samples=config.calib_samples,
                                     batch=config.calib_batch, held_out=config.held_out,
                                     images=config.images or ImageOptions(), seed=config.seed)
        return self.data.held_out


# Random calibration when an activation criterion runs without --calib: batches x samples.
RANDOM_CALIBRATION = (4, 8)


def _activations(builder: CandidateBuilder, config: PruneConfig, calibration: _CalibrationSource | None,
                 notes: list[str]) -> Activations | None:
    """What to record on which calibration batches; notes what falls back or is skipped, and why."""
    needs = config.importance.needs_activations
    if calibration is not None:
        if calibration.data is None:  # not loaded by a reference run (--no-validate)
            calibration(session(builder.original_source(), lean=True))
        return Activations(calibration.data.calibration.batches, config.importance, config.compensate,
                           config.refit_passes, scans=config.sensitivity)
    if config.compensate:
        notes.append("compensation needs calibration data (--calib); the remaining weights were not adjusted")
    if not needs:
        return None
    notes.append(f"warning: --importance {config.importance.value} needs calibration data and none was given "
                 f"(--calib); ranking on random inputs instead, which rarely reflects real data")
    sess = session(builder.original_source(), lean=True)
    batches, size = RANDOM_CALIBRATION
    data = [random_feeds(sess, batch=size, seed=config.seed + 1000 + i) for i in range(batches)]
    return Activations(data, config.importance, compensate=False)


def _note_non_finite_outputs(reference: ReferenceRun | None, notes: list[str]) -> None:
    """A warning where the original's outputs hold NaN or infinity on the evaluation inputs (fidelity then
    compares the other values)."""
    bad, total = reference.non_finite() if reference is not None else (0, 0)
    if bad:
        notes.append(f"warning: the original model's outputs hold NaN or infinity at {bad:,} of {total:,} values on the "
                     "evaluation inputs; fidelity compares the other values (check the model, or the inputs with --calib)")


def _note_non_finite_pruned(reference: ReferenceRun | None, chosen: Candidate, notes: list[str]) -> None:
    """A warning for each output where the pruned model gives NaN or infinity and the original gives numbers."""
    if reference is None or chosen.evaluation is None:
        return
    for index, check in enumerate(chosen.evaluation.outputs):
        if not math.isnan(check.relative_l2):
            continue
        bad, total = reference.non_finite(index)  # scans that output's values: only where the error is NaN
        if bad < total:
            notes.append(f"warning: the pruned model's output '{check.name}' holds NaN or infinity where the original's "
                         "holds numbers (its fidelity is null); prune less, or exclude the groups before it (--exclude)")


def _keep_better_compensation(builder: CandidateBuilder, chosen: Candidate, notes: list[str]) -> Candidate:
    """The compensated model, unless the same plan without compensation is more faithful on held-out data."""
    if not chosen.compensation or chosen.evaluation is None:
        return chosen
    plain = builder.build(chosen.plan, compensated=False)
    if quality_error(plain) < quality_error(chosen):
        notes.append("compensation made the held-out output error larger; the uncompensated model was kept")
        return plain
    return chosen



def _note_unreached_target(config: PruneConfig, before: ModelStats, chosen: Candidate, notes: list[str]) -> None:
    """A warning when --target-macs asks for more than the prunable groups hold (--max-drop may stop short on
    purpose, and says so itself)."""
    if config.target_macs is None or config.max_drop is not None or not before.macs:
        return
    fraction = chosen.stats.macs / before.macs
    if fraction > config.target_macs + TARGET_SLACK:
        notes.append(f"warning: --target-macs {config.target_macs:g} is out of reach: the pruned model keeps "
                     f"{fraction:.3f} of the MACs; the rest are in pinned groups (see --dry-run) or beyond "
                     f"--group-cap {config.group_cap:g}")


def _note_finer_rounding(analysis: Analysis, config: PruneConfig, plan: Plan, notes: list[str]) -> None:
    """A note where the plan keeps counts that are not multiples of --round-to: a target that multiples of it
    jump past (small groups, large multiples) is met in finer ones (see ``rounded_plan_for_macs``)."""
    finer = []
    for decision in plan.groups:
        group = analysis.groups[decision.group]
        rounding, kept = unit_rounding(group, config.rounding), set(decision.kept)
        counts = [(sum(int(i) in kept for i in segment), len(segment)) for segment in group.segments]
        if decision.removed and any(count % rounding and count != size for count, size in counts):
            finer.append(f"{len(decision.kept)} of {decision.channels} in group {decision.group}")
    if finer:
        notes.append(f"to land near the target, {len(finer)} group{'s keep' if len(finer) > 1 else ' keeps'} counts that are "
                     f"not multiples of --round-to {config.rounding} ({', '.join(finer[:3])}"
                     f"{', ...' if len(finer) > 3 else ''}); ONNX Runtime may run such counts no faster than the next "
                     f"multiple (measure with --latency)")


def _single_plan(analysis: Analysis, scores, config: PruneConfig) -> Plan:
    """The plan for --ratio (per group, or ranked globally) or --target-macs."""
    if config.target_macs is None and not config.global_ranking:
        return make_plan(analysis, scores, config.ratio, config.rounding, config.exclude)
    if config.target_macs is None:
        return plan_for_ratio(GlobalRanking(analysis, scores, config.rounding, config.group_cap, config.exclude),
                              config.ratio)
    return rounded_plan_for_macs(analysis, scores, MacModel(analysis), config.target_macs, config.rounding,
                                 config.group_cap, config.exclude)


def _choose(builder: CandidateBuilder, analysis: Analysis, scores, config: PruneConfig,
            settings: LatencySettings | None) -> tuple[Candidate, list[SensitivityRow]]:
    """Pick and build the pruned model the options ask for."""
    macs = MacModel(analysis)
    plan_at, sensitivity = _plan_maker(builder, analysis, scores, macs, config)
    if config.iterative:
        from onnxprune.iterative import prune_iteratively  # noqa: PLC0415 - only this mode needs it

        target = config.target_macs or plan_macs(analysis, macs, plan_at(None)) / macs.total
        return prune_iteratively(builder, config, target), sensitivity
    if config.target_latency is not None:
        return _latency_search(builder, plan_at, config, settings), sensitivity
    if config.max_drop is not None and (config.target_macs or config.sensitivity):
        return _guarded_search(builder, plan_at, config), sensitivity
    candidate = builder.build(plan_at(None), analysis, last=not config.latency)  # the last use of this analysis
    _check_guard(candidate, config)
    return candidate, sensitivity


def _plan_maker(builder, analysis, scores, macs, config):
    """A function from a MACs fraction (None: the options' own target) to a plan, and the sensitivity table."""
    if not config.sensitivity:
        default = _single_plan(analysis, scores, config)

        def plan_at(fraction: float | None) -> Plan:
            if fraction is None:
                return default
            return rounded_plan_for_macs(analysis, scores, macs, fraction, config.rounding, config.group_cap,
                                         config.exclude)
        return plan_at, []
    reasons = {g.index: g.pinned_reason for g in analysis.groups}
    prunable = [g.index for g in analysis.groups if g.pinned_reason is None]
    # Scan at the rounding a MACs target lands at: small groups in large multiples have no steps to scan.
    rounding = config.rounding if config.target_macs is None else landing_rounding(
        analysis, scores, macs, config.target_macs, config.rounding, config.group_cap, config.exclude)
    rows = sensitivity_scan(analysis, scores, macs, prunable, rounding,
                            lambda plan: quality_error(builder.build(plan, refit=False, checked=False)), config.quiet)
    uniform = plan_macs(analysis, macs, make_plan(analysis, scores, config.ratio, rounding, config.exclude))

    def plan_of(ratios: dict[int, float], finer: int) -> Plan:
        return plan_from_ratios(analysis, scores, ratios, finer, reasons)

    def plan_at(fraction):
        fraction = config.target_macs if fraction is None else fraction
        target = uniform if fraction is None else fraction * macs.total
        # The allocation's last step can jump past the target where channels go in large multiples: the
        # same allocation is then made again in finer ones (the scanned errors stand for both).
        finer = rounding
        while True:
            ratios = allocate_ratios(rows, macs.total, target,
                                     lambda r, finer=finer: plan_macs(analysis, macs, plan_of(r, finer)))
            plan = plan_of(ratios, finer)
            if finer <= 1 or plan_macs(analysis, macs, plan) >= target - TARGET_SLACK * macs.total:
                return plan
            finer //= 2

    return plan_at, rows


def quality_error(candidate: Candidate) -> float:
    """The largest relative output error of a candidate (what the sensitivity scan ranks groups by)."""
    return max(o.relative_l2 for o in candidate.evaluation.outputs)


def _check_guard(candidate: Candidate, config: PruneConfig) -> None:
    if config.max_drop is None or candidate.evaluation is None:
        return
    drop, unit = quality_drop(candidate.evaluation)
    if drop > config.max_drop:
        raise GuardError(f"the pruned model loses {drop:.3g} {unit}, more than --max-drop {config.max_drop:g}; "
                         "nothing was written (prune less, or give a target so onnxprune searches within the budget)")


def _guarded_search(builder: CandidateBuilder, plan_at, config: PruneConfig) -> Candidate:
    """The most pruning between the target and none whose quality loss stays within --max-drop."""
    target = config.target_macs or 1.0

    def acceptable(candidate: Candidate) -> bool:
        return quality_drop(candidate.evaluation)[0] <= config.max_drop

    found = bisect_fraction(lambda fraction: builder.build(plan_at(fraction)), acceptable, target)
    if found is None:
        raise GuardError(f"no pruning between the target and none stays within --max-drop {config.max_drop:g}; "
                         "nothing was written")
    return found


def _latency_search(builder: CandidateBuilder, plan_at, config: PruneConfig, settings: LatencySettings) -> Candidate:
    """The least pruning (largest MACs fraction) whose measured latency is within the target."""
    quick = replace(settings, runs=20, max_seconds=5.0)

    def latency_fraction(candidate: Candidate) -> float:
        comparison = compare_latency(builder.original_source(), candidate.serialized(), quick, data=_timing_data(builder))
        return comparison.pruned.median_ms / comparison.original.median_ms

    low, high, best = 0.05, 1.0, None
    for _ in range(7):
        middle = (low + high) / 2
        candidate = builder.build(plan_at(middle))
        within = latency_fraction(candidate) <= config.target_latency
        if within and (config.max_drop is None or quality_drop(candidate.evaluation)[0] <= config.max_drop):
            best, low = candidate, middle
        else:
            high = middle
    if best is None:
        raise GuardError(f"no plan reached {config.target_latency:g} of the original latency within the limits; "
                         "nothing was written")
    return best


def _timing_data(builder: CandidateBuilder) -> EvalData | None:
    """The held-out inputs (real ones with calibration data: models with symbolic image sizes need them)."""
    return builder.reference.data if builder.reference is not None else None


def _slower(latency: LatencyComparison) -> bool:
    """Whether the pruned model is slower than the original beyond measurement noise."""
    return (latency.speedup * SLOWER_TOLERANCE < 1.0
            and latency.pruned.median_ms - latency.original.median_ms > SLOWER_NOISE_MS)


def _never_slower(builder, chosen, analysis, scores, config, settings,
                  split_fusions: tuple[str, ...] = ()) -> tuple[Candidate, LatencyComparison]:
    """Measure latency; a plan slower than the original is replaced by one rounded to larger multiples.
    ``split_fusions``: the transformer optimizer's fused ops that loading split (the error names them)."""
    latency = compare_latency(builder.original_source(), chosen.serialized(), settings, config.quiet, _timing_data(builder))
    rounding = config.rounding
    while _slower(latency) and rounding < 32:
        rounding *= 2
        retry = replace(config, round_to=rounding)
        candidate = builder.build(_single_plan(builder.analysis(), scores, retry))
        comparison = compare_latency(builder.original_source(), candidate.serialized(), settings, config.quiet,
                                     _timing_data(builder))
        if comparison.speedup > latency.speedup:
            chosen, latency = candidate, comparison
    if _slower(latency):
        raise GuardError(slower_message(latency, split_fusions))
    return chosen, latency


def slower_message(latency: LatencyComparison, split_fusions: tuple[str, ...] = ()) -> str:
    """The error for a pruned model slower than the original, with what to do about it."""
    why = (f": its {' and '.join(split_fusions)} were split into standard ops, slower than ONNX Runtime's fused "
           "ones; prune the model its transformer optimizer read and optimize the pruned one, or pass --no-latency "
           "to write this one anyway" if split_fusions else "; --no-latency writes it anyway")
    return (f"the pruned model is slower than the original in ONNX Runtime ({latency.pruned.median_ms:.3f} ms vs "
            f"{latency.original.median_ms:.3f} ms); nothing was written{why}")
