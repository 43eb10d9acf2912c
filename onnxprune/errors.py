"""One exception family. The CLI turns each into an exit status and one line of text."""

from __future__ import annotations


class OnnxPruneError(Exception):
    """Base class of every error onnxprune raises on purpose."""

    exit_code = 2


class InputError(OnnxPruneError):
    """The user's model, data or options are wrong; the message says what to do."""

    exit_code = 2


class PrunedModelError(OnnxPruneError):
    """The pruned model failed its own checks; nothing was written. This is a bug in onnxprune."""

    exit_code = 3


class GuardError(OnnxPruneError):
    """The pruned model breaks a limit the user set (--max-drop) or is slower; nothing is written."""

    exit_code = 1
