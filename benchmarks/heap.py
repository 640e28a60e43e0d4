"""The Python heap's peak growth during one step, for the memory benchmarks (tracemalloc: what Python
allocates, numpy and pyarrow buffers included; not the process's RSS)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def heap_peak(step: Callable[[], T]) -> tuple[T, float]:
    """(what `step` returns, the Python heap's peak growth during it in MB)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    result = step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, (peak - base) / 2**20
