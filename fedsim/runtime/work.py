"""The unit of work: a chunk of clients trained in one call, returning their contributions.

Chunks are cut from the round's contributors alone (never from the number of workers) and
their sums are combined in chunk order, so results are bit-identical for any number of workers
and for either backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedsim.data.base import FederatedDataset
from fedsim.faults import ClientFaults
from fedsim.models.base import Model
from fedsim.pipeline.base import Pipeline, UpdateBatch
from fedsim.rng import Purpose, generator, uniform
from fedsim.strategies.base import ClientBatch, ClientUpdate, RoundContext

if TYPE_CHECKING:
    from fedsim.aggregators.base import Aggregator
    from fedsim.config import Config
    from fedsim.strategies.base import Strategy


@dataclass(frozen=True)
class TrainSpec:
    """Everything about client work that is fixed for a run."""

    seed: int
    client: ClientUpdate
    streaming: bool = True  # False: per-client updates travel to the server
    max_update_norm: float = math.inf  # updates with a larger L2 norm are rejected
    nan_update_rate: float = 0.0  # fault injection: share of clients whose update is NaN
    faults: ClientFaults | None = None  # Byzantine clients whose updates the worker replaces


def train_spec(cfg: Config, strategy: Strategy, aggregator: Aggregator | None = None) -> TrainSpec:
    """The run's fixed client-work settings from its config, strategy and aggregator."""
    faults = ClientFaults.from_config(cfg.faults, cfg.experiment.seed, cfg.population.num_clients)
    return TrainSpec(
        seed=cfg.experiment.seed,
        client=strategy.client,
        # Asynchronous steps need each client's update: they arrive at different steps.
        streaming=(aggregator is None or aggregator.streaming) and cfg.server.mode == "sync",
        max_update_norm=cfg.server.max_update_norm,
        nan_update_rate=cfg.faults.nan_update_rate,
        faults=faults if faults.byzantine.any() else None,
    )


@dataclass(frozen=True)
class Chunk:
    index: int
    client_ids: np.ndarray  # int64, in training order (grouped by batch schedule)
    num_samples: np.ndarray  # int64, each client's training samples
    epochs: np.ndarray  # int64, epochs each client runs
    work: int  # samples processed: sum of num_samples * epochs
    state: dict[str, np.ndarray] = field(default_factory=dict)  # rows aligned with client_ids
    # int64 aggregation weight of each client; None: its sample count (server.weighting)
    weights: np.ndarray | None = None

    @property
    def agg_weights(self) -> np.ndarray:
        return self.num_samples if self.weights is None else self.weights


@dataclass(frozen=True)
class ChunkResult:
    index: int
    client_ids: np.ndarray
    train_loss: np.ndarray  # float64, each client's mean minibatch loss
    # bool per client: update rejected (non-finite or norm above the bound), not aggregated
    rejected: np.ndarray
    weight: float  # sum of the accepted clients' aggregation weights (default: sample counts)
    # Streaming: the sum of contributions (float64 sum_k n_k w_k without a pipeline; the
    # pipeline's rows, float64 or uint64 masked, with one). None for per-client aggregation.
    weighted_sum: np.ndarray | None = None
    # Per-client aggregation: accepted clients' updates (k, P) float32 and their weights.
    updates: np.ndarray | None = None
    update_ids: np.ndarray | None = None
    update_weights: np.ndarray | None = None
    payload_sums: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, np.ndarray] = field(default_factory=dict)  # new rows, aligned with ids
    stats: dict[str, int] = field(default_factory=dict)


