"""Aggregators: how the server combines the round's accepted client updates.

A *streaming* aggregator (the fast default, :class:`MeanAggregator`) never sees one client's
update: each worker sums its chunk's contributions and the server adds the partial sums in
chunk order. A *per-client* aggregator (:class:`PerClientAggregator`: median, trimmed mean,
Krum, ...) receives every accepted update, as a (K, P) array in client-id order, and its memory
is bounded by the cohort, not the population.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Aggregator(ABC):  # noqa: B024  (a marker base: the kinds below say what they need)
    """Base of both kinds; :attr:`streaming` tells the engine which one it is."""

    streaming: bool = True


class MeanAggregator(Aggregator):
    """The weighted mean of the updates, formed from streamed partial sums."""

    streaming = True


class PerClientAggregator(Aggregator):
    """An aggregation rule that needs each client's update."""

    streaming = False

    @abstractmethod
    def combine(self, updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The aggregate update (P,) float64 from updates (K, P) and their weights (K,).

        ``updates`` are ``w_k - w_global`` after the update pipeline, rows in client-id order;
        ``weights`` are the clients' sample counts (K >= 1).
        """
