"""The ``data`` subcommand: summarise how a config splits its dataset across clients."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsim.data.summary import DEFAULT_SAMPLE_SIZE


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``data`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "data",
        help="summarise an experiment's data partition without training",
        description="Build the configured dataset and partition, print samples and labels per "
        "client, and write partition.csv and a label-distribution figure. Lazily generated "
        "datasets with more clients than a run would write to partition.csv are summarised "
        "on a seeded sample of clients.",
    )
    p.add_argument("config", help="experiment TOML file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (TOML syntax), repeatable",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default results/<experiment>-data)")
    p.add_argument(
        "--rows", type=int, default=5, metavar="N", help="table rows to print (default 5)"
    )
    p.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE_SIZE,
        metavar="N",
        help=f"clients to summarise when sampling (default {DEFAULT_SAMPLE_SIZE})",
    )
    p.set_defaults(func=run_data)


def run_data(args: argparse.Namespace) -> int:
    """Execute ``fedsim data``; return the exit code."""
    from fedsim import config as config_mod
    from fedsim.data import build_dataset
    from fedsim.data.summary import summarize_partition, write_partition_summary
    from fedsim.options import ConfigError
    from fedsim.runner import PARTITION_CSV_LAZY_LIMIT

    if args.sample < 1:
        raise ConfigError(f"--sample: must be >= 1, got {args.sample}")
    cfg = config_mod.load(args.config, args.set)
    dataset = build_dataset(
        cfg.data, cfg.partition, cfg.population.num_clients, cfg.experiment.seed
    )
    summary = summarize_partition(
        dataset,
        seed=cfg.experiment.seed,
        sample_above=PARTITION_CSV_LAZY_LIMIT,
        sample_size=args.sample,
    )
    out = Path(args.out) if args.out else Path("results") / f"{cfg.experiment.name}-data"
    print(f"{cfg.experiment.name}: dataset {cfg.data.name}, partition {cfg.partition.name}")
    print(summary.text(rows=args.rows))
    written = write_partition_summary(summary, out)
    print()
    for path in written:
        print(f"wrote {path}")
    return 0
