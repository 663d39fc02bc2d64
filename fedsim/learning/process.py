"""The iterative process: ``initialize()`` and ``next(state, clients)`` on the engine."""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fedsim.aggregators.base import Aggregator, MeanAggregator
from fedsim.config import Config
from fedsim.data import ClientData, FederatedData, FederatedDataset, GivenClients
from fedsim.learning.state import RoundMetrics, State, copy_tree, evaluate, xy_arrays
from fedsim.models.base import Model
from fedsim.options import ConfigError
from fedsim.population import Population
from fedsim.runtime.executors import Executor, LocalExecutor
from fedsim.runtime.server import Server
from fedsim.runtime.work import train_spec
from fedsim.strategies.base import Strategy

#: Population size when neither data nor a population is given (clients as arrays).
DEFAULT_NUM_CLIENTS = 100_000
_workers: dict[str, int] = {}  # {"workers": n} once init() was called


def init(workers: int = 0, address: str = "") -> None:
    """Train clients on Ray workers from now on (``workers`` 0 = one per CPU).

    ``address`` as ``runtime.address``: "" starts a local, loopback-only Ray instance.
    Processes whose first round runs after this call use the workers.
    """
    from fedsim.runtime.ray_start import ensure_ray

    if workers < 0:
        raise ConfigError(f"workers: must be >= 0, got {workers}")
    ensure_ray(address)
    import ray

    _workers["workers"] = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))


