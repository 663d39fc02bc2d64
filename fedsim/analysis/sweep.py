"""Parameter sweeps: the cartesian product of config values, times seeds, run one after another.

Every run of a sweep gets its own folder under the sweep folder, named after its grid values
and seed (``strategy.name=fedprox,server.clients_per_round=20,seed=1``). A run counts as
finished when its folder has ``summary.json``, which a run writes last; running the same sweep
again skips finished runs and resumes an interrupted one from its checkpoint, so an interrupted
sweep is continued by repeating its command. All runs share the Python process, hence one Ray
instance, unless ``jobs`` runs several at a time in worker processes. Grid parsing, named
points, run names and validation before running are in :mod:`fedsim.analysis.sweep_plan`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
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
    SweepPoint,
    SweepRun,
    build_runs,
    parse_grid,
    plan_sweep,
    run_name,
    same_value,
    split_values,
)
from fedsim.config import Config
from fedsim.options import ConfigError
from fedsim.rundir import DIVERGED_FILE

__all__ = [
    "DIVERGED_FILE",
    "GridAxis",
    "RunOutcome",
    "SweepPoint",
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
class RunOutcome:
    """One run of a finished sweep: the plan, its folder, its summary and whether it diverged.

    ``summary`` is the run's ``summary.json`` (empty when it diverged); ``diverged_at`` the
    round it diverged at (0 when it did not); ``model`` its final model when the sweep was asked
    to keep models and the run ran in this call (None otherwise).
    """

    run: SweepRun
    folder: Path
    summary: dict[str, Any]
    diverged_at: int = 0
    model: Any = field(default=None, repr=False)

    @property
    def values(self) -> dict[str, Any]:
        """The run's grid values, or its point's values."""
        return self.run.values

    @property
    def rounds(self) -> pd.DataFrame:
        """The run's ``rounds.csv``."""
        return pd.read_csv(self.folder / ROUNDS_FILE)


@dataclass
class SweepResult:
    """A finished sweep: its folder, the ``sweep.csv`` table and the run folders in order."""

    out_dir: Path
    table: pd.DataFrame
    run_dirs: list[Path]
    ran: int
    skipped: int
    comparison: str
    runs: list[RunOutcome] = field(default_factory=list)


def default_sweep_dir(cfg: Config, root: Path = Path("results")) -> Path:
    """``results/<experiment>-sweep``."""
    return root / f"{cfg.experiment.name}-sweep"


