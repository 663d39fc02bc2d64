"""The update pipeline: ordered per-update stages a worker applies before summing.

A stage takes a stack of client updates (rows ``w_k - w_global``, float64) and returns the
rows that go on the wire (clipped, noised, compressed, masked ...), and says what one update
then costs in bytes. Stages run in the worker on the stacked updates, in order; the server
undoes what must be undone on the sum (unmasking, decoding) in its own part of the stage's
feature (e.g. :class:`fedsim.privacy.rounds.ServerPrivacy`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass
class UpdateBatch:
    """The clients behind a stack of rows, and counters stages report to the server."""

    seed: int
    round: int
    ids: np.ndarray  # int64 (C,)
    num_samples: int  # every client of a stack has the same number of samples
    rejected: np.ndarray  # bool (C,): screened out; their rows are zeros
    state: dict[str, np.ndarray] = field(default_factory=dict)  # per-client rows (C, width)
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # name -> int (C,) per client


class Stage(ABC):
    """One per-update transformation; picklable, shipped to the workers once per round."""

    #: Per-client state rows the stage keeps (name -> width, -1 = the parameter count).
    state: dict[str, int] = {}
    #: Whether rows leave this stage as integers summed modulo 2^64 (secure aggregation).
    modular: bool = False
    #: Whether the stage decides the clients' weights itself (DP weighs every client 1; secure
    #: aggregation multiplies by the sample count before masking); otherwise the engine sums
    #: rows times sample counts.
    weighs: bool = False

    @abstractmethod
    def apply(self, rows: np.ndarray, batch: UpdateBatch) -> np.ndarray:
        """The stage's output rows for the input rows (C, P); may modify ``rows``."""

    def upload_bytes(self, num_parameters: int, nbytes: int) -> int:
        """Bytes of one update after this stage, given ``nbytes`` before it."""
        return nbytes


@dataclass(frozen=True, eq=False)
class Pipeline:
    """Stages in the order a client applies them (empty: updates are sent as they are)."""

    stages: tuple[Stage, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.stages)

    @property
    def accumulator_dtype(self) -> type:
        return np.uint64 if any(s.modular for s in self.stages) else np.float64

    @property
    def weighs(self) -> bool:
        return any(s.weighs for s in self.stages)

    @property
    def state(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.stages:
            out.update(s.state)
        return out

    def apply(self, rows: np.ndarray, batch: UpdateBatch) -> np.ndarray:
        for s in self.stages:
            rows = s.apply(rows, batch)
        return rows

    def upload_bytes(self, num_parameters: int, nbytes: int) -> int:
        for s in self.stages:
            nbytes = s.upload_bytes(num_parameters, nbytes)
        return nbytes
