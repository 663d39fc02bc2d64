"""What travels between a client update and the server step, and the client update's interface.

A round's clients are given a :class:`ClientBatch` (the model, their data, the round's
:class:`RoundContext` and their state rows) and return a :class:`ClientOutput`; the server step
sees the round's accepted outputs as one :class:`Aggregate`. :class:`ClientUpdate` is what a
client computes; :class:`fedsim.strategies.base.Strategy` pairs one with a server step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedsim.models.base import Model

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
