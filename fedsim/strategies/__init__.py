"""Federated optimisation strategies; each module registers its strategies by name on import."""

from fedsim.strategies import fedavg  # noqa: F401  (registration)
from fedsim.strategies.base import Strategy

__all__ = ["Strategy"]
