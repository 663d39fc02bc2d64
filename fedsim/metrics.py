"""Round and client records: appended to CSV as rounds finish, and kept as DataFrames."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROUND_COLUMNS = [
    "round",
    "sim_time_s",
    "round_duration_s",
    "selected",
    "completed",
    "stragglers",
    "dropped",
    "reporting",
    "bytes_down",
    "bytes_up",
    "cum_bytes_down",
    "cum_bytes_up",
    "cum_bytes",
    "train_loss",
    "test_accuracy",
    "test_loss",
    "global_train_loss",
    "global_train_accuracy",
    "failed",
    "server_s",
    "train_s",
    "wall_time_s",
]


class Recorder:
    """Writes rounds.csv / clients.csv row by row (flushed each round) into ``out_dir``."""

    def __init__(self, out_dir: Path | None, client_records: bool = True) -> None:
        self.out_dir = out_dir
        self.client_records = client_records
        self.rounds: list[dict[str, Any]] = []
        self.client_frames: list[pd.DataFrame] = []

    def add(self, record: dict[str, Any], clients: dict[str, np.ndarray]) -> None:
        self.rounds.append(record)
        row = pd.DataFrame([record], columns=ROUND_COLUMNS)
        self._append("rounds.csv", row)
        if self.client_records:
            frame = pd.DataFrame(clients)
            self.client_frames.append(frame)
            self._append("clients.csv", frame)

    def _append(self, name: str, frame: pd.DataFrame) -> None:
        if self.out_dir is None:
            return
        path = self.out_dir / name
        new = not path.exists()
        with path.open("a", newline="") as f:
            frame.to_csv(f, header=new, index=False, float_format="%.10g")
            f.flush()

    def rounds_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rounds, columns=ROUND_COLUMNS)

    def clients_frame(self) -> pd.DataFrame | None:
        if not self.client_frames:
            return None
        return pd.concat(self.client_frames, ignore_index=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically: a temporary file, then rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"cannot write {type(v).__name__} as JSON")
