"""``fedsim plot``: draw figures of one or more runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsim.cli.common import RUN_ERRORS, add_runs_argument, fail


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``plot`` on the main parser's subparsers."""
    plot = subparsers.add_parser(
        "plot",
        help="draw figures of one or more runs",
        description="Draw accuracy, communication, timing and data figures of runs. Runs that "
        "differ only in experiment.seed are drawn as one mean curve with a min-max band.",
    )
    add_runs_argument(plot)
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


def run_plot(args: argparse.Namespace) -> int:
    """Execute ``fedsim plot``; return the exit code."""
    # Imported here: matplotlib is needed only when a figure is drawn.
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
    except RUN_ERRORS as err:
        return fail(err)
    for path in written:
        print(path)
    return 0
