"""Run an experiment end to end: ``fedsim.run(config)`` and what ``fedsim run`` calls."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim import config as config_mod
from fedsim.config import Config
from fedsim.data import FederatedDataset, build_dataset
from fedsim.metrics import Recorder, write_json, write_text
from fedsim.models.base import Model
from fedsim.population import Population
from fedsim.registry import MODELS, STRATEGIES
from fedsim.runtime.executors import LocalExecutor
from fedsim.runtime.server import RoundResult, Server, ServerActor
from fedsim.runtime.work import TrainSpec
from fedsim.strategies.base import Strategy

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


@dataclass
class Experiment:
    """The validated pieces of a run, built before anything is written or started."""

    cfg: Config
    dataset: FederatedDataset
    model: Model
    strategy: Strategy
    population: Population
    base_dir: Path | None = None


def prepare(cfg: Config, base_dir: Path | None = None) -> Experiment:
    """Build dataset, model, strategy and population; raises ConfigError on bad input."""
    dataset = build_dataset(
        cfg.data, cfg.partition, cfg.population.num_clients, cfg.experiment.seed
    )
    model = MODELS.get(cfg.model.name).factory(
        cfg.model.options, dataset.input_shape, dataset.num_classes
    )
    strategy = STRATEGIES.get(cfg.strategy.name).factory(cfg.strategy.options)
    population = Population(cfg.population, cfg.experiment.seed, base_dir)
    return Experiment(cfg, dataset, model, strategy, population, base_dir)


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


def train_spec(cfg: Config, strategy: Strategy) -> TrainSpec:
    t = cfg.training
    return TrainSpec(
        seed=cfg.experiment.seed,
        batch_size=0 if t.full_batch else int(t.batch_size),
        learning_rate=t.learning_rate,
        shuffle=t.shuffle,
        prox_mu=strategy.prox_mu,
    )


def ensure_ray(address: str = "") -> None:
    """Connect to ``address`` or start a local Ray instance, unless one is running."""
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
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, **kwargs)


class _Session:
    """A backend-independent handle on a running server: ``round()`` and ``model()``."""

    def __init__(self, exp: Experiment) -> None:
        cfg = exp.cfg
        spec = train_spec(cfg, exp.strategy)
        self.backend = cfg.runtime.backend
        if self.backend == "local":
            executor = LocalExecutor(exp.model, exp.dataset, spec)
            self.server = Server(
                cfg, exp.dataset, exp.model, exp.strategy, exp.population, executor
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
        )

    def round(self) -> RoundResult:
        if self.backend == "local":
            return asyncio.run(self.server.run_round())
        import ray

        return ray.get(self.actor.run_round.remote())

    def model(self) -> np.ndarray:
        if self.backend == "local":
            return self.server.w
        import ray

        return ray.get(self.actor.get_model.remote())

    def close(self) -> None:
        if self.backend == "local":
            return
        import ray

        try:
            ray.get(self.actor.shutdown.remote())
        finally:
            ray.kill(self.actor)


def run(
    config: Config | str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    out_dir: str | Path | None = None,
    progress: bool = False,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run an experiment; with ``out_dir`` its records are written there as rounds finish."""
    base_dir = None
    if isinstance(config, str | Path):
        base_dir = Path(config).resolve().parent
        cfg = config_mod.load(config, list(overrides))
    else:
        cfg = config_mod.with_overrides(config, list(overrides)) if overrides else config
    exp = prepare(cfg, base_dir)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.toml", config_mod.dumps_toml(cfg.to_dict()))
        _write_partition(exp, out)
    t0 = time.perf_counter()
    session = _Session(exp)
    recorder = Recorder(out)
    bar = _progress_bar(cfg, progress)
    try:
        for _ in range(cfg.server.rounds):
            result = session.round()
            recorder.add(result.record, result.clients)
            if bar is not None:
                _update_bar(bar, result.record, recorder)
            if on_round is not None:
                on_round(result.record)
        w = session.model()
    finally:
        if bar is not None:
            bar.close()
        session.close()
    rounds = recorder.rounds_frame()
    summary = _summary(exp, rounds, time.perf_counter() - t0, session.num_workers)
    if out is not None:
        write_json(out / "summary.json", summary)
    return RunResult(cfg, rounds, recorder.clients_frame(), summary, w, out)


def _write_partition(exp: Experiment, out: Path) -> None:
    ds = exp.dataset
    if getattr(ds, "lazy", False) and ds.num_clients > PARTITION_CSV_LAZY_LIMIT:
        return
    ids = np.arange(ds.num_clients)
    counts = ds.label_counts(ids)
    frame = pd.DataFrame({"client_id": ids, "num_samples": ds.client_sizes()})
    for label in range(ds.num_classes):
        frame[f"label_{label}"] = counts[:, label]
    frame.to_csv(out / "partition.csv", index=False)


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
        "wall_time_s": wall,
        "backend": exp.cfg.runtime.backend,
        "workers": workers,
    }


def _progress_bar(cfg: Config, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.server.rounds, desc=cfg.experiment.name, unit="round", dynamic_ncols=True)


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
