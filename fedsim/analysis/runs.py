"""Loading run folders written by ``fedsim run`` and the rules for naming and grouping runs.

A run folder holds ``config.toml`` and ``rounds.csv`` (both required), and optionally
``summary.json``, ``clients.csv`` and ``partition.csv``. Unknown extra columns are kept, so files
from newer versions of the simulator still load.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim.rundir import (  # noqa: F401  (the run folder's names, re-exported)
    CLIENTS_FILE,
    CONFIG_FILE,
    PARTITION_FILE,
    ROUNDS_FILE,
    SUMMARY_FILE,
    flatten_config,
)

# Only what every analysis needs; the plots check the columns they use when they use them,
# so a run from an older or newer simulator still loads and most of it can be analysed.
REQUIRED_ROUND_COLUMNS = ("round", "test_accuracy")
REQUIRED_CLIENT_COLUMNS = ("round", "client_id", "outcome")
REQUIRED_PARTITION_COLUMNS = ("client_id",)

SEED_KEY = "experiment.seed"
# Keys that name a run or say how it was executed, not what was simulated.
IGNORED_KEYS = frozenset({"experiment.name"})
IGNORED_PREFIXES = ("runtime.",)

# Shown in a label for a key that one run's config does not have at all.
_UNSET = "unset"


@dataclass
class Run:
    """One run folder, loaded.

    ``config`` holds the TOML tables as nested dicts and, in the same dict, every leaf under its
    dotted key (``config["server"]["rounds"] == config["server.rounds"]``). ``rounds`` is sorted
    by round. ``summary`` is empty when ``summary.json`` is absent.
    """

    path: Path
    name: str
    config: dict[str, Any]
    rounds: pd.DataFrame
    clients: pd.DataFrame | None
    summary: dict[str, Any]
    partition: pd.DataFrame | None

    @property
    def flat_config(self) -> dict[str, Any]:
        """Leaf values of the config under their dotted keys only."""
        return {k: v for k, v in self.config.items() if not isinstance(v, dict)}


def load_run(path: str | Path) -> Run:
    """Load a run folder.

    Raises
    ------
    FileNotFoundError
        The folder, its ``config.toml`` or its ``rounds.csv`` does not exist.
    ValueError
        The path is not a folder, or a file in it cannot be read or lacks required columns.
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"run folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"not a run folder (not a directory): {folder}")
    for required in (CONFIG_FILE, ROUNDS_FILE):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"not a run folder: {folder} has no {required}")

    nested = _read_toml(folder / CONFIG_FILE)
    config: dict[str, Any] = dict(nested)
    config.update(flatten_config(nested))

    rounds = _read_csv(folder / ROUNDS_FILE, REQUIRED_ROUND_COLUMNS)
    rounds = rounds.sort_values("round", kind="stable").reset_index(drop=True)

    clients_file = folder / CLIENTS_FILE
    clients = _read_csv(clients_file, REQUIRED_CLIENT_COLUMNS) if clients_file.is_file() else None
    partition_file = folder / PARTITION_FILE
    partition = (
        _read_csv(partition_file, REQUIRED_PARTITION_COLUMNS) if partition_file.is_file() else None
    )

    summary: dict[str, Any] = {}
    summary_file = folder / SUMMARY_FILE
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{summary_file}: invalid JSON: {err}") from None
        if not isinstance(summary, dict):
            raise ValueError(f"{summary_file}: expected a JSON object")

    # Path(".").name is empty; name the folder the user is standing in instead.
    name = folder.name or folder.resolve().name
    return Run(folder, name, config, rounds, clients, summary, partition)


def load_runs(paths: Iterable[str | Path | Run]) -> list[Run]:
    """Load several run folders (already loaded runs pass through), with distinct names.

    Runs whose folder names collide are renamed ``parent/name`` so that labels and output file
    names stay distinct.
    """
    runs = [p if isinstance(p, Run) else load_run(p) for p in paths]
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return runs
    renamed = []
    for run in runs:
        if names.count(run.name) > 1:
            parent = run.path.resolve().parent.name
            run = replace(run, name=f"{parent}/{run.name}" if parent else run.name)
        renamed.append(run)
    # Identical parent/name pairs (the same folder given twice) still need telling apart.
    seen: dict[str, int] = {}
    unique = []
    for run in renamed:
        count = seen[run.name] = seen.get(run.name, 0) + 1
        unique.append(run if count == 1 else replace(run, name=f"{run.name}#{count}"))
    return unique


