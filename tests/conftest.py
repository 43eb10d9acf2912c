"""Test-wide settings."""

import os

# A channel rule that fails keeps its node's channels for a user (groups.trace_channels); in the tests it
# raises, so that such a bug fails the test that meets it.
os.environ.setdefault("ONNXPRUNE_DEBUG", "1")
