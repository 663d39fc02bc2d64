"""The ``fedsim`` command: every verb is a module of this package.

Each verb module has ``add_command(subparsers)``, which registers the verb and sets ``func`` to
the function that executes it. Verbs import their domain packages only when they run, so the
start of every command stays fast.
"""

from __future__ import annotations

import argparse
import sys

from fedsim.cli import bench, compare, data, plot, privacy, reproduce, run, sweep
from fedsim.options import ConfigError

VERBS = (run, plot, compare, sweep, reproduce, data, bench, privacy)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``fedsim`` command with every verb registered."""
    parser = argparse.ArgumentParser(
        prog="fedsim", description="Simulate federated learning over heterogeneous clients."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        verb.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``fedsim`` command on ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    # This process is the command's own: let its allocator keep freed memory for reuse, as Ray
    # workers do (an in-process run allocates and frees the same large arrays every round).
    from fedsim.memory import keep_freed_memory

    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"fedsim: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedsim: interrupted", file=sys.stderr)
        return 130
