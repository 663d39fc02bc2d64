"""Curves of runs grouped by seed: aggregation across seeds, drawing and legend.

Runs whose configs differ only in ``experiment.seed`` form one group, drawn as the mean across
seeds with a min-max band and one legend entry. Against rounds, seeds are aligned on the rounds
all of them evaluated; against bytes or time they are linearly interpolated onto the union of
their x values, within the range they all cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from fedsim.analysis.figure import SMALL_FONT_SIZE, legend_below
from fedsim.analysis.runs import Run, group_labels

# Cumulative byte columns rebuilt from per-round ones when a rounds.csv lacks them.
_PER_ROUND_BYTES = {
    "cum_bytes": ("bytes_up", "bytes_down"),
    "cum_bytes_up": ("bytes_up",),
    "cum_bytes_down": ("bytes_down",),
}
# Mark evaluation points when they are few enough to tell apart.
_MAX_MARKED_POINTS = 25
# A legend inside the axes only when it is small; otherwise it goes below them.
_INSIDE_LEGEND_ENTRIES = 4
_INSIDE_LEGEND_CHARS = 50


@dataclass
class Curve:
    """One legend entry: the mean of y over ``n_runs`` seeds and its min-max band at ``x``."""

    label: str
    n_runs: int
    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def curve_legend(ax: Axes, curves: Sequence[Curve]) -> None:
    """Label the curves inside the axes when few and short, below them otherwise."""
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


def seed_curves(
    groups: Sequence[Sequence[Run]], x: str, y: str, *, interpolate: bool
) -> list[Curve]:
    """One curve of ``y`` against ``x`` per seed group, labelled by what sets the groups apart."""
    labels = group_labels(groups)
    curves = []
    for group, label in zip(groups, labels, strict=True):
        series = [_series(run, x, y) for run in group]
        xs, mean, lo, hi = _aggregate(series, interpolate=interpolate)
        curves.append(Curve(label, len(group), xs, mean, lo, hi))
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


def max_x(curves: Sequence[Curve]) -> float:
    """Largest x over all curves (0 when none has points)."""
    return max((float(c.x.max()) for c in curves if c.x.size), default=0.0)


def draw_curves(ax: Axes, curves: Sequence[Curve], x_name: str, scale: float) -> pd.DataFrame:
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
