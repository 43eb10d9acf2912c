"""``python -m onnxprune`` runs the command line."""

import sys

from onnxprune.cli import main

sys.exit(main())
