"""onnxprune: structured channel pruning of ONNX models."""

from onnxprune.config import Importance, PruneConfig
from onnxprune.errors import InputError, OnnxPruneError, PrunedModelError
from onnxprune.pipeline import GroupsResult, PruneResult, find_groups, prune

__version__ = "0.1.0"

__all__ = [
    "GroupsResult", "Importance", "InputError", "OnnxPruneError", "PruneConfig", "PruneResult",
    "PrunedModelError", "find_groups", "prune", "__version__",
]
