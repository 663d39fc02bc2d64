"""SCAFFOLD (Karimireddy et al. 2020), control variates of option II.

Client i with control variate c_i, given the model x and the server's c, runs K local SGD steps
on g_i(y) - c_i + c, then
    c_i+ = c_i - c + (x - y_i) / (K lr)
and uploads Delta y_i = y_i - x and Delta c_i = c_i+ - c_i (twice the model's bytes). The server
applies its optimiser to the mean Delta y (learning rate eta_g, 1 by default) and
    c <- c + (1/N) sum_{i in S} Delta c_i,
which keeps c the mean of all N clients' c_i. The c_i live in the engine's client-state store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.options import check, finite, positive
from fedsim.registry import STRATEGIES
from fedsim.strategies.base import Strategy
from fedsim.strategies.contract import Aggregate, ClientBatch, ClientOutput, ClientUpdate, Payload
from fedsim.strategies.local_sgd import local_steps, sgd_on
from fedsim.strategies.optimizers import ServerSGD

CONTROL = "control"


@dataclass(frozen=True)
class ScaffoldOptions:
    server_learning_rate: float = field(default=1.0, metadata=check(positive, finite))


class ScaffoldClient(ClientUpdate):
    state = {CONTROL: -1}
    payloads = {CONTROL: Payload(-1, "uniform")}

    def __call__(self, batch: ClientBatch) -> ClientOutput:
        c_i, c = batch.state[CONTROL], batch.ctx.broadcast[CONTROL]
        w, loss = sgd_on(batch, correction=c[None, :] - c_i)
        k = local_steps(batch.num_samples, batch.epochs, batch.ctx.batch_size)
        scale = np.float32(1.0 / (k * batch.ctx.learning_rate))
        c_new = c_i - c[None, :] + (batch.w_global[None, :] - w) * scale
        return ClientOutput(w, loss, payloads={CONTROL: c_new - c_i}, state={CONTROL: c_new})


class Scaffold(Strategy):
    broadcast_length = -1  # c, as long as the model

    def __init__(self, server_learning_rate: float = 1.0) -> None:
        super().__init__(ScaffoldClient(), ServerSGD(server_learning_rate))
        self.c: np.ndarray | None = None
        self.num_clients = 0

    def setup(self, num_parameters: int, num_clients: int) -> None:
        self.num_clients = num_clients
        if self.c is None:
            self.c = np.zeros(num_parameters, dtype=np.float32)

    def broadcast(self) -> dict[str, np.ndarray]:
        assert self.c is not None, "setup() first"
        return {CONTROL: self.c}

    def server_update(self, w: np.ndarray, agg: Aggregate) -> np.ndarray:
        assert self.c is not None, "setup() first"
        # The payload's mean is uniform over the count accepted clients: count/N of it is
        # (1/N) times their sum.
        step = agg.payloads[CONTROL] * (agg.count / self.num_clients)
        self.c = (self.c + step).astype(np.float32)
        return super().server_update(w, agg)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **({} if self.c is None else {"c": self.c})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "c" in state:
            self.c = np.asarray(state["c"], dtype=np.float32)


@STRATEGIES.register("scaffold", ScaffoldOptions)
def make_scaffold(options: ScaffoldOptions) -> Strategy:
    return Scaffold(options.server_learning_rate)
