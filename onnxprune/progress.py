"""Progress bars on long steps (tqdm on stderr), off when quiet or when stderr is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], description: str, quiet: bool = False, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar named ``description`` unless ``quiet``."""
    if quiet or not sys.stderr.isatty():
        # A disabled tqdm still walks every bar ever made to find its position (milliseconds per call)
        yield from items
        return
    yield from tqdm(items, desc=f"onnxprune: {description}", total=total, leave=False, file=sys.stderr)
