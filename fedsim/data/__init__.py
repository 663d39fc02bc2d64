"""Datasets and partitioners; each module registers its components by name on import."""

from __future__ import annotations

from typing import Any

from fedsim.data import (  # noqa: F401  (registration)
    arrays,
    cifar,
    idx,
    leaf,
    npz,
    one_client,
    partition,
    synthetic,
    tabular,
    traffic,
    workload,
)
from fedsim.data.base import CentralData, FederatedDataset, Partition
from fedsim.options import ConfigError
from fedsim.registry import DATASETS, PARTITIONERS

__all__ = ["CentralData", "FederatedDataset", "Partition", "build_dataset"]


def build_dataset(data: Any, partition_cfg: Any, num_clients: int, seed: int) -> FederatedDataset:
    """Load or create the configured dataset and split it across ``num_clients`` clients."""
    made = DATASETS.get(data.name).factory(data.options, num_clients=num_clients, seed=seed)
    if isinstance(made, FederatedDataset):
        if partition_cfg.name != "natural":
            raise ConfigError(
                f"partition.scheme: dataset {data.name!r} has one client per device "
                f"(scheme 'natural'), got {partition_cfg.name!r}"
            )
        return made
    scheme = PARTITIONERS.get(partition_cfg.name)
    part = scheme.factory(partition_cfg.options, made.y_train, num_clients, seed)
    if part.num_clients != num_clients:
        raise ConfigError(
            f"partition.scheme: {partition_cfg.name!r} made {part.num_clients} clients, "
            f"population.num_clients is {num_clients}"
        )
    return arrays.ArrayDataset(made, part)
