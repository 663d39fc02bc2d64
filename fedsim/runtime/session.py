"""A handle on a running server, in this process (local) or in a Ray actor: one interface."""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.aggregators.base import Aggregator
from fedsim.config import Config
from fedsim.data import FederatedDataset
from fedsim.errors import RunError
from fedsim.models.base import Model
from fedsim.options import ConfigError
from fedsim.pipeline.compression import upload_stages
from fedsim.population import Population
from fedsim.runtime.executors import LocalExecutor
from fedsim.runtime.ray_start import ensure_ray
from fedsim.runtime.server import RoundResult, ServerActor, server_class
from fedsim.runtime.work import train_spec
from fedsim.strategies.base import Strategy

__all__ = ["Experiment", "LocalSession", "RaySession", "Session", "open_session"]


@dataclass
class Experiment:
    """The validated pieces of a run, built before anything is written or started.

    ``fedsim.experiment.prepare`` builds one; a session builds its server from it.
    """

    cfg: Config
    dataset: FederatedDataset
    model: Model
    strategy: Strategy
    population: Population
    aggregator: Aggregator
    base_dir: Path | None = None


class Session(ABC):
    """What the round loop asks of a server: run a round, read and restore its state."""

    #: Training workers the rounds run on.
    num_workers: int = 1

    @abstractmethod
    def round(self, evaluate: tuple[str, ...] | None = None) -> RoundResult:
        """Run one round (async: one server step), then the evaluations ``evaluate`` names
        (None: the config's schedule), where the model is; return its records."""

    @abstractmethod
    def call(self, method: str, *args: Any) -> Any:
        """Call a method of the server and return its result."""

    def model(self) -> np.ndarray:
        return self.call("get_model")

    def state_dict(self) -> dict[str, Any]:
        return self.call("state_dict")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.call("load_state_dict", state)

    def worker_restarts(self) -> int:
        """Training workers restarted after a failure, since this session started."""
        return 0

    def nodes(self) -> int:
        """How many machines (Ray nodes) the training workers run on."""
        return 1

    def worker_pids(self) -> list[int]:
        return [os.getpid()]

    def close(self) -> None:
        """Stop what the session started; safe to call after a failure."""
        return None


class LocalSession(Session):
    """The server and its training in this process, one round after the other."""

    def __init__(self, exp: Experiment) -> None:
        cfg = exp.cfg
        spec = train_spec(cfg, exp.strategy, exp.aggregator)
        executor = LocalExecutor(exp.model, exp.dataset, spec)
        self.server = server_class(cfg)(
            cfg,
            exp.dataset,
            exp.model,
            exp.strategy,
            exp.population,
            executor,
            exp.aggregator,
            upload_stages(cfg.compression),
        )

    def round(self, evaluate: tuple[str, ...] | None = None) -> RoundResult:
        return asyncio.run(self.server.run_round(evaluate=evaluate))

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.server, method)(*args)


class RaySession(Session):
    """The server in a Ray actor, its training on ``runtime.workers`` Ray workers."""

    def __init__(self, exp: Experiment) -> None:
        import ray

        cfg = exp.cfg
        spec = train_spec(cfg, exp.strategy, exp.aggregator)
        stages = upload_stages(cfg.compression)
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

    def round(self, evaluate: tuple[str, ...] | None = None) -> RoundResult:
        import ray

        try:
            # The evaluations due ride on the round's one call: no extra hop, the model stays.
            out = ray.get(self.actor.run_round.remote(evaluate))
        except ray.exceptions.RayActorError as err:
            raise RunError(0, f"the server actor died ({_first_line(err)})") from None
        if isinstance(out, RunError):
            raise out
        return out

    def call(self, method: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(self.actor, method).remote(*args))

    def worker_restarts(self) -> int:
        return self.call("worker_restarts")

    def nodes(self) -> int:
        return len(set(self.call("worker_nodes")))

    def worker_pids(self) -> list[int]:
        return self.call("worker_pids")

    def close(self) -> None:
        import ray

        try:
            ray.get(self.actor.shutdown.remote())
        except ray.exceptions.RayError:
            pass  # already gone; closing must not hide why the run stopped
        finally:
            ray.kill(self.actor)


def open_session(exp: Experiment) -> Session:
    """The session of ``runtime.backend``; Ray is started (or reached) here."""
    return LocalSession(exp) if exp.cfg.runtime.backend == "local" else RaySession(exp)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
