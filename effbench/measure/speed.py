"""A machine-speed index: a fixed, short reference workload timed at the start of each run, so two
stores from different machines or moments can be told apart (and the gate can normalise by it)."""
from __future__ import annotations

import time

import numpy as np

SPEED_INDEX_NAME = "matmul-f32-512"


def speed_index(reps: int = 31) -> dict:
    """Median time of a 512x512x512 float32 matrix product (numpy's BLAS, as configured)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 512), dtype=np.float32)
    b = rng.standard_normal((512, 512), dtype=np.float32)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        a @ b
        times.append(time.perf_counter_ns() - t0)
    med_ns = float(np.median(times))
    return {"name": SPEED_INDEX_NAME, "median_ms": med_ns / 1e6, "gflops": 2 * 512 ** 3 / med_ns,
            "iqr_ratio": float((np.percentile(times, 75) - np.percentile(times, 25)) / med_ns)}
