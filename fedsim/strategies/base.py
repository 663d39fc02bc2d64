"""The algorithm contract: a client update, a server step, and what travels between them.

A :class:`Strategy` says three things and nothing about scheduling, timing or transport:

* what each client computes (:attr:`Strategy.client`, a :class:`ClientUpdate` vectorised over a
  stack of clients, with optional per-client state and extra upload payloads);
* what the server broadcasts besides the model (:meth:`Strategy.broadcast`);
* how the server turns the round's :class:`Aggregate` into the next model
  (:meth:`Strategy.server_update`, by default the server optimiser's step on the mean update).

The update pipeline (clipping, noise, masking, compression) and the aggregator (streaming mean
or per-client robust rules) sit between the client update and the server step and are chosen
by the experiment, not by the strategy, so they compose with every strategy. The types that
travel between the two ends are in :mod:`fedsim.strategies.contract`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.strategies.contract import Aggregate, ClientBatch, ClientUpdate, RoundContext
from fedsim.strategies.local_sgd import LocalSGD
from fedsim.strategies.optimizers import ServerOptimizer, ServerSGD

# The engine's modules import the contract types they need from here, beside Strategy.
__all__ = ["Aggregate", "ClientBatch", "ClientUpdate", "RoundContext", "Strategy"]


class Strategy:
    """A federated optimisation algorithm: a client update and a server step.

    The default is FedAvg's: stacked local SGD on the client, and the server optimiser (SGD
    with learning rate 1 unless given) applied to the pseudo-gradient ``-Aggregate.delta``.
    """

    #: Extra float32 values the server broadcasts to every client besides the model.
    broadcast_length: int = 0

    def __init__(
        self, client: ClientUpdate | None = None, optimizer: ServerOptimizer | None = None
    ) -> None:
        self.client = client if client is not None else LocalSGD()
        self.optimizer = optimizer if optimizer is not None else ServerSGD()

    def setup(self, num_parameters: int, num_clients: int) -> None:  # noqa: B027  (optional)
        """Called once by the server before the first round (e.g. to size server state)."""

    def broadcast(self) -> dict[str, np.ndarray]:
        """Vectors sent to every client with the model this round (e.g. SCAFFOLD's c)."""
        return {}

    def server_update(self, w: np.ndarray, agg: Aggregate) -> np.ndarray:
        """Next global model (float32) from the current one and the round's aggregate."""
        return self.optimizer.step(w, agg)

    def state_dict(self) -> dict[str, Any]:
        """Server-side state a checkpoint keeps: numpy arrays or JSON values (nested dicts)."""
        opt = self.optimizer.state_dict()
        return {"optimizer": opt} if opt else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state.get("optimizer", {}))
