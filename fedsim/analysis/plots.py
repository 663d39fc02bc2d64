"""Figures of one or several runs, each returned with the data it draws.

Every plot function returns ``(figure, axes, data)``: ``data`` is a DataFrame of exactly the
plotted values, so a figure can be checked or redrawn elsewhere. Figures are built on
:class:`matplotlib.figure.Figure` directly (no pyplot, no global state), sized for one column of
a two-column paper.

Runs that differ only in ``experiment.seed`` are drawn as one group, the mean across seeds with
a min-max band (see :mod:`fedsim.analysis.curves`). Figures of a single run live in
:mod:`fedsim.analysis.run_plots`; :func:`plot_runs` writes them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedsim.analysis.compare import byte_unit
from fedsim.analysis.curves import curve_legend, draw_curves, max_x, seed_curves
from fedsim.analysis.figure import (
    TWO_PANEL_HEIGHT_IN,
    PlotResult,
    RunsLike,
    legend_below,  # noqa: F401  (re-exported for scripts importing it from here)
    new_figure,
    save_figure,
    time_unit,
)
from fedsim.analysis.pareto import plot_pareto
from fedsim.analysis.run_plots import (
    plot_client_times,
    plot_label_distribution,
    plot_round_outcomes,
)
from fedsim.analysis.runs import group_seeds, load_runs

_BYTES = {
    "total": ("cum_bytes", "cumulative bytes communicated"),
    "up": ("cum_bytes_up", "cumulative bytes uploaded"),
    "down": ("cum_bytes_down", "cumulative bytes downloaded"),
}


def plot_accuracy_vs_bytes(
    runs: RunsLike, which: Literal["total", "up", "down"] = "total", log: bool = False
) -> PlotResult:
    """Test accuracy against cumulative bytes (both directions, uploads or downloads).

    Bytes are shown in the decimal unit (B, KB, MB, GB; 1 MB = 10^6 bytes) that suits the
    largest value.
    """
    if which not in _BYTES:
        raise ValueError(f"which must be one of {', '.join(_BYTES)}, got {which!r}")
    column, what = _BYTES[which]
    curves = seed_curves(group_seeds(runs), column, "test_accuracy", interpolate=True)
    unit, size = byte_unit(max_x(curves))
    fig, ax = new_figure()
    data = draw_curves(ax, curves, column, size)
    ax.set_xlabel(f"{what} ({unit})")
    ax.set_ylabel("test accuracy")
    if log:
        ax.set_xscale("log")
    curve_legend(ax, curves)
    return fig, ax, data


def plot_accuracy_vs_time(runs: RunsLike) -> PlotResult:
    """Test accuracy against simulated time, in s, min or h depending on the run length."""
    curves = seed_curves(group_seeds(runs), "sim_time_s", "test_accuracy", interpolate=True)
    unit, size = time_unit(max_x(curves))
    fig, ax = new_figure()
    data = draw_curves(ax, curves, "sim_time_s", size)
    ax.set_xlabel(f"simulated time ({unit})")
    ax.set_ylabel("test accuracy")
    curve_legend(ax, curves)
    return fig, ax, data


def plot_accuracy_loss_vs_rounds(runs: RunsLike) -> PlotResult:
    """Test accuracy (top) and train loss (bottom) against round.

    ``data`` has a ``metric`` column (``test_accuracy`` or ``train_loss``).
    """
    groups = group_seeds(runs)
    fig, axes = new_figure(2, 1, height=TWO_PANEL_HEIGHT_IN, sharex=True)
    frames = []
    for ax, metric, ylabel in zip(
        axes, ("test_accuracy", "train_loss"), ("test accuracy", "train loss"), strict=True
    ):
        curves = seed_curves(groups, "round", metric, interpolate=False)
        frames.append(draw_curves(ax, curves, "round", 1.0).assign(metric=metric))
        ax.set_ylabel(ylabel)
        if metric == "test_accuracy":
            curve_legend(ax, curves)
    axes[-1].set_xlabel("round")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes, pd.concat(frames, ignore_index=True)


def plot_runs(
    paths: RunsLike,
    out_dir: str | Path,
    formats: Sequence[str] = ("png", "svg"),
    log_bytes: bool = False,
    pareto: Literal["final", "best"] = "final",
) -> list[Path]:
    """Write every applicable figure of the runs into ``out_dir``; return the files written.

    Each figure is saved in every format and its data as ``<figure>.csv`` beside it. Figures of
    a single run (round outcomes, client times, label distribution) get the run name as prefix
    when there are several runs, and are skipped when their input file is missing. Runs of
    several configurations also get ``pareto``: ``pareto`` (final or best) accuracy against
    total bytes, one point per configuration, the frontier marked.
    """
    supported = Figure().canvas.get_supported_filetypes()
    unknown = [f for f in formats if f not in supported]
    if unknown:
        raise ValueError(f"unsupported figure format(s): {', '.join(unknown)}")
    runs = load_runs(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    figures: list[tuple[str, Callable[[], PlotResult]]] = [
        ("accuracy_vs_bytes", lambda: plot_accuracy_vs_bytes(runs, log=log_bytes)),
        ("accuracy_vs_time", lambda: plot_accuracy_vs_time(runs)),
        ("accuracy_loss_vs_rounds", lambda: plot_accuracy_loss_vs_rounds(runs)),
    ]
    if len(group_seeds(runs)) > 1:
        figures.append(("pareto", lambda: plot_pareto(runs, pareto)))
    for run in runs:
        prefix = "" if len(runs) == 1 else f"{_file_safe(run.name)}_"
        # Bind run now; a bare closure would see only the loop's last run.
        figures.append((f"{prefix}round_outcomes", lambda r=run: plot_round_outcomes(r)))
        if run.clients is not None:
            figures.append((f"{prefix}client_times", lambda r=run: plot_client_times(r)))
        # A regression set's partition.csv has sizes but no label columns.
        if run.partition is not None and any(c.startswith("label_") for c in run.partition):
            figures.append(
                (f"{prefix}label_distribution", lambda r=run: plot_label_distribution(r))
            )

    written: list[Path] = []
    for stem, make in figures:
        fig, _, data = make()
        written += save_figure(fig, out, stem, formats)
        data_file = out / f"{stem}.csv"
        data.to_csv(data_file, index=False)
        written.append(data_file)
    return written


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
