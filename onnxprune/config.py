"""Options of a pruning run. ``None`` always means "use the default"."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

DEFAULT_RATIO = 0.3
# Measured with tools/bench_round_to.py on ONNX Runtime CPU (see README): its blocked (NCHWc) conv
# kernels work in blocks of 16 channels on AVX-512 and 8 on AVX2, and a partial block costs as much
# as a full one. Multiples of 16 are fast on both.
DEFAULT_ROUND_TO = 16
# Global ranking never removes more than this share of one group.
DEFAULT_GROUP_CAP = 0.8


class Importance(str, Enum):
    """How channels are ranked."""

    L1 = "l1"
    L2 = "l2"
    ACTIVATION = "activation"
    APOZ = "apoz"
    FLUCTUATION = "fluctuation"
    WANDA = "wanda"
    BN = "bn"
    REDUNDANCY = "redundancy"

    @property
    def needs_activations(self) -> bool:
        """Whether the criterion reads activations recorded on calibration data."""
        return self not in (Importance.L1, Importance.L2, Importance.BN)


# Refit passes over the calibration data (see PruneConfig.refit_passes): at least this many, one per
# consumer depth where the model has more and they fit REFIT_BUDGET_MACS. A pass per depth refits each
# layer on inputs its upstream refits have already corrected: the yolo fixture, 21 depths deep, has
# relative error 0.051 in 8 passes and 0.0006 in 21.
DEFAULT_REFIT_PASSES = 8
# The MACs that the automatic refit passes may spend running the original and the pruned model over the
# calibration data (2e11: a few seconds on a laptop core; the full-size models stay at 8 passes, and so
# do models with symbolic sizes, whose MACs are unknown).
REFIT_BUDGET_MACS = 2e11


@dataclass(frozen=True)
class PruneConfig:
    """Every option of :func:`onnxprune.prune`.

    Attributes:
        ratio: fraction of channels removed from every prunable group (0 <= ratio < 1).
        importance: the ranking criterion.
        round_to: kept channel counts are multiples of this (None: DEFAULT_ROUND_TO).
        exclude: node names or glob patterns; groups touching them are left whole.
        validate: run the pruned model in ONNX Runtime before returning it.
        seed: seed of the random inputs used for validation.
        global_ranking: rank all groups together (per-group ratios then differ), at most
            ``group_cap`` of any one group removed.
        group_cap: the largest fraction of one group that global ranking removes.
        target_macs: keep this fraction of the MACs (global ranking).
        target_latency: keep this fraction of the measured ONNX Runtime latency.
        max_drop: the largest acceptable quality loss (see README); exceeding it raises GuardError,
            or, with a target, makes the search keep the largest pruning within it.
        sensitivity: allocate per-group ratios from a scan of each group's output error.
        iterative: reach the target in this many prune-and-check steps.
        latency: measure the latency of both models (the CLI turns this on).
        providers, threads, batch: ONNX Runtime settings for latency.
        quiet: no progress bars.
        calib: calibration data: a .npz/.npy file, an image folder, an iterable of {input: array}
            batches, or one array for a one-input model (see onnxprune.calibdata); None uses random
            inputs where activations are needed.
        calib_samples: use at most this many calibration samples.
        calib_batch: samples per ONNX Runtime run on calibration data.
        held_out: the fraction of the calibration samples kept for fidelity and accuracy.
        images: preprocessing of image folders (onnxprune.calibdata.ImageOptions).
        compensate: adjust the remaining weights on calibration data (needs ``calib``).
        refit_passes: compensation refits the consumers on the pruned model's own inputs in at most this
            many passes over the calibration data, one per depth of consumers (neighbouring depths
            share a pass beyond it); 0 keeps the first pass alone; None (default): one per depth where
            REFIT_BUDGET_MACS allows, at least DEFAULT_REFIT_PASSES.
    """

    ratio: float = DEFAULT_RATIO
    importance: Importance = Importance.L1
    round_to: int | None = None
    exclude: tuple[str, ...] = field(default_factory=tuple)
    validate: bool = True
    seed: int = 0
    global_ranking: bool = False
    group_cap: float = DEFAULT_GROUP_CAP
    target_macs: float | None = None
    target_latency: float | None = None
    max_drop: float | None = None
    sensitivity: bool = False
    iterative: int | None = None
    latency: bool = False
    providers: tuple[str, ...] | None = None
    threads: int = 1
    batch: int = 1
    quiet: bool = True
    calib: object = None
    calib_samples: int | None = None
    calib_batch: int = 16
    held_out: float = 0.2
    images: object = None
    compensate: bool = True
    refit_passes: int | None = None

    @property
    def rounding(self) -> int:
        """The rounding unit in force."""
        return DEFAULT_ROUND_TO if self.round_to is None else self.round_to
