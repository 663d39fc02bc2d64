"""The ``fedsim`` command: run | data | plot | compare."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.options import ConfigError


def _cmd_run(args: argparse.Namespace) -> int:
    from fedsim import config as config_mod
    from fedsim.runner import RunInterrupted, default_out_dir, resume, run
    from fedsim.runtime.errors import DivergedError, RunError

    if (args.config is None) == (args.resume is None):
        raise ConfigError("run: give either an experiment file or --resume RUN_DIR")
    if args.resume is not None and args.out:
        raise ConfigError("--out: a resumed run continues in RUN_DIR; --out cannot be used")
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
    s = result.summary
    if s["resumed_from_rounds"]:
        print(f"resumed from round {s['resumed_from_rounds'][-1]}")
    score = f"final test accuracy {s['final_test_accuracy']:.4f}"
    if "final_test_rmse" in s:
        score = f"final test MAE {s['final_test_mae']:.4f}, RMSE {s['final_test_rmse']:.4f}"
    print(
        f"{s['rounds']} rounds, {score}, "
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
    print(f"results: {out}")
    return 0


def _plot_run(out: Path) -> None:
    from fedsim.analysis import plot_runs

    plot_runs([out], out / "plots")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsim", description="Simulate federated learning over heterogeneous clients."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run an experiment from a TOML file")
    p.add_argument("config", nargs="?", help="experiment TOML file")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (instead of CONFIG)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (TOML syntax), repeatable",
    )
    p.add_argument("--out", help="output folder (default results/<experiment>/<run-id>)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)
    from fedsim.analysis.commands import add_commands

    add_commands(sub)
    from fedsim.data.commands import add_commands as add_data_commands

    add_data_commands(sub)
    from fedsim.bench import add_command as add_bench_command

    add_bench_command(sub)
    from fedsim.privacy.commands import add_commands as add_privacy

    add_privacy(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"fedsim: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
