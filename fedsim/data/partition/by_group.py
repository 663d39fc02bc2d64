"""The ``natural`` scheme: one client per value of a grouping column (a user, a device, a site)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.data.base import Partition
from fedsim.data.partition.common import check_labels, partition_error, partition_from_owner
from fedsim.registry import PARTITIONERS

# --- natural -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NaturalOptions:
    """Options of the ``natural`` scheme: a CSV column naming each training sample's client.

    Both keys are needed only when the dataset is partitioned; datasets that are already one
    client per device take ``scheme = "natural"`` without them.
    """

    csv: str = ""
    column: str = ""


def natural_partition(groups: np.ndarray, num_clients: int, *, key: str = "column") -> Partition:
    """One client per distinct value of ``groups`` (one value per sample), in sorted value order."""
    codes, uniques = pd.factorize(pd.Series(groups), sort=True)
    if (codes < 0).any():
        raise partition_error(key, f"{int((codes < 0).sum())} samples have no group value")
    if len(uniques) != num_clients:
        raise partition_error(
            key,
            f"{len(uniques)} distinct values make {len(uniques)} clients, "
            f"population.num_clients is {num_clients}",
        )
    return partition_from_owner(codes.astype(np.int64), num_clients)


@PARTITIONERS.register("natural", NaturalOptions)
def natural(options: NaturalOptions, labels: np.ndarray, num_clients: int, seed: int) -> Partition:
    """Clients from a grouping column: ``csv`` has one row per training sample, in sample order."""
    labels = check_labels(labels, num_clients)
    if not options.csv:
        raise partition_error("csv", "required for a dataset that is not already split by device")
    if not options.column:
        raise partition_error("column", "required: the CSV column that names each sample's client")
    path = Path(options.csv).expanduser()
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise partition_error("csv", f"no such file {path}") from None
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise partition_error("csv", f"cannot read {path}: {err}") from None
    if options.column not in table.columns:
        known = ", ".join(str(c) for c in table.columns)
        raise partition_error(
            "column", f"{options.column!r} is not a column of {path} (columns: {known})"
        )
    if len(table) != len(labels):
        raise partition_error(
            "csv", f"{path} has {len(table)} rows, the dataset has {len(labels)} training samples"
        )
    try:
        return natural_partition(table[options.column].to_numpy(), num_clients)
    except TypeError as err:
        raise partition_error(
            "column", f"values of {options.column!r} cannot be sorted: {err}"
        ) from None
