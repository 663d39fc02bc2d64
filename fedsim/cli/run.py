"""``fedsim run``: run an experiment from a TOML file, or resume a run from its checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedsim.cli.common import add_set_option
from fedsim.options import ConfigError

if TYPE_CHECKING:
    from fedsim.runner import RunResult


def run_command(args: argparse.Namespace) -> int:
    """Execute ``fedsim run``; return the exit code. Config errors raise ConfigError."""
    from fedsim import config as config_mod
    from fedsim.errors import DivergedError, RunError
    from fedsim.runner import RunInterrupted, default_out_dir, resume, run

    if (args.config is None) == (args.resume is None):
        raise ConfigError("run: give either an experiment file or --resume RUN_DIR")
    if args.resume is not None and args.out:
        raise ConfigError("--out: a resumed run continues in RUN_DIR; --out cannot be used")
    if args.profile:
        args.set = [*(args.set or []), "runtime.profile=true"]
    if args.resume is not None:
        out = Path(args.resume)
        # A folder that is not a run is reported by resume() itself.
        found = (out / "config.toml").is_file()
        cfg = config_mod.load(out / "config.toml", args.set) if found else None
    else:
        cfg = config_mod.load(args.config, args.set)
        out = Path(args.out) if args.out else default_out_dir(cfg)
    show = not args.quiet and (cfg is None or cfg.runtime.progress)
    try:
        if args.resume is not None:
            result = resume(out, overrides=args.set, progress=show)
        else:
            # The file, not the loaded config: relative paths in it are relative to it.
            result = run(args.config, overrides=args.set, out_dir=out, progress=show)
    except RunInterrupted as stop:
        print(
            f"fedsim: interrupted after round {stop.round} of {stop.rounds}; checkpoint "
            f"written; resume with: fedsim run --resume {out}",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        if not (out / "config.toml").is_file():
            print("fedsim: interrupted before the run started", file=sys.stderr)
            return 130
        print(
            "fedsim: interrupted during a round; resume from the last checkpoint with: "
            f"fedsim run --resume {out}",
            file=sys.stderr,
        )
        return 130
    except RunError as err:
        hint = "" if isinstance(err, DivergedError) else f"; resume with: fedsim run --resume {out}"
        print(f"fedsim: error: {err}; records so far are in {out}{hint}", file=sys.stderr)
        return 1
    return _report(result, out)


def _report(result: RunResult, out: Path) -> int:
    """Print what a finished run did and draw its figures; the exit code (0)."""
    s = result.summary
    if result.unchanged:
        print(f"{out}: the run had already finished ({s['rounds']} rounds); nothing changed")
        return 0
    if s["resumed_from_rounds"]:
        print(f"resumed from round {s['resumed_from_rounds'][-1]}")
    score = f"final test accuracy {s['final_test_accuracy']:.4f}"
    if "final_test_rmse" in s:
        score = f"final test MAE {s['final_test_mae']:.4f}, RMSE {s['final_test_rmse']:.4f}"
    print(
        f"{s['rounds']} {'server steps' if result.config.server.mode == 'async' else 'rounds'}, "
        f"{score}, "
        f"simulated time {s['sim_time_s']:.1f} s, "
        f"{(s['bytes_up_total'] + s['bytes_down_total']) / 1e6:.1f} MB communicated, "
        f"wall time {s['wall_time_s']:.1f} s"
    )
    if "test_auc" in s:
        print(
            f"test AUC {s['test_auc']:.4f} (centralised {s['centralised_auc']:.4f}, "
            f"active party only {s['active_only_auc']:.4f})"
        )
    _plot_run(out)
    if result.config.runtime.profile:
        _print_profile(out)
    print(f"results: {out}")
    return 0


def _print_profile(out: Path) -> None:
    """The phases of profile.csv by total time (runtime.profile)."""
    import pandas as pd

    from fedsim.profiling import phase_table
    from fedsim.rundir import PROFILE_FILE

    if (out / PROFILE_FILE).is_file():
        print(phase_table(pd.read_csv(out / PROFILE_FILE)))
        print(f"every round, every phase: {out / PROFILE_FILE}")


def _plot_run(out: Path) -> None:
    from fedsim.analysis import plot_runs

    plot_runs([out], out / "plots")


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``run`` on the main parser's subparsers."""
    p = subparsers.add_parser("run", help="run an experiment from a TOML file")
    p.add_argument("config", nargs="?", help="experiment TOML file")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (instead of CONFIG)",
    )
    add_set_option(p)
    p.add_argument("--out", help="output folder (default results/<experiment>/<run-id>)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--profile",
        action="store_true",
        help="time every phase of every round into profile.csv (runtime.profile = true)",
    )
    p.set_defaults(func=run_command)
