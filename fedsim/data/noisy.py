"""Label noise on a fixed set of noisy clients (``faults.label_noise``), as a dataset wrapper.

A noisy client has ``round(label_noise * n)`` of its ``n`` training labels replaced by labels
drawn uniformly from all classes (a replacement may hit the true label). Which samples and
which labels are fixed per client by the seed (keyed draw), so the client holds the same bad
labels every round and on every worker. Only training labels change: the test set, the clean
global objective (``server.eval_train``) and ``partition.csv`` use the true labels.
"""

from __future__ import annotations

import numpy as np

from fedsim.data.base import FederatedDataset
from fedsim.rng import Purpose, generator


class NoisyLabels(FederatedDataset):
    """``base`` with the training labels of the clients in ``noisy`` partly replaced."""

    def __init__(
        self, base: FederatedDataset, noisy: np.ndarray, label_noise: float, seed: int
    ) -> None:
        self.base, self.noisy = base, np.asarray(noisy, dtype=bool)
        self.label_noise, self.seed = label_noise, seed
        self.input_shape = base.input_shape
        self.num_classes = base.num_classes
        self.num_clients = base.num_clients
        self.task = getattr(base, "task", "classification")

    def noisy_labels(self, client_id: int, y: np.ndarray) -> np.ndarray:
        """A copy of client ``client_id``'s labels ``y`` with its share replaced."""
        n = len(y)
        count = int(round(self.label_noise * n))
        rng = generator(self.seed, Purpose.LABEL_NOISE, client_id)
        where = rng.choice(n, size=count, replace=False)
        out = np.array(y, dtype=np.int64, copy=True)
        out[where] = rng.integers(0, self.num_classes, size=count)
        return out

    def client_sizes(self) -> np.ndarray:
        return self.base.client_sizes()

    def client_train(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.base.client_train(client_id)
        return x, self.noisy_labels(client_id, y) if self.noisy[client_id] else y

    def clients_train(self, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.base.clients_train(client_ids)
        rows = np.flatnonzero(self.noisy[client_ids])
        if len(rows):
            y = np.array(y, copy=True)
            for row in rows:
                y[row] = self.noisy_labels(int(client_ids[row]), y[row])
        return x, y

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        return self.base.test_set()

    def client_test(self, client_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self.base.client_test(client_id)

    def train_eval_set(self, max_clients: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        return self.base.train_eval_set(max_clients)

    def label_counts(self, client_ids: np.ndarray) -> np.ndarray:
        return self.base.label_counts(client_ids)
