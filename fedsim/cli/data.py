"""``fedsim data``: summarise how a config splits its dataset across clients."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fedsim.cli.common import add_set_option
from fedsim.data.summary import DEFAULT_SAMPLE_SIZE, PartitionSummary


def add_command(subparsers: argparse._SubParsersAction) -> None:
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
    add_set_option(p)
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
    from fedsim.data.summary import summarize_partition
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


def write_partition_summary(
    summary: PartitionSummary, out_dir: str | Path, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Write ``partition.csv`` and the label-distribution figure (with its CSV); return paths.

    A regression set has no labels: only ``partition.csv`` (client sizes) is written.
    """
    # Imported here: matplotlib is needed only when a figure is drawn.
    from fedsim.analysis.figure import save_figure
    from fedsim.analysis.run_plots import plot_label_distribution

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "partition.csv"
    summary.frame.to_csv(csv, index=False)
    if not summary.num_classes:
        return [csv]
    fig, _, data = plot_label_distribution(summary.frame)
    written = [csv, *save_figure(fig, out, "label_distribution", formats)]
    data_file = out / "label_distribution.csv"
    data.to_csv(data_file, index=False)
    written.append(data_file)
    return written
