"""The unit of work: a chunk of clients trained in one call, returning a partial weighted sum.

Chunks are cut from the round's contributors alone (never from the number of workers) and
their sums are combined in chunk order, so results are bit-identical for any number of workers
and for either backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsim.data.base import FederatedDataset
from fedsim.models.base import Model
from fedsim.privacy.rounds import ClientStep, privatize_updates
from fedsim.rng import Purpose, generator, uniform
from fedsim.training import local_sgd

#: Most clients trained in one stacked kernel; bounded so stacks stay cache-friendly.
MAX_STACK = 64


@dataclass(frozen=True)
class TrainSpec:
    """Everything about local training that is fixed for a run."""

    seed: int
    batch_size: int  # 0 = full batch
    learning_rate: float
    shuffle: bool
    prox_mu: float
    max_update_norm: float = math.inf  # updates with a larger L2 norm are rejected
    nan_update_rate: float = 0.0  # fault injection: share of clients whose update is NaN


@dataclass(frozen=True)
class Chunk:
    index: int
    client_ids: np.ndarray  # int64, in training order (grouped by batch schedule)
    num_samples: np.ndarray  # int64, each client's training samples
    epochs: np.ndarray  # int64, epochs each client runs
    work: int  # samples processed: sum of num_samples * epochs


@dataclass(frozen=True)
class ChunkResult:
    index: int
    weighted_sum: np.ndarray  # float64 (P,): sum_k n_k w_k
    weight: float  # sum_k n_k
    client_ids: np.ndarray
    train_loss: np.ndarray  # float64, each client's mean minibatch loss
    # bool per client: update rejected (non-finite or norm above the bound), not in the sum
    rejected: np.ndarray | None = None
    # With [privacy]: weighted_sum is the sum of the clipped (noised) deltas, or the uint64
    # sum of masked inputs under secure aggregation; unclipped counts updates within the clip.
    unclipped: int = 0


def make_chunks(
    ids: np.ndarray, num_samples: np.ndarray, epochs: np.ndarray, num_chunks: int
) -> list[Chunk]:
    """Cut the contributors into at most ``num_chunks`` contiguous chunks of similar work.

    Clients are ordered by (num_samples, epochs, id) first, so clients with the same batch
    schedule sit next to each other and can be stacked.
    """
    if len(ids) == 0:
        return []
    order = np.lexsort((ids, epochs, num_samples))
    ids, num_samples, epochs = ids[order], num_samples[order], epochs[order]
    work = num_samples * epochs
    cum = np.cumsum(work)
    k = min(num_chunks, len(ids))
    # Cut where cumulative work crosses each multiple of total/k; every chunk non-empty.
    targets = cum[-1] * np.arange(1, k) / k
    cuts = np.searchsorted(cum, targets, side="left") + 1
    cuts = np.unique(np.clip(cuts, 1, len(ids) - 1)) if len(ids) > 1 else np.array([], int)
    bounds = [0, *cuts.tolist(), len(ids)]
    return [
        Chunk(i, ids[a:b], num_samples[a:b], epochs[a:b], int(work[a:b].sum()))
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]


def train_chunk(
    model: Model,
    dataset: FederatedDataset,
    w_global: np.ndarray,
    spec: TrainSpec,
    round_: int,
    chunk: Chunk,
    privacy: ClientStep | None = None,
) -> ChunkResult:
    """Train every client of a chunk from ``w_global``; return their sample-weighted sum."""
    return train_chunks(model, dataset, w_global, spec, round_, [chunk], privacy)[0]


def train_chunks(
    model: Model,
    dataset: FederatedDataset,
    w_global: np.ndarray,
    spec: TrainSpec,
    round_: int,
    chunks: list[Chunk],
    privacy: ClientStep | None = None,
) -> list[ChunkResult]:
    """Train the clients of several chunks at once; each chunk's result as if trained alone.

    Clients with the same batch schedule are stacked across chunk boundaries (a worker gets
    several chunks, each often smaller than a good stack). That changes nothing in the
    results: a client's model does not depend on its stack, and each chunk's sum adds its
    clients one by one in the chunk's own order, whatever stacks they were trained in.
    """
    if not chunks:
        return []
    lengths = [len(c.client_ids) for c in chunks]
    ids = np.concatenate([c.client_ids for c in chunks])
    sizes = np.concatenate([c.num_samples for c in chunks])
    epochs = np.concatenate([c.epochs for c in chunks])
    owner = np.repeat(np.arange(len(chunks)), lengths)
    # Chunks are sorted by (num_samples, epochs, id), so this order keeps each chunk's own.
    order = np.lexsort((np.arange(len(ids)), epochs, sizes))
    dtype = np.float64 if privacy is None else privacy.accumulator_dtype
    accs = [np.zeros(model.num_parameters, dtype=dtype) for _ in chunks]
    weights = [0.0] * len(chunks)
    unclipped = [0] * len(chunks)
    losses = np.empty(len(ids), dtype=np.float64)
    rejected = np.zeros(len(ids), dtype=bool)
    start = 0
    while start < len(order):
        n, e = int(sizes[order[start]]), int(epochs[order[start]])
        stop = start + 1
        while (
            stop < len(order)
            and stop - start < MAX_STACK
            and sizes[order[stop]] == n
            and epochs[order[stop]] == e
        ):
            stop += 1
        members = order[start:stop]
        member_ids = ids[members]
        x, y = dataset.clients_train(member_ids)
        orders = None
        if spec.shuffle and spec.batch_size > 0 and spec.batch_size < n:
            orders = np.stack(
                [_epoch_orders(spec.seed, round_, int(cid), e, n) for cid in member_ids]
            )
        w, loss = local_sgd(
            model,
            w_global,
            x,
            y,
            epochs=e,
            batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            mu=spec.prox_mu,
            orders=orders,
        )
        bad = screen_updates(w, w_global, spec, round_, member_ids)
        rejected[members] = bad
        losses[members] = loss
        # n * w is exact in float64 (a float32 times an integer below 2**24), and each chunk
        # adds its clients one at a time in its own order, so its sum does not depend on stacks.
        if privacy is None:
            weighted = w.astype(np.float64)
            weighted *= n
        else:
            # Rejected clients contribute zeros here (they still take part in the protocol).
            weighted, within = privatize_updates(privacy, member_ids, n, w, w_global, bad)
        for row, m in enumerate(members):
            if privacy is not None:
                accs[owner[m]] += weighted[row]  # uint64 wraps mod 2^64, a multiple of 2^bits
                unclipped[owner[m]] += int(within[row])
            if not bad[row]:
                if privacy is None:
                    accs[owner[m]] += weighted[row]
                weights[owner[m]] += n
        start = stop
    bounds = np.cumsum([0, *lengths])
    return [
        ChunkResult(
            c.index, accs[i], weights[i], c.client_ids, losses[a:b], rejected[a:b], unclipped[i]
        )
        for i, (c, a, b) in enumerate(zip(chunks, bounds[:-1], bounds[1:], strict=True))
    ]


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
