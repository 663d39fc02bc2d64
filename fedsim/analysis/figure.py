"""The house style of fedsim's figures: one column of a two-column paper, small fonts, legends
that never cover the curves, and files that are identical when the figure is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedsim.analysis.runs import Run

COLUMN_WIDTH_IN = 3.4
HEIGHT_IN = 2.6
TWO_PANEL_HEIGHT_IN = 4.2
FONT_SIZE = 8
SMALL_FONT_SIZE = 6.5
PNG_DPI = 300

RunsLike = Sequence[Run | str | Path]
PlotResult = tuple[Figure, Any, pd.DataFrame]
# Characters of a legend line at SMALL_FONT_SIZE across COLUMN_WIDTH_IN.
LEGEND_LINE_CHARS = 60


def new_figure(
    nrows: int = 1, ncols: int = 1, *, height: float = HEIGHT_IN, sharex: bool = False
) -> tuple[Figure, Any]:
    """A figure one column wide with ``nrows`` x ``ncols`` styled axes."""
    fig = Figure(figsize=(COLUMN_WIDTH_IN, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex)
    for ax in np.atleast_1d(axes).ravel():
        style(ax)
    return fig, axes


def style(ax: Axes) -> None:
    """Font sizes, a light grid and no top or right spine."""
    # Set sizes on the label objects so later set_xlabel calls keep them.
    ax.xaxis.label.set_fontsize(FONT_SIZE)
    ax.yaxis.label.set_fontsize(FONT_SIZE)
    ax.tick_params(labelsize=SMALL_FONT_SIZE + 0.5)
    ax.grid(True, linewidth=0.4, alpha=0.4)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)


def save_figure(
    fig: Figure, out_dir: str | Path, stem: str, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Save ``fig`` as ``out_dir/stem.<format>`` for each format; return the paths."""
    paths = []
    for fmt in formats:
        path = Path(out_dir) / f"{stem}.{fmt}"
        # A creation date or random element ids in the SVG would make identical figures differ
        # between runs (and committed figures churn).
        metadata = {"Date": None} if fmt == "svg" else None
        with matplotlib.rc_context({"svg.hashsalt": stem}):
            fig.savefig(path, format=fmt, dpi=PNG_DPI, metadata=metadata)
        paths.append(path)
    return paths


def time_unit(max_seconds: float) -> tuple[str, float]:
    """The unit (s, min, h) that keeps ``max_seconds`` readable, and its length in seconds."""
    if max_seconds >= 2 * 3600:
        return "h", 3600.0
    if max_seconds >= 2 * 60:
        return "min", 60.0
    return "s", 1.0


def legend_below(ax: Axes) -> None:
    """The axes' legend below everything, labels wrapped, the figure made taller to hold it."""
    handles, texts = ax.get_legend_handles_labels()
    wrapped = [_wrap_label(t) for t in texts]
    lines = sum(t.count("\n") + 1 for t in wrapped)
    fig = ax.get_figure()
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + lines * SMALL_FONT_SIZE * 1.3 / 72 + 0.15)
    fig.legend(
        handles, wrapped, fontsize=SMALL_FONT_SIZE, frameon=False, loc="outside lower center"
    )


def _wrap_label(label: str) -> str:
    """Break a legend label after its commas so that each line fits the figure width."""
    lines = [""]
    for part in label.split(", "):
        candidate = f"{lines[-1]}, {part}" if lines[-1] else part
        if len(candidate) > LEGEND_LINE_CHARS and lines[-1]:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] = candidate
    return "\n".join(lines)
