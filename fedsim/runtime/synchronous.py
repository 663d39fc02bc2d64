"""The synchronous server: a round as a sequence of stages, each with one job.

select -> plan (clock) -> client work (workers: client update, update pipeline, partial sums)
-> aggregate -> server step (the strategy) -> evaluate -> record (round_records.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from fedsim.aggregators.base import Aggregator, MeanAggregator, PerClientAggregator
from fedsim.clock import plan_round
from fedsim.config import Config
from fedsim.data.base import FederatedDataset
from fedsim.errors import DivergedError
from fedsim.faults import ClientFaults
from fedsim.models.base import Model
from fedsim.pipeline.base import Pipeline, Stage
from fedsim.pipeline.compression import Broadcast
from fedsim.pipeline.privacy import UNCLIPPED, privacy_pipeline
from fedsim.population import Population
from fedsim.privacy.rounds import ServerPrivacy
from fedsim.runtime.client_state import ClientStateStore
from fedsim.runtime.executors import Executor
from fedsim.runtime.round_records import (
    PhaseTimer,
    RoundData,
    RoundResult,
    client_records,
    round_costs,
    round_record,
)
from fedsim.runtime.server_evaluation import ServerEvaluation
from fedsim.runtime.server_state import ServerState
from fedsim.runtime.work import ChunkResult, make_chunks
from fedsim.strategies.base import Aggregate, RoundContext, Strategy


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


class Server(ServerState, ServerEvaluation):
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

    async def run_round(
        self,
        cohort: np.ndarray | None = None,
        evaluate: Iterable[str] | None = None,
        **context: Any,
    ) -> RoundResult:
        """Run the next round; the model is unchanged if too few clients report.

        ``cohort`` (sorted distinct client ids) replaces the selection; ``evaluate`` names the
        evaluations to run after the round (:data:`fedsim.evaluation.EVALUATIONS`; None: the
        ``[server]`` schedule); ``context`` overrides fields of the round's
        :class:`RoundContext` (e.g. ``learning_rate``).
        """
        t0 = time.perf_counter()
        timer = PhaseTimer(self.cfg.runtime.profile)
        r = self.round + 1
        ids, draws = self._select(r) if cohort is None else (cohort, None)
        rnd = self._plan(r, ids, draws)
        rnd.context = context
        rnd.times["server_s"] = time.perf_counter() - t0
        timer.mark("select_plan")
        if not rnd.failed:
            results = await self._client_work(rnd, timer)
            agg = self._aggregate(rnd, results)
            if agg is not None:
                self._server_step(rnd.r, rnd.train_loss, agg)
        if self.privacy is not None and self.privacy.dp and not rnd.failed:
            self.privacy.after_round(rnd.r, rnd.unclipped)
        rnd.times["train_s"] = time.perf_counter() - t0 - rnd.times["server_s"]
        self.round = rnd.r
        duration_s, bytes_down, bytes_up = round_costs(rnd)
        self.sim_time_s += duration_s
        self.cum_bytes_down += bytes_down
        self.cum_bytes_up += bytes_up
        timer.mark("aggregate")
        evals = self._evaluate(self._due(rnd.r, evaluate))
        timer.mark("evaluate")
        rnd.times["wall_time_s"] = time.perf_counter() - t0
        totals = {
            "sim_time_s": self.sim_time_s,
            "cum_bytes_down": self.cum_bytes_down,
            "cum_bytes_up": self.cum_bytes_up,
        }
        secagg = self.privacy is not None and self.privacy.opts.secure_aggregation
        result = RoundResult(
            round_record(rnd, totals, duration_s, bytes_down, bytes_up, evals, self.privacy),
            client_records(rnd, self.population, self.faults, self.upload_bytes, secagg),
        )
        timer.mark("record")
        result.phases = timer.result()
        return result

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

    def _agg_weights(self, rnd: RoundData, mask: np.ndarray) -> np.ndarray | None:
        """The contributors' aggregation weights; None: their sample counts (the default)."""
        srv, plan = self.cfg.server, rnd.plan
        if srv.weighting == "samples" and rnd.draws is None:
            return None
        per_draw = plan.num_samples if srv.weighting == "samples" else np.ones_like(plan.ids)
        draws = np.ones_like(plan.ids) if rnd.draws is None else rnd.draws
        return (per_draw * draws)[mask]

    def _plan(self, r: int, ids: np.ndarray, draws: np.ndarray | None = None) -> RoundData:
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
        rnd = RoundData(r, ids, plan, draws)
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

    async def _client_work(self, rnd: RoundData, timer: PhaseTimer) -> list[ChunkResult]:
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
        timer.mark("broadcast")
        results = await self.executor.train(ctx, rnd.w_sent, chunks, self._pipeline(rnd))
        for res in results:  # chunk order: every sum below is independent of scheduling
            rows = np.searchsorted(plan.ids, res.client_ids)
            rnd.client_loss[rows] = res.train_loss
            rnd.rejected[rows] = res.rejected
            rnd.unclipped += res.stats.get(UNCLIPPED, 0)
            for name, new in res.state.items():
                self.client_state[name].put(res.client_ids, new)
        timer.mark("train")
        return results

    def _aggregate(self, rnd: RoundData, results: list[ChunkResult]) -> Aggregate | None:
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

    def _pipeline(self, rnd: RoundData) -> Pipeline:
        return Pipeline(self.stages + privacy_pipeline(rnd.step).stages)

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
