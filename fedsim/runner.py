"""Run an experiment end to end: ``fedsim.run(config)`` and what ``fedsim run`` calls."""

from __future__ import annotations

import asyncio
import importlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim import checkpoint, memory, rundir
from fedsim import config as config_mod
from fedsim.aggregators.base import Aggregator
from fedsim.aggregators.robust import per_client_mean
from fedsim.config import Config
from fedsim.data import FederatedDataset, build_dataset
from fedsim.data.noisy import NoisyLabels
from fedsim.errors import RunError, WorkerFailedError
from fedsim.faults import ClientFaults
from fedsim.metrics import Recorder, read_rounds, verify_records
from fedsim.models.base import Model
from fedsim.models.torch_models import as_model, on_device
from fedsim.options import ConfigError, build, to_table
from fedsim.pipeline.compression import upload_stages
from fedsim.population import Population
from fedsim.privacy.rounds import round_accountant
from fedsim.provenance import provenance
from fedsim.registry import AGGREGATORS, MODELS, STRATEGIES
from fedsim.rundir import CONFIG_FILE, PARTITION_FILE, SUMMARY_FILE, default_out_dir
from fedsim.runtime.asynchronous import check_strategy
from fedsim.runtime.executors import LocalExecutor
from fedsim.runtime.ray_start import ensure_ray
from fedsim.runtime.server import RoundResult, ServerActor, server_class
from fedsim.runtime.work import train_spec
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


@dataclass
class RunResult:
    """What a run produced: per-round and per-client records, summary, final model."""

    config: Config
    rounds: pd.DataFrame
    clients: pd.DataFrame | None
    summary: dict[str, Any]
    model: np.ndarray
    out_dir: Path | None
    #: True when resuming found the run already finished: nothing was run or written.
    unchanged: bool = False


class RunInterrupted(KeyboardInterrupt):  # noqa: N818  (it is a KeyboardInterrupt)
    """Ctrl-C or SIGTERM stopped the run after ``round``; ``out_dir`` holds its checkpoint."""

    def __init__(self, round_: int, rounds: int, out_dir: Path | None) -> None:
        super().__init__(f"stopped after round {round_} of {rounds}")
        self.round, self.rounds, self.out_dir = round_, rounds, out_dir


@dataclass
class Experiment:
    """The validated pieces of a run, built before anything is written or started."""

    cfg: Config
    dataset: FederatedDataset
    model: Model
    strategy: Strategy
    population: Population
    aggregator: Aggregator
    base_dir: Path | None = None


