"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def per_face_ms(predict_crops: Callable[[list], list], crops: list, singles: int = 50) -> tuple[float, float]:
    """(ms per face when all ``crops`` go as batches, median ms for one face alone), after a warm-up."""
    predict_crops(crops[:64])
    t0 = time.perf_counter()
    predict_crops(crops)
    batched = (time.perf_counter() - t0) / len(crops) * 1000
    single = []
    for crop in crops[:singles]:
        t0 = time.perf_counter()
        predict_crops([crop])
        single.append((time.perf_counter() - t0) * 1000)
    return batched, statistics.median(single)
