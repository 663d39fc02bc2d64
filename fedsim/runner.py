"""Run an experiment end to end: ``fedsim.run(config)`` and what ``fedsim run`` calls."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
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

from fedsim import checkpoint
from fedsim import config as config_mod
from fedsim.aggregators.base import Aggregator
from fedsim.aggregators.robust import per_client_mean
from fedsim.config import Config
from fedsim.data import FederatedDataset, build_dataset
from fedsim.data.noisy import NoisyLabels
from fedsim.faults import ClientFaults
from fedsim.metrics import Recorder, write_json, write_text
from fedsim.models.base import Model
from fedsim.options import ConfigError
from fedsim.population import Population
from fedsim.privacy.rounds import round_accountant
from fedsim.registry import AGGREGATORS, MODELS, STRATEGIES
from fedsim.runtime.errors import RunError, WorkerFailedError
from fedsim.runtime.executors import LocalExecutor
from fedsim.runtime.server import RoundResult, Server, ServerActor
from fedsim.runtime.work import TrainSpec
from fedsim.strategies.base import Strategy

CONFIG_FILE = "config.toml"

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
    cfg: Config, base_dir: Path | None = None, strategy: Strategy | None = None
) -> Experiment:
    """Build dataset, model, strategy and population; raises ConfigError on bad input.

    ``strategy`` replaces the configured one (the Python API's ``run(cfg, strategy=...)``).
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
    model = MODELS.get(cfg.model.name).factory(
        cfg.model.options, dataset.input_shape, dataset.num_classes
    )
    if strategy is None:
        strategy = STRATEGIES.get(cfg.strategy.name).factory(cfg.strategy.options)
    _check_strategy(strategy, "strategy.name")
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


def default_out_dir(cfg: Config, root: Path = Path("results")) -> Path:
    """``results/<experiment>/<timestamp>-<config hash>``, unique."""
    digest = hashlib.sha1(
        json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()
    ).hexdigest()[:6]
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{digest}"
    path = root / cfg.experiment.name / stem
    i = 1
    while path.exists():
        path = root / cfg.experiment.name / f"{stem}-{i}"
        i += 1
    return path


def train_spec(cfg: Config, strategy: Strategy, aggregator: Aggregator | None = None) -> TrainSpec:
    faults = ClientFaults.from_config(cfg.faults, cfg.experiment.seed, cfg.population.num_clients)
    return TrainSpec(
        seed=cfg.experiment.seed,
        client=strategy.client,
        streaming=aggregator is None or aggregator.streaming,
        max_update_norm=cfg.server.max_update_norm,
        nan_update_rate=cfg.faults.nan_update_rate,
        faults=faults if faults.byzantine.any() else None,
    )


def use_loopback_for_local_ray() -> None:
    """Make a Ray instance started from this process listen on 127.0.0.1 only.

    On Linux Ray otherwise registers its nodes under the machine's network address; a local
    simulation has no reason to use anything but loopback. Ray reads the switch from the
    environment (inherited by its own processes) and from a module constant in this process.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def ensure_ray(address: str = "") -> None:
    """Connect to ``address`` or start a local, loopback-only Ray instance, unless one runs."""
    if not address:
        use_loopback_for_local_ray()
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    if address:
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as err:
            raise ConfigError(f"runtime.address: cannot connect to {address!r} ({err})") from None
    else:
        # "local": always a new instance, never a cluster that happens to run on this machine.
        # Ray runs its workers at niceness 15 by default, so on a shared machine training
        # yielded to any other process (two workers measured no faster than one): use 0.
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 1,
            _system_config={"worker_niceness": 0},
            **kwargs,
        )


class _Session:
    """A backend-independent handle on a running server: ``round()`` and ``model()``."""

    def __init__(self, exp: Experiment) -> None:
        cfg = exp.cfg
        spec = train_spec(cfg, exp.strategy, exp.aggregator)
        self.backend = cfg.runtime.backend
        if self.backend == "local":
            executor = LocalExecutor(exp.model, exp.dataset, spec)
            self.server = Server(
                cfg,
                exp.dataset,
                exp.model,
                exp.strategy,
                exp.population,
                executor,
                exp.aggregator,
            )
            self.num_workers = 1
            return
        import ray

        ensure_ray(cfg.runtime.address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
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
) -> RunResult:
    """Run an experiment; with ``out_dir`` its records are written there as rounds finish.

    ``out_dir`` must not hold a run already, unless ``resume``: then that run is continued
    from its last checkpoint (its config must be this one, see :func:`resume`).
    ``strategy`` (a :class:`fedsim.strategies.Strategy`) replaces the configured strategy.
    """
    base_dir = None
    if isinstance(config, str | Path):
        base_dir = Path(config).resolve().parent
        cfg = config_mod.load(config, list(overrides))
    else:
        cfg = config_mod.with_overrides(config, list(overrides)) if overrides else config
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and (out / CONFIG_FILE).exists():
        if not resume:
            raise ConfigError(
                f"{out}: already holds a run; continue it with fedsim run --resume {out}, "
                "or choose another output folder"
            )
        return _continue(out, cfg, base_dir, progress, on_round, strategy)
    exp = prepare(cfg, base_dir, strategy)
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
    return _continue(run_dir, cfg, None, progress, on_round)


def _continue(
    run_dir: Path,
    cfg: Config,
    base_dir: Path | None,
    progress: bool,
    on_round: Callable[[dict[str, Any]], None] | None,
    strategy: Strategy | None = None,
) -> RunResult:
    ckpt = checkpoint.load(run_dir)
    if ckpt is None:
        raise ConfigError(f"{run_dir}: has no checkpoint to resume from")
    checkpoint.check_resumable(ckpt, cfg, config_mod.from_dict({}).to_dict())
    if base_dir is None and ckpt.state.get("base_dir"):
        base_dir = Path(ckpt.state["base_dir"])
    return _execute(prepare(cfg, base_dir, strategy), run_dir, ckpt, progress, on_round)


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
    bar = lock = None
    reopened = False
    try:
        if out is not None:
            lock = checkpoint.RunLock(out)
        if ckpt is None:
            recorder = Recorder(out)
            if out is not None:
                _start_run_dir(exp, out)
        else:
            assert out is not None
            session.load_state_dict(ckpt.state["server"])
            recorder = Recorder.reopen(out, ckpt.state["records"])
            reopened = True
            write_text(out / CONFIG_FILE, config_mod.dumps_toml(cfg.to_dict()))
            if not (out / "partition.csv").exists():
                _write_partition(exp, out)

        def save() -> None:
            if out is None:
                return
            recorder.sync()
            state = {
                "round": done,
                "server": session.state_dict(),
                "records": dict(recorder.offsets),
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
                write_text(out / CONFIG_FILE, config_mod.dumps_toml(cfg.to_dict()))
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
        if saved < done:
            save()
        w = session.model()
        nodes = session.nodes()
        restarts = history["restarts"] + session.worker_restarts()
    finally:
        if bar is not None:
            bar.close()
        if lock is not None:
            lock.close()
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
        write_json(out / "summary.json", summary)
    return RunResult(cfg, rounds, recorder.clients_frame(), summary, w, out)


def _start_run_dir(exp: Experiment, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Leftovers of a start killed before config.toml was written are not part of this run.
    for name in ("rounds.csv", "clients.csv"):
        (out / name).unlink(missing_ok=True)
    _write_partition(exp, out)


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
    tmp = out / ".partition.csv.tmp"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out / "partition.csv")


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
        "sim_time_s": float(rounds["sim_time_s"].iloc[-1]) if len(rounds) else 0.0,
        "bytes_up_total": int(rounds["bytes_up"].sum()),
        "bytes_down_total": int(rounds["bytes_down"].sum()),
        "rejected_updates": int(rounds["rejected"].sum()) if len(rounds) else 0,
        "wall_time_s": wall,
        "backend": exp.cfg.runtime.backend,
        "workers": workers,
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
