"""Workload W of the performance benchmarks: softmax-regression data generated from a client id.

A fixed labelling matrix W_true (d x c) is drawn from ``default_rng(0)``; client k draws, from
``default_rng(1000 + k)``, features x ~ N(0, 1) of shape (n, d) (stored as float32) and then
Gumbel noise g of shape (n, c), and labels its samples y = argmax(x W_true + g), i.e. samples
the softmax of x W_true. The numbers are those of the reference scripts the benchmarks compare
against, so they do not depend on ``experiment.seed``. The test set is the data of the
``test_clients`` ids that follow the population (k = N, N+1, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from fedsim.data.base import FederatedDataset
from fedsim.options import check, positive
from fedsim.registry import DATASETS

#: Client k's generator is seeded with this plus k, W_true's with 0 (the reference definition).
CLIENT_SEED_OFFSET = 1000


@dataclass(frozen=True)
class WorkloadOptions:
    samples_per_client: int = field(default=100, metadata=check(positive))
    num_features: int = field(default=60, metadata=check(positive))
    num_classes: int = field(default=10, metadata=check(positive))
    test_clients: int = field(default=10, metadata=check(positive))
    #: Per-client arrays this dataset stores (none: a client's data follows from its id).
    bytes_per_client: ClassVar[int] = 0


def true_weights(num_features: int, num_classes: int) -> np.ndarray:
    """The labelling matrix W_true, float64 of shape (num_features, num_classes)."""
    return np.random.default_rng(0).normal(size=(num_features, num_classes))


def client_data(k: int, w_true: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Client k's (x float32 (samples, d), y int64 (samples,)), as the reference defines them."""
    x, y = clients_data(np.array([k]), w_true, samples)
    return x[0], y[0]


def clients_data(ks: np.ndarray, w_true: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Clients ks at once: x (C, samples, d) float32, y (C, samples) int64.

    Each client's draws come from its own generator, one client after the other; only the
    labelling is done for the whole stack, with the same per-client matrix products.
    """
    d, c = w_true.shape
    z = np.empty((len(ks), samples, d))
    gumbel = np.empty((len(ks), samples, c))
    for i, k in enumerate(ks):
        rng = np.random.default_rng(CLIENT_SEED_OFFSET + int(k))
        # standard_normal fills the stack in place and draws the same stream as normal(0, 1),
        # which computes 0 + 1 * z; adding 0.0 below reproduces that sum exactly (-0 -> 0).
        rng.standard_normal(out=z[i])
        gumbel[i] = rng.gumbel(size=(samples, c))
    z += 0.0
    x = z.astype(np.float32)
    logits = x @ w_true
    logits += gumbel
    return x, np.argmax(logits, axis=2)


class WorkloadDataset(FederatedDataset):
    """``num_clients`` clients of ``samples_per_client`` samples each, generated on demand."""

    lazy = True

    def __init__(self, options: WorkloadOptions, num_clients: int) -> None:
        self.options = options
        self.num_clients = num_clients
        self.input_shape = (options.num_features,)
        self.num_classes = options.num_classes
        self.w_true = true_weights(options.num_features, options.num_classes)

    def client_sizes(self) -> np.ndarray:
        # A zero-stride view: every client has the same count, so a billion cost nothing.
        return np.broadcast_to(np.int64(self.options.samples_per_client), (self.num_clients,))

    def client_train(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.clients_train(np.array([client_id]))
        return x[0], y[0]

    def clients_train(self, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(client_ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_clients):
            raise IndexError(f"client ids must lie in [0, {self.num_clients})")
        return clients_data(ids, self.w_true, self.options.samples_per_client)

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        ks = np.arange(self.num_clients, self.num_clients + self.options.test_clients)
        x, y = clients_data(ks, self.w_true, self.options.samples_per_client)
        return x.reshape(-1, x.shape[-1]), y.reshape(-1)


@DATASETS.register("softmax_bench", WorkloadOptions)
def make_workload(options: WorkloadOptions, *, num_clients: int, seed: int) -> WorkloadDataset:
    """Workload W's data; ``seed`` is ignored (the data are those of the reference scripts)."""
    return WorkloadDataset(options, num_clients)
