"""Server optimisers: the server step applied to the round's pseudo-gradient ``-delta``.

Reddi et al. 2021, "Adaptive Federated Optimization" (Algorithm 2): with Delta_t the mean client
update,
    m_t = beta1 m_{t-1} + (1 - beta1) Delta_t
    v_t = v_{t-1} + Delta_t^2                                         (FedAdagrad)
    v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2                       (FedAdam)
    v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2)   (FedYogi)
    x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau)
with m_{-1} = 0 and v_{-1} = tau^2 (the paper asks v_{-1} >= tau^2), no bias correction.
Server momentum (FedAvgM, Hsu et al. 2019): v_t = beta v_{-1} + Delta_t, x_{t+1} = x_t + eta v_t.
State is kept in float64 and checkpointed; the model stays float32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fedsim.strategies.contract import Aggregate


class ServerOptimizer(ABC):
    """Turns the current model and the round's aggregate into the next model."""

    @abstractmethod
    def step(self, w: np.ndarray, agg: Aggregate) -> np.ndarray:
        """Next model (float32, the shape of ``w``)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")


class ServerSGD(ServerOptimizer):
    """x <- x + lr * v, v = momentum * v + delta (plain SGD for momentum 0)."""

    def __init__(self, learning_rate: float = 1.0, momentum: float = 0.0) -> None:
        self.learning_rate, self.momentum = learning_rate, momentum
        self.velocity: np.ndarray | None = None

    def step(self, w: np.ndarray, agg: Aggregate) -> np.ndarray:
        if self.momentum == 0.0 and self.learning_rate == 1.0 and agg.model is not None:
            # FedAvg: x + (mean model - x) is the mean model; taking it as it is keeps the
            # exact float64 weighted mean rather than a sum that rounds twice.
            return agg.model.astype(np.float32)
        step = agg.delta
        if self.momentum:
            if self.velocity is None:
                self.velocity = np.zeros_like(agg.delta)
            self.velocity = self.momentum * self.velocity + agg.delta
            step = self.velocity
        return (w + self.learning_rate * step).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.velocity is None else {"velocity": self.velocity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.velocity = None if "velocity" not in state else np.asarray(state["velocity"])


class ServerAdaptive(ServerOptimizer):
    """FedAdagrad, FedAdam and FedYogi (``rule`` = "adagrad" | "adam" | "yogi")."""

    RULES = ("adagrad", "adam", "yogi")

    def __init__(
        self,
        rule: str,
        learning_rate: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        if rule not in self.RULES:
            raise ValueError(f"rule must be one of {self.RULES}, got {rule!r}")
        self.rule, self.learning_rate = rule, learning_rate
        self.beta1, self.beta2, self.tau = beta1, beta2, tau
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def step(self, w: np.ndarray, agg: Aggregate) -> np.ndarray:
        d = agg.delta
        if self.m is None or self.v is None:
            self.m = np.zeros_like(d)
            self.v = np.full_like(d, self.tau**2)
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * d
        d2 = d * d
        if self.rule == "adagrad":
            self.v = self.v + d2
        elif self.rule == "adam":
            self.v = self.beta2 * self.v + (1.0 - self.beta2) * d2
        else:
            self.v = self.v - (1.0 - self.beta2) * d2 * np.sign(self.v - d2)
        return (w + self.learning_rate * self.m / (np.sqrt(self.v) + self.tau)).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.m is None else {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m = np.asarray(state["m"]) if "m" in state else None
        self.v = np.asarray(state["v"]) if "v" in state else None
