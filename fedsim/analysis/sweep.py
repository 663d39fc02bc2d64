"""Parameter sweeps: the cartesian product of config values, times seeds, run one after another.

Every run of a sweep gets its own folder under the sweep folder, named after its grid values
and seed (``strategy.name=fedprox,server.clients_per_round=20,seed=1``). A run counts as
finished when its folder has ``summary.json``, which a run writes last; running the same sweep
again skips finished runs and resumes an interrupted one from its checkpoint, so an interrupted
sweep is continued by repeating its command. All runs share the Python process, hence one Ray
instance. Grid parsing, run names and validation before running are in
:mod:`fedsim.analysis.sweep_plan`.
"""

from __future__ import annotations

import math
import shutil
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedsim import config as config_mod
from fedsim.analysis.runs import (
    CONFIG_FILE,
    ROUNDS_FILE,
    SUMMARY_FILE,
    flatten_config,
    format_value,
)
from fedsim.analysis.sweep_plan import (
    GridAxis,
    SweepRun,
    parse_grid,
    plan_sweep,
    run_name,
    same_value,
    split_values,
)
from fedsim.config import Config
from fedsim.options import ConfigError

__all__ = [
    "GridAxis",
    "SweepResult",
    "SweepRun",
    "default_sweep_dir",
    "parse_grid",
    "plan_sweep",
    "run_name",
    "split_values",
    "sweep",
]

SWEEP_FILE = "sweep.csv"
# What to do with a planned run's folder.
_NEW, _FINISHED, _RESUMABLE, _STALE = "new", "finished", "resumable", "stale"


@dataclass
class SweepResult:
    """A finished sweep: its folder, the ``sweep.csv`` table and the run folders in order."""

    out_dir: Path
    table: pd.DataFrame
    run_dirs: list[Path]
    ran: int
    skipped: int
    comparison: str


def default_sweep_dir(cfg: Config, root: Path = Path("results")) -> Path:
    """``results/<experiment>-sweep``."""
    return root / f"{cfg.experiment.name}-sweep"


def sweep(
    config: Config | str | Path,
    grid: Sequence[str] | Sequence[GridAxis] = (),
    *,
    overrides: Sequence[str] = (),
    seeds: int = 1,
    out_dir: str | Path | None = None,
    progress: bool = False,
    target: float | None = None,
    plots: bool = True,
    log: Callable[[str], None] | None = print,
) -> SweepResult:
    """Run every configuration of a grid (times ``seeds``) and summarise them.

    Writes each run into ``out_dir/<run name>/`` with ``fedsim.run``. Runs finished there
    before are skipped, an interrupted run is resumed from its checkpoint (or rerun when it has
    none), and a run that diverges is recorded as such while the sweep goes on. Then writes
    ``sweep.csv`` (one row per run: grid values, seed, status, final and best accuracy, bytes,
    simulated and wall time, run folder), ``comparison.csv``/``comparison.md`` and, with
    ``plots``, the comparison figures in ``out_dir/plots``. ``log`` receives one line per run.
    """
    from fedsim.errors import DivergedError

    runs = plan_sweep(config, grid, overrides=overrides, seeds=seeds)
    if out_dir is None:
        # Named after the base config: the grid may change experiment.name itself.
        base = config if isinstance(config, Config) else config_mod.load(config, list(overrides))
        out = default_sweep_dir(base)
    else:
        out = Path(out_dir)
    # Every folder is checked before the first run starts, so a mismatch stops nothing midway.
    states = [_folder_state(out / r.name, r.config) for r in runs]
    say = log or (lambda _: None)
    total = len(runs)
    ran = 0
    status: dict[int, str] = {}
    for r, state in zip(runs, states, strict=True):
        folder = out / r.name
        head = f"run {r.index}/{total}: {r.name}"
        if state == _FINISHED:
            say(f"{head}: finished before, skipped")
            continue
        if state == _STALE:
            # Left by a run killed before it wrote its config: nothing in it can be reused.
            shutil.rmtree(folder)
        t0 = time.perf_counter()
        ran += 1
        try:
            result = _run_one(config, r, overrides, folder, state == _RESUMABLE, progress)
        except DivergedError as err:
            status[r.index] = f"diverged at round {err.round}"
            say(f"{head}: {err}, {time.perf_counter() - t0:.1f} s")
            continue
        acc = result.summary.get("final_test_accuracy", math.nan)
        resumed = " (resumed)" if state == _RESUMABLE else ""
        say(f"{head}: final acc {acc:.4f}, {time.perf_counter() - t0:.1f} s{resumed}")

    from fedsim.analysis.compare import compare_runs, write_comparison

    run_dirs = [out / r.name for r in runs]
    # A run that diverged before its first round has no records to compare or plot.
    recorded = [d for d in run_dirs if (d / ROUNDS_FILE).is_file()]
    comparison = compare_runs(recorded, target=target)
    table = _sweep_table(runs, run_dirs, comparison, status)
    table.to_csv(out / SWEEP_FILE, index=False)
    text = write_comparison(comparison, out)
    if plots and recorded:
        from fedsim.analysis.plots import plot_runs

        plot_runs(recorded, out / "plots")
    return SweepResult(out, table, run_dirs, ran, total - ran, text)


