"""What an iterative process carries from round to round and reports after each one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fedsim import checkpoint
from fedsim.data import ClientData, FederatedData, FederatedDataset
from fedsim.models.base import Model
from fedsim.options import ConfigError

#: Record columns measured on the wall clock: they differ between identical rounds.
WALL_CLOCK_COLUMNS = ("server_s", "train_s", "wall_time_s")


class State:
    """What carries from one round to the next; plain arrays and JSON values.

    ``server`` is the server's state (:meth:`Server.state_dict`: ``w``, ``round``,
    ``sim_time_s``, ``cum_bytes_down``, ``cum_bytes_up``, ``strategy``, ``client_state``);
    ``seed`` keys every random draw together with the round and client ids. :meth:`save`
    writes a folder in the format of a run's checkpoint (``checkpoint/state.json`` and an npz
    of the arrays), which :meth:`load` reads back bit for bit.
    """

    def __init__(self, server: dict[str, Any], seed: int, model: Model | None = None) -> None:
        self.server = server
        self.seed = int(seed)
        self._model = model  # the Model the vector belongs to, for evaluate(); not saved

    @property
    def round(self) -> int:
        return int(self.server["round"])

    @property
    def model(self) -> np.ndarray:
        """The global model, a flat float32 parameter vector."""
        return self.server["w"]

    @property
    def sim_time_s(self) -> float:
        return float(self.server["sim_time_s"])

    def save(self, path: str | Path) -> Path:
        """Write the state into folder ``path`` (JSON and npz, as a run's checkpoint; no pickle)."""
        tree = {"round": self.round, "seed": self.seed, "server": self.server}
        checkpoint.save(Path(path), tree)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> State:
        """A state saved with :meth:`save`, or the last checkpoint of a ``fedsim run`` folder."""
        ckpt = checkpoint.load(Path(path))
        if ckpt is None or "server" not in ckpt.state:
            raise ConfigError(f"{path}: holds no saved state")
        run_seed = ckpt.state.get("config", {}).get("experiment", {}).get("seed", 0)
        return cls(ckpt.state["server"], int(ckpt.state.get("seed", run_seed)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return self.seed == other.seed and tree_equal(self.server, other.server)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"State(round={self.round}, sim_time_s={self.sim_time_s:.3f}, seed={self.seed})"


@dataclass(frozen=True)
class RoundMetrics:
    """One round's row of rounds.csv (``record``) and its rows of clients.csv (``clients``)."""

    record: dict[str, Any]
    clients: dict[str, np.ndarray]

    def __getitem__(self, key: str) -> Any:
        return self.record[key]

    def _ids(self, outcome: str) -> np.ndarray:
        return self.clients["client_id"][self.clients["outcome"] == outcome]

    @property
    def completed(self) -> np.ndarray:
        """Ids of the clients that finished in time."""
        return self._ids("completed")

    @property
    def stragglers(self) -> np.ndarray:
        """Ids of the clients that did not finish by the deadline (or were not kept)."""
        return self._ids("straggler")

    @property
    def dropped(self) -> np.ndarray:
        """Ids of the clients that failed mid-round."""
        return self._ids("dropped")

    def results(self) -> dict[str, Any]:
        """The record without its wall-clock columns: equal for equal rounds."""
        return {k: v for k, v in self.record.items() if k not in WALL_CLOCK_COLUMNS}

    def __str__(self) -> str:
        tests = [k for k, v in self.record.items() if k.startswith("test_") and not _nan(v)]
        keys = ["train_loss", *tests, "sim_time_s", "reporting", "stragglers", "dropped"]
        parts = [f"{k}={_fmt(self.record[k])}" for k in [*keys, "cum_bytes"]]
        return "{" + ", ".join(parts) + "}"


def evaluate(state: State, data: Any, model: Model | None = None) -> dict[str, float]:
    """The loss and scores of the state's model on a test set, as rounds.csv's test columns.

    Scores are ``accuracy`` for classification, ``mae`` and ``rmse`` for regression.

    ``data``: a FederatedData (its test set), a FederatedDataset or ``(x, y)``. ``model``
    defaults to the model of the process the state came from (a loaded state needs it given).
    """
    model = model if model is not None else state._model
    if model is None:
        raise ValueError("model: a loaded State does not know its model; pass model=")
    if isinstance(data, FederatedData):
        x, y = data.test_set
    elif isinstance(data, FederatedDataset):
        x, y = data.test_set()
    else:
        x, y = xy_arrays(data)
    with threadpool_limits(limits=1):
        found = model.metrics(state.model, x, y)
    return {k: float(v) for k, v in found.items()}


def xy_arrays(value: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(value, ClientData):
        return value.x, value.y
    if isinstance(value, tuple | list) and len(value) == 2:
        return np.asarray(value[0]), np.asarray(value[1])
    raise ValueError(f"clients: expected (x, y) arrays, got {type(value).__name__}")


def copy_tree(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: copy_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [copy_tree(v) for v in value]
    return value


def tree_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(tree_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(tree_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _nan(v: Any) -> bool:
    return isinstance(v, float | np.floating) and math.isnan(v)


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
