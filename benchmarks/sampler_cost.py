"""CPU cost of one HardwareSampler.sample(), the call behind the UI's hardware meter.

Run: python -m benchmarks.sampler_cost [--samples 200] [--json]

The figure is CPU time (time.process_time) per sample, so it counts only this process's
work, not time spent waiting; at 1 Hz, cost_ms / 10 is the percent of one CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from nanobot_tui.hardware import HardwareSampler


def measure(samples: int) -> dict[str, object]:
    sampler = HardwareSampler()
    try:
        t0 = time.process_time()
        first = sampler.sample()  # lazy NVML init and handle lookup happen here
        first_ms = (time.process_time() - t0) * 1000
        source = sampler.gpu_source
        costs = []
        wall_start = time.perf_counter()
        for _ in range(samples):
            t = time.process_time()
            sampler.sample()
            costs.append((time.process_time() - t) * 1000)
        wall_ms = (time.perf_counter() - wall_start) * 1000 / samples
    finally:
        sampler.close()
    median = statistics.median(costs)
    return {
        "samples": samples,
        "gpu_source": source,
        "gpus": len(first.gpus),
        "logical_cpus": len(first.per_cpu),
        "first_sample_ms": round(first_ms, 4),
        "median_ms": round(median, 4),
        "p90_ms": round(statistics.quantiles(costs, n=10)[-1], 4),
        "mean_wall_ms": round(wall_ms, 4),
        "cpu_percent_at_1hz": round(median / 1000 * 100, 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(max(args.samples, 2))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"HardwareSampler.sample(): median {result['median_ms']:.3f} ms CPU "
        f"(p90 {result['p90_ms']:.3f} ms, first {result['first_sample_ms']:.3f} ms) "
        f"over {result['samples']} samples, {result['gpus']} GPU(s) via {result['gpu_source']}, "
        f"{result['logical_cpus']} logical CPUs"
    )
    print(f"at 1 Hz: {result['cpu_percent_at_1hz']:.3f} % of one CPU (target < 1 %)")


if __name__ == "__main__":
    main()
