"""``fedsim reproduce``: run finished runs again from their configs and compare the records."""

from __future__ import annotations

import argparse
import sys

from fedsim.cli.common import add_runs_argument, add_set_option


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reproduce`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "reproduce",
        help="re-run finished runs and check their records come out identical",
        description="Run each folder's config.toml again in a temporary folder and compare "
        "rounds.csv and clients.csv cell for cell (wall-time columns left out). Exit 0 when "
        "every run is reproduced, 1 when one differs.",
    )
    add_runs_argument(p)
    add_set_option(p, " that does not change results (runtime.backend, runtime.workers, ...)")
    p.add_argument(
        "--record",
        action="store_true",
        help="write provenance.json (code, libraries, machine, command of the re-run) into "
        "each reproduced folder that has none",
    )
    p.set_defaults(func=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    """Execute ``fedsim reproduce``; return the exit code."""
    from fedsim.analysis.reproduce import check_finished, record, reproduce

    folders = [check_finished(folder) for folder in args.runs]  # all before the first re-run
    differ = 0
    for folder in folders:
        # Each verdict (and record) as soon as its run is done: nothing is lost to a stop.
        result = reproduce(folder, overrides=args.set)
        print(result.describe(), flush=True)
        differ += not result.identical
        if args.record and result.identical:
            written = record(result)
            print(f"  {written if written else 'provenance.json kept as it was'}", flush=True)
    if differ:
        print(f"{differ} of {len(folders)} runs differ", file=sys.stderr)
    return 1 if differ else 0
