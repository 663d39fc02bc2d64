"""Federated optimisation algorithms; each module registers its strategies by name on import."""

from fedsim.strategies import fedavg, fednova, scaffold  # noqa: F401  (registration)
from fedsim.strategies.base import (
    Aggregate,
    ClientOutput,
    ClientUpdate,
    Payload,
    RoundContext,
    Strategy,
)
from fedsim.strategies.local_sgd import LocalSGD, local_sgd
from fedsim.strategies.optimizers import ServerAdaptive, ServerOptimizer, ServerSGD

__all__ = [
    "Aggregate",
    "ClientOutput",
    "ClientUpdate",
    "LocalSGD",
    "Payload",
    "RoundContext",
    "ServerAdaptive",
    "ServerOptimizer",
    "ServerSGD",
    "Strategy",
    "local_sgd",
]
