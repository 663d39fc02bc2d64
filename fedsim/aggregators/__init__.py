"""Aggregators; each module registers its aggregators by name on import."""

from fedsim.aggregators import mean, robust  # noqa: F401  (registration)
from fedsim.aggregators.base import Aggregator, MeanAggregator, PerClientAggregator

__all__ = ["Aggregator", "MeanAggregator", "PerClientAggregator"]
