"""The server's checkpoint state: everything that carries from one round to the next."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.privacy.rounds import ServerPrivacy
from fedsim.runtime.client_state import ClientStateStore
from fedsim.strategies.base import Strategy


class ServerState:
    """Saves and restores a server's model, clock, counters, strategy and client state."""

    w: np.ndarray
    round: int
    sim_time_s: float
    cum_bytes_down: int
    cum_bytes_up: int
    strategy: Strategy
    privacy: ServerPrivacy | None
    client_state: dict[str, ClientStateStore]

    def state_dict(self) -> dict[str, Any]:
        """Everything that carries from one round to the next (the RNG is keyed: no state)."""
        return {
            "round": self.round,
            "sim_time_s": self.sim_time_s,
            "cum_bytes_down": self.cum_bytes_down,
            "cum_bytes_up": self.cum_bytes_up,
            "w": self.w,
            "strategy": self.strategy.state_dict(),
            **({"privacy": self.privacy.state_dict()} if self.privacy is not None else {}),
            **(
                {"client_state": {k: s.state_dict() for k, s in self.client_state.items()}}
                if self.client_state
                else {}
            ),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the model's shape and dtype must match."""
        w = np.asarray(state["w"])
        if w.shape != self.w.shape or w.dtype != self.w.dtype:
            raise ValueError(
                f"checkpoint model has shape {w.shape} {w.dtype}, expected "
                f"{self.w.shape} {self.w.dtype}"
            )
        self.w = w.copy()
        self.round = int(state["round"])
        self.sim_time_s = float(state["sim_time_s"])
        self.cum_bytes_down = int(state["cum_bytes_down"])
        self.cum_bytes_up = int(state["cum_bytes_up"])
        self.strategy.load_state_dict(state["strategy"])
        if self.privacy is not None and "privacy" in state:
            self.privacy.load_state_dict(state["privacy"])
        for name, store in self.client_state.items():
            store.load_state_dict(state["client_state"][name])