def _run_one(
    config: Config | str | Path,
    r: SweepRun,
    overrides: Sequence[str],
    folder: Path,
    resume: bool,
    progress: bool,
) -> Any:
    from fedsim.runner import run

    show = progress and r.config.runtime.progress
    if isinstance(config, Config):
        return run(r.config, out_dir=folder, progress=show, resume=resume)
    # The file itself, not the loaded config: relative paths in it are relative to it.
    return run(
        config,
        overrides=[*overrides, *r.overrides],
        out_dir=folder,
        progress=show,
        resume=resume,
    )


def _sweep_table(
    runs: Sequence[SweepRun],
    run_dirs: Sequence[Path],
    comparison: pd.DataFrame,
    status: Mapping[int, str],
) -> pd.DataFrame:
    """sweep.csv: grid values, seed and status, then the comparison's numbers, then the folder."""
    by_name = {row["run"]: row for _, row in comparison.iterrows()}
    numbers = [c for c in comparison.columns if c not in ("run", "label")]
    rows = []
    for r, folder in zip(runs, run_dirs, strict=True):
        row = by_name.get(folder.name)
        rows.append(
            {
                **{k: _cell(v) for k, v in r.values.items()},
                "seed": r.seed,
                "status": status.get(r.index, "finished"),
                **{c: row[c] if row is not None else math.nan for c in numbers},
                "run_dir": folder.name,
            }
        )
    table = pd.DataFrame(rows)
    if "rounds" in table.columns:
        # Stays an integer column when a diverged run has no rounds to count.
        table["rounds"] = table["rounds"].astype("Int64")
    return table


def _folder_state(folder: Path, cfg: Config) -> str:
    """What to do with a run's folder; ConfigError if it holds a run of another config."""
    from fedsim import checkpoint, rundir

    state = rundir.folder_state(folder)
    if state in (rundir.FolderState.MISSING, rundir.FolderState.EMPTY):
        return _NEW
    if state is rundir.FolderState.STARTED:
        return _STALE
    rundir.check_out_dir(folder, resume=True)  # a file, or a folder of other files: refused
    try:
        with (folder / CONFIG_FILE).open("rb") as fh:
            done = flatten_config(tomllib.load(fh))
    except (OSError, tomllib.TOMLDecodeError):
        return _STALE
    planned = flatten_config(tomllib.loads(config_mod.dumps_toml(cfg.to_dict())))
    # Keys that do not change results (how a run is executed) may differ.
    ignored = checkpoint.RESUMABLE_KEYS
    for key in sorted(done.keys() & planned.keys()):
        if key not in ignored and not same_value(done[key], planned[key]):
            raise ConfigError(
                f"{folder}: holds a run with {key}={format_value(done[key])}, the sweep now has "
                f"{format_value(planned[key])}; choose another --out or remove that folder"
            )
    rounds = int(done.get("server.rounds", cfg.server.rounds))
    if rounds > cfg.server.rounds:
        raise ConfigError(
            f"{folder}: holds a run of {rounds} rounds, the sweep now has "
            f"{cfg.server.rounds}; choose another --out or remove that folder"
        )
    finished = (folder / SUMMARY_FILE).is_file()
    if finished and rounds == cfg.server.rounds:
        return _FINISHED
    try:
        ckpt = checkpoint.load(folder)
    except ConfigError:
        ckpt = None
    if ckpt is None:
        if finished:
            raise ConfigError(
                f"{folder}: holds a finished run of {rounds} rounds without a checkpoint to "
                f"extend to {cfg.server.rounds}; choose another --out or remove that folder"
            )
        return _STALE
    # Interrupted, or finished with fewer rounds than the sweep now asks for.
    return _RESUMABLE


def _cell(value: Any) -> Any:
    """A grid value as a CSV cell: scalars as they are, lists and tables as their label text."""
    return format_value(value) if isinstance(value, (list, tuple, dict)) else value
