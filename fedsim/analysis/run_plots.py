"""Figures of a single run: round outcomes, client times and the label distribution.

Every plot function returns ``(figure, axes, data)`` like those of :mod:`fedsim.analysis.plots`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from fedsim.analysis.figure import SMALL_FONT_SIZE, TWO_PANEL_HEIGHT_IN, PlotResult, new_figure
from fedsim.analysis.runs import Run, _require_columns, load_runs

_OUTCOME_COLORS = {"completed": "tab:blue", "straggler": "tab:orange", "dropped": "tab:gray"}
_PHASES = ("download_s", "compute_s", "upload_s")
# Switch the client-time axis to log scale when times span more than this factor.
_LOG_SPAN = 100.0


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
    counts = counts.reindex(_tier_order(run.config, counts.index))
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


def _one_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else load_runs([run])[0]


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


def _tier_order(config: dict[str, Any], names: Sequence[str] | pd.Index) -> list[str]:
    """Tier names in the order ``population.tiers`` lists them; others after, naturally sorted."""
    tiers = config.get("population", {}).get("tiers", [])
    configured = [str(t["name"]) for t in tiers if isinstance(t, dict) and "name" in t]
    present = set(names)
    first = [name for name in configured if name in present]
    return first + _natural_order([name for name in names if name not in first])


def _natural_order(values: Sequence[str] | pd.Index) -> list[str]:
    """Tier names in numeric order when they are numbers (``2`` before ``10``), else sorted."""
    items = list(values)
    try:
        return sorted(items, key=float)
    except ValueError:
        return sorted(items)
