"""FedAvg (McMahan et al. 2017) and FedProx (Li et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedsim.options import check, finite, non_negative
from fedsim.registry import STRATEGIES
from fedsim.strategies.base import Strategy


@dataclass(frozen=True)
class FedAvgOptions:
    pass


class FedAvg(Strategy):
    """w <- sum_k n_k w_k / sum_k n_k over the clients that reported this round."""

    def aggregate(
        self, w_global: np.ndarray, weighted_sum: np.ndarray, total_weight: float
    ) -> np.ndarray:
        return (weighted_sum / total_weight).astype(np.float32)


@dataclass(frozen=True)
class FedProxOptions:
    mu: float = field(default=0.01, metadata=check(non_negative, finite))


class FedProx(FedAvg):
    """FedAvg aggregation; clients minimise f_k(w) + mu/2 ||w - w_global||^2."""

    def __init__(self, mu: float) -> None:
        self.prox_mu = mu


@STRATEGIES.register("fedavg", FedAvgOptions)
def make_fedavg(options: FedAvgOptions) -> Strategy:
    return FedAvg()


@STRATEGIES.register("fedprox", FedProxOptions)
def make_fedprox(options: FedProxOptions) -> Strategy:
    return FedProx(options.mu)
