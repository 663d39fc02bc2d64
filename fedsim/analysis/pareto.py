"""Accuracy against total bytes, one point per configuration, and the Pareto frontier.

A configuration is a group of runs that differ only in ``experiment.seed``; its point is the
mean over seeds of the total bytes communicated (``cum_bytes`` after the last round) and of
the final (or best) test accuracy, with the seeds' min-max range as error bars. A point is on
the frontier when no other point reaches at least its accuracy with at most its bytes and is
strictly better in one of the two.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from fedsim.analysis.compare import byte_unit
from fedsim.analysis.figure import PlotResult, RunsLike, legend_below, new_figure
from fedsim.analysis.runs import Run, _require_columns, group_labels, group_seeds

Metric = Literal["final", "best"]
Which = Literal["total", "up", "down"]


def pareto_points(runs: RunsLike, metric: Metric = "final", which: Which = "total") -> pd.DataFrame:
    """One row per configuration: label, seeds, bytes and accuracy (mean, min, max), frontier.

    ``which`` counts the bytes of both directions (``total``), or uploads (``up``) or
    downloads (``down``) only; the column is still called ``total_bytes``.
    """
    if metric not in ("final", "best"):
        raise ValueError(f"metric must be 'final' or 'best', got {metric!r}")
    groups = group_seeds(runs)
    rows = []
    for label, group in zip(group_labels(groups), groups, strict=True):
        acc = np.array([_accuracy(run, metric) for run in group])
        total = np.array([_total_bytes(run, which) for run in group], dtype=np.float64)
        rows.append(
            {
                "label": label,
                "seeds": len(group),
                "total_bytes": total.mean(),
                "accuracy": acc.mean(),
                "accuracy_min": acc.min(),
                "accuracy_max": acc.max(),
            }
        )
    points = pd.DataFrame(rows)
    points["on_frontier"] = frontier(points["total_bytes"].to_numpy(), points["accuracy"])
    return points.sort_values(["total_bytes", "label"], ignore_index=True)


def frontier(cost: np.ndarray, value: np.ndarray | pd.Series) -> np.ndarray:
    """Which points no other point dominates (no more cost, no less value, better in one)."""
    cost, value = np.asarray(cost, dtype=np.float64), np.asarray(value, dtype=np.float64)
    no_worse = (cost[None, :] <= cost[:, None]) & (value[None, :] >= value[:, None])
    better = (cost[None, :] < cost[:, None]) | (value[None, :] > value[:, None])
    return ~(no_worse & better).any(axis=1)


def plot_pareto(runs: RunsLike, metric: Metric = "final", which: Which = "total") -> PlotResult:
    """Accuracy against total bytes (log scale); points numbered, the frontier a step line."""
    points = pareto_points(runs, metric, which)
    unit, size = byte_unit(points["total_bytes"].max())
    x = points["total_bytes"] / size
    fig, ax = new_figure()
    yerr = np.vstack(
        [points["accuracy"] - points["accuracy_min"], points["accuracy_max"] - points["accuracy"]]
    )
    ax.errorbar(x, points["accuracy"], yerr=yerr, fmt="none", ecolor="0.6", lw=0.6)
    front = points["on_frontier"].to_numpy()
    ax.step(x[front], points["accuracy"][front], where="post", color="tab:red", lw=0.9,
            label="Pareto frontier")  # fmt: skip
    for i, row in points.iterrows():
        ax.scatter(
            x[i],
            row["accuracy"],
            s=30,
            marker=f"${i + 1}$",
            color="tab:red" if row["on_frontier"] else "tab:blue",
            label=f"{i + 1}: {row['label']}",
            zorder=3,
        )
    ax.set_xscale("log")
    what = {"total": "communicated", "up": "uploaded", "down": "downloaded"}[which]
    ax.set_xlabel(f"total bytes {what} ({unit})")
    ax.set_ylabel(f"{metric} test accuracy")
    legend_below(ax)
    return fig, ax, points


def _accuracy(run: Run, metric: Metric) -> float:
    _require_columns(run.rounds, ["test_accuracy"], "a Pareto plot")
    acc = run.rounds["test_accuracy"].dropna()
    if acc.empty:
        return float("nan")
    return float(acc.iloc[-1] if metric == "final" else acc.max())


def _total_bytes(run: Run, which: Which) -> float:
    per_round = {"total": ["bytes_up", "bytes_down"], "up": ["bytes_up"], "down": ["bytes_down"]}
    _require_columns(run.rounds, per_round[which], "a Pareto plot")
    return float(sum(run.rounds[c].sum() for c in per_round[which]))
