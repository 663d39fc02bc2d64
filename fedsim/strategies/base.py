"""The strategy contract: what clients are told to compute and how the server applies it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Strategy(ABC):
    """A federated optimisation algorithm.

    Scheduling, timing, transport and records live elsewhere; a strategy only says what each
    client optimises (``prox_mu``) and how the server turns the sample-weighted sum of the
    reporting clients' models into the next global model.
    """

    #: FedProx proximal coefficient each client adds to its local objective (0 = plain SGD).
    prox_mu: float = 0.0

    @abstractmethod
    def aggregate(
        self, w_global: np.ndarray, weighted_sum: np.ndarray, total_weight: float
    ) -> np.ndarray:
        """Next global model (float32) from sum_k n_k w_k (float64) and sum_k n_k."""

    def state_dict(self) -> dict[str, Any]:
        """Server-side state a checkpoint must keep (e.g. server optimiser moments).

        Values are numpy arrays or JSON values (nested dicts with string keys allowed); empty
        for stateless strategies such as FedAvg and FedProx.
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")
