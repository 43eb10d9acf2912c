"""Progress bars on long steps (tqdm on stderr), off when quiet or when stderr is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], description: str, quiet: bool = False, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar named ``description`` unless ``quiet``."""
    disable = quiet or not sys.stderr.isatty()
    yield from tqdm(items, desc=f"onnxprune: {description}", total=total, disable=disable, leave=False, file=sys.stderr)
