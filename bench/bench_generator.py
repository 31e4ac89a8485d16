"""Throughput of the synthetic generator, the feature statistics and the transform.

Run: ``.venv/bin/python bench/bench_generator.py [--flows 1000000]``. Prints a table: flows, median
seconds of 3 runs (after one warm-up run), flows per second, and the goal where there is one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.data.synthetic import PROFILES, generate


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    fn()  # warm-up: caches, page faults of the first big allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flows", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.flows
    rows: list[tuple[str, int, float, str]] = []
    for profile in PROFILES:

        def gen(p: str = profile) -> FlowBatch:
            return generate(p, n, np.random.default_rng(0))

        secs = median_seconds(gen)
        rows.append((f"generate {profile}", n, secs, ">= 1,000,000 flows/s"))
    batch = generate("isp-edge", n, np.random.default_rng(1))
    rows.append(("compute_stats", n, median_seconds(lambda: compute_stats(batch)), ""))
    transform = FeatureTransform.fit(compute_stats(batch))
    rows.append(("transform (one call)", n, median_seconds(lambda: transform.transform(batch)), ""))
    chunks = [batch.take(np.arange(s, min(s + 65_536, n))) for s in range(0, n, 65_536)]

    def chunked() -> None:
        for c in chunks:
            transform.transform(c)

    rows.append(("transform (65,536-row batches)", n, median_seconds(chunked), ""))
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'flows':>10}  {'seconds':>8}  {'flows/s':>12}  goal")
    for name, count, secs, goal in rows:
        rate = count / secs
        mark = "" if not goal else ("  ok" if rate >= 1_000_000 else "  MISSED")
        print(f"{name:<{width}}  {count:>10,}  {secs:>8.3f}  {rate:>12,.0f}  {goal}{mark}")
    print(
        f"(transform output: {transform.n_features} float32 columns; "
        f"{FlowBatch.__name__} numeric matrix {batch.numeric.shape})"
    )


if __name__ == "__main__":
    main()
