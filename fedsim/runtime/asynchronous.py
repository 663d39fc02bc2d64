"""Asynchronous training on the simulated clock: FedBuff (Nguyen et al. 2022), and FedAsync
(Xie et al. 2019) as FedBuff with a buffer of one.

Up to ``async.concurrency`` clients train at once. A client starts when a slot frees, chosen
among the clients online at that simulated time and not already training; it downloads the
current model version, then finishes or drops per its timeline (clock.py, keyed by its start
number), or drops when it goes offline before finishing (population.py). Events are taken in
simulated-time order (ties by start number); nothing sleeps. Each arriving update is buffered
with its staleness s = (versions made since it downloaded); every ``buffer_size`` (K) arrivals
the server takes the step

    delta = sum_k n_k g(s_k) u_k / sum_k n_k,     u_k = w_k - w_{version_k}

through the strategy's server step (its optimiser and learning rate), with g the staleness
weight: 1 (constant), (1 + s)^-a (polynomial), or 1 for s <= b else 1 / (a (s - b) + 1)
(hinge). Normalising by sum n_k, not sum n_k g(s_k), keeps the staleness discount: with K = 1
this is FedAsync's w <- w + eta g(s) u. Updates staler than ``max_staleness`` are discarded.

Which clients run, when, and from which version is decided by the clock alone; training then
follows: when a step needs its updates, every client that started from one of the versions it
needs and has not been trained yet is trained in one batched call (chunks on the workers), so
a version's cohort is trained together. A client's update depends only on (its version's
model, its id, the version), so results do not depend on workers, backend or batching, and a
resumed run trains again what was trained but not yet used.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np

from fedsim.aggregators.base import PerClientAggregator
from fedsim.clock import timelines
from fedsim.config import AsyncConfig
from fedsim.errors import RunError
from fedsim.options import ConfigError
from fedsim.pipeline.base import Pipeline
from fedsim.rng import Purpose, uniform
from fedsim.runtime.round_records import PhaseTimer, RoundResult, tier_names
from fedsim.runtime.synchronous import Server
from fedsim.runtime.work import make_chunks
from fedsim.strategies.base import Aggregate, Strategy

#: Consecutive empty retries (no client online) after which the run stops.
MAX_IDLE_RETRIES = 100_000


def staleness_weight(opts: AsyncConfig, s: np.ndarray) -> np.ndarray:
    """g(s) for staleness ``s`` (versions behind), per ``async.staleness_weight``."""
    s = np.asarray(s, dtype=np.float64)
    if opts.staleness_weight == "constant":
        return np.ones_like(s)
    if opts.staleness_weight == "polynomial":
        return (1.0 + s) ** -opts.staleness_exponent
    return np.where(s <= opts.hinge_b, 1.0, 1.0 / (opts.hinge_a * (s - opts.hinge_b) + 1.0))


def check_strategy(strategy: Strategy, name: str) -> None:
    """Refuse strategies whose client state or extra uploads assume synchronous rounds."""
    if strategy.client.state or strategy.client.payloads or strategy.broadcast_length:
        what = ", ".join([*strategy.client.state, *strategy.client.payloads]) or "a broadcast"
        raise ConfigError(
            f"strategy.name: {name!r} keeps {what} tied to one model version per round, which "
            "stale asynchronous updates would mix across versions; use server.mode = 'sync'"
        )


@dataclass
class _Flight:
    """One started client (or, with client -1, a slot waiting for someone to come online)."""

    seq: int  # start number: unique, orders ties
    client: int
    version: int  # the model version it downloaded
    start_s: float
    end_s: float  # when it arrives (or drops)
    dropped: bool
    num_samples: int
    download_s: float
    compute_s: float
    upload_s: float


_FIELDS = list(_Flight.__dataclass_fields__)


class AsyncServer(Server):
    """A server whose ``run_round`` is one asynchronous server step (``self.round`` = version)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.client_state:
            names = ", ".join(self.client_state)
            raise ConfigError(
                f"server.mode: 'async' cannot keep per-client state ({names}) across versions"
            )
        self.opts: AsyncConfig = self.cfg.async_
        self._flights: dict[int, _Flight] = {}
        self._events: list[tuple[float, int]] = []  # (end_s, seq), a heap
        self._models: dict[int, np.ndarray] = {0: self.w}
        self._trained: dict[tuple[int, int], tuple[np.ndarray | None, float]] = {}
        self._starts = 0  # start numbers handed out (clients and waiting slots)
        self._downloads = 0  # clients started so far
        self._idle = 0
        self._busy: set[int] = set()  # clients training now (a set: the population may be huge)

    async def run_round(self, evaluate: Iterable[str] | None = None) -> RoundResult:
        """Advance the clock to the next server step and take it; ``evaluate`` as for
        :meth:`Server.run_round`."""
        t0 = time.perf_counter()
        timer = PhaseTimer(self.cfg.runtime.profile)
        if self._starts == 0:
            self._launch(0.0, self.opts.concurrency)
        t_prev, started_before = self.sim_time_s, self._downloads
        buffer, ended = self._fill_buffer()
        server_s = time.perf_counter() - t0
        timer.mark("select_plan")
        await self._train([f for f in buffer if (f.version, f.client) not in self._trained])
        timer.mark("train")
        r = self.round + 1
        stale = self.round - np.array([f.version for f in buffer], dtype=np.int64)
        agg, loss, rejected = self._aggregate_buffer(r, buffer, stale)
        clients = self._client_rows(r, ended, buffer, rejected)
        self._server_step(r, loss, agg)
        self.round = r
        self._models[r] = self.w
        self._launch(self.sim_time_s, self.opts.concurrency - len(self._flights))
        self._forget()
        train_s = time.perf_counter() - t0 - server_s
        started = self._downloads - started_before
        down = started * self.download_bytes
        up = len(buffer) * self.upload_bytes
        self.cum_bytes_down += down
        self.cum_bytes_up += up
        timer.mark("aggregate")
        evals = self._evaluate(self._due(r, evaluate))
        timer.mark("evaluate")
        arrived = [f for f in ended if not f.dropped]
        record = {
            "round": r,
            "model_version": r,
            "sim_time_s": self.sim_time_s,
            "round_duration_s": self.sim_time_s - t_prev,
            "selected": started,
            "completed": len(buffer),
            "stragglers": len(arrived) - len(buffer),
            "dropped": len(ended) - len(arrived),
            "reporting": len(buffer),
            "rejected": int(rejected.sum()),
            "bytes_down": down,
            "bytes_up": up,
            "cum_bytes_down": self.cum_bytes_down,
            "cum_bytes_up": self.cum_bytes_up,
            "cum_bytes": self.cum_bytes_down + self.cum_bytes_up,
            "staleness_mean": float(stale.mean()),
            "staleness_max": int(stale.max()),
            "train_loss": loss,
            **evals,
            "failed": False,
            "aborted": False,
            "server_s": server_s,
            "train_s": train_s,
            "wall_time_s": time.perf_counter() - t0,
        }
        timer.mark("record")
        return RoundResult(record, clients, timer.result())

    # -- the clock ---------------------------------------------------------------------------

    def _fill_buffer(self) -> tuple[list[_Flight], list[_Flight]]:
        """Take events until K updates are buffered: (the buffer, every client that ended)."""
        buffer: list[_Flight] = []
        ended: list[_Flight] = []
        while len(buffer) < self.opts.buffer_size:
            t, seq = heapq.heappop(self._events)
            f = self._flights.pop(seq)
            self.sim_time_s = t
            if f.client >= 0:
                self._busy.discard(f.client)
                self._idle = 0
                ended.append(f)
                if not f.dropped and self.round - f.version <= self.opts.max_staleness:
                    buffer.append(f)
            if len(buffer) < self.opts.buffer_size:
                self._launch(t, 1)
        return buffer, ended

    def _launch(self, t: float, count: int) -> None:
        """Start up to ``count`` clients at time ``t`` from the current version."""
        if count <= 0:
            return
        key = self._starts
        ids = self._pick(key, t, count)
        n = self.sizes[ids].astype(np.int64)
        epochs = self.cfg.training.local_epochs
        tl = timelines(self.population, ids, n, key, epochs, self.download_bytes, self.upload_bytes)
        finish = tl.finish
        offline = self.population.offline_after(ids, t, t + finish) - t
        drop_at = np.minimum(np.where(tl.dropped, tl.drop_time, np.inf), offline)
        dropped = drop_at < finish
        end = t + np.where(dropped, drop_at, finish)
        compute = tl.compute_s
        self._downloads += len(ids)
        for i, cid in enumerate(ids.tolist()):
            self._add(
                _Flight(self._starts, cid, self.round, t, float(end[i]), bool(dropped[i]),
                        int(n[i]), float(tl.download_s[i]), float(compute[i]),
                        float(tl.upload_s[i]))
            )  # fmt: skip
        for _ in range(count - len(ids)):  # nobody (else) online: the slot tries again later
            self._idle += 1
            if self._idle > MAX_IDLE_RETRIES:
                raise RunError(self.round, f"no client came online by simulated time {t:.0f} s")
            self._add(_Flight(self._starts, -1, self.round, t, t + self.opts.idle_retry_s,
                              True, 0, 0.0, 0.0, 0.0))  # fmt: skip

    def _pick(self, key: int, t: float, count: int) -> np.ndarray:
        """Up to ``count`` clients online at ``t`` and not training, uniformly, sorted by id.

        Rejection sampling on keyed uniforms costs O(count) while most clients are free and
        online; otherwise the population's own selection, minus those training, decides.
        """
        pop = self.population
        busy = np.fromiter(self._busy, dtype=np.int64, count=len(self._busy))
        tries = 4 * count + 16
        u = uniform(pop.seed, key, Purpose.ASYNC_PICK, np.arange(tries))
        cand = np.minimum((u * pop.num_clients).astype(np.int64), pop.num_clients - 1)
        _, first = np.unique(cand, return_index=True)
        cand = cand[np.sort(first)]  # distinct, in draw order
        cand = cand[~np.isin(cand, busy)]
        cand = cand[pop.is_online(cand, key, t)][:count]
        if len(cand) == count:
            return np.sort(cand)
        pool = pop.select(key, t, count + len(busy))
        pool = pool[~np.isin(pool, busy)]
        order = np.lexsort((pool, uniform(pop.seed, key, Purpose.ASYNC_PICK_ORDER, pool)))
        return np.sort(pool[order[:count]])

    def _add(self, f: _Flight) -> None:
        self._starts += 1
        self._flights[f.seq] = f
        if f.client >= 0:
            self._busy.add(f.client)
        heapq.heappush(self._events, (f.end_s, f.seq))

    def _forget(self) -> None:
        """Drop models no client in flight needs, and trained updates already used."""
        live = {f.version for f in self._flights.values()} | {self.round}
        self._models = {v: w for v, w in self._models.items() if v in live}
        self._trained = {k: v for k, v in self._trained.items() if k[0] in live}

    # -- training and the step ---------------------------------------------------------------

    async def _train(self, needed: list[_Flight]) -> None:
        """Train every untrained cohort member of the versions ``needed`` asks for."""
        epochs = self.cfg.training.local_epochs
        for v in sorted({f.version for f in needed}):
            cohort = {
                f.client: f.num_samples
                for f in self._flights.values()
                if f.version == v and f.client >= 0 and not f.dropped
            }
            cohort.update({f.client: f.num_samples for f in needed if f.version == v})
            ids = np.array(sorted(c for c in cohort if (v, c) not in self._trained))
            n = np.array([cohort[c] for c in ids.tolist()], dtype=np.int64)
            chunks = make_chunks(ids, n, np.full(len(ids), epochs), self.cfg.runtime.chunks)
            results = await self.executor.train(
                self.round_context(v + 1), self._models[v], chunks, Pipeline(self.stages)
            )
            for res in results:
                rows = dict(zip(res.update_ids.tolist(), res.updates, strict=True))
                for cid, loss in zip(res.client_ids.tolist(), res.train_loss, strict=True):
                    self._trained[(v, cid)] = (rows.get(cid), float(loss))

    def _aggregate_buffer(
        self, r: int, buffer: list[_Flight], stale: np.ndarray
    ) -> tuple[Aggregate, float, np.ndarray]:
        """(the step's aggregate, the buffer's train loss, which updates were rejected)."""
        got = [self._trained[(f.version, f.client)] for f in buffer]
        rejected = np.array([u is None for u, _ in got])
        loss = np.array([lo for _, lo in got])
        n = np.array([f.num_samples for f in buffer], dtype=np.float64)
        self._check_rejections(r, n, np.ones(len(buffer), bool), ~rejected, loss)
        ok = ~rejected
        weights = n[ok] * staleness_weight(self.opts, stale[ok])
        updates = [u for u, _ in got if u is not None]
        if isinstance(self.aggregator, PerClientAggregator):
            order = np.argsort([f.client for f, k in zip(buffer, ok, strict=True) if k], "stable")
            mean = self.aggregator.combine(np.stack(updates)[order], weights[order])
            delta = mean * (weights.sum() / n[ok].sum())
        else:
            delta = np.zeros(self.model.num_parameters, dtype=np.float64)
            for wk, u in zip(weights, updates, strict=True):  # arrival order
                delta += wk * u.astype(np.float64)
            delta /= n[ok].sum()
        train_loss = float(np.dot(n[ok], loss[ok]) / n[ok].sum())
        count = int(ok.sum())
        return Aggregate(delta, count, {"samples": float(n[ok].sum()), "uniform": count}), \
            train_loss, rejected  # fmt: skip

    def _client_rows(
        self, r: int, ended: list[_Flight], buffer: list[_Flight], rejected: np.ndarray
    ) -> dict[str, np.ndarray]:
        """clients.csv rows: every client that arrived or dropped before this step."""
        used = {f.seq: bool(bad) for f, bad in zip(buffer, rejected, strict=True)}
        ids = np.array([f.client for f in ended], dtype=np.int64)
        outcome = ["dropped" if f.dropped else "completed" if f.seq in used else "straggler"
                   for f in ended]  # fmt: skip
        loss = [self._trained[(f.version, f.client)][1] if f.seq in used else math.nan
                for f in ended]  # fmt: skip
        epochs = self.cfg.training.local_epochs
        return {
            "round": np.full(len(ended), r, dtype=np.int64),
            "client_id": ids,
            "tier": tier_names(self.population, ids),
            "outcome": np.array(outcome, dtype=object),
            "num_samples": np.array([f.num_samples for f in ended], dtype=np.int64),
            "epochs_done": np.array([epochs if f.seq in used else 0 for f in ended]),
            "download_s": np.array([f.download_s for f in ended]),
            "compute_s": np.array([f.compute_s for f in ended]),
            "upload_s": np.array([f.upload_s for f in ended]),
            "train_loss": np.array(loss, dtype=np.float64),
            "rejected": np.array([used.get(f.seq, False) for f in ended]),
            "model_version": np.array([f.version for f in ended], dtype=np.int64),
            "start_s": np.array([f.start_s for f in ended]),
            "finish_s": np.array([f.end_s for f in ended]),
            "staleness": np.array([self.round - f.version for f in ended], dtype=np.int64),
        }

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The sync state plus what is in flight: clients, their versions' models, counters."""
        rows = [astuple(f) for f in sorted(self._flights.values(), key=lambda f: f.seq)]
        cols = list(zip(*rows, strict=True)) if rows else [[] for _ in _FIELDS]
        versions = sorted(self._models)
        return {
            **super().state_dict(),
            "async": {
                "flights": {k: np.asarray(c) for k, c in zip(_FIELDS, cols, strict=True)},
                "starts": self._starts,
                "downloads": self._downloads,
                "idle": self._idle,
                "versions": np.asarray(versions, dtype=np.int64),
                "models": np.stack([self._models[v] for v in versions]),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        a = state["async"]
        cols = [np.asarray(a["flights"][k]).tolist() for k in _FIELDS]
        self._flights = {row[0]: _Flight(*row) for row in zip(*cols, strict=True)}
        self._events = sorted((f.end_s, f.seq) for f in self._flights.values())
        self._busy = {f.client for f in self._flights.values() if f.client >= 0}
        self._starts, self._idle = int(a["starts"]), int(a["idle"])
        self._downloads = int(a["downloads"])
        models = np.asarray(a["models"])
        self._models = {int(v): models[i].copy() for i, v in enumerate(a["versions"])}
        self._models[self.round] = self.w
        self._trained = {}
