"""Datasets and partitioners; each module registers its components by name on import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.data import (  # noqa: F401  (registration)
    arrays,
    cifar,
    idx,
    leaf,
    npz,
    one_client,
    synthetic,
    tabular,
    traffic,
    workload,
)
from fedsim.data import partition as _schemes  # noqa: F401  (registration)
from fedsim.data.base import CentralData, FederatedDataset, Partition
from fedsim.data.federated import ClientData, FederatedData, GivenClients
from fedsim.options import ConfigError
from fedsim.registry import DATASETS, PARTITIONERS

__all__ = [
    "CentralData",
    "ClientData",
    "FederatedData",
    "FederatedDataset",
    "GivenClients",
    "Partition",
    "build_dataset",
    "load",
]


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


def load(
    source: Any = "synthetic",
    *,
    partition: str | dict[str, Any] = "natural",
    num_clients: int = 100,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    **options: Any,
) -> FederatedData:
    """A dataset split across clients, as an experiment would see it.

    ``source`` is a dataset name (its options as keywords, ``partition`` a scheme name or a
    ``[partition]`` table), or an experiment (a ``Config`` or the path of its TOML file, with
    ``overrides``): then its data, partition, ``population.num_clients`` and seed are used.
    Bad values raise ConfigError naming the key, as in an experiment file.
    """
    from fedsim import config as config_mod

    if isinstance(source, config_mod.Config | Path) or str(source).endswith(".toml"):
        cfg, _ = config_mod.resolve(source, overrides)
    else:
        table = {"scheme": partition} if isinstance(partition, str) else dict(partition)
        cfg = config_mod.from_dict(
            {
                "experiment": {"seed": seed},
                "data": {"dataset": source, **options},
                "partition": table,
                "population": {"num_clients": num_clients},
            }
        )
    made = build_dataset(cfg.data, cfg.partition, cfg.population.num_clients, cfg.experiment.seed)
    return FederatedData(made)
