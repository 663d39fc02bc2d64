"""Run an experiment end to end: ``fedsim.run(config)`` and what ``fedsim run`` calls."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim import checkpoint, rundir
from fedsim import config as config_mod
from fedsim.callbacks import Callback
from fedsim.callbacks.builtin import for_run
from fedsim.config import Config
from fedsim.experiment import Experiment, RunInterrupted, RunResult, prepare
from fedsim.loop import execute
from fedsim.metrics import read_rounds, verify_records
from fedsim.options import ConfigError, build, to_table
from fedsim.rundir import CONFIG_FILE, PARTITION_FILE, SUMMARY_FILE, default_out_dir
from fedsim.strategies.base import Strategy

__all__ = [
    "Experiment",
    "RunInterrupted",
    "RunResult",
    "default_out_dir",
    "prepare",
    "resume",
    "run",
]

#: Above this many clients, partition.csv is written only for datasets held in memory; lazily
#: generated data would have to be generated in full just to count labels.
PARTITION_CSV_LAZY_LIMIT = 20_000

OnRound = Callable[[dict[str, Any]], None] | None


def run(
    config: Config | str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    out_dir: str | Path | None = None,
    progress: bool = False,
    on_round: OnRound = None,
    resume: bool = False,
    strategy: Strategy | None = None,
    model: Any = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Run an experiment; with ``out_dir`` its records are written there as rounds finish.

    ``out_dir`` must not hold a run already, unless ``resume``: then that run is continued
    from its last checkpoint (its config must be this one, see :func:`resume`).
    ``strategy`` (a :class:`fedsim.strategies.Strategy`) replaces the configured strategy;
    ``model``, a :class:`fedsim.models.base.Model` or a torch ``nn.Module`` (its current
    parameters are the initial model), replaces the config's ``[model]`` section (not with
    ``resume``). ``callbacks`` (:class:`fedsim.callbacks.Callback`) are called at fixed points
    of the run, after the built-in ones (progress, ``on_round``, early stopping).
    """
    cfg, base_dir = config_mod.resolve(config, overrides)
    out = Path(out_dir) if out_dir is not None else None
    if cfg.experiment.kind != config_mod.HORIZONTAL:
        if callbacks:
            raise ConfigError(
                f"callbacks: a {cfg.experiment.kind!r} run takes on_round only; callbacks are "
                "called by horizontal runs"
            )
        return _run_kind(cfg, out, base_dir, progress, on_round)
    if out is not None:
        # Checked before anything is built; checked again under the folder's lock.
        if resume and rundir.folder_state(out) is rundir.FolderState.RUN:
            if model is not None:
                raise ConfigError("model: a run given a model object cannot be resumed")
            return _continue(out, cfg, base_dir, progress, on_round, overrides, strategy, callbacks)
        rundir.check_out_dir(out)
    exp = prepare(cfg, base_dir, strategy, model)
    return _execute(exp, out, None, progress, on_round, callbacks)


