"""FedNova (Wang et al. 2020): normalised averaging for clients that ran unequal local steps.

Client i runs tau_i local SGD steps (its epochs and data size set it; partial stragglers run
fewer) and uploads its normalised update d_i = (y_i - x) / a_i with a_i = ||a_i||_1 of the
paper's vector of step weights: tau_i for plain SGD, (1 - (1 - lr mu)^tau_i) / (lr mu) with a
proximal term mu. The server forms d = sum_i p_i d_i and tau_eff = sum_i p_i a_i (p_i = n_i / n)
and applies its optimiser to tau_eff d, so clients that ran more steps do not pull the model
towards their own objective (the objective inconsistency of FedAvg).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fedsim.options import check, finite, non_negative, positive
from fedsim.registry import STRATEGIES
from fedsim.strategies.base import Strategy
from fedsim.strategies.contract import Aggregate, ClientBatch, ClientOutput, ClientUpdate, Payload
from fedsim.strategies.local_sgd import local_steps, sgd_on
from fedsim.strategies.optimizers import ServerSGD

STEPS = "steps"


@dataclass(frozen=True)
class FedNovaOptions:
    server_learning_rate: float = field(default=1.0, metadata=check(positive, finite))
    mu: float = field(default=0.0, metadata=check(non_negative, finite))


def step_weight_norm(tau: int, learning_rate: float, mu: float) -> float:
    """||a_i||_1 for tau local steps of SGD with proximal coefficient mu."""
    if mu == 0.0:
        return float(tau)
    q = 1.0 - learning_rate * mu
    return (1.0 - q**tau) / (learning_rate * mu)


class FedNovaClient(ClientUpdate):
    payloads = {STEPS: Payload(1, "samples")}

    def __init__(self, mu: float = 0.0) -> None:
        self.mu = mu

    def __call__(self, batch: ClientBatch) -> ClientOutput:
        w, loss = sgd_on(batch, self.mu)
        tau = local_steps(batch.num_samples, batch.epochs, batch.ctx.batch_size)
        a = step_weight_norm(tau, batch.ctx.learning_rate, self.mu)
        # The upload is the normalised update, sent as the model it would give.
        w0 = batch.w_global[None, :]
        normalised = (w0 + (w - w0) / np.float32(a)).astype(np.float32)
        steps = np.full((len(w), 1), a, dtype=np.float32)
        return ClientOutput(normalised, loss, payloads={STEPS: steps})


class FedNova(Strategy):
    def __init__(self, server_learning_rate: float = 1.0, mu: float = 0.0) -> None:
        super().__init__(FedNovaClient(mu), ServerSGD(server_learning_rate))

    def server_update(self, w: np.ndarray, agg: Aggregate) -> np.ndarray:
        tau_eff = float(agg.payloads[STEPS][0])
        return super().server_update(w, replace(agg, delta=tau_eff * agg.delta, model=None))


@STRATEGIES.register("fednova", FedNovaOptions)
def make_fednova(options: FedNovaOptions) -> Strategy:
    return FedNova(options.server_learning_rate, options.mu)