def prepare(
    cfg: Config,
    base_dir: Path | None = None,
    strategy: Strategy | None = None,
    model: Any = None,
) -> Experiment:
    """Build dataset, model, strategy and population; raises ConfigError on bad input.

    ``strategy`` replaces the configured one (the Python API's ``run(cfg, strategy=...)``);
    ``model`` (a :class:`Model` or a torch ``nn.Module``) replaces the ``[model]`` section.
    """
    dataset = build_dataset(
        cfg.data, cfg.partition, cfg.population.num_clients, cfg.experiment.seed
    )
    faults = ClientFaults.from_config(cfg.faults, cfg.experiment.seed, dataset.num_clients)
    if faults.noisy.any():
        task = getattr(dataset, "task", "classification")
        if task != "classification":
            raise ConfigError(
                f"faults.label_noise: replaces class labels; dataset {cfg.data.name!r} is a "
                f"{task} set"
            )
        dataset = NoisyLabels(dataset, faults.noisy, cfg.faults.label_noise, cfg.experiment.seed)
    shape, classes = dataset.input_shape, dataset.num_classes
    if model is None:
        # Checked on the options first: a classifier cannot even be built for 0 classes.
        _check_task(cfg, dataset, getattr(cfg.model.options, "task", None))
        model = MODELS.get(cfg.model.name).factory(cfg.model.options, shape, classes)
    model = on_device(as_model(model, shape, classes, "model"), cfg.runtime.device)
    memory.check_model(cfg, model)
    _check_task(cfg, dataset, getattr(model, "task", "classification"))
    if strategy is None:
        strategy = STRATEGIES.get(cfg.strategy.name).factory(cfg.strategy.options)
    _check_strategy(strategy, "strategy.name")
    if cfg.server.mode == "async":
        check_strategy(strategy, cfg.strategy.name)
    aggregator = AGGREGATORS.get(cfg.aggregator.name).factory(cfg.aggregator.options)
    if not isinstance(aggregator, Aggregator):
        raise ConfigError(f"aggregator.name: {cfg.aggregator.name!r} did not make an Aggregator")
    private = cfg.privacy.enabled or cfg.privacy.secure_aggregation
    if private and strategy.client.payloads:
        raise ConfigError(
            f"strategy.name: {cfg.strategy.name!r} uploads {', '.join(strategy.client.payloads)} "
            "beside the update, which [privacy] does not protect; use it without privacy"
        )
    if private and not aggregator.streaming:
        raise ConfigError(
            f"aggregator.name: {cfg.aggregator.name!r} needs each client's update, which "
            "[privacy] hides (DP clips and noises the sum; secure aggregation reveals only "
            "the sum); use aggregator.name = 'mean'"
        )
    if faults.server_side:
        if private:
            raise ConfigError(
                f"faults.byzantine_attack: {cfg.faults.byzantine_attack!r} crafts its update "
                "from the round's other updates, which [privacy] hides; use another attack"
            )
        if aggregator.streaming:  # the attacker needs every update: the mean from them too
            aggregator = per_client_mean()
    population = Population(cfg.population, cfg.experiment.seed, base_dir)
    return Experiment(cfg, dataset, model, strategy, population, aggregator, base_dir)


def _check_strategy(strategy: Any, key: str) -> None:
    if not isinstance(strategy, Strategy):
        raise ConfigError(
            f"{key}: made a {type(strategy).__name__}, not a fedsim Strategy "
            "(subclass fedsim.strategies.Strategy)"
        )


def _check_task(cfg: Config, dataset: FederatedDataset, task: str | None) -> None:
    """The model learns what the dataset holds; accuracy-only keys need classification."""
    if task is None:
        return
    if task != dataset.task:
        raise ConfigError(
            f"model.task: dataset {cfg.data.name!r} is a {dataset.task} set, the model does "
            f"{task}; set model.task = {dataset.task!r} (softmax and mlp have it)"
        )
    if task == "regression":
        for key, value in (
            ("client_eval_every", cfg.server.client_eval_every),
            ("target_accuracy", cfg.server.target_accuracy),
        ):
            if value:
                raise ConfigError(f"server.{key}: measures accuracy, a regression run has none")


