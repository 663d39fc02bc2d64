"""FedAvgM (Hsu et al. 2019) written against fedsim's algorithm contract, in one file.

Run it as a script, or name it in an experiment file: with this folder on PYTHONPATH,
``[strategy] name = "server_momentum:ServerMomentum"`` and ``momentum = 0.5``.
"""

from dataclasses import dataclass

import numpy as np

import fedsim
from fedsim.strategies import Aggregate, Strategy


class ServerMomentum(Strategy):
    """Clients run the default stacked local SGD; the server keeps a momentum of updates."""

    @dataclass(frozen=True)
    class Options:  # the [strategy] keys, type-checked like every built-in option
        server_learning_rate: float = 1.0
        momentum: float = 0.9

    def __init__(self, server_learning_rate: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__()
        self.lr, self.beta = server_learning_rate, momentum
        self.v: np.ndarray | None = None

    def server_update(self, w: np.ndarray, agg: Aggregate) -> np.ndarray:
        # agg.delta: the mean client update sum_k n_k (w_k - w) / sum_k n_k, float64
        self.v = agg.delta if self.v is None else self.beta * self.v + agg.delta
        return (w + self.lr * self.v).astype(np.float32)

    def state_dict(self) -> dict:  # checkpointed with the run, so --resume continues it
        return {} if self.v is None else {"v": self.v}

    def load_state_dict(self, state: dict) -> None:
        self.v = state.get("v")


if __name__ == "__main__":
    result = fedsim.run(
        "experiments/quickstart.toml",
        overrides=["server.rounds=10", "runtime.progress=false"],
        strategy=ServerMomentum(momentum=0.5),
    )
    print(result.rounds[["round", "test_accuracy", "cum_bytes"]].tail(3).to_string(index=False))