def resume(
    run_dir: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = False,
    on_round: OnRound = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, appending to its records.

    The rows after the checkpoint are cut off and computed again, so the records end as an
    uninterrupted run's would. ``overrides`` may change only what does not alter results
    (``server.rounds``, ``runtime.*`` but ``chunks``, ``faults.kill_worker_*``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        what = "no such folder" if not run_dir.is_dir() else f"not a run folder (no {CONFIG_FILE})"
        raise ConfigError(f"{run_dir}: {what}")
    cfg = config_mod.load(run_dir / CONFIG_FILE, list(overrides))
    if cfg.experiment.kind != config_mod.HORIZONTAL:
        raise ConfigError(
            f"experiment.kind: a {cfg.experiment.kind!r} run has no checkpoints and cannot be "
            f"resumed; run its config again into a new folder ({run_dir})"
        )
    return _continue(run_dir, cfg, None, progress, on_round, overrides, None, callbacks)


def _run_kind(
    cfg: Config,
    out: Path | None,
    base_dir: Path | None,
    progress: bool,
    on_round: OnRound,
) -> RunResult:
    """Run an experiment of a kind other than horizontal through its module.

    The module (``config.KIND_MODULES``) provides ``Options``, the dataclass of its section,
    and ``prepare(experiment, options, base_dir)``, which validates the data (ConfigError)
    and returns a job whose ``run(out, progress, on_round)`` gives (rounds, summary, model).
    The run folder (lock, config.toml, summary.json) is handled here as for horizontal runs.
    """
    kind = cfg.experiment.kind
    module = importlib.import_module(config_mod.KIND_MODULES[kind])
    options = build(module.Options, cfg.kind_table, kind)
    job = module.prepare(cfg.experiment, options, base_dir)
    cfg = config_mod.Config(experiment=cfg.experiment, kind_table=to_table(options))
    if out is not None:
        rundir.check_out_dir(out)
    t0 = time.perf_counter()
    held = None
    try:
        if out is not None:
            held = rundir.claim(out)
            rundir.write_text(out / CONFIG_FILE, config_mod.dumps_toml(cfg.to_dict()))
        rounds, summary, model = job.run(out, progress, on_round)
    finally:
        if held is not None:
            held.release()
    summary["wall_time_s"] = time.perf_counter() - t0
    if out is not None:
        rundir.write_json(out / SUMMARY_FILE, summary)
    return RunResult(cfg, rounds, None, summary, model, out)


def _continue(
    run_dir: Path,
    cfg: Config,
    base_dir: Path | None,
    progress: bool,
    on_round: OnRound,
    overrides: list[str] | tuple[str, ...] = (),
    strategy: Strategy | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    ckpt = checkpoint.load(run_dir)
    if ckpt is None:
        raise ConfigError(f"{run_dir}: has no checkpoint to resume from")
    checkpoint.check_run_state(ckpt)
    checkpoint.check_resumable(ckpt, cfg, config_mod.from_dict({}).to_dict())
    # An injected worker kill tests one start of a run; on resume it fires only if asked again,
    # so that the hint printed after too many restarts (resume) works as printed.
    if not any(o.strip().startswith("faults.kill_worker") for o in overrides):
        cfg = config_mod.replace_section(cfg, "faults", kill_worker_at_round=0, kill_worker_times=1)
    finished = ckpt.state.get("finished")
    if finished and (cfg.server.rounds == ckpt.round or finished != "rounds"):
        return _finished(run_dir, cfg, ckpt)
    if base_dir is None and ckpt.state.get("base_dir"):
        base_dir = Path(ckpt.state["base_dir"])
    exp = prepare(cfg, base_dir, strategy)
    return _execute(exp, run_dir, ckpt, progress, on_round, callbacks)


def _finished(run_dir: Path, cfg: Config, ckpt: checkpoint.Checkpoint) -> RunResult:
    """The result of a run that already finished, read from its folder; nothing is written."""
    import json

    lock = rundir.RunLock(run_dir)  # a run still writing there is not read half-way
    try:
        verify_records(run_dir, ckpt.state["records"], ckpt.state.get("records_sha256", {}))
        try:
            summary = json.loads((run_dir / SUMMARY_FILE).read_text())
            rounds = read_rounds(run_dir / rundir.ROUNDS_FILE)
            clients_file = run_dir / rundir.CLIENTS_FILE
            clients = pd.read_csv(clients_file) if clients_file.exists() else None
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise ConfigError(f"{run_dir}: finished run with unreadable records ({err})") from None
    finally:
        lock.close()
    if len(rounds) != ckpt.round or not isinstance(summary, dict):
        raise ConfigError(
            f"{run_dir}: finished run whose records do not match its checkpoint "
            f"({len(rounds)} rows in {rundir.ROUNDS_FILE}, checkpoint of round {ckpt.round})"
        )
    w = np.asarray(ckpt.state["server"]["w"])
    return RunResult(cfg, rounds, clients, summary, w, run_dir, unchanged=True)


def _execute(
    exp: Experiment,
    out: Path | None,
    ckpt: checkpoint.Checkpoint | None,
    progress: bool,
    on_round: OnRound,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Run (or continue from ``ckpt``) the rounds of a validated experiment."""
    return execute(
        exp, out, ckpt, for_run(exp.cfg, out, progress, on_round, callbacks), _write_partition
    )


def _write_partition(exp: Experiment, out: Path) -> None:
    ds = exp.dataset
    if getattr(ds, "lazy", False) and ds.num_clients > PARTITION_CSV_LAZY_LIMIT:
        return
    ids = np.arange(ds.num_clients)
    counts = ds.label_counts(ids)
    frame = pd.DataFrame({"client_id": ids, "num_samples": ds.client_sizes()})
    for label in range(ds.num_classes):
        frame[f"label_{label}"] = counts[:, label]
    rundir.write_text(out / PARTITION_FILE, frame.to_csv(index=False, lineterminator="\n"))