class IterativeProcess:
    """``initialize() -> State`` and ``next(state, clients) -> (State, RoundMetrics)``.

    Built by :func:`build_weighted_fed_avg`, :func:`build_fed_prox`, :func:`build_fed_opt` or
    :func:`from_config`. ``clients`` given to :meth:`next` are client ids of the process's
    ``data`` (or ``data.client(id)`` objects), or per-client arrays: a sequence of ``(x, y)``
    (ids 0..K-1) or a mapping ``id -> (x, y)``. With a population, the clock decides who of
    them completes, straggles or drops, as configured in ``server``.
    """

    def __init__(
        self,
        cfg: Config,
        model: Model,
        strategy: Strategy,
        *,
        data: FederatedData | None = None,
        population: Population | None = None,
        aggregator: Aggregator | None = None,
    ) -> None:
        if cfg.privacy.enabled or cfg.privacy.secure_aggregation:
            raise ConfigError("privacy: the iterative-process API does not run [privacy] yet")
        self.cfg, self.model, self.data = cfg, model, data
        self._strategy = strategy  # never run itself: each server gets a copy
        self.population = population or Population(cfg.population, cfg.experiment.seed)
        self.aggregator = aggregator if aggregator is not None else MeanAggregator()
        self._server: Server | None = None

    @property
    def seed(self) -> int:
        return self.cfg.experiment.seed

    def initialize(self) -> State:
        """The state before round 1: the model's initial parameters, empty server state."""
        server = self._make_server(self._given({}), local=True)
        return State(copy_tree(server.state_dict()), self.seed, self.model)

    def next(
        self, state: State, clients: Any, *, learning_rate: float | None = None
    ) -> tuple[State, RoundMetrics]:
        """Run round ``state.round + 1`` with ``clients`` as the cohort.

        ``learning_rate`` replaces the clients' learning rate for this round (a schedule).
        """
        if state.seed != self.seed:
            raise ValueError(f"state has seed {state.seed}, this process {self.seed}")
        context: dict[str, Any] = {}
        if learning_rate is not None:
            if not (math.isfinite(learning_rate) and learning_rate >= 0):
                raise ValueError(f"learning_rate: must be finite and >= 0, got {learning_rate}")
            context["learning_rate"] = float(learning_rate)
        ids, given = self._cohort(clients)
        server = self._data_server() if given is None else self._make_server(given, local=True)
        server.load_state_dict(copy_tree(state.server))
        result = _run(server.run_round(ids, **context))
        out = State(copy_tree(server.state_dict()), self.seed, self.model)
        return out, RoundMetrics(result.record, result.clients)

    def sample_clients(self, state: State, count: int | None = None) -> np.ndarray:
        """``count`` online clients drawn for the state's next round, as ``fedsim run`` would.

        The default count is the configured cohort, ``ceil(over_selection * clients_per_round)``.
        ``server.sampling = "by_samples"`` is refused: its draws repeat clients, and a cohort
        given to :meth:`next` is a set of distinct clients, each counted once.
        """
        srv = self.cfg.server
        if srv.sampling != "uniform":
            raise ValueError(
                f"server.sampling: {srv.sampling!r} draws with replacement; the iterative process "
                "takes distinct cohorts (draw them yourself, or use fedsim run)"
            )
        if count is None:
            count = math.ceil(srv.over_selection * srv.clients_per_round)
        return self.population.select(state.round + 1, state.sim_time_s, count)

    def evaluate(self, state: State, data: Any = None) -> dict[str, float]:
        """(loss, accuracy) of the state's model on ``data`` (default: this process's test set)."""
        target = data if data is not None else self.data
        if target is None:
            raise ValueError("data: this process has none; give a FederatedData or (x, y)")
        return evaluate(state, target, self.model)

    def close(self) -> None:
        """Stop this process's workers (when it used Ray)."""
        if self._server is not None:
            self._server.executor.shutdown()
            self._server = None

    # -- the server a round runs on -------------------------------------------------------

    def _given(self, clients: Mapping[int, tuple[np.ndarray, np.ndarray]]) -> GivenClients:
        test = self.data.test_set if self.data is not None else None
        shape, task = self.model.input_shape, self.model.task
        return GivenClients(clients, self.population.num_clients, test, shape, task)

    def _make_server(self, dataset: FederatedDataset, *, local: bool) -> Server:
        strategy = copy.deepcopy(self._strategy)
        spec = train_spec(self.cfg, strategy, self.aggregator)
        executor: Executor
        if local or "workers" not in _workers:
            executor = LocalExecutor(self.model, dataset, spec)
        else:
            import ray

            from fedsim.runtime.executors import RayExecutor

            executor = RayExecutor(self.model, ray.put(dataset), spec, _workers["workers"])
        return Server(
            self.cfg, dataset, self.model, strategy, self.population, executor, self.aggregator
        )

    def _data_server(self) -> Server:
        if self.data is None:
            raise ValueError("clients: client ids need a process built with data=")
        if self._server is None:
            self._server = self._make_server(self.data.dataset, local=False)
        return self._server

    def _cohort(self, clients: Any) -> tuple[np.ndarray, GivenClients | None]:
        """Sorted distinct ids, and the dataset of given arrays (None: ids of ``data``)."""
        if isinstance(clients, Mapping):
            arrays = {int(k): xy_arrays(v) for k, v in clients.items()}
        else:
            items = list(clients) if not isinstance(clients, np.ndarray) else clients.tolist()
            if not items:
                raise ValueError("clients: empty cohort")
            if all(isinstance(c, int | np.integer) for c in items):
                return self._ids(items), None
            if all(isinstance(c, ClientData) for c in items):
                if self.data is not None and all(c.source is self.data for c in items):
                    return self._ids([c.id for c in items]), None
                arrays = {c.id: (c.x, c.y) for c in items}
                if len(arrays) != len(items):
                    raise ValueError("clients: a client is given twice")
            else:
                arrays = {k: xy_arrays(c) for k, c in enumerate(items)}
        if not arrays:
            raise ValueError("clients: empty cohort")
        ids = np.array(sorted(arrays), dtype=np.int64)
        try:
            return ids, self._given(arrays)
        except ValueError as err:
            raise ValueError(f"clients: {err}") from None

    def _ids(self, items: Sequence[Any]) -> np.ndarray:
        ids = np.asarray(items, dtype=np.int64)
        n = self.data.num_clients if self.data is not None else self.population.num_clients
        if len(np.unique(ids)) != len(ids):
            raise ValueError("clients: a client id is given twice")
        if ids.min() < 0 or ids.max() >= n:
            raise ValueError(f"clients: ids must lie in [0, {n})")
        return np.sort(ids)


def _run(coro: Any) -> Any:
    """Run a coroutine to its end, also from inside a running event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
