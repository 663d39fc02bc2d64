"""The server of a run: which class ``server.mode`` picks, and the server as a Ray actor."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.aggregators.base import Aggregator
from fedsim.config import Config
from fedsim.data.base import FederatedDataset
from fedsim.errors import RunError
from fedsim.models.base import Model
from fedsim.pipeline.base import Stage
from fedsim.population import Population
from fedsim.runtime.asynchronous import AsyncServer
from fedsim.runtime.round_records import RoundResult
from fedsim.runtime.synchronous import Server
from fedsim.strategies.base import Strategy


def server_class(cfg: Config) -> type[Server]:
    """The server of ``server.mode``: synchronous rounds or asynchronous steps."""
    if cfg.server.mode == "async":
        return AsyncServer
    return Server


class ServerActor:
    """The server as a Ray actor: an asyncio round loop driving the worker pool."""

    def __init__(
        self,
        cfg: Config,
        dataset: FederatedDataset,
        dataset_ref_box: list,
        spec: Any,
        model: Model,
        strategy: Strategy,
        population: Population,
        num_workers: int,
        aggregator: Aggregator | None = None,
        stages: tuple[Stage, ...] = (),
    ) -> None:
        from fedsim.runtime.executors import RayExecutor

        self.executor = RayExecutor(
            model,
            dataset_ref_box[0],
            spec,
            num_workers,
            max_restarts=cfg.runtime.max_worker_restarts,
            kill_at_round=cfg.faults.kill_worker_at_round,
            kill_times=cfg.faults.kill_worker_times,
        )
        self.server = server_class(cfg)(
            cfg, dataset, model, strategy, population, self.executor, aggregator, stages
        )

    async def run_round(self, evaluate: tuple[str, ...] | None = None) -> RoundResult | RunError:
        """The next round, or why the run must stop (returned: Ray would wrap a raise).

        ``evaluate`` names the evaluations due after it; they run here, where the model is.
        """
        try:
            return await self.server.run_round(evaluate=evaluate)
        except RunError as err:
            return err

    def get_model(self) -> np.ndarray:
        return self.server.w

    def state_dict(self) -> dict[str, Any]:
        return self.server.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.server.load_state_dict(state)

    async def worker_nodes(self) -> list[str]:
        return await self.executor.worker_nodes()

    async def worker_pids(self) -> list[int]:
        return await self.executor.worker_pids()

    def worker_restarts(self) -> int:
        return self.executor.restarts

    def shutdown(self) -> None:
        self.server.executor.shutdown()
