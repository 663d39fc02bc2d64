"""The ``one_client`` scheme: the data that one client of another scheme's partition holds.

Training on it alone answers "what does this client reach without federating?" (a hospital
training on its own records only). The inner partition is the one a federated run with the
same seed, the same inner scheme and options and ``population.num_clients = clients`` would
make, so the client's samples are exactly those it trains on there. The population must have one
client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.data.base import Partition
from fedsim.options import ConfigError, at_least, build, check, non_negative
from fedsim.registry import PARTITIONERS

__all__ = ["OneClientOptions", "one_client"]


@dataclass(frozen=True)
class OneClientOptions:
    """``inner``: the scheme to split with; ``options``: its options (a table); ``clients``:
    how many clients it splits into; ``client``: the one whose data is kept."""

    inner: str = "iid"
    clients: int = field(default=2, metadata=check(at_least(1)))
    client: int = field(default=0, metadata=check(non_negative))
    options: Any = None

    def validate(self) -> str | None:
        if self.inner == "one_client":
            return "inner: cannot be 'one_client' itself"
        if self.client >= self.clients:
            return f"client: must be < clients ({self.clients}), got {self.client}"
        if self.options is not None and not isinstance(self.options, dict):
            return f"options: must be a table of {self.inner!r} options, got {self.options!r}"
        try:
            entry = PARTITIONERS.get(self.inner)
        except KeyError as err:
            return f"inner: {err.args[0]}"
        build(entry.options, self.options or {}, "partition.options")
        return None


@PARTITIONERS.register("one_client", OneClientOptions)
def one_client(
    options: OneClientOptions, labels: np.ndarray, num_clients: int, seed: int
) -> Partition:
    """Client ``options.client`` of the ``options.inner`` partition into ``options.clients``."""
    if num_clients != 1:
        raise ConfigError(
            f"population.num_clients: the 'one_client' scheme makes 1 client, got {num_clients}"
        )
    entry = PARTITIONERS.get(options.inner)
    inner_options = build(entry.options, options.options or {}, "partition.options")
    part = entry.factory(inner_options, labels, options.clients, seed)
    return Partition.from_lists([part.client(options.client)])
