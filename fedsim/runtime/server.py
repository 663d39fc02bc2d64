"""The server: a synchronous round as a sequence of stages, each with one job.

select -> plan (clock) -> client work (workers: client update, update pipeline, partial sums)
-> aggregate -> server step (the strategy) -> evaluate -> record.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fedsim.aggregators.base import Aggregator, MeanAggregator, PerClientAggregator
from fedsim.clock import COMPLETED, DROPPED, OUTCOME_NAMES, STRAGGLER, RoundPlan, plan_round
from fedsim.config import Config
from fedsim.data.base import FederatedDataset
from fedsim.errors import DivergedError, RunError
from fedsim.evaluation import CLIENT_ACC_COLUMNS
from fedsim.faults import ClientFaults
from fedsim.models.base import Model
from fedsim.pipeline.base import Pipeline, Stage
from fedsim.pipeline.compression import Broadcast
from fedsim.pipeline.privacy import UNCLIPPED, privacy_pipeline
from fedsim.population import Population
from fedsim.privacy.rounds import ClientStep, SecAggCosts, ServerPrivacy
from fedsim.runtime.client_state import ClientStateStore
from fedsim.runtime.executors import Executor
from fedsim.runtime.work import ChunkResult, make_chunks
from fedsim.strategies.base import Aggregate, RoundContext, Strategy

#: The test-set scores a round may record (the model's task decides which are filled).
_TEST_KEYS = ("test_accuracy", "test_loss", "test_mae", "test_rmse")


@dataclass
class RoundResult:
    """One round's row of rounds.csv and its rows of clients.csv (columnar)."""

    record: dict[str, Any]
    clients: dict[str, np.ndarray]


@dataclass
class _Round:
    """What the stages of one round hand each other."""

    r: int
    ids: np.ndarray
    plan: RoundPlan
    draws: np.ndarray | None = None  # times each client was drawn (sampling with replacement)
    step: ClientStep | None = None
    costs: SecAggCosts | None = None
    client_loss: np.ndarray = field(default_factory=lambda: np.empty(0))
    rejected: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    train_loss: float = math.nan
    failed: bool = False
    aborted: bool = False
    abort_reason: str = ""
    unclipped: int = 0
    clip_norm: float = math.nan  # the DP clipping norm the round's clients used
    w_sent: np.ndarray | None = None  # the model as the clients received it
    times: dict[str, float] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)  # RoundContext fields overridden


def round_context(
    cfg: Config, r: int, broadcast: dict[str, np.ndarray] | None = None
) -> RoundContext:
    """What the clients of round ``r`` are told besides the model, from the config."""
    t = cfg.training
    return RoundContext(
        round=r,
        seed=cfg.experiment.seed,
        learning_rate=t.learning_rate,
        batch_size=0 if t.full_batch else int(t.batch_size),
        shuffle=t.shuffle,
        broadcast=broadcast or {},
    )