def make_chunks(
    ids: np.ndarray,
    num_samples: np.ndarray,
    epochs: np.ndarray,
    num_chunks: int,
    weights: np.ndarray | None = None,
) -> list[Chunk]:
    """Cut the contributors into at most ``num_chunks`` contiguous chunks of similar work.

    Clients are ordered by (num_samples, epochs, id) first, so clients with the same batch
    schedule sit next to each other and can be stacked. ``weights`` (int64, aligned with
    ``ids``) are the clients' aggregation weights; None weighs each by its sample count.
    """
    if len(ids) == 0:
        return []
    order = np.lexsort((ids, epochs, num_samples))
    ids, num_samples, epochs = ids[order], num_samples[order], epochs[order]
    weights = None if weights is None else np.asarray(weights, dtype=np.int64)[order]
    work = num_samples * epochs
    cum = np.cumsum(work)
    k = min(num_chunks, len(ids))
    # Cut where cumulative work crosses each multiple of total/k; every chunk non-empty.
    targets = cum[-1] * np.arange(1, k) / k
    cuts = np.searchsorted(cum, targets, side="left") + 1
    cuts = np.unique(np.clip(cuts, 1, len(ids) - 1)) if len(ids) > 1 else np.array([], int)
    bounds = [0, *cuts.tolist(), len(ids)]
    return [
        Chunk(
            i,
            ids[a:b],
            num_samples[a:b],
            epochs[a:b],
            int(work[a:b].sum()),
            weights=None if weights is None else weights[a:b],
        )
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]


class _Sums:
    """One chunk's accumulators; clients are added one at a time in the chunk's own order."""

    def __init__(self, spec: TrainSpec, num_parameters: int, dtype: type) -> None:
        self.acc = np.zeros(num_parameters, dtype=dtype) if spec.streaming else None
        self.updates: list[np.ndarray] = []
        self.update_ids: list[int] = []
        self.update_weights: list[float] = []
        self.payloads = {
            name: np.zeros(p.size(num_parameters), dtype=np.float64)
            for name, p in spec.client.payloads.items()
        }
        self.weight = 0.0
        self.stats: dict[str, int] = {}


def train_chunks(
    model: Model,
    dataset: FederatedDataset,
    w_global: np.ndarray,
    spec: TrainSpec,
    ctx: RoundContext,
    chunks: list[Chunk],
    pipeline: Pipeline | None = None,
) -> list[ChunkResult]:
    """Train the clients of several chunks at once; each chunk's result as if trained alone.

    Clients with the same batch schedule are stacked across chunk boundaries (a worker gets
    several chunks, each often smaller than a good stack). That changes nothing in the
    results: a client's model does not depend on its stack, and each chunk's sums add its
    clients one by one in the chunk's own order, whatever stacks they were trained in.
    """
    if not chunks:
        return []
    pipeline = pipeline or Pipeline()
    lengths = [len(c.client_ids) for c in chunks]
    ids = np.concatenate([c.client_ids for c in chunks])
    sizes = np.concatenate([c.num_samples for c in chunks])
    epochs = np.concatenate([c.epochs for c in chunks])
    agg_w = np.concatenate([c.agg_weights for c in chunks])
    state = {name: np.concatenate([c.state[name] for c in chunks]) for name in chunks[0].state}
    owner = np.repeat(np.arange(len(chunks)), lengths)
    # Chunks are sorted by (num_samples, epochs, id), so this order keeps each chunk's own.
    order = np.lexsort((np.arange(len(ids)), epochs, sizes))
    sums = [_Sums(spec, model.num_parameters, pipeline.accumulator_dtype) for _ in chunks]
    losses = np.empty(len(ids), dtype=np.float64)
    rejected = np.zeros(len(ids), dtype=bool)
    for members in stacks(sizes[order], epochs[order], model.max_stack):
        members = order[members]
        n, e = int(sizes[members[0]]), int(epochs[members[0]])
        _train_stack(model, dataset, w_global, spec, ctx, pipeline, n, e, members, ids, agg_w,
                     state, owner, sums, losses, rejected)  # fmt: skip
    bounds = np.cumsum([0, *lengths])
    out = []
    for i, (c, a, b) in enumerate(zip(chunks, bounds[:-1], bounds[1:], strict=True)):
        s = sums[i]
        per_client = not spec.streaming
        out.append(
            ChunkResult(
                c.index,
                c.client_ids,
                losses[a:b],
                rejected[a:b],
                s.weight,
                weighted_sum=s.acc,
                updates=_stack(s.updates, model.num_parameters) if per_client else None,
                update_ids=np.asarray(s.update_ids, dtype=np.int64) if per_client else None,
                update_weights=np.asarray(s.update_weights) if per_client else None,
                payload_sums=s.payloads,
                state={name: rows[a:b] for name, rows in state.items()},
                stats=s.stats,
            )
        )
    return out


