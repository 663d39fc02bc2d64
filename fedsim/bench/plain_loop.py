"""FedAvg as the simplest code writes it: one process, a loop over clients, a step function.

The floors of the compute-bound workloads (:mod:`fedsim.bench.floors`,
:mod:`fedsim.bench.cnn_floor`) differ only in their step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from fedsim.config import Config
from fedsim.data.base import FederatedDataset

Step = Callable[[list[np.ndarray], np.ndarray, np.ndarray, np.float32], None]


def plain_fedavg(
    cfg: Config,
    ds: FederatedDataset,
    params: list[np.ndarray],
    step: Step,
    rounds: int,
    rng: np.random.Generator,
) -> tuple[list[float], list[np.ndarray]]:
    """FedAvg with minibatch SGD: per-round seconds and the final parameters.

    ``step(params, x, y, lr)`` is one SGD step in place. Client data come from fedsim's
    dataset and partition (loading is not timed); with ``training.shuffle`` each epoch visits
    a client's samples in a fresh order drawn from ``rng``, as fedsim does; cohorts come from
    ``default_rng(1)``.
    """
    t = cfg.training
    bs, lr, epochs = int(t.batch_size), np.float32(t.learning_rate), t.local_epochs
    n, k = cfg.population.num_clients, cfg.server.clients_per_round
    select = np.random.default_rng(1)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        total = [np.zeros_like(p) for p in params]
        weight = 0
        for c in select.choice(n, k, replace=False):
            x, y = ds.client_train(int(c))
            local = [p.copy() for p in params]
            for _ in range(epochs):
                order = rng.permutation(len(y)) if t.shuffle else np.arange(len(y))
                for s in range(0, len(y), bs):
                    idx = order[s : s + bs]
                    step(local, x[idx], y[idx], lr)
            for acc, p in zip(total, local, strict=True):
                acc += len(y) * p
            weight += len(y)
        params = [acc / weight for acc in total]
        times.append(time.perf_counter() - start)
    return times, params
