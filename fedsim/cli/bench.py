"""``fedsim bench``: fedsim, the plain numpy floor and, optionally, Flower on the same workload."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsim.cli.common import fail

# Spelled out so that registering the command does not import the harness.
DEFAULT_WORKLOADS = ("w1", "w2")


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bench`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="time fedsim against the numpy floor (and Flower) on the same workload",
        description="Run fedsim, a plain numpy loop doing the same arithmetic and, given "
        "--flower-python, Flower on the same workload; print and write a table of seconds per "
        "round, ratios and peak memory.",
    )
    p.add_argument(
        "workloads",
        nargs="*",
        default=list(DEFAULT_WORKLOADS),
        metavar="WORKLOAD",
        help="names of the workloads shipped with fedsim (w1, w2, fmnist_2nn, ...) or config "
        "paths (default: w1 w2)",
    )
    p.add_argument(
        "--workers",
        default="1,2",
        help="fedsim worker counts, comma separated; 'local' = in-process (default: 1,2)",
    )
    p.add_argument("--rounds", type=int, default=0, help="rounds (default: max(config, 10))")
    p.add_argument("--repeat", type=int, default=3, help="repetitions, medians reported (3)")
    p.add_argument(
        "--floor-threads", type=int, default=1, help="BLAS threads of the floor (1; 0 = default)"
    )
    p.add_argument(
        "--flower-python",
        metavar="PATH",
        help="a Python with flwr[simulation] installed; adds Flower to W workloads",
    )
    p.add_argument(
        "--flower-rounds", type=int, default=0, help="Flower's rounds (default: the config's)"
    )
    p.add_argument("--flower-repeat", type=int, default=1, help="Flower repetitions (1)")
    p.add_argument(
        "--reference-dir",
        metavar="DIR",
        help="folder of raw_floor.py / flower_softmax.py (default: ../shared/bench beside a "
        "source checkout; none for an installed package)",
    )
    p.add_argument("--out", default="results/bench", help="output folder (results/bench)")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Execute ``fedsim bench``; return the exit code."""
    from fedsim.bench import harness

    for workload in args.workloads:
        try:
            harness.find_config(workload)
        except FileNotFoundError as err:
            return fail(err)
    plan = harness.Plan(
        workers=tuple(w.strip() for w in args.workers.split(",") if w.strip()),
        rounds=args.rounds,
        repeat=args.repeat,
        floor_threads=args.floor_threads,
        reference_dir=harness.find_reference_dir(args.reference_dir),
        flower_python=args.flower_python,
        flower_rounds=args.flower_rounds,
        flower_repeat=args.flower_repeat,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = harness.machine()  # before the runs: the load average at start
    runs = harness.run_workloads(args.workloads, plan, log=lambda line: print(line, flush=True))
    table, written = harness.write_results(runs, out, info)
    print()
    print(table)
    print(f"written: {', '.join(str(p) for p in written)}")
    return 0
