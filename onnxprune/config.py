"""Options of a pruning run. ``None`` always means "use the default"."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

DEFAULT_RATIO = 0.3
# Measured with tools/bench_round_to.py on ONNX Runtime CPU (see README): multiples of 8 keep
# the MLAS conv kernels on their blocked fast path; odd channel counts cost up to ~25% latency.
DEFAULT_ROUND_TO = 8


class Importance(str, Enum):
    """How channels are ranked."""

    L1 = "l1"
    L2 = "l2"


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
    """

    ratio: float = DEFAULT_RATIO
    importance: Importance = Importance.L1
    round_to: int | None = None
    exclude: tuple[str, ...] = field(default_factory=tuple)
    validate: bool = True
    seed: int = 0

    @property
    def rounding(self) -> int:
        """The rounding unit in force."""
        return DEFAULT_ROUND_TO if self.round_to is None else self.round_to
