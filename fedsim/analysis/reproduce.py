"""Re-run a finished run from its own config and check that its records come out the same.

A run folder holds the resolved config it was made with (``config.toml``). Running that config
again must give the same records, cell for cell, on any machine and with any number of workers:
only the wall-time columns may differ. A check that holds can be recorded in the folder as
``provenance.json`` (the code, libraries, machine and command of the re-run), which is how a
run made before fedsim recorded provenance gets one.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim import rundir
from fedsim.metrics import WALL_TIME_COLUMNS
from fedsim.options import ConfigError

#: The record files compared, in this order, when the original run has them.
COMPARED_FILES = (rundir.ROUNDS_FILE, rundir.CLIENTS_FILE)
PROVENANCE_FILE = rundir.PROVENANCE_FILE


@dataclass
class FileCheck:
    """The comparison of one record file: rows and columns compared, the first difference."""

    name: str
    rows: int
    columns: list[str]
    new_columns: list[str] = field(default_factory=list)
    wall_time_columns: list[str] = field(default_factory=list)
    difference: str | None = None


@dataclass
class Reproduction:
    """The outcome of re-running one folder: identical or not, file by file."""

    run_dir: Path
    files: list[FileCheck]
    #: Why the config could not be run again (e.g. rules it predates), or None.
    error: str | None = None

    @property
    def identical(self) -> bool:
        return self.error is None and all(f.difference is None for f in self.files)

    def describe(self) -> str:
        """One line: what was compared and the verdict (or the first difference)."""
        if self.error is not None:
            return f"{self.run_dir}: not reproduced: its config does not run now: {self.error}"
        if not self.identical:
            first = next(f for f in self.files if f.difference is not None)
            return f"{self.run_dir}: differs: {first.name} {first.difference}"
        parts = [f"{f.name} {f.rows} rows x {len(f.columns)} columns" for f in self.files]
        return f"{self.run_dir}: reproduced, identical: {', '.join(parts)}"


def reproduce(
    run_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    work_dir: str | Path | None = None,
) -> Reproduction:
    """Run ``run_dir/config.toml`` again in a new folder and compare its record files.

    ``overrides`` may change only keys that do not change results (backend, workers, progress,
    checkpoints: those a resumed run may change). The new run is written below ``work_dir``
    (a temporary folder by default, removed afterwards).
    """
    from fedsim.checkpoint import RESUMABLE_KEYS
    from fedsim.errors import DivergedError
    from fedsim.runner import run

    folder = check_finished(run_dir)
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE_KEYS or key == "server.rounds":
            allowed = ", ".join(sorted(RESUMABLE_KEYS - {"server.rounds"}))
            raise ConfigError(f"--set {key}: would change the results; may change: {allowed}")
    scratch = Path(tempfile.mkdtemp(prefix="fedsim-reproduce-", dir=work_dir))
    try:
        try:
            run(folder / rundir.CONFIG_FILE, overrides=list(overrides), out_dir=scratch / "run")
        except ConfigError as err:
            return Reproduction(folder, [], error=" ".join(str(err).split()))
        except DivergedError:
            pass  # a run that diverged again: its records up to then are compared
        checks = [
            compare_records(folder / name, scratch / "run" / name)
            for name in COMPARED_FILES
            if (folder / name).is_file()
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Reproduction(folder, checks)


def check_finished(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path; ConfigError unless it holds a finished run's config and records."""
    folder = Path(run_dir)
    if not (folder / rundir.CONFIG_FILE).is_file() or not (folder / rundir.ROUNDS_FILE).is_file():
        raise ConfigError(f"{folder}: not a finished run (needs config.toml and rounds.csv)")
    return folder


def compare_records(before: Path, now: Path) -> FileCheck:
    """Compare two record files cell by cell as written (text), wall-time columns left out."""
    old = _read_text(before)
    if not now.is_file():
        return FileCheck(before.name, len(old), [], difference="was not written by the re-run")
    new = _read_text(now)
    columns = [c for c in old.columns if c not in WALL_TIME_COLUMNS]
    check = FileCheck(
        before.name,
        len(old),
        columns,
        new_columns=[c for c in new.columns if c not in old.columns],
        wall_time_columns=[c for c in old.columns if c in WALL_TIME_COLUMNS],
    )
    missing = [c for c in columns if c not in new.columns]
    if missing:
        check.difference = f"has no column {missing[0]} any more"
    elif len(new) != len(old):
        check.difference = f"has {len(new)} rows, the original {len(old)}"
    else:
        check.difference = _first_difference(old[columns], new[columns])
    return check


def _read_text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _first_difference(old: pd.DataFrame, new: pd.DataFrame) -> str | None:
    unequal = old.to_numpy() != new.to_numpy()
    if not unequal.any():
        return None
    row, col = (int(i[0]) for i in unequal.nonzero())
    name = old.columns[col]
    where = f"round {old['round'].iloc[row]}" if "round" in old.columns else f"row {row + 1}"
    return f"{where}, {name}: {old.iloc[row, col]!r} then, {new.iloc[row, col]!r} now"


def record(result: Reproduction, argv: list[str] | None = None) -> Path | None:
    """Write ``provenance.json`` into a reproduced run's folder; None if the folder has one
    already (it is never overwritten) or the records differ."""
    from fedsim.provenance import provenance

    target = result.run_dir / PROVENANCE_FILE
    if not result.identical or target.exists():
        return None
    data: dict[str, Any] = {
        "how": "re-run of this folder's config.toml; the records below came out identical, "
        "cell for cell, wall-time columns left out",
        "compared": {
            f.name: {"rows": f.rows, "columns": f.columns, "not_compared": f.wall_time_columns}
            for f in result.files
        },
        **provenance(argv),
    }
    rundir.write_json(target, data)
    return target
