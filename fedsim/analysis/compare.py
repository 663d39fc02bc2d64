"""A table comparing runs: accuracy reached, bytes communicated, time, and the cost of a target."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim.analysis.runs import Run, config_differences, load_runs, rounds_to_target
from fedsim.tables import markdown_table

# rounds.csv column -> the comparison column holding the cost of reaching the target in it.
TARGET_COLUMNS = {
    "round": "rounds_to_target",
    "cum_bytes": "bytes_to_target",
    "sim_time_s": "sim_time_to_target",
}

_BYTE_COLUMNS = ("total_bytes", "bytes_up", "bytes_down", "bytes_to_target")
_ACCURACY_COLUMNS = ("final_accuracy", "best_accuracy", "target")
_SECONDS_COLUMNS = ("sim_time_s", "wall_time_s", "sim_time_to_target")
_MISSING = "-"


def compare_runs(paths: Sequence[str | Path | Run], target: float | None = None) -> pd.DataFrame:
    """One row per run: accuracy, bytes and time totals, and with ``target`` the cost to reach it.

    Accuracy, bytes and simulated time come from ``rounds.csv``, so the table agrees with the
    plots (``summary.json`` fills in when rounds.csv has no rows). ``wall_time_s`` comes from
    ``summary.json`` (the whole run, setup included) and falls back to the sum over rounds.
    With a target, the ``*_to_target`` columns are NaN and ``reached`` is False for runs that
    never reach it.
    """
    runs = load_runs(paths)
    labels = config_differences(runs)
    rows = []
    for run in runs:
        rounds = run.rounds
        accuracy = rounds["test_accuracy"].dropna()
        row: dict[str, Any] = {
            "run": run.name,
            "label": labels[run.name],
            "rounds": int(rounds["round"].max()) if len(rounds) else 0,
            "final_accuracy": float(accuracy.iloc[-1]) if len(accuracy) else math.nan,
            "best_accuracy": float(accuracy.max()) if len(accuracy) else math.nan,
            "total_bytes": _total(run, "cum_bytes", ("bytes_up", "bytes_down"), _summary_bytes),
            "bytes_up": _total(run, "cum_bytes_up", ("bytes_up",), "bytes_up_total"),
            "bytes_down": _total(run, "cum_bytes_down", ("bytes_down",), "bytes_down_total"),
            "sim_time_s": _last(rounds, "sim_time_s", run.summary.get("sim_time_s")),
            "wall_time_s": _wall_time(run),
        }
        if target is not None:
            row["target"] = float(target)
            reached = True
            for x, column in TARGET_COLUMNS.items():
                value = rounds_to_target(rounds, target, x=x) if x in rounds.columns else None
                row[column] = math.nan if value is None else value
                # Without the x column the cost is unknown, not "never reached".
                if value is None and x in rounds.columns:
                    reached = False
            row["reached"] = reached
        rows.append(row)
    return pd.DataFrame(rows)


def write_comparison(df: pd.DataFrame, out_dir: str | Path) -> str:
    """Write ``comparison.csv`` and ``comparison.md`` into ``out_dir``; return a text table.

    The CSV keeps raw numbers. The text and Markdown tables show bytes in one decimal unit per
    column (1 MB = 10^6 bytes, named in the header), accuracies to four places and seconds to one.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "comparison.csv", index=False)
    headers, cells, numeric = _format_table(df)
    md = markdown_table(headers, cells, ["right" if n else "left" for n in numeric])
    (out / "comparison.md").write_text(md + "\n", encoding="utf-8")
    return _text(headers, cells, numeric)


def byte_unit(max_bytes: float) -> tuple[str, float]:
    """The decimal unit (B, KB, MB, GB) that keeps ``max_bytes`` readable, and its size."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if max_bytes >= size:
            return unit, size
    return "B", 1.0


def _summary_bytes(summary: dict[str, Any]) -> float | None:
    up, down = summary.get("bytes_up_total"), summary.get("bytes_down_total")
    return None if up is None or down is None else float(up) + float(down)


def _total(
    run: Run,
    cumulative: str,
    per_round: tuple[str, ...],
    summary_key: str | Callable[[dict[str, Any]], float | None],
) -> float:
    rounds = run.rounds
    fallback = summary_key(run.summary) if callable(summary_key) else run.summary.get(summary_key)
    if cumulative in rounds.columns:
        return _last(rounds, cumulative, fallback)
    if len(rounds) and all(c in rounds.columns for c in per_round):
        return float(sum(rounds[c].sum() for c in per_round))
    return math.nan if fallback is None else float(fallback)


def _last(rounds: pd.DataFrame, column: str, fallback: Any) -> float:
    if column in rounds.columns:
        values = rounds[column].dropna()
        if len(values):
            return float(values.iloc[-1])
    return math.nan if fallback is None else float(fallback)


def _wall_time(run: Run) -> float:
    if run.summary.get("wall_time_s") is not None:
        return float(run.summary["wall_time_s"])
    if "wall_time_s" in run.rounds.columns:
        return float(run.rounds["wall_time_s"].sum())
    return math.nan


def _format_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    """Headers, cell texts and which columns are numeric (right-aligned)."""
    headers: list[str] = []
    columns: list[list[str]] = []
    numeric: list[bool] = []
    for name in df.columns:
        values = df[name].tolist()
        header, fmt = name, _format_generic
        if name in _BYTE_COLUMNS:
            finite = [float(v) for v in values if _is_number(v)]
            unit, size = byte_unit(max(finite, default=0.0))
            header = f"{name} ({unit})"
            fmt = _scaled(size)
        elif name in _ACCURACY_COLUMNS:
            fmt = _fixed(4)
        elif name in _SECONDS_COLUMNS:
            fmt = _fixed(1)
        elif name == "rounds_to_target":
            fmt = _fixed(2)
        elif name == "reached":
            fmt = _yes_no
        headers.append(header)
        columns.append([fmt(v) for v in values])
        numeric.append(pd.api.types.is_numeric_dtype(df[name]) and df[name].dtype != bool)
    cells = [list(row) for row in zip(*columns, strict=True)] if columns else []
    return headers, cells, numeric


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


def _fixed(places: int) -> Callable[[Any], str]:
    return lambda v: f"{float(v):.{places}f}" if _is_number(v) else _MISSING


def _scaled(size: float) -> Callable[[Any], str]:
    return lambda v: f"{float(v) / size:.2f}" if _is_number(v) else _MISSING


def _yes_no(value: Any) -> str:
    return "yes" if bool(value) else "no"


def _format_generic(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return _yes_no(value)
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}" if math.isfinite(value) else _MISSING
    return _MISSING if value is None else str(value)


def _text(headers: list[str], cells: list[list[str]], numeric: list[bool]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def row(values: list[str]) -> str:
        parts = [
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([row(headers), rule, *(row(r) for r in cells)])
