"""Federated data as a researcher holds it: client ids, one client's arrays, the test set.

:class:`FederatedData` wraps a :class:`FederatedDataset` (what ``fedsim.data.load`` builds
from a dataset name or an experiment file); :class:`GivenClients` is a dataset made of the
per-client arrays a researcher built, keyed by client id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedsim.data.base import FederatedDataset


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's training data: x (n, *input_shape) float32, y (n,) int64."""

    id: int
    x: np.ndarray
    y: np.ndarray
    source: FederatedData | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"ClientData(id={self.id}, {len(self.y)} samples)"


class FederatedData:
    """A dataset split across clients: ``client_ids``, ``client(id)``, ``test_set``."""

    def __init__(self, dataset: FederatedDataset) -> None:
        self.dataset = dataset

    @property
    def num_clients(self) -> int:
        return self.dataset.num_clients

    @property
    def client_ids(self) -> np.ndarray:
        """Every client's id, int64 0..num_clients-1."""
        return np.arange(self.dataset.num_clients, dtype=np.int64)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.input_shape)

    @property
    def num_classes(self) -> int:
        return int(self.dataset.num_classes)

    def client_sizes(self) -> np.ndarray:
        """Training samples of every client, int64 (num_clients,)."""
        return self.dataset.client_sizes()

    def client(self, client_id: int) -> ClientData:
        """One client's training data (generated or sliced when asked for)."""
        cid = int(client_id)
        if not 0 <= cid < self.num_clients:
            raise IndexError(f"client {cid} out of range [0, {self.num_clients})")
        x, y = self.dataset.client_train(cid)
        return ClientData(cid, x, y, self)

    @property
    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The central held-out set (x, y)."""
        return self.dataset.test_set()

    def __repr__(self) -> str:
        return (
            f"FederatedData({self.num_clients} clients, input {self.input_shape}, "
            f"{self.num_classes} classes, {int(self.client_sizes().sum())} training samples)"
        )


class GivenClients(FederatedDataset):
    """Per-client arrays a researcher built, keyed by client id, in a population of ``N``.

    Clients not given have no data; the test set is the one given (or empty). With no client
    given, ``input_shape`` says what the samples would be. ``task = "regression"`` keeps y as
    float32 targets (int64 labels otherwise).
    """

    def __init__(
        self,
        clients: Mapping[int, tuple[np.ndarray, np.ndarray]],
        num_clients: int,
        test_set: tuple[np.ndarray, np.ndarray] | None = None,
        input_shape: tuple[int, ...] | None = None,
        task: str = "classification",
    ) -> None:
        self.task = task
        y_dtype = np.float32 if task == "regression" else np.int64
        self._data: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for cid, (x, y) in clients.items():
            x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=y_dtype)
            if len(x) != len(y) or len(y) == 0:
                raise ValueError(f"client {cid}: x has {len(x)} rows, y {len(y)}; need n >= 1")
            if not 0 <= int(cid) < num_clients:
                raise ValueError(f"client {cid}: id out of range [0, {num_clients})")
            self._data[int(cid)] = (x, y)
        shapes = {x.shape[1:] for x, _ in self._data.values()}
        if input_shape is not None:
            shapes.add(tuple(input_shape))
        if len(shapes) != 1:
            raise ValueError(f"clients: samples of shapes {sorted(shapes)}, need one shape")
        self.input_shape = tuple(int(d) for d in shapes.pop())
        self.num_clients = num_clients
        labels = (int(y.max()) + 1 for _, y in self._data.values())
        self.num_classes = 1 if task == "regression" else max(labels, default=1)
        if test_set is None:
            test_set = (np.zeros((0, *self.input_shape), np.float32), np.zeros(0, np.int64))
        self._test = test_set

    def client_sizes(self) -> np.ndarray:
        sizes = np.zeros(self.num_clients, dtype=np.int64)
        for cid, (_, y) in self._data.items():
            sizes[cid] = len(y)
        return sizes

    def client_train(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        if client_id not in self._data:
            raise KeyError(f"client {client_id}: no data given")
        return self._data[client_id]

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        return self._test
