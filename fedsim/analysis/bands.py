"""Curves over seeds: one rounds.csv column of several runs as a mean with a min-max band."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim.analysis.runs import ROUNDS_FILE


def seed_band(run_dirs: Sequence[str | Path], column: str) -> pd.DataFrame:
    """Per round: ``mean``, ``min`` and ``max`` of ``column`` over the runs (rounds where every
    run has no value are left out)."""
    curves = [
        pd.read_csv(Path(d) / ROUNDS_FILE).set_index("round")[column].rename(i)
        for i, d in enumerate(run_dirs)
    ]
    frame = pd.concat(curves, axis=1).dropna(how="all")
    return pd.DataFrame({"mean": frame.mean(axis=1), "min": frame.min(axis=1),
                         "max": frame.max(axis=1)})  # fmt: skip


def plot_band(ax: Any, run_dirs: Sequence[str | Path], column: str, **style: Any) -> bool:
    """Draw :func:`seed_band` on ``ax``: the mean as a line (``style``: colour, label, ...),
    the min-max range shaded; False (nothing drawn) without runs."""
    if not run_dirs:
        return False
    band = seed_band(run_dirs, column)
    (line,) = ax.plot(band.index, band["mean"], **style)
    ax.fill_between(band.index, band["min"], band["max"], color=line.get_color(), alpha=0.2)
    return True


def band_table(
    runs: pd.DataFrame,
    keys: Sequence[str],
    columns: Sequence[str],
    root: str | Path = ".",
    folder: str = "run",
) -> pd.DataFrame:
    """Per setting and round: mean, min and max over the setting's runs of rounds.csv columns.

    ``runs`` has a row per run: its setting in the ``keys`` columns and its folder (under
    ``root``) in ``folder``. The result has the keys, ``round`` and ``<column>_<mean|min|max>``,
    settings in their order of first appearance.
    """
    data = pd.concat(
        pd.read_csv(Path(root) / r[folder] / ROUNDS_FILE)[["round", *columns]].assign(
            **{k: r[k] for k in keys}
        )
        for _, r in runs.iterrows()
    )
    stats = data.groupby([*keys, "round"], sort=False)[list(columns)].agg(["mean", "min", "max"])
    stats.columns = [f"{a}_{b}" for a, b in stats.columns]
    return stats.reset_index()
