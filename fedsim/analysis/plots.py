"""Figures of one or several runs, each returned with the data it draws.

Every plot function returns ``(figure, axes, data)``: ``data`` is a DataFrame of exactly the
plotted values, so a figure can be checked or redrawn elsewhere. Figures are built on
:class:`matplotlib.figure.Figure` directly (no pyplot, no global state), sized for one column of
a two-column paper.

Runs whose configs differ only in ``experiment.seed`` form one group, drawn as the mean across
seeds with a min-max band and one legend entry. Against rounds, seeds are aligned on the rounds
all of them evaluated; against bytes or time they are linearly interpolated onto the union of
their x values, within the range they all cover.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedsim.analysis.compare import byte_unit
from fedsim.analysis.figure import (
    SMALL_FONT_SIZE,
    TWO_PANEL_HEIGHT_IN,
    PlotResult,
    RunsLike,
    legend_below,
    new_figure,
    save_figure,
    time_unit,
)
from fedsim.analysis.pareto import plot_pareto
from fedsim.analysis.runs import Run, _require_columns, group_labels, group_seeds, load_runs

_BYTES = {
    "total": ("cum_bytes", "cumulative bytes communicated"),
    "up": ("cum_bytes_up", "cumulative bytes uploaded"),
    "down": ("cum_bytes_down", "cumulative bytes downloaded"),
}
# Cumulative byte columns rebuilt from per-round ones when a rounds.csv lacks them.
_PER_ROUND_BYTES = {
    "cum_bytes": ("bytes_up", "bytes_down"),
    "cum_bytes_up": ("bytes_up",),
    "cum_bytes_down": ("bytes_down",),
}
_OUTCOME_COLORS = {"completed": "tab:blue", "straggler": "tab:orange", "dropped": "tab:gray"}
_PHASES = ("download_s", "compute_s", "upload_s")
# Switch the client-time axis to log scale when times span more than this factor.
_LOG_SPAN = 100.0
# Mark evaluation points when they are few enough to tell apart.
_MAX_MARKED_POINTS = 25
# A legend inside the axes only when it is small; otherwise it goes below them.
_INSIDE_LEGEND_ENTRIES = 4
_INSIDE_LEGEND_CHARS = 50


@dataclass
class _Curve:
    label: str
    n_runs: int
    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


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
    curves = _curves(group_seeds(runs), column, "test_accuracy", interpolate=True)
    unit, size = byte_unit(_max_x(curves))
    fig, ax = new_figure()
    data = _draw(ax, curves, column, size)
    ax.set_xlabel(f"{what} ({unit})")
    ax.set_ylabel("test accuracy")
    if log:
        ax.set_xscale("log")
    _legend(ax, curves)
    return fig, ax, data


def plot_accuracy_vs_time(runs: RunsLike) -> PlotResult:
    """Test accuracy against simulated time, in s, min or h depending on the run length."""
    curves = _curves(group_seeds(runs), "sim_time_s", "test_accuracy", interpolate=True)
    unit, size = time_unit(_max_x(curves))
    fig, ax = new_figure()
    data = _draw(ax, curves, "sim_time_s", size)
    ax.set_xlabel(f"simulated time ({unit})")
    ax.set_ylabel("test accuracy")
    _legend(ax, curves)
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
        curves = _curves(groups, "round", metric, interpolate=False)
        frames.append(_draw(ax, curves, "round", 1.0).assign(metric=metric))
        ax.set_ylabel(ylabel)
        if metric == "test_accuracy":
            _legend(ax, curves)
    axes[-1].set_xlabel("round")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes, pd.concat(frames, ignore_index=True)


def plot_round_outcomes(run: Run | str | Path) -> PlotResult:
    """Per round: completed, straggling and dropped clients stacked, with the number selected.

    Failed rounds (too few clients reported) are marked with a red cross when the ``failed``
    column is present.
    """
    run = _one_run(run)
    frame = run.rounds
    _require_columns(frame, ("round", "completed", "stragglers", "dropped"), "round outcomes")
    data = frame[["round", "completed", "stragglers", "dropped"]].copy()
    data["selected"] = (
        frame["selected"]
        if "selected" in frame.columns
        else data[["completed", "stragglers", "dropped"]].sum(axis=1)
    )
    data["failed"] = frame["failed"].astype(bool) if "failed" in frame.columns else False

    fig, ax = new_figure()
    rounds = data["round"].to_numpy()
    bottom = np.zeros(len(data))
    # Touching bars read as an area when there are many rounds.
    width = 0.8 if len(data) <= 50 else 1.0
    for column, outcome in (
        ("completed", "completed"),
        ("stragglers", "straggler"),
        ("dropped", "dropped"),
    ):
        values = data[column].to_numpy(dtype=float)
        ax.bar(
            rounds,
            values,
            bottom=bottom,
            width=width,
            color=_OUTCOME_COLORS[outcome],
            label=column,
            linewidth=0,
        )
        bottom += values
    ax.plot(rounds, data["selected"], color="black", linewidth=1.0, label="selected")
    failed = data["failed"].to_numpy()
    if failed.any():
        ax.plot(
            rounds[failed],
            data["selected"].to_numpy()[failed],
            linestyle="none",
            marker="x",
            color="tab:red",
            markersize=4,
            label="failed round",
        )
    top = float(data["selected"].max()) if len(data) else 1.0
    # Headroom so the legend does not cover the bars.
    ax.set_ylim(0, top * 1.4 if top > 0 else 1.0)
    ax.set_xlabel("round")
    ax.set_ylabel("clients per round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=SMALL_FONT_SIZE, frameon=False, ncols=3, loc="upper center")
    return fig, ax, data.reset_index(drop=True)


def plot_client_times(run: Run | str | Path) -> PlotResult:
    """Distribution of client download, compute and upload seconds, and outcomes by device tier.

    Dropped clients are left out of the time distribution: their phases stopped early, so their
    times are not the time a phase takes. ``data`` is long: ``panel`` is ``times`` (``group`` is
    the phase, ``key`` a box statistic) or ``outcomes`` (``group`` is the tier, ``key`` the
    outcome, ``value`` the number of client-rounds).
    """
    run = _one_run(run)
    if run.clients is None:
        raise FileNotFoundError(f"run {run.name} has no clients.csv")
    clients = run.clients
    fig, (ax_times, ax_tiers) = new_figure(2, 1, height=TWO_PANEL_HEIGHT_IN)
    rows: list[dict[str, Any]] = []

    kept = clients[clients["outcome"] != "dropped"]
    phases = [p for p in _PHASES if p in clients.columns]
    samples = []
    for phase in phases:
        values = pd.to_numeric(kept[phase], errors="coerce").to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        samples.append(values)
        stats = _box_stats(values)
        rows += [
            {"panel": "times", "group": phase.removesuffix("_s"), "key": k, "value": v}
            for k, v in stats.items()
        ]
    drawn = [(p, v) for p, v in zip(phases, samples, strict=True) if v.size]
    if drawn:
        ax_times.boxplot(
            [v for _, v in drawn],
            widths=0.5,
            flierprops={"markersize": 2},
            medianprops={"color": "black"},
        )
        ax_times.set_xticks(range(1, len(drawn) + 1), [p.removesuffix("_s") for p, _ in drawn])
        every = np.concatenate([v for _, v in drawn])
        if every.min() > 0 and every.max() / every.min() > _LOG_SPAN:
            ax_times.set_yscale("log")
    ax_times.set_ylabel("simulated time (s)")
    ax_times.set_xlabel("client phase")

    tiers = clients["tier"] if "tier" in clients.columns else pd.Series("all", index=clients.index)
    counts = pd.crosstab(tiers.astype(str), clients["outcome"].astype(str))
    counts = counts.reindex(_natural_order(counts.index))
    outcomes = [o for o in _OUTCOME_COLORS if o in counts.columns]
    outcomes += sorted(o for o in counts.columns if o not in _OUTCOME_COLORS)
    positions = np.arange(len(counts))
    bottom = np.zeros(len(counts))
    for outcome in outcomes:
        values = counts[outcome].to_numpy(dtype=float)
        ax_tiers.bar(
            positions,
            values,
            bottom=bottom,
            width=0.6,
            color=_OUTCOME_COLORS.get(outcome),
            label=outcome,
            linewidth=0,
        )
        bottom += values
        rows += [
            {"panel": "outcomes", "group": tier, "key": outcome, "value": float(v)}
            for tier, v in zip(counts.index, values, strict=True)
        ]
    ax_tiers.set_xticks(positions, list(counts.index))
    ax_tiers.set_xlabel("device tier")
    ax_tiers.set_ylabel("client-rounds (count)")
    ax_tiers.legend(fontsize=SMALL_FONT_SIZE, frameon=False)
    data = pd.DataFrame(rows, columns=["panel", "group", "key", "value"])
    return fig, np.array([ax_times, ax_tiers]), data


def plot_label_distribution(source: Run | str | Path | pd.DataFrame) -> PlotResult:
    """Heatmap of each client's label mix (fraction of its samples) and a client-size histogram.

    ``source`` is a run (its ``partition.csv``) or a partition table itself, with columns
    ``client_id``, ``label_0 ... label_K`` and optionally ``num_samples``. Sizes spanning more
    than a factor 100 are binned on a log axis. ``data`` is long: one row per client and label
    with ``count``, ``fraction`` and the client's ``num_samples``.
    """
    if isinstance(source, pd.DataFrame):
        partition, where = source, "partition table"
    else:
        run = _one_run(source)
        if run.partition is None:
            raise FileNotFoundError(f"run {run.name} has no partition.csv")
        partition, where = run.partition, str(run.path / "partition.csv")
    _require_columns(partition, ("client_id",), "the label distribution")
    partition = partition.sort_values("client_id", kind="stable").reset_index(drop=True)
    label_columns = sorted(
        (c for c in partition.columns if re.fullmatch(r"label_\d+", c)),
        key=lambda c: int(c.removeprefix("label_")),
    )
    if not label_columns:
        raise ValueError(f"{where}: no label_<k> columns")
    counts = partition[label_columns].to_numpy(dtype=float)
    sizes = (
        partition["num_samples"].to_numpy(dtype=float)
        if "num_samples" in partition.columns
        else counts.sum(axis=1)
    )
    totals = counts.sum(axis=1, keepdims=True)
    # An empty client has no label mix; show it as all zeros rather than dividing by zero.
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    fig, (ax_map, ax_hist) = new_figure(2, 1, height=TWO_PANEL_HEIGHT_IN)
    image = ax_map.imshow(
        fractions,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        extent=(-0.5, len(label_columns) - 0.5, len(partition) - 0.5, -0.5),
    )
    ax_map.grid(False)
    ax_map.set_xlabel("label")
    ids = partition["client_id"].to_numpy()
    # Rows are clients sorted by id; call the axis "client id" only when row and id coincide.
    contiguous = np.array_equal(ids, np.arange(len(ids)))
    ax_map.set_ylabel("client id" if contiguous else "client (sorted by id)")
    ax_map.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(label_columns) <= 20:
        ax_map.set_xticks(range(len(label_columns)))
    colorbar = fig.colorbar(image, ax=ax_map)
    colorbar.set_label("fraction of client's samples", fontsize=SMALL_FONT_SIZE)
    colorbar.ax.tick_params(labelsize=SMALL_FONT_SIZE)

    bins: Any = int(min(30, max(5, math.ceil(math.sqrt(len(sizes))))))
    # Heavy-tailed sizes (lognormal, power law) would all fall into the first linear bin.
    log_sizes = len(sizes) > 0 and sizes.min() > 0 and sizes.max() / sizes.min() > _LOG_SPAN
    if log_sizes:
        bins = np.geomspace(sizes.min(), sizes.max(), bins + 1)
    ax_hist.hist(sizes, bins=bins, color="tab:blue", edgecolor="white", linewidth=0.3)
    if log_sizes:
        ax_hist.set_xscale("log")
    ax_hist.set_xlabel("samples per client")
    ax_hist.set_ylabel("clients (count)")
    ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))

    labels = np.array([int(c.removeprefix("label_")) for c in label_columns])
    n_clients, n_labels = counts.shape
    data = pd.DataFrame(
        {
            "client_id": np.repeat(partition["client_id"].to_numpy(), n_labels),
            "label": np.tile(labels, n_clients),
            "count": counts.ravel(),
            "fraction": fractions.ravel(),
            "num_samples": np.repeat(sizes, n_labels),
        }
    )
    return fig, np.array([ax_map, ax_hist]), data


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


def _legend(ax: Axes, curves: Sequence[_Curve]) -> None:
    # One plain curve needs no legend; a seed band does, to say how many seeds it spans.
    if not (len(curves) > 1 or any(c.n_runs > 1 for c in curves)):
        return
    labels = [c.label for c in curves if c.x.size]
    if len(labels) <= _INSIDE_LEGEND_ENTRIES and all(
        len(label) <= _INSIDE_LEGEND_CHARS for label in labels
    ):
        ax.legend(fontsize=SMALL_FONT_SIZE, frameon=False)
        return
    # Many or long labels (a sweep's) would cover the curves and squeeze the axes to nothing.
    legend_below(ax)


def _one_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else load_runs([run])[0]


def _series(run: Run, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite (x, y) points of a run, in round order."""
    rounds = run.rounds
    columns = {}
    for name in (x, y):
        if name in rounds.columns:
            columns[name] = rounds[name]
        elif name in _PER_ROUND_BYTES and all(c in rounds.columns for c in _PER_ROUND_BYTES[name]):
            columns[name] = sum(rounds[c] for c in _PER_ROUND_BYTES[name]).cumsum()
        else:
            raise ValueError(f"{run.path / 'rounds.csv'}: missing column {name}")
    xs = pd.to_numeric(columns[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(columns[y], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def _curves(groups: Sequence[Sequence[Run]], x: str, y: str, *, interpolate: bool) -> list[_Curve]:
    labels = group_labels(groups)
    curves = []
    for group, label in zip(groups, labels, strict=True):
        series = [_series(run, x, y) for run in group]
        xs, mean, lo, hi = _aggregate(series, interpolate=interpolate)
        curves.append(_Curve(label, len(group), xs, mean, lo, hi))
    return curves


def _aggregate(
    series: Sequence[tuple[np.ndarray, np.ndarray]], *, interpolate: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Common x and the mean, min and max of y across runs."""
    if len(series) == 1:
        xs, ys = series[0]
        return xs, ys, ys, ys
    if interpolate:
        if any(xs.size == 0 for xs, _ in series):
            empty = np.array([], dtype=float)
            return empty, empty, empty, empty
        # Only where every seed has data: extrapolating a shorter run would invent values.
        lo = max(xs[0] for xs, _ in series)
        hi = min(xs[-1] for xs, _ in series)
        grid = np.unique(np.concatenate([xs for xs, _ in series]))
        grid = grid[(grid >= lo) & (grid <= hi)]
        stacked = np.vstack([np.interp(grid, xs, ys) for xs, ys in series])
    else:
        grid = series[0][0]
        for xs, _ in series[1:]:
            grid = np.intersect1d(grid, xs)
        stacked = np.vstack([ys[np.searchsorted(xs, grid)] for xs, ys in series])
    return grid, stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0)


def _max_x(curves: Sequence[_Curve]) -> float:
    return max((float(c.x.max()) for c in curves if c.x.size), default=0.0)


def _draw(ax: Axes, curves: Sequence[_Curve], x_name: str, scale: float) -> pd.DataFrame:
    """Draw a mean line per curve (and a min-max band for seed groups); return the data."""
    frames = []
    for curve in curves:
        if curve.x.size == 0:
            continue
        xs = curve.x / scale
        marker = "o" if curve.x.size <= _MAX_MARKED_POINTS else None
        (line,) = ax.plot(xs, curve.mean, label=curve.label, linewidth=1.2, marker=marker, ms=2)
        if curve.n_runs > 1:
            ax.fill_between(xs, curve.lo, curve.hi, color=line.get_color(), alpha=0.2, lw=0)
        frames.append(
            pd.DataFrame(
                {
                    "label": curve.label,
                    "n_runs": curve.n_runs,
                    x_name: curve.x,
                    "x": xs,
                    "mean": curve.mean,
                    "min": curve.lo,
                    "max": curve.hi,
                }
            )
        )
    columns = ["label", "n_runs", x_name, "x", "mean", "min", "max"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _box_stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"n": 0.0}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "n": float(values.size),
        "min": float(values.min()),
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


def _natural_order(values: Sequence[str] | pd.Index) -> list[str]:
    """Tier names in numeric order when they are numbers (``2`` before ``10``), else sorted."""
    items = list(values)
    try:
        return sorted(items, key=float)
    except ValueError:
        return sorted(items)


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
