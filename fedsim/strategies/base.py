"""The strategy contract: what clients are told to compute and how the server applies it."""

from __future__ import annotations

from abc import ABC, abstractmethod

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
