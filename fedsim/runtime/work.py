"""The unit of work: a chunk of clients trained in one call, returning a partial weighted sum.

Chunks are cut from the round's contributors alone (never from the number of workers) and
their sums are combined in chunk order, so results are bit-identical for any number of workers
and for either backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.data.base import FederatedDataset
from fedsim.models.base import Model
from fedsim.rng import Purpose, generator
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
) -> ChunkResult:
    """Train every client of a chunk from ``w_global``; return their sample-weighted sum."""
    acc = np.zeros(model.num_parameters, dtype=np.float64)
    weight = 0.0
    losses = np.empty(len(chunk.client_ids), dtype=np.float64)
    ids, sizes, epochs = chunk.client_ids, chunk.num_samples, chunk.epochs
    start = 0
    while start < len(ids):
        n, e = int(sizes[start]), int(epochs[start])
        stop = start + 1
        while (
            stop < len(ids) and stop - start < MAX_STACK and sizes[stop] == n and epochs[stop] == e
        ):
            stop += 1
        group = [dataset.client_train(int(cid)) for cid in ids[start:stop]]
        x = np.stack([g[0] for g in group])
        y = np.stack([g[1] for g in group])
        orders = None
        if spec.shuffle and spec.batch_size > 0 and spec.batch_size < n:
            orders = np.stack(
                [_epoch_orders(spec.seed, round_, int(cid), e, n) for cid in ids[start:stop]]
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
        acc += n * w.astype(np.float64).sum(axis=0)
        weight += n * len(group)
        losses[start:stop] = loss
        start = stop
    return ChunkResult(chunk.index, acc, weight, ids, losses)


def _epoch_orders(seed: int, round_: int, client_id: int, epochs: int, n: int) -> np.ndarray:
    rng = generator(seed, Purpose.SHUFFLE, round_, client_id)
    return rng.permuted(np.broadcast_to(np.arange(n), (epochs, n)), axis=1)