def sweep(
    config: Config | str | Path,
    grid: Sequence[str] | Sequence[GridAxis] = (),
    *,
    points: Sequence[SweepPoint] | None = None,
    overrides: Sequence[str] = (),
    seeds: int = 1,
    out_dir: str | Path | None = None,
    progress: bool = False,
    target: float | None = None,
    plots: bool = True,
    tables: bool = True,
    jobs: int = 1,
    build: bool = True,
    fresh: bool = False,
    models: bool = False,
    log: Callable[[str], None] | None = print,
) -> SweepResult:
    """Run every configuration of a grid (times ``seeds``) and summarise them.

    Writes each run into ``out_dir/<run name>/`` with ``fedsim.run``. Runs finished there
    before are skipped, an interrupted run is resumed from its checkpoint (or rerun when it has
    none), and a run that diverges is recorded as such while the sweep goes on. Then writes
    ``sweep.csv`` (one row per run: grid values, seed, status, final and best accuracy, bytes,
    simulated and wall time, run folder), ``comparison.csv``/``comparison.md`` and, with
    ``plots``, the comparison figures in ``out_dir/plots``; without ``tables``, none of these
    (a script that writes its own). ``points`` replaces the grid by named runs
    (:class:`SweepPoint`); ``jobs`` > 1 runs that many at a time, each in its own process (give
    them ``runtime.backend = "local"``); with ``build``, every setting still to run is built
    first (:func:`build_runs`); ``fresh`` runs every run again (its old folder removed) and
    ``models`` keeps each final model in the result, for tables that score the models.
    ``log`` receives one line per run. The result's ``runs`` hold each run's summary and folder.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs: must be >= 1, got {jobs}")
    runs = plan_sweep(config, grid, points=points, overrides=overrides, seeds=seeds, build=False)
    if out_dir is None:
        # Named after the base config: the grid may change experiment.name itself.
        base = config if isinstance(config, Config) else config_mod.load(config, list(overrides))
        out = default_sweep_dir(base)
    else:
        out = Path(out_dir)
    # Every folder is checked before the first run starts, so a mismatch stops nothing midway.
    states = [
        _STALE
        if fresh and (out / r.name / CONFIG_FILE).is_file()
        else _folder_state(out / r.name, r.config)
        for r in runs
    ]
    if build:
        build_runs([r for r, state in zip(runs, states, strict=True) if state != _FINISHED])
    say = log or (lambda _: None)
    finals = _run_all(runs, states, out, overrides, progress, models, jobs, say)
    outcomes = [_outcome(r, out / r.name, finals.get(r.index)) for r in runs]
    ran, total = len(finals), len(runs)
    if not tables:
        return SweepResult(out, pd.DataFrame(), [o.folder for o in outcomes], ran, total - ran,
                           "", outcomes)  # fmt: skip

    from fedsim.analysis.compare import compare_runs, write_comparison

    run_dirs = [out / r.name for r in runs]
    # A run that diverged before its first round has no records to compare or plot.
    recorded = [d for d in run_dirs if (d / ROUNDS_FILE).is_file()]
    comparison = compare_runs(recorded, target=target)
    status = {o.run.index: f"diverged at round {o.diverged_at}" for o in outcomes if o.diverged_at}
    table = _sweep_table(runs, run_dirs, comparison, status)
    table.to_csv(out / SWEEP_FILE, index=False)
    text = write_comparison(comparison, out)
    if plots and recorded:
        from fedsim.analysis.plots import plot_runs

        plot_runs(recorded, out / "plots")
    return SweepResult(out, table, run_dirs, ran, total - ran, text, outcomes)


def _run_all(
    runs: Sequence[SweepRun],
    states: Sequence[str],
    out: Path,
    overrides: Sequence[str],
    progress: bool,
    models: bool,
    jobs: int,
    say: Callable[[str], None],
) -> dict[int, Any]:
    """Run every run not finished before (``jobs`` at a time); each ran run's index -> its
    final model (None unless ``models``)."""
    todo = []
    for r, state in zip(runs, states, strict=True):
        if state == _FINISHED:
            say(f"run {r.index}/{len(runs)}: {r.name}: finished before, skipped")
            continue
        if state == _STALE:
            # Left by a run killed before it wrote its config: nothing in it can be reused.
            shutil.rmtree(out / r.name)
        resume = state == _RESUMABLE
        todo.append((r, tuple(overrides), out / r.name, resume, progress, models))
    finals: dict[int, Any] = {}
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 and len(todo) > 1 else None
    try:
        done = pool.map(_run_one, todo) if pool else map(_run_one, todo)
        for job, (line, model) in zip(todo, done, strict=True):
            say(f"run {job[0].index}/{len(runs)}: {job[0].name}: {line}")
            finals[job[0].index] = model
    finally:
        if pool:
            pool.shutdown()
    return finals


def _run_one(job: tuple[Any, ...]) -> tuple[str, Any]:
    """Run one planned run into its folder: the line to log and (if asked) the final model.

    A divergence is recorded in the folder.
    """
    from fedsim.errors import DivergedError
    from fedsim.runner import run

    r, overrides, folder, resume, progress, keep = job
    show = progress and r.config.runtime.progress
    t0 = time.perf_counter()
    try:
        if r.source is None:
            result = run(r.config, out_dir=folder, progress=show, resume=resume)
        else:
            # The file itself, not the loaded config: relative paths in it are relative to it.
            result = run(
                r.source,
                overrides=[*overrides, *r.overrides],
                out_dir=folder,
                progress=show,
                resume=resume,
            )
    except DivergedError as err:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DIVERGED_FILE).write_text(json.dumps({"round": err.round, "message": str(err)}))
        return f"{err}, {time.perf_counter() - t0:.1f} s", None
    acc = result.summary.get("final_test_accuracy", math.nan)
    resumed = " (resumed)" if resume else ""
    line = f"final acc {acc:.4f}, {time.perf_counter() - t0:.1f} s{resumed}"
    return line, result.model if keep else None


def _outcome(r: SweepRun, folder: Path, model: Any) -> RunOutcome:
    if (folder / DIVERGED_FILE).is_file():
        at = int(json.loads((folder / DIVERGED_FILE).read_text())["round"])
        return RunOutcome(r, folder, {}, at)
    return RunOutcome(r, folder, json.loads((folder / SUMMARY_FILE).read_text()), 0, model)


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

    diverged = (folder / DIVERGED_FILE).is_file()
    ended = diverged or (folder / SUMMARY_FILE).is_file()
    # A finished run copied without its checkpoint folder (as results are committed) has no
    # lock; its config and summary are all a sweep needs to skip it.
    if not (ended and (folder / CONFIG_FILE).is_file()):
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
    if diverged or (finished and (rounds == cfg.server.rounds or _stopped_early(folder))):
        return _FINISHED
    rundir.check_out_dir(folder, resume=True)
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


def _stopped_early(folder: Path) -> bool:
    """Whether a finished run stopped before its round cap on its own (a target reached):
    raising the cap would not change it."""
    try:
        reason = json.loads((folder / SUMMARY_FILE).read_text()).get("stop_reason", "rounds")
    except (OSError, ValueError):
        return False
    return reason not in ("rounds", None)


def _cell(value: Any) -> Any:
    """A grid value as a CSV cell: scalars as they are, lists and tables as their label text."""
    return format_value(value) if isinstance(value, (list, tuple, dict)) else value
