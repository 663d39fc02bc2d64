"""The ``plot`` and ``compare`` subcommands of the ``fedsim`` command line.

Plotting and pandas are imported only when a command runs, so registering the commands keeps
the start of every other ``fedsim`` command fast.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

# The x columns of compare.TARGET_COLUMNS, spelled out so that registering the commands does
# not import pandas.
_X_CHOICES = ("round", "cum_bytes", "sim_time_s")
# Errors that mean "not a usable run folder"; anything else is a bug and should show a traceback.
_RUN_ERRORS = (FileNotFoundError, NotADirectoryError, ValueError)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``plot`` and ``compare`` on the main parser's subparsers."""
    plot = subparsers.add_parser(
        "plot",
        help="draw figures of one or more runs",
        description="Draw accuracy, communication, timing and data figures of runs. Runs that "
        "differ only in experiment.seed are drawn as one mean curve with a min-max band.",
    )
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders")
    plot.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: RUN_DIR/plots for one run, ./plots for several)",
    )
    plot.add_argument("--log-bytes", action="store_true", help="log scale on the bytes axis")
    plot.add_argument(
        "--format",
        nargs="+",
        default=["png", "svg"],
        metavar="FMT",
        help="figure formats (default: png svg)",
    )
    plot.set_defaults(func=run_plot)

    compare = subparsers.add_parser(
        "compare",
        help="compare runs in a table",
        description="Print a table of final and best accuracy, bytes and time per run, and "
        "write comparison.csv and comparison.md.",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders")
    compare.add_argument(
        "--target",
        type=float,
        metavar="ACC",
        help="target test accuracy in (0, 1]; adds the rounds, bytes and simulated time "
        "needed to reach it",
    )
    compare.add_argument(
        "--x",
        choices=_X_CHOICES,
        default="round",
        help="with --target, order runs by the cost to reach it in rounds, bytes "
        "(cum_bytes) or simulated time (sim_time_s); runs that never reach it come last",
    )
    compare.add_argument(
        "--out", metavar="DIR", default=".", help="where to write the tables (default: .)"
    )
    compare.set_defaults(func=run_compare)


def run_plot(args: argparse.Namespace) -> int:
    """Execute ``fedsim plot``; return the exit code."""
    from fedsim.analysis.plots import plot_runs

    if args.out is not None:
        out = Path(args.out)
    elif len(args.runs) == 1:
        out = Path(args.runs[0]) / "plots"
    else:
        out = Path("plots")
    try:
        written = plot_runs(args.runs, out, formats=args.format, log_bytes=args.log_bytes)
    except _RUN_ERRORS as err:
        return _fail(err)
    for path in written:
        print(path)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Execute ``fedsim compare``; return the exit code."""
    from fedsim.analysis.compare import TARGET_COLUMNS, compare_runs, write_comparison

    target = args.target
    if target is not None and not (math.isfinite(target) and 0 < target <= 1):
        return _fail(f"--target must be an accuracy in (0, 1], got {target}")
    try:
        table = compare_runs(args.runs, target=target)
    except _RUN_ERRORS as err:
        return _fail(err)
    if target is not None:
        table = table.sort_values(TARGET_COLUMNS[args.x], kind="stable", na_position="last")
        table = table.reset_index(drop=True)
    print(write_comparison(table, args.out))
    return 0


def _fail(err: BaseException | str) -> int:
    # One line on stderr whatever the exception text looks like.
    print("error: " + " ".join(str(err).split()), file=sys.stderr)
    return 2
