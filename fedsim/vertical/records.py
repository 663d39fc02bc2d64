"""What a vertical run records: rounds.csv columns (one row per epoch), AUC, the summary, and
the epoch loop that records them.

Round 0 is the ID alignment (private set intersection); round e >= 1 is training epoch e and
the evaluation after it. ``selected`` and ``completed`` count the parties (every party takes
part in every step of a vertical protocol; nobody straggles or drops). The columns are the
horizontal ones (those that do not apply, such as ``epsilon``, are empty), ``test_auc`` and
the bytes each party sent (``_up``) and received (``_down``). ``bytes_up`` is what the
passive parties sent the active party, ``bytes_down`` what they received from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim.metrics import ROUND_COLUMNS, Recorder
from fedsim.vertical.logistic import cross_entropy

#: What the runner passes to see each round's row as it is recorded.
OnRound = Callable[[dict[str, Any]], None]
#: What a run returns to the runner: rounds.csv as a frame, the summary, the final parameters.
Outcome = tuple[pd.DataFrame, dict[str, Any], np.ndarray]
#: One training epoch (numbered from 1): its simulated seconds and the metrics after it.
Epoch = Callable[[int], tuple[float, dict[str, float]]]


def columns(parties: list[str]) -> list[str]:
    """rounds.csv columns of a run with these parties."""
    per_party = [f"bytes_{p}_{way}" for p in parties for way in ("up", "down")]
    return [*ROUND_COLUMNS, "test_auc", *per_party]


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; tied scores share their mean rank)."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return math.nan
    ranks = pd.Series(np.asarray(score, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def evaluate(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Test loss (mean binary cross-entropy), accuracy at probability 0.5, and AUC."""
    loss = cross_entropy(logits, y)
    acc = float(np.mean((logits > 0) == (y == 1)))
    return {"test_loss": loss, "test_accuracy": acc, "test_auc": auc(y, logits)}


class Rows:
    """Builds one row per round, keeping the cumulative columns."""

    def __init__(self, parties: list[str]) -> None:
        """``parties``: their names, the active party first."""
        self.parties = parties
        self.sim_time = 0.0
        self.cum = {"up": 0, "down": 0}

    def row(
        self,
        round_: int,
        duration: float,
        up: dict[str, int],
        down: dict[str, int],
        metrics: dict[str, float],
        wall: float,
    ) -> dict[str, Any]:
        self.sim_time += duration
        # Every message has the active party (parties[0]) at one end, so, as between clients
        # and server in horizontal runs, up (passive -> active) + down counts each byte once.
        passive = self.parties[1:]
        total_up, total_down = sum(up[p] for p in passive), sum(down[p] for p in passive)
        self.cum["up"] += total_up
        self.cum["down"] += total_down
        n = len(self.parties)
        out: dict[str, Any] = {
            "round": round_,
            "sim_time_s": self.sim_time,
            "round_duration_s": duration,
            "selected": n,
            "completed": n,
            "stragglers": 0,
            "dropped": 0,
            "reporting": n,
            "rejected": 0,
            "bytes_down": total_down,
            "bytes_up": total_up,
            "cum_bytes_down": self.cum["down"],
            "cum_bytes_up": self.cum["up"],
            "cum_bytes": self.cum["up"] + self.cum["down"],
            "train_loss": metrics.get("train_loss", math.nan),
            "test_loss": metrics.get("test_loss", math.nan),
            "test_accuracy": metrics.get("test_accuracy", math.nan),
            "test_auc": metrics.get("test_auc", math.nan),
            "failed": False,
            "aborted": False,
            "wall_time_s": wall,
        }
        for p in self.parties:
            out[f"bytes_{p}_up"], out[f"bytes_{p}_down"] = up[p], down[p]
        return out


def totals(frame: pd.DataFrame, parties: list[str]) -> dict[str, Any]:
    """Summary entries of a run's records: last evaluation, simulated time, bytes per party."""
    last = frame.iloc[-1]
    out: dict[str, Any] = {
        "rounds": int(len(frame) - 1),
        "final_test_accuracy": float(last["test_accuracy"]),
        "final_test_loss": float(last["test_loss"]),
        "sim_time_s": float(last["sim_time_s"]),
        "bytes_up_total": int(frame["bytes_up"].sum()),
        "bytes_down_total": int(frame["bytes_down"].sum()),
        "resumed_from_rounds": [],
    }
    for n in parties:
        out[f"bytes_{n}_up"] = int(frame[f"bytes_{n}_up"].sum())
        out[f"bytes_{n}_down"] = int(frame[f"bytes_{n}_down"].sum())
    return out


class Log:
    """A run's rounds.csv: each row with the bytes the ledger counted since the previous one."""

    def __init__(
        self,
        out: Path | None,
        parties: list[str],
        ledger: Any,
        on_round: OnRound | None,
    ) -> None:
        """``ledger``: the run's :class:`fedsim.vertical.costs.Ledger`."""
        self.recorder = Recorder(out, client_records=False, columns=columns(parties))
        self.rows = Rows(parties)
        self.ledger, self.on_round, self.t0 = ledger, on_round, time.perf_counter()

    def record(self, round_: int, duration: float, metrics: dict[str, float]) -> None:
        up, down = self.ledger.take()
        row = self.rows.row(round_, duration, up, down, metrics, time.perf_counter() - self.t0)
        self.recorder.add(row, {})
        if self.on_round is not None:
            self.on_round(row)

    def frame(self) -> pd.DataFrame:
        return self.recorder.rounds_frame()


def train(
    log: Log, epoch: Epoch, epochs: int, shown: str, name: str, progress: bool
) -> pd.DataFrame:
    """Rounds 1..``epochs``, one ``epoch`` each, recorded in ``log``; rounds.csv as a frame.

    With ``progress`` a bar named ``name`` shows the metric ``shown`` after each epoch.
    """
    bar = progress_bar(progress, epochs, name)
    for e in range(1, epochs + 1):
        sim, metrics = epoch(e)
        log.record(e, sim, metrics)
        if bar is not None:
            bar.set_postfix_str(
                f"{shown.removeprefix('test_')}={metrics[shown]:.3f}", refresh=False
            )
            bar.update(1)
    if bar is not None:
        bar.close()
    return log.frame()


def progress_bar(enabled: bool, total: int, name: str) -> Any:
    """A tqdm bar over ``total`` epochs, or None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="epoch", dynamic_ncols=True)
