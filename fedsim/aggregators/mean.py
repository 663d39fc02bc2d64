"""The streaming weighted mean (``[aggregator] name = "mean"``), the default."""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.aggregators.base import Aggregator, MeanAggregator
from fedsim.registry import AGGREGATORS


@dataclass(frozen=True)
class MeanOptions:
    pass


@AGGREGATORS.register("mean", MeanOptions)
def make_mean(options: MeanOptions) -> Aggregator:
    return MeanAggregator()
