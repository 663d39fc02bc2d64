"""Federated optimisation algorithms; each module registers its strategies by name on import."""

from fedsim.strategies import fedavg, fednova, scaffold  # noqa: F401  (registration)
from fedsim.strategies.base import Strategy
from fedsim.strategies.contract import (
    Aggregate,
    ClientBatch,
    ClientOutput,
    ClientUpdate,
    Payload,
    RoundContext,
)
from fedsim.strategies.local_sgd import LocalSGD, local_sgd, sgd_on
from fedsim.strategies.optimizers import ServerAdaptive, ServerOptimizer, ServerSGD

__all__ = [
    "Aggregate",
    "ClientBatch",
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
    "sgd_on",
]
