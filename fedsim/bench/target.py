"""Run one fedsim experiment for the benchmark harness and print its timings as JSON.

``python -m fedsim.bench.target CONFIG --rounds R --workers W`` (W = ``local`` for the
in-process backend). A round's time is measured where a user sees it, in the driver: from the
end of the previous round to the end of this one, recording included. The first round has no
previous end, so the server's own measure of it is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from fedsim.bench.probe import self_peak_rss

#: A line the harness reacts to by sampling the memory of the whole process tree.
SAMPLE_MARKER = "FEDSIM_BENCH_SAMPLE"


def run_target(
    config: str, rounds: int, workers: str, overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run ``config`` for ``rounds`` rounds; per-round driver and server timings."""
    import fedsim

    ends: list[float] = []

    def on_round(record: dict[str, Any]) -> None:
        ends.append(time.perf_counter())
        if len(ends) == rounds:
            print(SAMPLE_MARKER, flush=True)

    backend = ["runtime.backend='local'"] if workers == "local" else [f"runtime.workers={workers}"]
    t0 = time.perf_counter()
    result = fedsim.run(
        config,
        overrides=[f"server.rounds={rounds}", "runtime.progress=false", *backend, *overrides],
        on_round=on_round,
    )
    total = time.perf_counter() - t0
    rows = result.rounds
    server_wall = rows["wall_time_s"].tolist()
    round_s = [server_wall[0], *(b - a for a, b in zip(ends[:-1], ends[1:], strict=True))]
    return {
        "round_s": round_s,
        "server_wall_s": server_wall,
        "server_s": rows["server_s"].tolist(),
        "train_s": rows["train_s"].tolist(),
        "run_s": total,
        "workers": result.summary.get("workers"),
        "peak_rss_bytes": self_peak_rss(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--workers", default="1", help="a number, or 'local'")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    out = run_target(args.config, args.rounds, args.workers, args.set)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
