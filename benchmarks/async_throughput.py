"""Client updates per wall second, asynchronous (FedBuff) vs synchronous mode, one invocation.

Both modes run the heterogeneous population and model of experiments/async (sync_fedavg.toml
and fedbuff.toml, the latter also with K = 100) for about the same number of client updates,
without evaluation until the last step, taking turns --repeat times; the table gives medians
and the ratios async / sync.
Throughput counts the updates that reached the server (rounds.csv ``reporting``) over the
run's wall time (summary.json ``wall_time_s``: rounds, training, aggregation and records).

Usage: python benchmarks/async_throughput.py [--updates 3000] [--repeat 3]
                                             [--backend local] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import fedsim

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "async"


def throughput(config: str, rounds: int, backend: str, workers: int, extra: list[str]) -> float:
    result = fedsim.run(
        EXPERIMENTS / config,
        overrides=[
            f"server.rounds={rounds}",
            "server.eval_every=0",
            f"runtime.backend='{backend}'",
            f"runtime.workers={workers}",
            *extra,
        ],
    )
    return float(result.rounds["reporting"].sum()) / result.summary["wall_time_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", choices=["local", "ray"], default="local")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    runs = {
        "sync FedAvg, 100 per round": ("sync_fedavg.toml", a.updates // 100, []),
        "async FedBuff, K=10, concurrency 100": ("fedbuff.toml", a.updates // 10, []),
        "async, K=100, concurrency 100": (
            "fedbuff.toml",
            a.updates // 100,
            ["async.buffer_size=100"],
        ),
    }
    got: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(a.repeat):
        for name, (config, rounds, extra) in runs.items():
            got[name].append(throughput(config, rounds, a.backend, a.workers, extra))
    med = {name: statistics.median(v) for name, v in got.items()}
    sync, asyn, big = med.values()
    print(f"backend {a.backend}, {a.workers if a.backend == 'ray' else 1} worker(s), "
          f"~{a.updates} client updates per run, median of {a.repeat}")  # fmt: skip
    print("| mode | client updates per wall second (median) | runs |")
    print("| --- | --- | --- |")
    for name, v in got.items():
        print(f"| {name} | {med[name]:.0f} | {', '.join(f'{x:.0f}' for x in v)} |")
    print(f"\nasync (K=10) / sync throughput: {asyn / sync:.2f}")
    print(f"async (K=100) / sync throughput: {big / sync:.2f}")


if __name__ == "__main__":
    main()
