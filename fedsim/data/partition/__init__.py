"""Partitioners: split a central training set's sample indices across clients.

Every partitioner is a pure function of (options, labels, num_clients, seed): its random stream is
keyed by ``SeedSequence([seed, Purpose.PARTITION, <scheme constant>])``, so a partition never
shares random numbers with other uses of the experiment seed. No sample is given to two clients,
and every client's indices are sorted ascending.

The shared machinery is in :mod:`.common`; each scheme module registers its schemes with
:data:`fedsim.registry.PARTITIONERS` when imported, which this package does.
"""

from __future__ import annotations

from fedsim.data.partition.by_group import NaturalOptions, natural, natural_partition
from fedsim.data.partition.by_label import DirichletOptions, ShardsOptions, dirichlet, shards
from fedsim.data.partition.by_size import IIDOptions, QuantitySkewOptions, iid, quantity_skew
from fedsim.data.partition.common import partition_from_owner

__all__ = [
    "DirichletOptions",
    "IIDOptions",
    "NaturalOptions",
    "QuantitySkewOptions",
    "ShardsOptions",
    "dirichlet",
    "iid",
    "natural",
    "natural_partition",
    "partition_from_owner",
    "quantity_skew",
    "shards",
]
