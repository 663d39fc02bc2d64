"""Round and client records: appended to CSV as rounds finish, and kept as DataFrames."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim.options import ConfigError
from fedsim.rundir import CLIENTS_FILE, ROUNDS_FILE, append_bytes
from fedsim.tables import markdown_table


@dataclass(frozen=True)
class Column:
    """One column of a record file: its name and what it holds (units included)."""

    name: str
    meaning: str
    #: Measured wall-clock time: differs from run to run, unlike every other column.
    wall_time: bool = False


#: rounds.csv: one row per round. The README's table of columns is checked against this.
ROUND_SCHEMA: tuple[Column, ...] = (
    Column("round", "round number, from 1 (async: server step)"),
    Column("model_version", "async: model version after the step (empty in sync runs)"),
    Column("sim_time_s", "simulated time at the end of the round (s)"),
    Column("round_duration_s", "simulated length of the round (s)"),
    Column("selected", "clients selected (the cohort, over-selection included)"),
    Column("completed", "clients that finished within the deadline and were kept"),
    Column(
        "stragglers",
        "clients that did not finish in time (partial work if the policy keeps it); async: "
        "updates discarded as staler than async.max_staleness",
    ),
    Column("dropped", "clients that failed mid-round"),
    Column("reporting", "clients whose update reached the server"),
    Column("rejected", "reported updates rejected as non-finite or above server.max_update_norm"),
    Column("bytes_down", "bytes sent to clients this round (model and broadcast)"),
    Column("bytes_up", "bytes sent by clients this round (updates, payloads, protocol messages)"),
    Column("cum_bytes_down", "bytes_down summed over rounds so far"),
    Column("cum_bytes_up", "bytes_up summed over rounds so far"),
    Column("cum_bytes", "cum_bytes_down + cum_bytes_up"),
    Column("staleness_mean", "async: mean staleness (versions behind) of the step's updates"),
    Column("staleness_max", "async: largest staleness among the step's updates"),
    Column("train_loss", "sample-weighted mean of the reporting clients' local training loss"),
    Column("test_accuracy", "accuracy of the global model on the test set (when evaluated)"),
    Column("test_loss", "loss of the global model on the test set (cross-entropy, or MSE)"),
    Column("test_mae", "regression: mean absolute error on the test set"),
    Column("test_rmse", "regression: root mean squared error on the test set"),
    Column("global_train_loss", "loss on the training data of all clients (server.eval_train)"),
    Column("global_train_accuracy", "accuracy on the training data of all clients"),
    Column("client_acc_p10", "10th percentile of per-client accuracy (server.client_eval_every)"),
    Column("client_acc_p50", "median per-client accuracy"),
    Column("client_acc_p90", "90th percentile of per-client accuracy"),
    Column("client_acc_mean", "mean per-client accuracy (each client counts once)"),
    Column("failed", "too few updates for server.min_completed: the model was kept"),
    Column("aborted", "secure aggregation could not unmask (too few survivors)"),
    Column("abort_reason", "why secure aggregation aborted the round (empty otherwise)"),
    Column("epsilon", "DP epsilon spent after this round (privacy.enabled)"),
    Column("clip_norm", "DP clipping norm used this round"),
    Column("server_s", "wall time of selection and planning (s)", wall_time=True),
    Column(
        "train_s", "wall time of client work, aggregation and the server step (s)", wall_time=True
    ),
    Column("wall_time_s", "wall time of the whole round, evaluation included (s)", wall_time=True),
)

#: clients.csv: one row per selected client per round.
CLIENT_SCHEMA: tuple[Column, ...] = (
    Column("round", "round number"),
    Column("client_id", "the client's id in the population"),
    Column("tier", "its device tier (population.tiers), or 'all'"),
    Column("outcome", "completed, straggler or dropped"),
    Column("num_samples", "its training samples"),
    Column("epochs_done", "epochs whose work reached the server (0 if none)"),
    Column("download_s", "simulated download time (s)"),
    Column("compute_s", "simulated local compute time of the planned work (s)"),
    Column("upload_s", "simulated upload time (s)"),
    Column("train_loss", "its mean local training loss (NaN if it did not train)"),
    Column("rejected", "its update was rejected"),
    Column("bytes_up", "bytes of its update upload (0 if nothing reached the server)"),
    Column("byzantine", "a Byzantine client (faults.byzantine_fraction): its update is crafted"),
    Column("noisy", "a noisy client (faults.noisy_client_fraction): some labels replaced"),
    Column("model_version", "async only: the model version it downloaded"),
    Column("start_s", "async only: simulated time it started (s)"),
    Column("finish_s", "async only: simulated time it arrived or dropped (s)"),
    Column("staleness", "async only: versions made between its download and its arrival"),
    Column("protocol_bytes_up", "secure aggregation only: protocol messages sent (bytes)"),
    Column("protocol_bytes_down", "secure aggregation only: protocol messages received (bytes)"),
)

ROUND_COLUMNS = [c.name for c in ROUND_SCHEMA]
#: Columns of either record file that hold measured wall time (not reproducible).
WALL_TIME_COLUMNS = frozenset(c.name for c in (*ROUND_SCHEMA, *CLIENT_SCHEMA) if c.wall_time)
#: How rounds.csv and clients.csv write floats: ten significant digits.
FLOAT_FORMAT = "%.10g"
#: Columns of ROUND_COLUMNS holding text ("" when there is nothing to say).
TEXT_COLUMNS = ("abort_reason",)


def schema_table(schema: tuple[Column, ...]) -> str:
    """A schema as the Markdown table the README shows."""
    return markdown_table(["column", "what it holds"], [(f"`{c.name}`", c.meaning) for c in schema])


CLIENT_COLUMNS = [c.name for c in CLIENT_SCHEMA]


class Recorder:
    """Writes rounds.csv / clients.csv row by row (flushed each round) into ``out_dir``.

    ``offsets`` holds each file's size after the last complete round, so a checkpoint can
    record where the records of its round end and a resumed run can cut off what follows;
    ``digests()`` the SHA-256 of those bytes, so a resumed run can tell they are the same.
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
        header: list[str] = ROUND_COLUMNS
        if offsets.get(ROUNDS_FILE, 0):
            with (out_dir / ROUNDS_FILE).open() as f:
                header = f.readline().rstrip("\r\n").split(",")
            unknown = sorted(set(header) - set(ROUND_COLUMNS))
            if unknown:
                raise ConfigError(
                    f"{out_dir / ROUNDS_FILE}: column {unknown[0]!r} is not one of this version "
                    "of fedsim's rounds.csv; cannot continue it"
                )
        for name in (ROUNDS_FILE, CLIENTS_FILE):
            size = int(offsets.get(name, 0))
            if size:
                os.truncate(out_dir / name, size)
            else:
                (out_dir / name).unlink(missing_ok=True)
            rec.offsets[name] = size
        if header != ROUND_COLUMNS:
            # Written by a version with fewer columns: rewrite it with today's (new ones empty).
            old = pd.read_csv(out_dir / ROUNDS_FILE)
            path = out_dir / ROUNDS_FILE
            tmp = path.with_name(f".{path.name}.tmp")
            old.reindex(columns=ROUND_COLUMNS).to_csv(tmp, index=False, float_format=FLOAT_FORMAT)
            os.replace(tmp, path)
            rec.offsets[ROUNDS_FILE] = path.stat().st_size
            rec._hashes[ROUNDS_FILE] = hashlib.sha256(path.read_bytes())
        if rec.offsets[ROUNDS_FILE]:
            frame = read_rounds(out_dir / ROUNDS_FILE)
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
        text = frame.to_csv(header=new, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
        data = text.encode("utf-8")
        self.offsets[name] = append_bytes(path, data)
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
        return pd.DataFrame(self.rounds, columns=self.columns)

    def clients_frame(self) -> pd.DataFrame | None:
        if not self.client_frames:
            return None
        return pd.concat(self.client_frames, ignore_index=True)


def read_rounds(path: Path) -> pd.DataFrame:
    """rounds.csv as the Recorder holds it: text columns keep "" where the CSV is empty."""
    frame = pd.read_csv(path)
    for col in TEXT_COLUMNS:
        if col in frame.columns:
            frame[col] = frame[col].astype(object).fillna("").astype(str)
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
