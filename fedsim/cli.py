"""The ``fedsim`` command: run | data | plot | compare."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.options import ConfigError


def _cmd_run(args: argparse.Namespace) -> int:
    from fedsim import config as config_mod
    from fedsim.runner import default_out_dir, run

    cfg = config_mod.load(args.config, args.set)
    out = Path(args.out) if args.out else default_out_dir(cfg)
    result = run(cfg, out_dir=out, progress=cfg.runtime.progress and not args.quiet)
    s = result.summary
    print(
        f"{s['rounds']} rounds, final test accuracy {s['final_test_accuracy']:.4f}, "
        f"simulated time {s['sim_time_s']:.1f} s, "
        f"{(s['bytes_up_total'] + s['bytes_down_total']) / 1e6:.1f} MB communicated, "
        f"wall time {s['wall_time_s']:.1f} s"
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
    p.add_argument("config", help="experiment TOML file")
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