class _Session:
    """A backend-independent handle on a running server: ``round()`` and ``model()``."""

    def __init__(self, exp: Experiment) -> None:
        cfg = exp.cfg
        spec = train_spec(cfg, exp.strategy, exp.aggregator)
        stages = upload_stages(cfg.compression)
        self.backend = cfg.runtime.backend
        if self.backend == "local":
            executor = LocalExecutor(exp.model, exp.dataset, spec)
            self.server = server_class(cfg)(
                cfg,
                exp.dataset,
                exp.model,
                exp.strategy,
                exp.population,
                executor,
                exp.aggregator,
                stages,
            )
            self.num_workers = 1
            return
        import ray

        ensure_ray(cfg.runtime.address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if cfg.runtime.workers > cpus:
            # Each worker holds one CPU: the ones beyond the cluster's would wait forever.
            raise ConfigError(
                f"runtime.workers: {cfg.runtime.workers} workers need as many CPUs; the Ray "
                f"cluster has {cpus}"
            )
        self.num_workers = cfg.runtime.workers or max(1, cpus)
        data_ref = ray.put(exp.dataset)
        actor = ray.remote(num_cpus=0)(ServerActor)
        self.actor = actor.remote(
            cfg,
            data_ref,
            [data_ref],
            spec,
            exp.model,
            exp.strategy,
            exp.population,
            self.num_workers,
            exp.aggregator,
            stages,
        )

    def round(self) -> RoundResult:
        if self.backend == "local":
            return asyncio.run(self.server.run_round())
        import ray

        try:
            out = ray.get(self.actor.run_round.remote())
        except ray.exceptions.RayActorError as err:
            raise RunError(0, f"the server actor died ({_first_line(err)})") from None
        if isinstance(out, RunError):
            raise out
        return out

    def _call(self, method: str, *args: Any) -> Any:
        if self.backend == "local":
            return getattr(self.server, method)(*args)
        import ray

        return ray.get(getattr(self.actor, method).remote(*args))

    def model(self) -> np.ndarray:
        return self._call("get_model")

    def state_dict(self) -> dict[str, Any]:
        return self._call("state_dict")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._call("load_state_dict", state)

    def worker_restarts(self) -> int:
        return 0 if self.backend == "local" else self._call("worker_restarts")

    def nodes(self) -> int:
        """How many machines (Ray nodes) the training workers run on."""
        return 1 if self.backend == "local" else len(set(self._call("worker_nodes")))

    def worker_pids(self) -> list[int]:
        return [os.getpid()] if self.backend == "local" else self._call("worker_pids")

    def close(self) -> None:
        if self.backend == "local":
            return
        import ray

        try:
            ray.get(self.actor.shutdown.remote())
        except ray.exceptions.RayError:
            pass  # already gone; closing must not hide why the run stopped
        finally:
            ray.kill(self.actor)


def run(
    config: Config | str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    out_dir: str | Path | None = None,
    progress: bool = False,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    strategy: Strategy | None = None,
    model: Any = None,
) -> RunResult:
    """Run an experiment; with ``out_dir`` its records are written there as rounds finish.

    ``out_dir`` must not hold a run already, unless ``resume``: then that run is continued
    from its last checkpoint (its config must be this one, see :func:`resume`).
    ``strategy`` (a :class:`fedsim.strategies.Strategy`) replaces the configured strategy;
    ``model``, a :class:`fedsim.models.base.Model` or a torch ``nn.Module`` (its current
    parameters are the initial model), replaces the config's ``[model]`` section (not with
    ``resume``).
    """
    cfg, base_dir = config_mod.resolve(config, overrides)
    out = Path(out_dir) if out_dir is not None else None
    if cfg.experiment.kind != config_mod.HORIZONTAL:
        return _run_kind(cfg, out, base_dir, progress, on_round)
    if out is not None:
        # Checked before anything is built; checked again under the folder's lock.
        if resume and rundir.folder_state(out) is rundir.FolderState.RUN:
            if model is not None:
                raise ConfigError("model: a run given a model object cannot be resumed")
            return _continue(out, cfg, base_dir, progress, on_round, overrides, strategy)
        rundir.check_out_dir(out)
    exp = prepare(cfg, base_dir, strategy, model)
    return _execute(exp, out, None, progress, on_round)


def resume(
    run_dir: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = False,
    on_round: Callable[[dict[str, Any]], None] | None = None,
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
    return _continue(run_dir, cfg, None, progress, on_round, overrides)


def _run_kind(
    cfg: Config,
    out: Path | None,
    base_dir: Path | None,
    progress: bool,
    on_round: Callable[[dict[str, Any]], None] | None,
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
    on_round: Callable[[dict[str, Any]], None] | None,
    overrides: list[str] | tuple[str, ...] = (),
    strategy: Strategy | None = None,
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
    return _execute(prepare(cfg, base_dir, strategy), run_dir, ckpt, progress, on_round)


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
    on_round: Callable[[dict[str, Any]], None] | None,
) -> RunResult:
    """Run (or continue from ``ckpt``) the rounds of a validated experiment."""
    cfg = exp.cfg
    t0 = time.perf_counter()
    history: dict[str, Any] = {"wall_time_s": 0.0, "resumed_from_rounds": [], "restarts": 0}
    if ckpt is not None:
        history = {k: ckpt.state["history"][k] for k in history}
        history["resumed_from_rounds"] = [*history["resumed_from_rounds"], ckpt.round]
    # Ray is started (or reached) before anything is written, so a bad address leaves no folder.
    session = _Session(exp)
    bar = held = None
    reopened = False
    try:
        if out is not None:
            held = rundir.claim(out, resume=ckpt is not None)
        if ckpt is None:
            recorder = Recorder(out)
            if out is not None:
                _write_partition(exp, out)
        else:
            assert out is not None
            ckpt = _same_checkpoint(out, ckpt)
            session.load_state_dict(ckpt.state["server"])
            recorder = Recorder.reopen(
                out, ckpt.state["records"], digests=ckpt.state.get("records_sha256", {})
            )
            reopened = True
            rundir.write_text(out / CONFIG_FILE, config_mod.dumps_toml(cfg.to_dict()))
            if not (out / PARTITION_FILE).exists():
                _write_partition(exp, out)

        def save(finished: str | None = None) -> None:
            if out is None:
                return
            recorder.sync()
            state = {
                "round": done,
                "finished": finished,
                "server": session.state_dict(),
                "records": dict(recorder.offsets),
                "records_sha256": recorder.digests(),
                "config": cfg.to_dict(),
                "base_dir": str(exp.base_dir) if exp.base_dir is not None else None,
                "history": {
                    **history,
                    "wall_time_s": history["wall_time_s"] + time.perf_counter() - t0,
                    "restarts": history["restarts"] + session.worker_restarts(),
                },
            }
            checkpoint.save(out, state)

        done = ckpt.round if ckpt is not None else 0
        if ckpt is None or reopened:
            # On resume too: reopening may have rewritten the records (new columns), so the
            # checkpoint must count their bytes as they are now.
            save()
            # config.toml last: a folder holding it always holds a checkpoint as well.
            if out is not None:
                rundir.write_text(out / CONFIG_FILE, config_mod.dumps_toml(cfg.to_dict()))
        saved = done
        stop_reason = "rounds"
        budget = round_accountant(
            cfg.privacy, cfg.population.num_clients, cfg.server.clients_per_round
        )
        bar = _progress_bar(cfg, progress, done)
        every = cfg.runtime.checkpoint_every
        with _StopSignals() as stop:
            while done < cfg.server.rounds:
                # The first round whose epsilon would exceed privacy.target_epsilon is not run.
                if budget is not None and not budget.allows(done + 1):
                    stop_reason = "target_epsilon"
                    break
                try:
                    result = session.round()
                except WorkerFailedError:
                    # The server state is still that of the last completed round.
                    if saved < done:
                        save()
                    raise
                recorder.add(result.record, result.clients)
                done = int(result.record["round"])
                if bar is not None:
                    _update_bar(bar, result.record, recorder)
                if on_round is not None:
                    on_round(result.record)
                target = cfg.server.target_accuracy
                reached = bool(target) and result.record["test_accuracy"] >= target
                last = done == cfg.server.rounds or reached
                if (every and done % every == 0) or last or stop.requested:
                    save()
                    saved = done
                if stop.requested and not last:
                    raise RunInterrupted(done, cfg.server.rounds, out)
                if reached:
                    stop_reason = "target_accuracy"
                    break
        # The last checkpoint says the run finished, so resuming it changes nothing.
        save(stop_reason)
        w = session.model()
        nodes = session.nodes()
        restarts = history["restarts"] + session.worker_restarts()
    finally:
        if bar is not None:
            bar.close()
        if held is not None:
            held.release()
        session.close()
    rounds = recorder.rounds_frame()
    wall = history["wall_time_s"] + time.perf_counter() - t0
    summary = _summary(exp, rounds, wall, session.num_workers)
    summary.update(
        nodes=nodes,
        worker_restarts=restarts,
        resumed_from_rounds=history["resumed_from_rounds"],
        stop_reason=stop_reason,
    )
    if cfg.privacy.enabled:
        eps = rounds["epsilon"].iloc[-1] if len(rounds) else 0.0
        summary.update(epsilon=float(eps), delta=cfg.privacy.delta)
    if cfg.privacy.secure_aggregation:
        summary["aborted_rounds"] = int(rounds["aborted"].sum()) if len(rounds) else 0
    if out is not None:
        rundir.write_json(out / SUMMARY_FILE, summary)
    return RunResult(cfg, rounds, recorder.clients_frame(), summary, w, out)


def _same_checkpoint(out: Path, ckpt: checkpoint.Checkpoint) -> checkpoint.Checkpoint:
    """The checkpoint read again under the folder's lock: it must be the one checked before."""
    now = checkpoint.load(out)
    if now is None or now.round != ckpt.round:
        raise ConfigError(
            f"{checkpoint.state_path(out)}: changed while this run was starting; run again"
        )
    return now


class _StopSignals:
    """Ctrl-C or SIGTERM asks the run to stop after the current round (with a checkpoint).

    A second Ctrl-C stops at once. Signal handlers can be set only from the main thread;
    elsewhere the signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nfedsim: stopping after the current round (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


def _summary(exp: Experiment, rounds: pd.DataFrame, wall: float, workers: int) -> dict[str, Any]:
    evaluated = rounds.dropna(subset=["test_accuracy"])
    last = evaluated.iloc[-1] if len(evaluated) else None
    return {
        "experiment": exp.cfg.experiment.name,
        "seed": exp.cfg.experiment.seed,
        "num_parameters": exp.model.num_parameters,
        "model_bytes": exp.model.model_bytes,
        "rounds": len(rounds),
        "failed_rounds": int(rounds["failed"].sum()) if len(rounds) else 0,
        "final_test_accuracy": float(last["test_accuracy"]) if last is not None else math.nan,
        "final_test_loss": float(last["test_loss"]) if last is not None else math.nan,
        **_final_regression_scores(rounds, exp.model),
        "sim_time_s": float(rounds["sim_time_s"].iloc[-1]) if len(rounds) else 0.0,
        "bytes_up_total": int(rounds["bytes_up"].sum()),
        "bytes_down_total": int(rounds["bytes_down"].sum()),
        "rejected_updates": int(rounds["rejected"].sum()) if len(rounds) else 0,
        "wall_time_s": wall,
        "backend": exp.cfg.runtime.backend,
        "workers": workers,
        "provenance": provenance(),
    }


def _final_regression_scores(rounds: pd.DataFrame, model: Model) -> dict[str, float]:
    """``final_test_mae`` and ``final_test_rmse`` of a regression run (last evaluated round)."""
    if getattr(model, "task", "classification") != "regression":
        return {}
    evaluated = rounds.dropna(subset=["test_rmse"])
    last = evaluated.iloc[-1] if len(evaluated) else None
    return {
        f"final_{k}": float(last[k]) if last is not None else math.nan
        for k in ("test_mae", "test_rmse")
    }


def _progress_bar(cfg: Config, enabled: bool, done: int = 0) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=cfg.server.rounds,
        initial=done,
        desc=cfg.experiment.name,
        unit="round",
        dynamic_ncols=True,
    )


def _update_bar(bar: Any, record: dict[str, Any], recorder: Recorder) -> None:
    acc = next(
        (
            r["test_accuracy"]
            for r in reversed(recorder.rounds)
            if not math.isnan(r["test_accuracy"])
        ),
        math.nan,
    )
    bar.set_postfix_str(
        f"acc={acc:.3f} sim={_fmt_time(record['sim_time_s'])} "
        f"bytes={_fmt_bytes(record['cum_bytes'])}",
        refresh=False,
    )
    bar.update(1)


def _fmt_time(s: float) -> str:
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if b < 1000:
            return f"{b:.1f}{unit}"
        b /= 1000
    return f"{b:.1f}TB"
