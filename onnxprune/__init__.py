"""onnxprune: structured channel pruning of ONNX models."""

from onnxprune.calibdata import ImageOptions
from onnxprune.config import Importance, PruneConfig
from onnxprune.errors import GuardError, InputError, OnnxPruneError, PrunedModelError
from onnxprune.pipeline import GroupsResult, PruneResult, find_groups, prune

__version__ = "0.1.0"

__all__ = [
    "GroupsResult", "GuardError", "ImageOptions", "Importance", "InputError", "OnnxPruneError", "PruneConfig",
    "PruneResult",
    "PrunedModelError", "find_groups", "prune", "__version__",
]
