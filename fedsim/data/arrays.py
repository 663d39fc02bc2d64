"""A dataset held in memory once, split across clients by a :class:`Partition` of sample indices."""

from __future__ import annotations

import numpy as np

from fedsim.data.base import CentralData, FederatedDataset, Partition

__all__ = ["ArrayDataset"]


class ArrayDataset(FederatedDataset):
    """Central arrays plus a CSR partition; client k trains on ``x_train[partition.client(k)]``.

    Holds only numpy arrays and scalars, so it pickles cheaply and the arrays are shared
    zero-copy from Ray's object store; a client's samples are gathered only when asked for.
    Labels are held as int64, regression targets (float ``central.y_train``) as float32.
    """

    def __init__(self, central: CentralData, partition: Partition) -> None:
        self.task = central.task
        y_dtype = np.float32 if self.task == "regression" else np.int64
        x_train = np.asarray(central.x_train, dtype=np.float32)
        y_train = np.asarray(central.y_train, dtype=y_dtype)
        n = len(y_train)
        if len(x_train) != n:
            raise ValueError(f"x_train has {len(x_train)} rows, y_train {n}")
        offsets, indices = partition.offsets, partition.indices
        if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(indices):
            raise ValueError("partition offsets must start at 0 and end at len(indices)")
        if np.any(np.diff(offsets) < 0):
            raise ValueError("partition offsets must be non-decreasing")
        if len(indices) and (indices.min() < 0 or indices.max() >= n):
            raise ValueError(f"partition indices must lie in [0, {n})")
        self.x_train, self.y_train = x_train, y_train
        self.x_test = np.asarray(central.x_test, dtype=np.float32)
        self.y_test = np.asarray(central.y_test, dtype=y_dtype)
        self.offsets, self.indices = offsets, indices
        self.input_shape = tuple(int(d) for d in x_train.shape[1:])
        self.num_classes = int(central.num_classes)
        self.num_clients = len(offsets) - 1

    @property
    def partition(self) -> Partition:
        """The partition of training-sample indices (a view, not a copy)."""
        return Partition(self.offsets, self.indices)

    def client_sizes(self) -> np.ndarray:
        """Number of training samples of every client, int64 of shape (num_clients,)."""
        return np.diff(self.offsets)

    def client_indices(self, client_id: int) -> np.ndarray:
        """Indices into the central training arrays of one client's samples."""
        if not 0 <= client_id < self.num_clients:
            raise IndexError(f"client {client_id} out of range [0, {self.num_clients})")
        return self.indices[self.offsets[client_id] : self.offsets[client_id + 1]]

    def client_train(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(x float32 of shape (n, *input_shape), y of shape (n,)) of one client."""
        rows = self.client_indices(client_id)
        return self.x_train[rows], self.y_train[rows]

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The central held-out set used for test_accuracy / test_loss."""
        return self.x_test, self.y_test

    def label_counts(self, client_ids: np.ndarray) -> np.ndarray:
        """Per-client label histogram, int64 of shape (len(client_ids), num_classes)."""
        ids = np.asarray(client_ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_clients):
            raise IndexError(f"client ids must lie in [0, {self.num_clients})")
        if self.task == "regression":
            return np.zeros((len(ids), 0), dtype=np.int64)
        starts = self.offsets[ids]
        sizes = self.offsets[ids + 1] - starts
        row = np.repeat(np.arange(len(ids), dtype=np.int64), sizes)
        # Position of every selected sample in ``indices``: its row's start plus its rank within
        # the row, so all rows are gathered with one fancy index instead of a loop over clients.
        row_begin = np.cumsum(sizes) - sizes
        pos = np.repeat(starts - row_begin, sizes) + np.arange(int(sizes.sum()), dtype=np.int64)
        labels = self.y_train[self.indices[pos]]
        flat = np.bincount(row * self.num_classes + labels, minlength=len(ids) * self.num_classes)
        return flat.astype(np.int64, copy=False).reshape(len(ids), self.num_classes)