def fold_leading(results: list[ChunkResult]) -> list[ChunkResult]:
    """The results of chunks 0, 1, ..., j (when all present) folded into one, the rest as is.

    The server adds the chunks' float64 sums left to right from zero in chunk order, so the
    leading chunks' sum, added the same way, gives it the same bits in one array: a worker
    holding the first chunks (all of them, with one worker) returns one model-sized array
    instead of one per chunk. Per-client updates and masked (uint64) sums are left alone.
    """
    results = sorted(results, key=lambda r: r.index)
    j = 0
    while j < len(results) and results[j].index == j:
        j += 1
    head = results[:j]
    if j < 2 or any(r.weighted_sum is None or r.weighted_sum.dtype != np.float64 for r in head):
        return results
    acc = np.zeros_like(head[0].weighted_sum)
    for r in head:
        acc += r.weighted_sum
    stats: dict[str, int] = {}
    for r in head:
        for name, count in r.stats.items():
            stats[name] = stats.get(name, 0) + count
    merged = ChunkResult(
        0,
        np.concatenate([r.client_ids for r in head]),
        np.concatenate([r.train_loss for r in head]),
        np.concatenate([r.rejected for r in head]),
        sum(r.weight for r in head),
        weighted_sum=acc,
        payload_sums={p: sum(r.payload_sums[p] for r in head) for p in head[0].payload_sums},
        state={name: np.concatenate([r.state[name] for r in head]) for name in head[0].state},
        stats=stats,
    )
    return [merged, *results[j:]]


