"""The server: selects a cohort, plans it on the virtual clock, has it trained, aggregates."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fedsim.clock import OUTCOME_NAMES, plan_round
from fedsim.config import Config
from fedsim.data.base import FederatedDataset
from fedsim.models.base import Model
from fedsim.population import Population
from fedsim.privacy.rounds import ServerPrivacy
from fedsim.runtime.errors import DivergedError, RunError
from fedsim.runtime.executors import Executor
from fedsim.runtime.work import make_chunks
from fedsim.strategies.base import Strategy

_CLIENT_ACC_KEYS = ("client_acc_p10", "client_acc_p50", "client_acc_p90", "client_acc_mean")


@dataclass
class RoundResult:
    """One round's row of rounds.csv and its rows of clients.csv (columnar)."""

    record: dict[str, Any]
    clients: dict[str, np.ndarray]


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
    ) -> None:
        self.cfg, self.dataset, self.model = cfg, dataset, model
        self.strategy, self.population, self.executor = strategy, population, executor
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

    async def run_round(self) -> RoundResult:
        """Run the next round; the model is unchanged if too few clients report."""
        t_start = time.perf_counter()
        cfg, srv = self.cfg, self.cfg.server
        r = self.round + 1
        priv = self.privacy
        model_bytes = self.model.model_bytes
        if priv is not None and priv.dp:
            # A Poisson sample, as the accountant assumes; every sampled client that finishes
            # by the deadline reports (no over-selection cut).
            ids = priv.select(self.population, r, self.sim_time_s)
            per_round = len(ids)
        else:
            cohort = math.ceil(srv.over_selection * srv.clients_per_round)
            ids = self.population.select(r, self.sim_time_s, cohort)
            per_round = srv.clients_per_round
        update_bytes = model_bytes
        if priv is not None:
            update_bytes = priv.update_bytes(self.model.num_parameters, model_bytes)
        plan = plan_round(
            self.population,
            ids,
            self.sizes[ids],
            r,
            clients_per_round=per_round,
            local_epochs=cfg.training.local_epochs,
            deadline_s=srv.deadline_s,
            straggler_policy=srv.straggler_policy,
            model_bytes=model_bytes,
            update_bytes=update_bytes,
            straggler_fraction=srv.straggler_fraction,
        )
        mask = plan.contributes
        step = costs = None
        if priv is not None:
            step = priv.client_step(r, plan.ids, mask, plan.num_samples)
            costs = priv.secagg_costs(step, self.model.num_parameters, self.population)
        # The clock plans the plain round; secure aggregation's three extra round trips and
        # protocol messages are added after planning (who finishes is decided without them).
        duration_s = plan.duration_s + (costs.extra_s if costs is not None else 0.0)
        bytes_up = plan.bytes_up + (int(costs.up.sum()) if costs is not None else 0)
        bytes_down = plan.bytes_down + (int(costs.down.sum()) if costs is not None else 0)
        aborted, abort_reason = False, ""
        unclipped = 0
        reporting = int(np.count_nonzero(mask))
        failed = reporting < srv.min_completed
        client_loss = np.full(len(ids), np.nan)
        client_rejected = np.zeros(len(ids), dtype=bool)
        train_loss = math.nan
        t_train = time.perf_counter()
        if not failed:
            chunks = make_chunks(
                plan.ids[mask], plan.num_samples[mask], plan.epochs_done[mask], cfg.runtime.chunks
            )
            results = await self.executor.train(r, self.w, chunks, step)
            weighted_sum = np.zeros(self.model.num_parameters, dtype=np.float64)
            total = 0.0
            for res in results:  # chunk order: the sum does not depend on scheduling
                if priv is None:  # private sums (uint64 under secagg) are combined by priv
                    weighted_sum += res.weighted_sum
                total += res.weight
                unclipped += res.unclipped
                rows = np.searchsorted(plan.ids, res.client_ids)
                client_loss[rows] = res.train_loss
                if res.rejected is not None:
                    client_rejected[rows] = res.rejected
            accepted = mask & ~client_rejected
            self._check_rejections(r, plan, mask, accepted, client_loss)
            failed = int(np.count_nonzero(accepted)) < srv.min_completed
            if not failed:
                n = plan.num_samples[accepted].astype(np.float64)
                train_loss = float(np.dot(n, client_loss[accepted]) / n.sum())
                if priv is None:
                    w_next = self.strategy.aggregate(self.w, weighted_sum, total)
                else:
                    # DP-FedAvg (or secure aggregation's sum) replaces the strategy's average.
                    assert step is not None
                    agg = priv.aggregate(self.w, step, [res.weighted_sum for res in results], total)
                    aborted, abort_reason = agg.aborted, agg.reason
                    w_next = self.w if agg.w is None else agg.w
                # Checked before the model is replaced: it never holds a non-finite value.
                if not math.isfinite(train_loss):
                    raise DivergedError(
                        r, f"training diverged at round {r} (train loss {train_loss})"
                    )
                if not np.isfinite(w_next).all():
                    raise DivergedError(
                        r, f"training diverged at round {r} (the aggregated model is not finite)"
                    )
                self.w = w_next
                failed = aborted
        clip_norm = epsilon = math.nan
        if priv is not None and priv.dp:
            clip_norm, epsilon = priv.clip_norm, priv.epsilon(r)
            if not failed:
                priv.after_round(r, unclipped)
        t_aggregated = time.perf_counter()

        self.round = r
        self.sim_time_s += duration_s
        self.cum_bytes_down += bytes_down
        self.cum_bytes_up += bytes_up
        test_loss = test_acc = global_loss = global_acc = math.nan
        if (srv.eval_every and r % srv.eval_every == 0) or r == srv.rounds:
            test_loss, test_acc = self.evaluate()
            if srv.eval_train:
                global_loss, global_acc = self.evaluate_train()
        fairness = dict.fromkeys(_CLIENT_ACC_KEYS, math.nan)
        if srv.client_eval_every and (r % srv.client_eval_every == 0 or r == srv.rounds):
            fairness = self.evaluate_clients()
        record = {
            "round": r,
            "sim_time_s": self.sim_time_s,
            "round_duration_s": duration_s,
            "selected": len(ids),
            "completed": plan.count(0),
            "stragglers": plan.count(1),
            "dropped": plan.count(2),
            "reporting": reporting,
            "rejected": int(np.count_nonzero(client_rejected)),
            "bytes_down": bytes_down,
            "bytes_up": bytes_up,
            "cum_bytes_down": self.cum_bytes_down,
            "cum_bytes_up": self.cum_bytes_up,
            "cum_bytes": self.cum_bytes_down + self.cum_bytes_up,
            "train_loss": train_loss,
            "test_accuracy": test_acc,
            "test_loss": test_loss,
            "global_train_loss": global_loss,
            "global_train_accuracy": global_acc,
            **fairness,
            "failed": failed,
            "aborted": aborted,
            "abort_reason": abort_reason,
            "epsilon": epsilon,
            "clip_norm": clip_norm,
            "server_s": (t_train - t_start),
            "train_s": (t_aggregated - t_train),
            "wall_time_s": time.perf_counter() - t_start,
        }
        tiers = self.population.tier[ids]
        names = np.asarray(self.population.tier_names or ("all",), dtype=object)
        clients = {
            "round": np.full(len(ids), r, dtype=np.int64),
            "client_id": ids,
            "tier": names[np.minimum(tiers, len(names) - 1)],
            "outcome": OUTCOME_NAMES[plan.outcome],
            "num_samples": plan.num_samples,
            "epochs_done": plan.epochs_done,
            "download_s": plan.download_s,
            "compute_s": plan.compute_s,
            "upload_s": plan.upload_s,
            "train_loss": client_loss,
            "rejected": client_rejected,
        }
        if priv is not None and priv.opts.secure_aggregation:
            none = np.zeros(len(ids), dtype=np.int64)
            clients["protocol_bytes_up"] = costs.up if costs is not None else none
            clients["protocol_bytes_down"] = costs.down if costs is not None else none
        return RoundResult(record, clients)

    def evaluate(self) -> tuple[float, float]:
        """(test loss, test accuracy) of the global model on the central test set."""
        x, y = self.dataset.test_set()
        with threadpool_limits(limits=1):
            return self.model.evaluate(self.w, x, y)

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
        return {key: found[key.replace("client_acc", prefix)] for key in _CLIENT_ACC_KEYS}

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
        plan: Any,
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
        n = plan.num_samples[reporting].astype(np.float64)
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
    ) -> None:  # noqa: E501
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
        self.server = Server(cfg, dataset, model, strategy, population, self.executor)

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
