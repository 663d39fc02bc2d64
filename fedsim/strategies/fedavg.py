"""FedAvg (McMahan et al. 2017), FedProx (Li et al. 2020) and the server optimisers of FedOpt.

FedAvg is stacked local SGD on the clients and server SGD with learning rate 1 on the mean
update; the others change one of the two: FedProx the client's objective, FedAvgM, FedAdam,
FedYogi and FedAdagrad the server optimiser (Hsu et al. 2019; Reddi et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedsim.options import check, finite, in_range, non_negative, positive
from fedsim.registry import STRATEGIES
from fedsim.strategies.base import Strategy
from fedsim.strategies.local_sgd import LocalSGD
from fedsim.strategies.optimizers import ServerAdaptive, ServerSGD

_LR = check(positive, finite)
_BETA = check(in_range(0, 1, hi_open=True))


@dataclass(frozen=True)
class FedAvgOptions:
    pass


@dataclass(frozen=True)
class FedProxOptions:
    mu: float = field(default=0.01, metadata=check(non_negative, finite))


@dataclass(frozen=True)
class FedAvgMOptions:
    server_learning_rate: float = field(default=1.0, metadata=_LR)
    momentum: float = field(default=0.9, metadata=_BETA)


@dataclass(frozen=True)
class FedAdaptiveOptions:
    server_learning_rate: float = field(default=0.01, metadata=_LR)
    beta1: float = field(default=0.9, metadata=_BETA)
    beta2: float = field(default=0.99, metadata=_BETA)
    tau: float = field(default=1e-3, metadata=_LR)


@STRATEGIES.register("fedavg", FedAvgOptions)
def make_fedavg(options: FedAvgOptions) -> Strategy:
    return Strategy()


@STRATEGIES.register("fedprox", FedProxOptions)
def make_fedprox(options: FedProxOptions) -> Strategy:
    return Strategy(LocalSGD(options.mu))


@STRATEGIES.register("fedavgm", FedAvgMOptions)
def make_fedavgm(options: FedAvgMOptions) -> Strategy:
    return Strategy(optimizer=ServerSGD(options.server_learning_rate, options.momentum))


def _adaptive(rule: str):  # noqa: ANN202  (a registered factory)
    def make(options: FedAdaptiveOptions) -> Strategy:
        opt = ServerAdaptive(
            rule, options.server_learning_rate, options.beta1, options.beta2, options.tau
        )
        return Strategy(optimizer=opt)

    return make


for _rule in ServerAdaptive.RULES:
    STRATEGIES.register(f"fed{_rule}", FedAdaptiveOptions)(_adaptive(_rule))