def stacks(sizes: np.ndarray, epochs: np.ndarray, max_stack: int) -> list[slice]:
    """Consecutive runs of equal (size, epochs), each cut into near-equal stacks of at most
    ``max_stack`` clients (9 clients, at most 4 a stack: 3, 3, 3 rather than 4, 4, 1); slices
    of the given schedule-sorted order."""
    if len(sizes) == 0:
        return []
    change = np.flatnonzero((sizes[1:] != sizes[:-1]) | (epochs[1:] != epochs[:-1])) + 1
    bounds = [0, *change.tolist(), len(sizes)]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        parts = -(-(b - a) // max(1, max_stack))
        cuts = [a + (b - a) * i // parts for i in range(parts + 1)]
        out.extend(slice(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True))
    return out


def _train_stack(
    model: Model,
    dataset: FederatedDataset,
    w_global: np.ndarray,
    spec: TrainSpec,
    ctx: RoundContext,
    pipeline: Pipeline,
    n: int,
    e: int,
    members: np.ndarray,
    ids: np.ndarray,
    agg_w: np.ndarray,
    state: dict[str, np.ndarray],
    owner: np.ndarray,
    sums: list[_Sums],
    losses: np.ndarray,
    rejected: np.ndarray,
) -> None:
    """Train one stack of clients with the same schedule and add them to their chunks."""
    member_ids = ids[members]
    wts = agg_w[members]  # each client's aggregation weight (its sample count by default)
    x, y = dataset.clients_train(member_ids)
    orders = None
    if ctx.shuffle and 0 < ctx.batch_size < n:
        orders = np.stack(
            [_epoch_orders(spec.seed, ctx.round, int(cid), e, n) for cid in member_ids]
        )
    client_state = {name: state[name][members] for name in spec.client.state}
    out = spec.client(ClientBatch(model, w_global, x, y, e, orders, ctx, client_state))
    w = out.w
    if spec.faults is not None:  # a Byzantine client's update is crafted, then screened
        spec.faults.attack_models(w, w_global, member_ids, ctx.round)
    bad = screen_updates(w, w_global, spec, ctx.round, member_ids)
    rejected[members] = bad
    losses[members] = out.loss
    for name, rows in out.state.items():  # a rejected client keeps its old state
        state[name][members[~bad]] = rows[~bad]
    if pipeline or not spec.streaming:
        deltas = w.astype(np.float64) - w_global
        deltas[bad] = 0.0
        batch = UpdateBatch(
            spec.seed, ctx.round, member_ids, n, bad,
            {name: state[name][members] for name in pipeline.state},
        )  # fmt: skip
        rows = pipeline.apply(deltas, batch)
        for name, new in batch.state.items():
            state[name][members[~bad]] = new[~bad]
        if rows.dtype != np.uint64:
            rows[bad] = 0.0  # the server sees a rejected update and leaves it out
        if not pipeline.weighs and spec.streaming:
            rows = rows * wts[:, None]
    else:
        # n * w is exact in float64 (a float32 times an integer below 2**24), and each chunk
        # adds its clients one at a time in its own order, so its sum does not depend on stacks.
        rows = w.astype(np.float64)
        rows *= wts[:, None]
        batch = None
    for row, m in enumerate(members):
        s = sums[owner[m]]
        if spec.streaming and (pipeline or not bad[row]):
            # Under secure aggregation a rejected client still sends its masked zeros.
            s.acc += rows[row]  # uint64 wraps mod 2^64, a multiple of 2^bits
        if bad[row]:
            continue
        wt = int(wts[row])
        s.weight += wt
        if not spec.streaming:
            s.updates.append(rows[row].astype(np.float32))
            s.update_ids.append(int(ids[m]))
            s.update_weights.append(float(wt))
        for name, p in spec.client.payloads.items():
            s.payloads[name] += out.payloads[name][row] * (wt if p.weighting == "samples" else 1.0)
    if batch is not None:  # per-client counts of the stages, added to each client's chunk
        for name, counts in batch.counts.items():
            for row, m in enumerate(members):
                stats = sums[owner[m]].stats
                stats[name] = stats.get(name, 0) + int(counts[row])


def _stack(rows: list[np.ndarray], num_parameters: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, num_parameters), dtype=np.float32)
    return np.stack(rows)


def screen_updates(
    w: np.ndarray, w_global: np.ndarray, spec: TrainSpec, round_: int, ids: np.ndarray
) -> np.ndarray:
    """Which trained models (C, P) to reject: non-finite, or ||w_k - w_global|| too large.

    Injected faults (``spec.nan_update_rate``) overwrite the chosen clients' models with NaN
    first, by a draw keyed on (seed, round, client), so they are rejected like real ones.
    """
    if spec.nan_update_rate > 0:
        hit = uniform(spec.seed, round_, Purpose.FAULT_NAN, ids) < spec.nan_update_rate
        w[hit] = np.nan
    bad = np.zeros(len(w), dtype=bool)
    for k in range(len(w)):  # one client at a time: a float64 copy of a stack can be large
        d = w[k].astype(np.float64) - w_global
        # Finite float32 entries cannot overflow a float64 sum of squares, so the norm is
        # finite exactly when every entry is.
        norm = math.sqrt(float(np.dot(d, d)))
        bad[k] = not (math.isfinite(norm) and norm <= spec.max_update_norm)
    return bad


def _epoch_orders(seed: int, round_: int, client_id: int, epochs: int, n: int) -> np.ndarray:
    rng = generator(seed, Purpose.SHUFFLE, round_, client_id)
    return rng.permuted(np.broadcast_to(np.arange(n), (epochs, n)), axis=1)
