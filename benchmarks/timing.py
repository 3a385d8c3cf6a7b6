"""Helpers shared by the benchmarks: the machine line and per-face timing."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def machine(device: object) -> str:
    """``x86_64, 2 threads, device cpu``: what a benchmark's figures were measured on (with the
    GPU's name when the device is a CUDA one)."""
    gpu = f" ({torch.cuda.get_device_name(torch.device(str(device)))})" if str(device).startswith("cuda") and torch.cuda.is_available() else ""
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {device}{gpu}"


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in ms over ``runs`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def interleaved_median_ms(fns: list[Callable[[], object]], runs: int, warmup: int = 3) -> list[float]:
    """Median wall time in ms of each of ``fns``, timed in turn within each round, so that a slow
    spell of a shared machine weighs on all of them alike (their ratio is what is compared)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append((time.perf_counter() - t0) * 1000)
    return [statistics.median(t) for t in times]


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
