"""Round time of each strategy on workload W2, as a ratio to FedAvg's in the same run.

    python benchmarks/strategies_w2.py [--rounds 12] [--repeat 3] [--out results/bench]

Runs W2 (10,000 clients, 1,000 per round, softmax without bias) in process (local backend,
one BLAS thread) for FedAvg and each other strategy, alternating strategies within each
repetition so machine load affects all alike; the first two rounds of a run are left out
(start-up). Prints and writes strategies_w2.csv: median seconds per round and the ratio to
FedAvg's median.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pandas as pd

import fedsim
from fedsim.bench.harness import find_config

REPO = Path(__file__).resolve().parents[1]
W2 = find_config("w2")
STRATEGIES = ("fedavg", "fedavgm", "fedadam", "scaffold", "fednova")


def round_times(strategy: str, rounds: int) -> list[float]:
    result = fedsim.run(
        W2,
        overrides=[
            f"strategy.name='{strategy}'",
            f"server.rounds={rounds}",
            "runtime.backend='local'",
            "runtime.progress=false",
        ],
    )
    return result.rounds["wall_time_s"].iloc[2:].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench")
    args = parser.parse_args()
    times: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    for _ in range(args.repeat):
        for s in STRATEGIES:
            times[s].append(statistics.median(round_times(s, args.rounds)))
    base = statistics.median(times["fedavg"])
    rows = [
        {
            "strategy": s,
            "s_per_round": statistics.median(t),
            "ratio_to_fedavg": statistics.median(t) / base,
            "repeats": len(t),
        }
        for s, t in times.items()
    ]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "strategies_w2.csv", index=False, float_format="%.6g")


if __name__ == "__main__":
    main()
