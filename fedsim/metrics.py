"""Round and client records: appended to CSV as rounds finish, and kept as DataFrames."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim.options import ConfigError
from fedsim.rundir import CLIENTS_FILE, ROUNDS_FILE

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
    "abort_reason",
    "epsilon",
    "clip_norm",
    "server_s",
    "train_s",
    "wall_time_s",
]
#: Columns of ROUND_COLUMNS holding text ("" when there is nothing to say).
TEXT_COLUMNS = ("abort_reason",)


class Recorder:
    """Writes rounds.csv / clients.csv row by row (flushed each round) into ``out_dir``.

    ``offsets`` holds each file's size after the last complete round, so a checkpoint can
    record where the records of its round end and a resumed run can cut off what follows;
    ``digests()`` the SHA-256 of those bytes, so a resumed run can tell they are the same.
    """

    def __init__(self, out_dir: Path | None, client_records: bool = True) -> None:
        self.out_dir = out_dir
        self.client_records = client_records
        self.rounds: list[dict[str, Any]] = []
        self.client_frames: list[pd.DataFrame] = []
        self.offsets: dict[str, int] = {ROUNDS_FILE: 0, CLIENTS_FILE: 0}
        self._hashes = {ROUNDS_FILE: hashlib.sha256(), CLIENTS_FILE: hashlib.sha256()}

    def digests(self) -> dict[str, str]:
        """SHA-256 of each file's first ``offsets[name]`` bytes (what a checkpoint vouches for)."""
        return {name: h.hexdigest() for name, h in self._hashes.items()}

    @classmethod
    def reopen(
        cls,
        out_dir: Path,
        offsets: dict[str, int],
        client_records: bool = True,
        digests: dict[str, str] | None = None,
    ) -> Recorder:
        """Continue the records in ``out_dir``: cut each file to ``offsets``, then read it.

        With ``digests`` (from the checkpoint), the bytes kept must hash to them: records edited
        or replaced since the checkpoint are refused, naming the file.
        """
        rec = cls(out_dir, client_records)
        rec._hashes = verify_records(out_dir, offsets, digests)
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
            else:
                (out_dir / name).unlink(missing_ok=True)
            rec.offsets[name] = size
        if rec.offsets[ROUNDS_FILE]:
            frame = read_rounds(out_dir / ROUNDS_FILE)
            rec.rounds = frame.to_dict("records")
        if client_records and rec.offsets[CLIENTS_FILE]:
            rec.client_frames = [pd.read_csv(out_dir / CLIENTS_FILE)]
        return rec

    def add(self, record: dict[str, Any], clients: dict[str, np.ndarray]) -> None:
        self.rounds.append(record)
        row = pd.DataFrame([record], columns=ROUND_COLUMNS)
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
        text = frame.to_csv(header=new, index=False, float_format="%.10g", lineterminator="\n")
        data = text.encode("utf-8")
        with path.open("ab") as f:
            f.write(data)
            f.flush()
            self.offsets[name] = os.fstat(f.fileno()).st_size
        self._hashes[name].update(data)

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
        return pd.DataFrame(self.rounds, columns=ROUND_COLUMNS)

    def clients_frame(self) -> pd.DataFrame | None:
        if not self.client_frames:
            return None
        return pd.concat(self.client_frames, ignore_index=True)


def read_rounds(path: Path) -> pd.DataFrame:
    """rounds.csv as the Recorder holds it: text columns keep "" where the CSV is empty."""
    frame = pd.read_csv(path)
    for col in TEXT_COLUMNS:
        if col in frame.columns:
            frame[col] = frame[col].fillna("").astype(str)
    return frame


def verify_records(
    out_dir: Path, offsets: dict[str, int], digests: dict[str, str] | None
) -> dict[str, Any]:
    """Hash the first ``offsets[name]`` bytes of each record file; ConfigError naming the file
    if it is shorter or (with ``digests``) hashes differently. Returns the hash objects."""
    hashes = {}
    for name in (ROUNDS_FILE, CLIENTS_FILE):
        path, size = out_dir / name, int(offsets.get(name, 0))
        have = path.stat().st_size if path.exists() else 0
        if have < size:
            raise ConfigError(
                f"{path}: holds {have} bytes, the checkpoint needs {size}; records damaged"
            )
        h = hashes[name] = hashlib.sha256()
        if size:
            with path.open("rb") as f:
                remaining = size
                while remaining:
                    chunk = f.read(min(remaining, 1 << 20))
                    h.update(chunk)
                    remaining -= len(chunk)
        if digests is not None and h.hexdigest() != digests.get(name):
            raise ConfigError(
                f"{path}: differs from what the checkpoint recorded (checksum mismatch); "
                "records edited or damaged"
            )
    return hashes
