"""``fedsim compare``: final and best accuracy, bytes and time of runs in one table."""

from __future__ import annotations

import argparse

from fedsim.cli.common import RUN_ERRORS, add_runs_argument, bad_target, fail

# The x columns of analysis.compare.TARGET_COLUMNS, spelled out so that registering the command
# does not import pandas.
X_CHOICES = ("round", "cum_bytes", "sim_time_s")


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``compare`` on the main parser's subparsers."""
    compare = subparsers.add_parser(
        "compare",
        help="compare runs in a table",
        description="Print a table of final and best accuracy, bytes and time per run, and "
        "write comparison.csv and comparison.md.",
    )
    add_runs_argument(compare)
    compare.add_argument(
        "--target",
        type=float,
        metavar="ACC",
        help="target test accuracy in (0, 1]; adds the rounds, bytes and simulated time "
        "needed to reach it",
    )
    compare.add_argument(
        "--x",
        choices=X_CHOICES,
        default="round",
        help="with --target, order runs by the cost to reach it in rounds, bytes "
        "(cum_bytes) or simulated time (sim_time_s); runs that never reach it come last",
    )
    compare.add_argument(
        "--out", metavar="DIR", default=".", help="where to write the tables (default: .)"
    )
    compare.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Execute ``fedsim compare``; return the exit code."""
    from fedsim.analysis.compare import TARGET_COLUMNS, compare_runs, write_comparison

    target = args.target
    if why := bad_target(target):
        return fail(why)
    try:
        table = compare_runs(args.runs, target=target)
    except RUN_ERRORS as err:
        return fail(err)
    if target is not None:
        table = table.sort_values(TARGET_COLUMNS[args.x], kind="stable", na_position="last")
        table = table.reset_index(drop=True)
    print(write_comparison(table, args.out))
    return 0
