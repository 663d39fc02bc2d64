"""The dataset contract the runtime relies on: clients are rows, data is sliced on demand."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class FederatedDataset(ABC):
    """Training data split across ``num_clients`` clients plus a central test set.

    Implementations are pickled once into the Ray object store and shared by every worker, so
    they hold only numpy arrays (zero-copy there) and small scalars; a client's samples are
    produced by :meth:`client_train` only when that client trains.

    ``task = "regression"``: y holds float32 targets instead of int64 labels, and
    ``num_classes`` is 0 (a regression set has no label histogram).
    """

    input_shape: tuple[int, ...]
    num_classes: int
    num_clients: int
    task: str = "classification"

    @abstractmethod
    def client_sizes(self) -> np.ndarray:
        """Number of training samples of every client, int64 of shape (num_clients,)."""

    @abstractmethod
    def client_train(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(x float32 of shape (n, *input_shape), y of shape (n,)) of one client.

        y is int64 labels, or float32 targets for a regression dataset.
        """

    def clients_train(self, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clients of equal size at once: x (C, n, *input_shape) float32, y (C, n).

        Equal to stacking :meth:`client_train` of each, which is what this default does; a
        dataset may produce the stack more cheaply (the runtime trains clients in stacks).
        """
        parts = [self.client_train(int(k)) for k in client_ids]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])

    @abstractmethod
    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The central held-out set used for test_accuracy / test_loss."""

    def client_test(self, client_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """A client's own held-out samples, where the dataset has them (fairness evaluation)."""
        return None

    def train_eval_set(self, max_clients: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Training data on which the global objective is measured (``server.eval_train``).

        All clients' training data, or that of a fixed seeded sample of ``max_clients`` clients
        when there are more.
        """
        ids = np.arange(self.num_clients)
        if self.num_clients > max_clients:
            rng = np.random.default_rng(np.random.SeedSequence([self.num_clients, 0x7E57]))
            ids = np.sort(rng.choice(self.num_clients, max_clients, replace=False))
        parts = [self.client_train(int(k)) for k in ids]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def label_counts(self, client_ids: np.ndarray) -> np.ndarray:
        """Per-client label histogram, int64 of shape (len(client_ids), num_classes).

        A regression dataset has no labels: (len(client_ids), 0).
        """
        out = np.zeros((len(client_ids), self.num_classes), dtype=np.int64)
        if self.task == "regression":
            return out
        for row, cid in enumerate(client_ids):
            _, y = self.client_train(int(cid))
            out[row] = np.bincount(y, minlength=self.num_classes)
        return out


class CentralData:
    """A whole dataset in memory, before it is partitioned across clients.

    Integer ``y`` are class labels; floating-point ``y`` are regression targets.
    """

    def __init__(
        self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
    ) -> None:
        self.x_train, self.y_train = x_train, y_train
        self.x_test, self.y_test = x_test, y_test

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def task(self) -> str:
        """``"regression"`` when the targets are floating point, else ``"classification"``."""
        return "regression" if np.asarray(self.y_train).dtype.kind == "f" else "classification"

    @property
    def num_classes(self) -> int:
        """Number of classes (largest label + 1); 0 for regression targets."""
        if self.task == "regression":
            return 0
        return int(max(self.y_train.max(), self.y_test.max())) + 1


class Partition:
    """Client k owns training samples ``indices[offsets[k]:offsets[k + 1]]`` (CSR layout)."""

    def __init__(self, offsets: np.ndarray, indices: np.ndarray) -> None:
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)

    @property
    def num_clients(self) -> int:
        return len(self.offsets) - 1

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def client(self, k: int) -> np.ndarray:
        return self.indices[self.offsets[k] : self.offsets[k + 1]]

    @classmethod
    def from_lists(cls, parts: list[np.ndarray]) -> Partition:
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        indices = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return cls(offsets, indices)