def config_differences(
    runs: Sequence[Run | str | Path], *, ignore_seed: bool = False
) -> dict[str, str]:
    """A legend label per run name, built from the config keys whose values differ across runs.

    ``experiment.name`` and ``runtime.*`` never count; ``experiment.seed`` does not count with
    ``ignore_seed``. A run whose config lacks a differing key shows it as ``key=unset``. When
    nothing differs, each run is labelled with its folder name.
    """
    loaded = load_runs(runs)
    flats = [_comparable(r.flat_config, ignore_seed=ignore_seed) for r in loaded]
    keys: dict[str, None] = {}
    for flat in flats:
        keys.update(dict.fromkeys(flat))
    differing = [
        k for k in keys if len({_freeze(f[k]) if k in f else (_UNSET,) for f in flats}) > 1
    ]
    if not differing:
        return {r.name: r.name for r in loaded}
    return {
        r.name: ", ".join(f"{k}={format_value(f[k]) if k in f else _UNSET}" for k in differing)
        for r, f in zip(loaded, flats, strict=True)
    }


def group_seeds(runs: Sequence[Run | str | Path]) -> list[list[Run]]:
    """Runs grouped by config, ignoring ``experiment.seed`` (and name and runtime keys).

    Groups and the runs inside them keep the order of first appearance.
    """
    groups: dict[frozenset[tuple[str, Any]], list[Run]] = {}
    for run in load_runs(runs):
        flat = _comparable(run.flat_config, ignore_seed=True)
        key = frozenset((k, _freeze(v)) for k, v in flat.items())
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def group_labels(groups: Sequence[Sequence[Run]]) -> list[str]:
    """A legend label per seed group: the differing config keys, plus the seed count."""
    firsts = [g[0] for g in groups]
    labels = config_differences(firsts, ignore_seed=True)
    out = []
    for group, first in zip(groups, firsts, strict=True):
        label = labels[first.name]
        if len(group) > 1:
            if label == first.name:
                # The first folder's name would pass off one seed as the whole group.
                names = {r.config.get("experiment.name") for r in group}
                if len(names) == 1 and isinstance(next(iter(names)), str):
                    label = next(iter(names))
            label = f"{label} ({len(group)} seeds)"
        out.append(label)
    return out


def format_value(value: Any) -> str:
    """A config value as it reads in a label."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def rounds_to_target(rounds_df: pd.DataFrame, target: float, x: str = "round") -> float | None:
    """The ``x`` value at which test accuracy first reaches ``target``; None if it never does.

    Follows McMahan et al. (2017): the accuracy curve is made monotone by taking the best value so
    far, over evaluated rounds only. The crossing is linearly interpolated between the evaluation
    that set the last record below ``target`` and the first evaluation at or above it; later
    evaluations that merely repeat an earlier best do not move the starting point. With
    accuracies 0.5, 0.8, 0.6, 0.85 at rounds 1-4 and target 0.82 the result is
    ``2 + (0.82 - 0.8) / (0.85 - 0.8) * 2 = 2.8``. If the first evaluation already reaches the
    target, its ``x`` is returned.

    ``x`` is any rounds.csv column that grows with time: ``round``, ``cum_bytes``,
    ``sim_time_s``, ...
    """
    if not math.isfinite(target):
        raise ValueError(f"target accuracy must be a finite number, got {target!r}")
    _require_columns(rounds_df, ("test_accuracy", x), "rounds_to_target")
    frame = rounds_df.sort_values("round") if "round" in rounds_df.columns else rounds_df
    evaluated = frame[[x, "test_accuracy"]].dropna()
    xs = evaluated[x].to_numpy(dtype=float)
    acc = evaluated["test_accuracy"].to_numpy(dtype=float)
    if acc.size == 0:
        return None
    best_before = np.maximum.accumulate(acc)
    is_record = np.concatenate(([True], acc[1:] > best_before[:-1]))
    record_x, record_acc = xs[is_record], acc[is_record]
    reached = np.flatnonzero(record_acc >= target)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(record_x[0])
    x0, x1 = record_x[i - 1], record_x[i]
    a0, a1 = record_acc[i - 1], record_acc[i]
    return float(x0 + (target - a0) / (a1 - a0) * (x1 - x0))


def _comparable(flat: Mapping[str, Any], *, ignore_seed: bool) -> dict[str, Any]:
    return {
        k: v
        for k, v in flat.items()
        if k not in IGNORED_KEYS
        and not k.startswith(IGNORED_PREFIXES)
        and not (ignore_seed and k == SEED_KEY)
    }


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a config value, equal exactly when the values are equal."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    # TOML allows nan, and nan != nan would split otherwise identical configs.
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    return value


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{file}: invalid TOML: {_one_line(err)}") from None


def _read_csv(file: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(file)
    except (ValueError, UnicodeDecodeError) as err:
        # pandas parser errors span lines; the CLI promises one-line messages.
        raise ValueError(f"{file}: cannot read CSV: {_one_line(err)}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{file}: missing column(s) {', '.join(missing)}")
    return frame


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], purpose: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"{purpose} needs column(s) {', '.join(missing)}, which are missing")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
