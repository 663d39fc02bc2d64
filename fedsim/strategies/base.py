"""The algorithm contract: a client update, a server step, and what travels between them.

A :class:`Strategy` says three things and nothing about scheduling, timing or transport:

* what each client computes (:attr:`Strategy.client`, a :class:`ClientUpdate` vectorised over a
  stack of clients, with optional per-client state and extra upload payloads);
* what the server broadcasts besides the model (:meth:`Strategy.broadcast`);
* how the server turns the round's :class:`Aggregate` into the next model
  (:meth:`Strategy.server_update`, by default the server optimiser's step on the mean update).

The update pipeline (clipping, noise, masking, compression) and the aggregator (streaming mean
or per-client robust rules) sit between the client update and the server step and are chosen
by the experiment, not by the strategy, so they compose with every strategy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedsim.models.base import Model
from fedsim.strategies.optimizers import ServerOptimizer, ServerSGD

Weighting = Literal["samples", "uniform"]


@dataclass(frozen=True)
class Payload:
    """An extra vector each client uploads beside its model update, and how it is averaged.

    ``length`` counts float32 values (``-1`` = the model's parameter count); ``weighting``:
    ``"samples"`` averages with the client's sample count, ``"uniform"`` with weight 1 each.
    """

    length: int = -1
    weighting: Weighting = "uniform"

    def size(self, num_parameters: int) -> int:
        return num_parameters if self.length < 0 else self.length


@dataclass(frozen=True)
class RoundContext:
    """What every client of a round is told besides the model (shipped to the workers)."""

    round: int
    seed: int
    learning_rate: float
    batch_size: int  # 0 = full batch
    shuffle: bool
    broadcast: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ClientOutput:
    """A stack of C clients' results: new models and whatever else they send or keep."""

    w: np.ndarray  # (C, P) float32: each client's model after local training
    loss: np.ndarray  # (C,) float64: mean minibatch loss over the local steps
    payloads: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (C, L) float32
    state: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (C, width) float32


@dataclass
class ClientBatch:
    """A stack of C clients with the same batch schedule, and what they start from.

    x: (C, n, *input_shape); y: (C, n); ``orders`` (C, epochs, n) each client's sample order
    per epoch, or None for data order; ``state`` the clients' state rows (name -> (C, width)).
    """

    model: Model
    w_global: np.ndarray  # (P,) float32
    x: np.ndarray
    y: np.ndarray
    epochs: int
    orders: np.ndarray | None
    ctx: RoundContext
    state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.y.shape[1])


class ClientUpdate(ABC):
    """What a client computes; one object per run, shipped to the workers (picklable).

    ``state`` names per-client state rows (name -> width, ``-1`` = the parameter count) that
    the engine stores for every client ever trained, hands over in :attr:`ClientBatch.state`
    (zeros the first time) and stores again from :attr:`ClientOutput.state`. ``payloads``
    names the extra vectors a client uploads; they cost bytes on the wire like the update.
    """

    state: dict[str, int] = {}
    payloads: dict[str, Payload] = {}

    @abstractmethod
    def __call__(self, batch: ClientBatch) -> ClientOutput:
        """Train the stack of clients from ``batch.w_global``."""


@dataclass
class Aggregate:
    """The server's view of a round's accepted updates, after the update pipeline.

    ``delta`` is the mean update ``mean_k (w_k - w_global)`` in float64 (sample-weighted unless
    the pipeline says otherwise; with DP it is the noised mean). ``model`` is the mean client
    model itself where it is known exactly (no pipeline), else None. ``payloads`` holds the
    mean of each extra payload, ``weights`` each weighting's total and ``count`` the number of
    accepted clients.
    """

    delta: np.ndarray
    count: int
    weights: dict[str, float] = field(default_factory=dict)
    payloads: dict[str, np.ndarray] = field(default_factory=dict)
    model: np.ndarray | None = None


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
        from fedsim.strategies.local_sgd import LocalSGD

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
