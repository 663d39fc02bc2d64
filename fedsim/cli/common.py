"""Pieces shared by the verbs: the ``--set`` option, the one-line failure, the target check."""

from __future__ import annotations

import argparse
import math
import sys

# Errors that mean "not a usable run folder"; anything else is a bug and should show a traceback.
RUN_ERRORS = (FileNotFoundError, NotADirectoryError, ValueError)


def add_set_option(p: argparse.ArgumentParser, scope: str = "") -> None:
    """The repeatable ``--set SECTION.KEY=VALUE`` override of a config value."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override a config value{scope} (TOML syntax), repeatable",
    )


def add_runs_argument(p: argparse.ArgumentParser) -> None:
    """The run folders a verb reads, one or more."""
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders")


def one_line(err: BaseException | str) -> str:
    """The text of ``err`` on one line, whatever it looks like."""
    return " ".join(str(err).split())


def fail(err: BaseException | str) -> int:
    """Print ``err`` as one line on stderr; return the exit code of a bad input (2)."""
    print("error: " + one_line(err), file=sys.stderr)
    return 2


def bad_target(target: float | None) -> str | None:
    """Why ``--target`` is not an accuracy in (0, 1], or None when it is (or is not given)."""
    if target is not None and not (math.isfinite(target) and 0 < target <= 1):
        return f"--target must be an accuracy in (0, 1], got {target}"
    return None
