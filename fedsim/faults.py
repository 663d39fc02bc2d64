"""Faulty clients: Byzantine clients that send crafted updates, noisy clients with bad labels.

Which clients are faulty is fixed for a run by the seed alone: exactly
``round(fraction * num_clients)`` clients, those with the lowest keyed uniform draw (one draw
per client, :mod:`fedsim.rng`), so the set does not depend on selection, order or workers. The
Byzantine and the noisy sets are drawn independently (a client may be both).

Attacks replace a Byzantine client's update ``d = w_k - w_global`` after it trained honestly
(``s`` is ``faults.byzantine_scale``):

- ``sign_flip``: ``-s * d`` (the honest direction reversed);
- ``scaled``: ``s * d`` (a boosted update);
- ``gaussian``: ``s * N(0, I)``, drawn per (seed, round, client); the training is discarded;
- ``little_is_enough`` (Baruch et al. 2019): ``mu - s * sigma``, the coordinate-wise mean and
  standard deviation of the round's honest updates, so the crafted update hides inside the
  honest spread. It needs the other clients' updates, so it is applied on the server to the
  per-client updates (:meth:`ClientFaults.attack_rows`) before they are aggregated.

The first three are applied in the worker, before screening and the update pipeline
(:meth:`ClientFaults.attack_models`), so they reach either aggregator kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.rng import Purpose, generator, uniform

#: Attacks applied to the round's per-client updates on the server (they need all of them).
SERVER_ATTACKS = ("little_is_enough",)


class Nobody:
    """The mask of a fault no client has: False for any ids, with nothing stored per client."""

    def __init__(self, num_clients: int) -> None:
        self.shape = (num_clients,)

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(ids), dtype=bool)

    def any(self) -> bool:
        return False


def faulty_clients(seed: int, purpose: int, fraction: float, num_clients: int) -> np.ndarray:
    """Bool mask (num_clients,): the ``round(fraction * num_clients)`` lowest keyed draws.

    With none faulty, :class:`Nobody`: a population of any size costs nothing for it.
    """
    count = int(round(fraction * num_clients))
    if not count:
        return Nobody(num_clients)  # type: ignore[return-value]
    mask = np.zeros(num_clients, dtype=bool)
    draws = uniform(seed, 0, purpose, np.arange(num_clients))
    mask[np.argsort(draws, kind="stable")[:count]] = True
    return mask


@dataclass(frozen=True, eq=False)
class ClientFaults:
    """The run's faulty clients and the attack its Byzantine clients mount."""

    seed: int
    byzantine: np.ndarray  # bool (num_clients,)
    noisy: np.ndarray  # bool (num_clients,)
    attack: str = "sign_flip"
    scale: float = 1.0

    @classmethod
    def from_config(cls, faults: Any, seed: int, num_clients: int) -> ClientFaults:
        """From a ``[faults]`` section (:class:`fedsim.config.FaultsConfig`)."""
        return cls(
            seed,
            faulty_clients(seed, Purpose.BYZANTINE, faults.byzantine_fraction, num_clients),
            faulty_clients(seed, Purpose.NOISY_CLIENT, faults.noisy_client_fraction, num_clients),
            faults.byzantine_attack,
            faults.byzantine_scale,
        )

    @property
    def server_side(self) -> bool:
        """True when the attack needs the server's view of every update of the round."""
        return bool(self.byzantine.any()) and self.attack in SERVER_ATTACKS

    def attack_models(
        self, w: np.ndarray, w_global: np.ndarray, ids: np.ndarray, round_: int
    ) -> None:
        """Overwrite, in place, the trained models (C, P) of the Byzantine clients among ``ids``."""
        if self.attack in SERVER_ATTACKS:
            return
        for row in np.flatnonzero(self.byzantine[ids]):
            d = w[row].astype(np.float64) - w_global
            if self.attack == "sign_flip":
                d *= -self.scale
            elif self.attack == "scaled":
                d *= self.scale
            else:  # gaussian
                rng = generator(self.seed, Purpose.ATTACK_NOISE, round_, int(ids[row]))
                d = self.scale * rng.standard_normal(len(d))
            w[row] = (w_global + d).astype(w.dtype)

    def attack_rows(self, updates: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The round's updates (K, P) with the Byzantine rows replaced by the server-side attack.

        ``mu`` and ``sigma`` are taken over the honest clients' rows (over all rows, each an
        honestly trained update at this point, when every client of the round is Byzantine).
        """
        bad = self.byzantine[ids]
        if not self.server_side or not bad.any():
            return updates
        honest = updates[~bad] if (~bad).any() else updates
        x = honest.astype(np.float64)
        crafted = x.mean(axis=0) - self.scale * x.std(axis=0)
        out = updates.copy()
        out[bad] = crafted.astype(updates.dtype)
        return out
