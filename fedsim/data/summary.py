"""How a dataset is split across clients: sizes and label mixes per client, as a table.

Used by ``fedsim data`` to inspect a config's partition without training. The summary of a
lazily generated dataset with very many clients (synthetic devices) covers a seeded sample of
clients, since counting every client's labels would mean generating all of its data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsim.data.base import FederatedDataset
from fedsim.rng import Purpose, generator

__all__ = [
    "PartitionSummary",
    "describe",
    "partition_frame",
    "sample_client_ids",
    "summarize_partition",
]

DEFAULT_SAMPLE_SIZE = 1000
# Keeps this sample independent of the partitioners' streams (1-4) under the same purpose.
_SAMPLE_STREAM = 100


def partition_frame(
    dataset: FederatedDataset, client_ids: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per client: ``client_id, num_samples, label_0 ... label_K`` (training samples)."""
    ids = (
        np.arange(dataset.num_clients, dtype=np.int64)
        if client_ids is None
        else np.asarray(client_ids, dtype=np.int64).reshape(-1)
    )
    counts = dataset.label_counts(ids)
    frame = pd.DataFrame({"client_id": ids, "num_samples": dataset.client_sizes()[ids]})
    for label in range(dataset.num_classes):
        frame[f"label_{label}"] = counts[:, label]
    return frame


def sample_client_ids(seed: int, num_clients: int, k: int) -> np.ndarray:
    """A sorted seeded sample of ``min(k, num_clients)`` distinct client ids."""
    k = min(int(k), int(num_clients))
    rng = generator(seed, Purpose.PARTITION, _SAMPLE_STREAM)
    return np.sort(rng.choice(num_clients, size=k, replace=False)).astype(np.int64)


def describe(values: np.ndarray) -> dict[str, float]:
    """``min, median, mean, max`` of a 1-D array (NaN when it is empty)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return dict.fromkeys(("min", "median", "mean", "max"), float("nan"))
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


@dataclass
class PartitionSummary:
    """A partition's client sizes (all clients) and label counts (all or a sampled subset).

    ``frame`` is ``partition_frame`` of the summarised clients; ``sizes`` holds the training-set
    size of every client, which every dataset knows without generating data.
    """

    num_clients: int
    num_classes: int
    input_shape: tuple[int, ...]
    sizes: np.ndarray
    frame: pd.DataFrame
    sampled: bool

    @property
    def label_columns(self) -> list[str]:
        return [f"label_{k}" for k in range(self.num_classes)]

    def size_stats(self) -> dict[str, float]:
        """Samples per client over all clients, plus the ``total``."""
        return {**describe(self.sizes), "total": float(self.sizes.sum())}

    def labels_per_client(self) -> np.ndarray:
        """Number of distinct labels each summarised client holds."""
        return (self.frame[self.label_columns].to_numpy() > 0).sum(axis=1)

    def text(self, rows: int = 5) -> str:
        """The printed summary: counts, size and label statistics, the first ``rows`` rows."""
        sizes = self.size_stats()
        labels = describe(self.labels_per_client())
        shape = "x".join(str(d) for d in self.input_shape)
        kind = f"{self.num_classes} labels" if self.num_classes else "regression targets"
        lines = [
            f"{self.num_clients:,} clients, {kind}, inputs of shape {shape}",
            f"samples per client (all {self.num_clients:,} clients): "
            f"min {sizes['min']:,.0f}, median {sizes['median']:,.1f}, "
            f"mean {sizes['mean']:,.1f}, max {sizes['max']:,.0f}; total {sizes['total']:,.0f}",
        ]
        scope = (
            f"seeded sample of {len(self.frame):,} clients, as the data is generated lazily"
            if self.sampled
            else f"all {self.num_clients:,} clients"
        )
        if self.num_classes:
            lines.append(
                f"labels per client ({scope}): min {labels['min']:.0f}, "
                f"median {labels['median']:.1f}, mean {labels['mean']:.2f}, "
                f"max {labels['max']:.0f}"
            )
        if rows > 0 and len(self.frame):
            lines += ["", self.frame.head(rows).to_string(index=False)]
            if len(self.frame) > rows:
                lines.append(f"... {len(self.frame) - rows:,} more rows")
        return "\n".join(lines)


def summarize_partition(
    dataset: FederatedDataset,
    *,
    seed: int = 0,
    sample_above: int | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> PartitionSummary:
    """Summarise ``dataset``'s partition.

    A lazily generated dataset (``dataset.lazy``) with more than ``sample_above`` clients is
    summarised on a seeded sample of ``sample_size`` clients (``sample_client_ids(seed, ...)``);
    every other dataset on all of its clients.
    """
    n = int(dataset.num_clients)
    sampled = bool(
        getattr(dataset, "lazy", False)
        and sample_above is not None
        and n > sample_above
        and sample_size < n
    )
    ids = sample_client_ids(seed, n, sample_size) if sampled else None
    return PartitionSummary(
        num_clients=n,
        num_classes=int(dataset.num_classes),
        input_shape=tuple(int(d) for d in dataset.input_shape),
        sizes=np.asarray(dataset.client_sizes(), dtype=np.int64),
        frame=partition_frame(dataset, ids),
        sampled=sampled,
    )
