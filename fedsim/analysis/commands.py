"""The ``plot``, ``compare`` and ``sweep`` subcommands of the ``fedsim`` command line.

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
    """Register ``plot``, ``compare`` and ``sweep`` on the main parser's subparsers."""
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
        "--pareto",
        choices=["final", "best"],
        default="final",
        help="accuracy of each configuration in the Pareto figure (default: final)",
    )
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

    sweep = subparsers.add_parser(
        "sweep",
        help="run an experiment over a grid of config values and seeds",
        description="Run the cartesian product of the --grid values, each with --seeds seeds "
        "(experiment.seed + 0, 1, ...), one after another in this process, each into its own "
        "folder; then write sweep.csv, comparison.csv/.md and comparison plots. Repeating the "
        "command skips the runs already finished.",
    )
    sweep.add_argument("config", help="experiment TOML file")
    sweep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value for every run (TOML syntax), repeatable",
    )
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2,...",
        help="values to sweep (TOML syntax, else strings), repeatable; runs cover every "
        "combination",
    )
    sweep.add_argument(
        "--seeds", type=int, default=1, metavar="N", help="seeds per combination (default 1)"
    )
    sweep.add_argument(
        "--out", metavar="DIR", help="sweep folder (default results/<experiment>-sweep)"
    )
    sweep.add_argument(
        "--target",
        type=float,
        metavar="ACC",
        help="target test accuracy in (0, 1]: the table adds the cost to reach it",
    )
    sweep.add_argument(
        "--no-plots", action="store_true", help="skip the figures (tables only, faster)"
    )
    sweep.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sweep.set_defaults(func=run_sweep)


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
        written = plot_runs(
            args.runs, out, formats=args.format, log_bytes=args.log_bytes, pareto=args.pareto
        )
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


def run_sweep(args: argparse.Namespace) -> int:
    """Execute ``fedsim sweep``; return the exit code. Config errors raise ConfigError."""
    from fedsim.analysis.sweep import sweep
    from fedsim.runtime.errors import RunError

    target = args.target
    if target is not None and not (math.isfinite(target) and 0 < target <= 1):
        return _fail(f"--target must be an accuracy in (0, 1], got {target}")
    again = "run the same command again to continue (finished runs are skipped)"
    try:
        result = sweep(
            args.config,
            args.grid,
            overrides=args.set,
            seeds=args.seeds,
            out_dir=args.out,
            progress=not args.quiet,
            target=target,
            plots=not args.no_plots,
        )
    except KeyboardInterrupt:
        print(f"fedsim: sweep interrupted; {again}", file=sys.stderr)
        return 130
    except RunError as err:
        print(f"fedsim: error: {_one_line(err)}; {again}", file=sys.stderr)
        return 1
    print()
    print(result.comparison)
    print(f"results: {result.out_dir}")
    return 0


def _fail(err: BaseException | str) -> int:
    # One line on stderr whatever the exception text looks like.
    print("error: " + _one_line(err), file=sys.stderr)
    return 2


def _one_line(err: BaseException | str) -> str:
    return " ".join(str(err).split())
