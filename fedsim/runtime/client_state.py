"""Per-client state of stateful algorithms (SCAFFOLD's c_i, error-feedback residuals).

Only clients ever trained have a row: ids are kept sorted in one int64 array and rows in one
float32 array that grows by doubling, so a population of millions costs nothing until its
clients are selected, and no Python object is made per client. A client that has no row yet
reads zeros. The store is checkpointed as its two arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ClientStateStore:
    """Rows of ``width`` float32 values for the clients that have been written."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.ids = np.empty(0, dtype=np.int64)  # sorted; ids[i] owns slots[i]
        self.slots = np.empty(0, dtype=np.int64)
        self._rows = np.zeros((0, width), dtype=np.float32)
        self._used = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(self._rows.nbytes + self.ids.nbytes + self.slots.nbytes)

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self.ids, ids)
        pos_c = np.minimum(pos, max(len(self.ids) - 1, 0))
        found = (pos < len(self.ids)) & (self.ids[pos_c] == ids) if len(self.ids) else pos < 0
        return found, pos_c

    def get(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), width) float32: each client's row, zeros for clients never written."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.width), dtype=np.float32)
        found, pos = self._find(ids)
        out[found] = self._rows[self.slots[pos[found]]]
        return out

    def put(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Store ``rows`` (len(ids), width) for ``ids`` (distinct)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        found, pos = self._find(ids)
        new = ids[~found]
        if len(new):
            self._grow(self._used + len(new))
            new_slots = np.arange(self._used, self._used + len(new), dtype=np.int64)
            self._used += len(new)
            all_ids = np.concatenate([self.ids, new])
            all_slots = np.concatenate([self.slots, new_slots])
            order = np.argsort(all_ids, kind="stable")
            self.ids, self.slots = all_ids[order], all_slots[order]
            found, pos = self._find(ids)
        self._rows[self.slots[pos]] = rows

    def _grow(self, need: int) -> None:
        if need <= len(self._rows):
            return
        size = max(need, 2 * len(self._rows), 16)
        rows = np.zeros((size, self.width), dtype=np.float32)
        rows[: self._used] = self._rows[: self._used]
        self._rows = rows

    def state_dict(self) -> dict[str, Any]:
        """The rows in client-id order: the same bytes whatever order clients came in."""
        return {"ids": self.ids.copy(), "rows": self._rows[self.slots].copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ids = np.asarray(state["ids"], dtype=np.int64)
        rows = np.asarray(state["rows"], dtype=np.float32).reshape(len(ids), self.width)
        self.ids = ids.copy()
        self.slots = np.arange(len(ids), dtype=np.int64)
        self._rows = rows.copy()
        self._used = len(ids)
