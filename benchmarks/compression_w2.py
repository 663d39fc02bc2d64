"""What update compression adds to W2's round time: plain against compressed, in one run.

Runs ``fedsim/bench/workloads/w2.toml`` (1,000 clients per round) without compression and with
each given ``compression.up``, alternating configurations within each repetition so that a
change in the machine's load hits all of them alike, and reports each one's steady seconds
per round (median of the rounds after the first two, over all repetitions, as ``fedsim
bench`` measures them) and its ratio to the plain run of the same backend.

    python benchmarks/compression_w2.py --out results/compression/bench_w2.csv
"""

from __future__ import annotations

import argparse
import statistics
import sys

import pandas as pd

from fedsim.bench.harness import find_config
from fedsim.bench.target import run_target

W2 = find_config("w2")


def measure(encodings: list[str], workers: list[str], rounds: int, repeat: int) -> pd.DataFrame:
    """Steady s/round of each (backend, encoding) and its ratio to ``none`` on that backend."""
    rows = []
    for w in workers:
        times: dict[str, list[float]] = {e: [] for e in ["none", *encodings]}
        for _ in range(repeat):
            for enc in times:
                out = run_target(str(W2), rounds, w, [f"compression.up='{enc}'"])
                times[enc] += out["round_s"][2:]
        plain = statistics.median(times["none"])
        for enc, t in times.items():
            steady = statistics.median(t)
            rows.append(
                {
                    "workers": w,
                    "compression_up": enc,
                    "rounds_measured": len(t),
                    "s_per_round": round(steady, 4),
                    "ratio_to_none": round(steady / plain, 3),
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encodings", default="int8", help="compression.up values (int8)")
    p.add_argument("--workers", default="local,2", help="'local' and/or worker counts")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", help="CSV to write")
    args = p.parse_args(argv)
    table = measure(args.encodings.split(","), args.workers.split(","), args.rounds, args.repeat)
    print(table.to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