class Server:
    """Runs synchronous rounds in simulated time; state is the model, the clock and counters."""

    def __init__(
        self,
        cfg: Config,
        dataset: FederatedDataset,
        model: Model,
        strategy: Strategy,
        population: Population,
        executor: Executor,
        aggregator: Aggregator | None = None,
        stages: tuple[Stage, ...] = (),
    ) -> None:
        self.cfg, self.dataset, self.model = cfg, dataset, model
        self.strategy, self.population, self.executor = strategy, population, executor
        self.aggregator = aggregator if aggregator is not None else MeanAggregator()
        self.stages = stages  # run-wide update-pipeline stages, before the privacy stages
        self.broadcast = Broadcast(cfg.compression.down)
        self.faults = ClientFaults.from_config(
            cfg.faults, cfg.experiment.seed, population.num_clients
        )
        self.sizes = dataset.client_sizes()
        self.w = model.init(cfg.experiment.seed)
        self.round = 0
        self.sim_time_s = 0.0
        self.cum_bytes_down = 0
        self.cum_bytes_up = 0
        self._train_eval: tuple[np.ndarray, np.ndarray] | None = None
        p = cfg.privacy
        self.privacy: ServerPrivacy | None = None
        if p.enabled or p.secure_aggregation:
            self.privacy = ServerPrivacy(
                p,
                population.num_clients,
                cfg.server.clients_per_round,
                cfg.server.min_completed,
                cfg.experiment.seed,
            )
        P = model.num_parameters
        strategy.setup(P, population.num_clients)
        widths = {**strategy.client.state, **Pipeline(stages).state}
        self.client_state = {
            name: ClientStateStore(P if w < 0 else w) for name, w in widths.items()
        }

    async def run_round(self, cohort: np.ndarray | None = None, **context: Any) -> RoundResult:
        """Run the next round; the model is unchanged if too few clients report.

        ``cohort`` (sorted distinct client ids) replaces the selection; ``context`` overrides
        fields of the round's :class:`RoundContext` (e.g. ``learning_rate``).
        """
        t0 = time.perf_counter()
        r = self.round + 1
        ids, draws = self._select(r) if cohort is None else (cohort, None)
        rnd = self._plan(r, ids, draws)
        rnd.context = context
        rnd.times["server_s"] = time.perf_counter() - t0
        if not rnd.failed:
            results = await self._client_work(rnd)
            agg = self._aggregate(rnd, results)
            if agg is not None:
                self._server_step(rnd.r, rnd.train_loss, agg)
        if self.privacy is not None and self.privacy.dp and not rnd.failed:
            self.privacy.after_round(rnd.r, rnd.unclipped)
        rnd.times["train_s"] = time.perf_counter() - t0 - rnd.times["server_s"]
        self.round = rnd.r
        duration_s, bytes_down, bytes_up = self._costs(rnd)
        self.sim_time_s += duration_s
        self.cum_bytes_down += bytes_down
        self.cum_bytes_up += bytes_up
        evals = self._evaluate(rnd.r)
        rnd.times["wall_time_s"] = time.perf_counter() - t0
        return RoundResult(
            self._round_record(rnd, duration_s, bytes_down, bytes_up, evals),
            self._client_records(rnd),
        )

    # -- the stages ----------------------------------------------------------------------

    def _select(self, r: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The round's cohort and how often each was drawn (None: once each).

        A Poisson sample under DP, else over-selection of K: distinct clients drawn uniformly,
        or (``server.sampling = "by_samples"``) draws with replacement, probability n_k / n.
        """
        srv = self.cfg.server
        if self.privacy is not None and self.privacy.dp:
            return self.privacy.select(self.population, r, self.sim_time_s), None
        cohort = math.ceil(srv.over_selection * srv.clients_per_round)
        if srv.sampling == "by_samples":
            return self.population.select_by_samples(r, self.sim_time_s, cohort, self.sizes)
        return self.population.select(r, self.sim_time_s, cohort), None

    def _agg_weights(self, rnd: _Round, mask: np.ndarray) -> np.ndarray | None:
        """The contributors' aggregation weights; None: their sample counts (the default)."""
        srv, plan = self.cfg.server, rnd.plan
        if srv.weighting == "samples" and rnd.draws is None:
            return None
        per_draw = plan.num_samples if srv.weighting == "samples" else np.ones_like(plan.ids)
        draws = np.ones_like(plan.ids) if rnd.draws is None else rnd.draws
        return (per_draw * draws)[mask]

    def _plan(self, r: int, ids: np.ndarray, draws: np.ndarray | None = None) -> _Round:
        """Every selected client's timeline (clock.py), and the privacy step of the round."""
        cfg, srv = self.cfg, self.cfg.server
        dp = self.privacy is not None and self.privacy.dp
        # With DP every sampled client that finishes by the deadline reports.
        per_round = len(ids) if dp else srv.clients_per_round
        plan = plan_round(
            self.population,
            ids,
            self.sizes[ids],
            r,
            clients_per_round=per_round,
            local_epochs=cfg.training.local_epochs,
            deadline_s=srv.deadline_s,
            straggler_policy=srv.straggler_policy,
            model_bytes=self.download_bytes,
            update_bytes=self.upload_bytes,
            straggler_fraction=srv.straggler_fraction,
            draws=draws,
        )
        rnd = _Round(r, ids, plan, draws)
        rnd.client_loss = np.full(len(ids), np.nan)
        rnd.rejected = np.zeros(len(ids), dtype=bool)
        if self.privacy is not None:
            rnd.clip_norm = self.privacy.clip_norm if self.privacy.dp else math.nan
            rnd.step = self.privacy.client_step(r, plan.ids, plan.contributes, plan.num_samples)
            rnd.costs = self.privacy.secagg_costs(
                rnd.step, self.model.num_parameters, self.population
            )
        rnd.failed = int(np.count_nonzero(plan.contributes)) < srv.min_completed
        return rnd

    async def _client_work(self, rnd: _Round) -> list[ChunkResult]:
        """Train the contributors in chunks on the executor; store their new client state."""
        plan, mask = rnd.plan, rnd.plan.contributes
        chunks = make_chunks(
            plan.ids[mask],
            plan.num_samples[mask],
            plan.epochs_done[mask],
            self.cfg.runtime.chunks,
            self._agg_weights(rnd, mask),
        )
        for c in chunks:  # each chunk carries its clients' state rows to the worker
            c.state.update({k: s.get(c.client_ids) for k, s in self.client_state.items()})
        rnd.w_sent = self.broadcast.model(self.w)
        ctx = replace(self.round_context(rnd.r), **rnd.context)
        results = await self.executor.train(ctx, rnd.w_sent, chunks, self._pipeline(rnd))
        for res in results:  # chunk order: every sum below is independent of scheduling
            rows = np.searchsorted(plan.ids, res.client_ids)
            rnd.client_loss[rows] = res.train_loss
            rnd.rejected[rows] = res.rejected
            rnd.unclipped += res.stats.get(UNCLIPPED, 0)
            for name, new in res.state.items():
                self.client_state[name].put(res.client_ids, new)
        return results

    def _aggregate(self, rnd: _Round, results: list[ChunkResult]) -> Aggregate | None:
        """The round's aggregate, or None if the round failed or was aborted."""
        srv, plan = self.cfg.server, rnd.plan
        accepted = plan.contributes & ~rnd.rejected
        self._check_rejections(rnd.r, plan.num_samples, plan.contributes, accepted, rnd.client_loss)
        count = int(np.count_nonzero(accepted))
        rnd.failed = count < srv.min_completed
        if rnd.failed:
            return None
        n = plan.num_samples[accepted].astype(np.float64)
        rnd.train_loss = float(np.dot(n, rnd.client_loss[accepted]) / n.sum())
        total = sum(res.weight for res in results)
        weights = {"samples": total, "uniform": float(count)}
        payloads = {
            name: sum(res.payload_sums[name] for res in results) / weights[p.weighting]
            for name, p in self.strategy.client.payloads.items()
        }
        model = None
        if isinstance(self.aggregator, PerClientAggregator):
            updates = np.concatenate([res.updates for res in results])
            ids = np.concatenate([res.update_ids for res in results])
            order = np.argsort(ids, kind="stable")
            upd_w = np.concatenate([res.update_weights for res in results])[order]
            updates = self.faults.attack_rows(updates[order], ids[order])
            delta = self.aggregator.combine(updates, upd_w)
        elif self.privacy is not None:
            assert rnd.step is not None
            out = self.privacy.aggregate(self.w, rnd.step, [r.weighted_sum for r in results], total)
            if out.delta is None:
                rnd.failed = rnd.aborted = True
                rnd.abort_reason = out.reason
                return None
            delta = out.delta
        else:
            acc = np.zeros(self.model.num_parameters, dtype=np.float64)
            for res in results:
                acc += res.weighted_sum
            if self._pipeline(rnd):
                delta = acc / total
            else:  # sum_k n_k w_k: the mean model itself
                model = acc / total
                delta = model - rnd.w_sent
                if rnd.w_sent is not self.w:  # clients started from the int8 model
                    model = None
        return Aggregate(delta, count, weights, payloads, model)

    def _server_step(self, r: int, train_loss: float, agg: Aggregate) -> None:
        """The strategy's server update; a non-finite model or loss stops the run."""
        w_next = self.strategy.server_update(self.w, agg)
        # Checked before the model is replaced: it never holds a non-finite value.
        if not math.isfinite(train_loss):
            raise DivergedError(r, f"training diverged at round {r} (train loss {train_loss})")
        if not np.isfinite(w_next).all():
            raise DivergedError(
                r, f"training diverged at round {r} (the aggregated model is not finite)"
            )
        self.w = w_next

    def _evaluate(self, r: int) -> dict[str, float]:
        """The evaluations due this round (test set, global objective, per-client spread)."""
        srv = self.cfg.server
        out = dict.fromkeys(
            (*_TEST_KEYS, "global_train_loss", "global_train_accuracy", *CLIENT_ACC_COLUMNS),
            math.nan,
        )
        if (srv.eval_every and r % srv.eval_every == 0) or r == srv.rounds:
            out.update(self.evaluate())
            if srv.eval_train:
                out["global_train_loss"], out["global_train_accuracy"] = self.evaluate_train()
        if srv.client_eval_every and (r % srv.client_eval_every == 0 or r == srv.rounds):
            out.update(self.evaluate_clients())
        return out

    # -- what a round costs and what it records ---------------------------------------------

    @property
    def download_bytes(self) -> int:
        """Bytes each selected client downloads: the model and the strategy's broadcast."""
        extra = self.strategy.broadcast_length
        P = self.model.num_parameters
        return self.broadcast.nbytes(self.model.model_bytes, P) + 4 * (P if extra < 0 else extra)

    @property
    def upload_bytes(self) -> int:
        """Bytes of one client's upload: the update after the pipeline, and its payloads."""
        P = self.model.num_parameters
        payload = sum(4 * p.size(P) for p in self.strategy.client.payloads.values())
        update = Pipeline(self.stages).upload_bytes(P, self.model.model_bytes)
        if self.privacy is not None:
            update = self.privacy.update_bytes(P, update)
        return update + payload

    def round_context(self, r: int) -> RoundContext:
        return round_context(self.cfg, r, self.strategy.broadcast())

    def _pipeline(self, rnd: _Round) -> Pipeline:
        return Pipeline(self.stages + privacy_pipeline(rnd.step).stages)

    def _costs(self, rnd: _Round) -> tuple[float, int, int]:
        """(duration, bytes down, bytes up): the clock's plan plus secure aggregation's extra.

        The clock plans the plain round; secure aggregation's three extra round trips and
        protocol messages are added after planning (who finishes is decided without them).
        """
        plan, c = rnd.plan, rnd.costs
        if c is None:
            return plan.duration_s, plan.bytes_down, plan.bytes_up
        return (
            plan.duration_s + c.extra_s,
            plan.bytes_down + int(c.down.sum()),
            plan.bytes_up + int(c.up.sum()),
        )

    def _round_record(
        self,
        rnd: _Round,
        duration_s: float,
        down: int,
        up: int,
        evals: dict[str, float],
    ) -> dict[str, Any]:
        plan, priv = rnd.plan, self.privacy
        dp = priv is not None and priv.dp
        return {
            "round": rnd.r,
            "sim_time_s": self.sim_time_s,
            "round_duration_s": duration_s,
            "selected": len(rnd.ids),
            "completed": plan.count(COMPLETED),
            "stragglers": plan.count(STRAGGLER),
            "dropped": plan.count(DROPPED),
            "reporting": int(np.count_nonzero(plan.contributes)),
            "rejected": int(np.count_nonzero(rnd.rejected)),
            "bytes_down": down,
            "bytes_up": up,
            "cum_bytes_down": self.cum_bytes_down,
            "cum_bytes_up": self.cum_bytes_up,
            "cum_bytes": self.cum_bytes_down + self.cum_bytes_up,
            "train_loss": rnd.train_loss,
            **evals,
            "failed": rnd.failed,
            "aborted": rnd.aborted,
            "abort_reason": rnd.abort_reason,
            "epsilon": priv.epsilon(rnd.r) if dp else math.nan,
            "clip_norm": rnd.clip_norm,
            **rnd.times,
        }

    def tier_names(self, ids: np.ndarray) -> np.ndarray:
        """Each client's device tier name (clients.csv's ``tier``)."""
        names = np.asarray(self.population.tier_names or ("all",), dtype=object)
        return names[np.minimum(self.population.tier[ids], len(names) - 1)]

    def _client_records(self, rnd: _Round) -> dict[str, np.ndarray]:
        plan, ids = rnd.plan, rnd.ids
        clients = {
            "round": np.full(len(ids), rnd.r, dtype=np.int64),
            "client_id": ids,
            "tier": self.tier_names(ids),
            "outcome": OUTCOME_NAMES[plan.outcome],
            "num_samples": plan.num_samples,
            "epochs_done": plan.epochs_done,
            "download_s": plan.download_s,
            "compute_s": plan.compute_s,
            "upload_s": plan.upload_s,
            "train_loss": rnd.client_loss,
            "rejected": rnd.rejected,
            "bytes_up": np.where(plan.epochs_done > 0, self.upload_bytes, 0).astype(np.int64),
            "byzantine": self.faults.byzantine[ids],
            "noisy": self.faults.noisy[ids],
        }
        if self.privacy is not None and self.privacy.opts.secure_aggregation:
            none = np.zeros(len(ids), dtype=np.int64)
            clients["protocol_bytes_up"] = rnd.costs.up if rnd.costs is not None else none
            clients["protocol_bytes_down"] = rnd.costs.down if rnd.costs is not None else none
        return clients

    def evaluate(self) -> dict[str, float]:
        """The global model's scores on the central test set, keyed ``test_<score>``."""
        x, y = self.dataset.test_set()
        with threadpool_limits(limits=1):
            found = self.model.metrics(self.w, x, y)
        return {f"test_{k}": v for k, v in found.items()}

    def evaluate_clients(self) -> dict[str, float]:
        """Percentiles of per-client accuracy over a fixed sample of clients (fairness)."""
        from fedsim.evaluation import client_accuracy_percentiles, sample_eval_clients

        srv = self.cfg.server
        ids = sample_eval_clients(
            self.cfg.experiment.seed, self.dataset.num_clients, srv.client_eval_clients
        )
        with threadpool_limits(limits=1):
            found = client_accuracy_percentiles(self.model, self.w, self.dataset, ids)
        # Same columns whichever data the dataset offers; the README says which is used.
        prefix = "client_acc" if "client_acc_p50" in found else "client_train_acc"
        return {key: found[key.replace("client_acc", prefix)] for key in CLIENT_ACC_COLUMNS}

    def evaluate_train(self) -> tuple[float, float]:
        """(loss, accuracy) of the global model on training data: the global objective."""
        if self._train_eval is None:
            self._train_eval = self.dataset.train_eval_set()
        x, y = self._train_eval
        with threadpool_limits(limits=1):
            return self.model.evaluate(self.w, x, y)

    def get_model(self) -> np.ndarray:
        return self.w

    def _check_rejections(
        self,
        r: int,
        num_samples: np.ndarray,
        reporting: np.ndarray,
        accepted: np.ndarray,
        client_loss: np.ndarray,
    ) -> None:
        # Nothing can be learnt from a model every client's training blows up on.
        if accepted.any() or not reporting.any():
            return
        bound = self.cfg.server.max_update_norm
        if math.isfinite(bound) and np.isfinite(client_loss[reporting]).any():
            return  # rejected by the norm bound, not diverged: the round fails, counted as such
        why = "non-finite" if math.isinf(bound) else f"non-finite or of norm above {bound:g}"
        n = num_samples[reporting].astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            loss = float(np.dot(n, client_loss[reporting]) / n.sum())
        raise DivergedError(
            r,
            f"training diverged at round {r} (all {int(reporting.sum())} client updates {why}; "
            f"their mean train loss {loss:.4g})",
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything that carries from one round to the next (the RNG is keyed: no state)."""
        return {
            "round": self.round,
            "sim_time_s": self.sim_time_s,
            "cum_bytes_down": self.cum_bytes_down,
            "cum_bytes_up": self.cum_bytes_up,
            "w": self.w,
            "strategy": self.strategy.state_dict(),
            **({"privacy": self.privacy.state_dict()} if self.privacy is not None else {}),
            **(
                {"client_state": {k: s.state_dict() for k, s in self.client_state.items()}}
                if self.client_state
                else {}
            ),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        w = np.asarray(state["w"])
        if w.shape != self.w.shape or w.dtype != self.w.dtype:
            raise ValueError(
                f"checkpoint model has shape {w.shape} {w.dtype}, expected "
                f"{self.w.shape} {self.w.dtype}"
            )
        self.w = w.copy()
        self.round = int(state["round"])
        self.sim_time_s = float(state["sim_time_s"])
        self.cum_bytes_down = int(state["cum_bytes_down"])
        self.cum_bytes_up = int(state["cum_bytes_up"])
        self.strategy.load_state_dict(state["strategy"])
        if self.privacy is not None and "privacy" in state:
            self.privacy.load_state_dict(state["privacy"])
        for name, store in self.client_state.items():
            store.load_state_dict(state["client_state"][name])


def server_class(cfg: Config) -> type[Server]:
    """The server of ``server.mode``: synchronous rounds or asynchronous steps."""
    if cfg.server.mode == "async":
        from fedsim.runtime.asynchronous import AsyncServer

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

    async def run_round(self) -> RoundResult | RunError:
        """The next round, or why the run must stop (returned: Ray would wrap a raise)."""
        try:
            return await self.server.run_round()
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
