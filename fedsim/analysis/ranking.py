"""Choosing among runs: the best run of each setting, and speed-ups over a baseline run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def best_per_group(
    runs: pd.DataFrame, keys: Sequence[str], by: Sequence[str], ascending: Sequence[bool]
) -> pd.DataFrame:
    """The first row of each ``keys`` group after sorting by ``by``, missing values last.

    Groups keep the order of their first row's sort key; ties keep the row order of ``runs``.
    """
    helpers = {f"_by{i}": runs[c].isna() for i, c in enumerate(by)}
    order = [x for i, c in enumerate(by) for x in (f"_by{i}", c)]
    asc = [x for a in ascending for x in (True, a)]
    ranked = runs.assign(**helpers).sort_values([*keys, *order], ascending=[True] * len(keys) + asc)
    return ranked.groupby(list(keys), sort=False).head(1).drop(columns=list(helpers))


def speedup_over(
    base: pd.Series, cost: pd.Series, bound: pd.Series | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``base / cost`` row by row, and whether each is a lower bound.

    ``base`` is the baseline's cost to the same goal (aligned to ``cost``), NaN where the
    baseline missed it; then ``bound`` (the baseline's whole budget, e.g. its round cap) stands
    in for it and the speed-up is "at least". A row without any baseline stays NaN.
    """
    b = base.to_numpy(dtype=float)
    at_least = np.isnan(b)
    if bound is not None:
        b = np.where(at_least, bound.to_numpy(dtype=float), b)
    speed = b / cost.to_numpy(dtype=float)
    return speed, at_least & ~np.isnan(speed)
