"""Performance benchmarks: the harness behind ``fedsim bench``, its floors and its probes."""

from __future__ import annotations

import argparse


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fedsim bench`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="time fedsim against the numpy floor (and Flower) on the same workload",
        description="Run fedsim, a plain numpy loop doing the same arithmetic and, given "
        "--flower-python, Flower on the same workload; print and write a table of seconds per "
        "round, ratios and peak memory.",
    )
    from fedsim.bench.harness import add_arguments, run_bench

    add_arguments(p)
    p.set_defaults(func=run_bench)
