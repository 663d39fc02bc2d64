"""``fedsim sweep``: run an experiment over a grid of config values and seeds."""

from __future__ import annotations

import argparse
import sys

from fedsim.cli.common import add_set_option, bad_target, fail, one_line


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``sweep`` on the main parser's subparsers."""
    sweep = subparsers.add_parser(
        "sweep",
        help="run an experiment over a grid of config values and seeds",
        description="Run the cartesian product of the --grid values, each with --seeds seeds "
        "(experiment.seed + 0, 1, ...), one after another in this process, each into its own "
        "folder; then write sweep.csv, comparison.csv/.md and comparison plots. Repeating the "
        "command skips the runs already finished.",
    )
    sweep.add_argument("config", help="experiment TOML file")
    add_set_option(sweep, " for every run")
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


def run_sweep(args: argparse.Namespace) -> int:
    """Execute ``fedsim sweep``; return the exit code. Config errors raise ConfigError."""
    from fedsim.analysis.sweep import sweep
    from fedsim.errors import RunError

    if why := bad_target(args.target):
        return fail(why)
    again = "run the same command again to continue (finished runs are skipped)"
    try:
        result = sweep(
            args.config,
            args.grid,
            overrides=args.set,
            seeds=args.seeds,
            out_dir=args.out,
            progress=not args.quiet,
            target=args.target,
            plots=not args.no_plots,
        )
    except KeyboardInterrupt:
        print(f"fedsim: sweep interrupted; {again}", file=sys.stderr)
        return 130
    except RunError as err:
        print(f"fedsim: error: {one_line(err)}; {again}", file=sys.stderr)
        return 1
    print()
    print(result.comparison)
    print(f"results: {result.out_dir}")
    return 0
