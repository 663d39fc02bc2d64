"""Round and client records: appended to CSV as rounds finish, and kept as DataFrames."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim.options import ConfigError

ROUND_COLUMNS = [
    "round",
    "sim_time_s",
    "round_duration_s",
    "selected",
    "completed",
    "stragglers",
    "dropped",
    "reporting",
    "rejected",
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
    "client_acc_p10",
    "client_acc_p50",
    "client_acc_p90",
    "client_acc_mean",
    "failed",
    "aborted",
    "epsilon",
    "clip_norm",
    "server_s",
    "train_s",
    "wall_time_s",
]


ROUNDS_FILE = "rounds.csv"
CLIENTS_FILE = "clients.csv"


class Recorder:
    """Writes rounds.csv / clients.csv row by row (flushed each round) into ``out_dir``.

    ``offsets`` holds each file's size after the last complete round, so a checkpoint can
    record where the records of its round end and a resumed run can cut off what follows.
    """

    def __init__(
        self,
        out_dir: Path | None,
        client_records: bool = True,
        columns: list[str] | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.client_records = client_records
        # Experiment kinds other than horizontal write their own columns (e.g. bytes per party).
        self.columns = list(ROUND_COLUMNS if columns is None else columns)
        self.rounds: list[dict[str, Any]] = []
        self.client_frames: list[pd.DataFrame] = []
        self.offsets: dict[str, int] = {ROUNDS_FILE: 0, CLIENTS_FILE: 0}

    @classmethod
    def reopen(
        cls, out_dir: Path, offsets: dict[str, int], client_records: bool = True
    ) -> Recorder:
        """Continue the records in ``out_dir``: cut each file to ``offsets``, then read it."""
        rec = cls(out_dir, client_records)
        for name in (ROUNDS_FILE, CLIENTS_FILE):
            path, size = out_dir / name, int(offsets.get(name, 0))
            if size == 0:
                path.unlink(missing_ok=True)
                continue
            have = path.stat().st_size if path.exists() else 0
            if have < size:
                raise ConfigError(
                    f"{path}: holds {have} bytes, the checkpoint needs {size}; records damaged"
                )
        # Validate before cutting anything, so a refused resume leaves the folder as it was.
        if offsets.get(ROUNDS_FILE, 0):
            with (out_dir / ROUNDS_FILE).open() as f:
                header = f.readline().rstrip("\r\n").split(",")
            if header != ROUND_COLUMNS:
                raise ConfigError(
                    f"{out_dir / ROUNDS_FILE}: columns differ from this version of fedsim's "
                    "rounds.csv; cannot continue it"
                )
        for name in (ROUNDS_FILE, CLIENTS_FILE):
            size = int(offsets.get(name, 0))
            if size:
                os.truncate(out_dir / name, size)
            rec.offsets[name] = size
        if rec.offsets[ROUNDS_FILE]:
            frame = pd.read_csv(out_dir / ROUNDS_FILE)
            rec.rounds = frame.to_dict("records")
        if client_records and rec.offsets[CLIENTS_FILE]:
            rec.client_frames = [pd.read_csv(out_dir / CLIENTS_FILE)]
        return rec

    def add(self, record: dict[str, Any], clients: dict[str, np.ndarray]) -> None:
        self.rounds.append(record)
        row = pd.DataFrame([record], columns=self.columns)
        self._append(ROUNDS_FILE, row)
        if self.client_records:
            frame = pd.DataFrame(clients)
            self.client_frames.append(frame)
            self._append(CLIENTS_FILE, frame)

    def _append(self, name: str, frame: pd.DataFrame) -> None:
        if self.out_dir is None:
            return
        path = self.out_dir / name
        new = not path.exists()
        with path.open("a", newline="") as f:
            frame.to_csv(f, header=new, index=False, float_format="%.10g")
            f.flush()
            self.offsets[name] = os.fstat(f.fileno()).st_size

    def sync(self) -> None:
        """Flush the records to disk, so a checkpoint never outlives the rows it counts."""
        if self.out_dir is None:
            return
        for name in (ROUNDS_FILE, CLIENTS_FILE):
            path = self.out_dir / name
            if path.exists():
                with path.open("rb") as f:
                    os.fsync(f.fileno())

    def rounds_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rounds, columns=self.columns)

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
