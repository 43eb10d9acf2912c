"""Latency of the original and the pruned model in ONNX Runtime, measured side by side."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.errors import InputError
from onnxprune.progress import progress
from onnxprune.validate import EvalData, random_feeds, session


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured. ``providers`` None means CPU."""

    providers: tuple[str, ...] | None = None
    threads: int = 1
    batch: int = 1
    runs: int = 50
    warmup: int = 5
    max_seconds: float = 20.0

    def check(self) -> None:
        """Raise InputError for settings ONNX Runtime cannot honour."""
        if self.threads < 1 or self.batch < 1 or self.runs < 1:
            raise InputError("--threads, --batch and the number of runs must be positive integers")
        available = ort.get_available_providers()
        for provider in self.providers or ():
            if provider not in available:
                raise InputError(f"execution provider '{provider}' is not available here; choose from: {', '.join(available)}")


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per run."""

    median_ms: float
    p90_ms: float


@dataclass(frozen=True)
class LatencyComparison:
    """Both models measured with the same settings, interleaved run for run."""

    original: LatencyStats
    pruned: LatencyStats
    runs: int
    threads: int
    batch: int
    providers: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.original.median_ms / self.pruned.median_ms if self.pruned.median_ms else float("inf")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["speedup"] = self.speedup
        return data


def _stats(samples: list[float]) -> LatencyStats:
    array = np.asarray(samples) * 1e3
    return LatencyStats(float(np.median(array)), float(np.percentile(array, 90)))


def compare_latency(original: onnx.ModelProto | str | bytes, pruned: onnx.ModelProto | str | bytes,
                    settings: LatencySettings, quiet: bool = True, data: EvalData | None = None) -> LatencyComparison:
    """Warm both models up, then alternate one run of each so that machine drift affects both alike.

    Args:
        original, pruned: models as protos, paths or serialized bytes.
        settings: providers, threads, batch size, number of runs and a time cap.
        quiet: no progress bar.
        data: inputs to time on (the first ``settings.batch`` samples, repeated if fewer); None uses seeded
            random inputs, whose symbolic sizes other than the batch are 1.
    """
    providers = list(settings.providers) if settings.providers else None
    sessions = [session(m, threads=settings.threads, providers=providers) for m in (original, pruned)]
    feeds = _feeds(sessions[0], settings.batch, data)
    for sess in sessions:
        for _ in range(settings.warmup):
            sess.run(None, feeds)
    samples: tuple[list[float], list[float]] = ([], [])
    deadline = time.perf_counter() + settings.max_seconds
    for _ in progress(range(settings.runs), "measuring latency", quiet):
        for sess, times in zip(sessions, samples):
            start = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return LatencyComparison(_stats(samples[0]), _stats(samples[1]), len(samples[0]), settings.threads,
                             settings.batch, sessions[0].get_providers())


def _feeds(sess: ort.InferenceSession, batch: int, data: EvalData | None) -> dict[str, np.ndarray]:
    """``batch`` samples of ``data`` (or as many as a static batch dim holds), else seeded random inputs."""
    if data is None or not data.batches:
        return random_feeds(sess, batch=batch, seed=0)
    feeds = {}
    for arg in sess.get_inputs():
        size = arg.shape[0] if arg.shape and isinstance(arg.shape[0], int) else batch
        parts, count = [], 0
        for part in data.batches:
            if count >= size:
                break
            parts.append(part[arg.name])
            count += len(part[arg.name])
        values = np.concatenate(parts)
        feeds[arg.name] = np.resize(values, (size, *values.shape[1:]))  # repeats samples where there are fewer
    return feeds
