"""Where a run's wall time goes (``runtime.profile``): profile.csv, one row per round.

The server times the phases it runs (select/plan, broadcast, train, aggregate, evaluate, the
building of the round's records) and hands them over with the round's records; the loop adds
its own (writing the records, the other callbacks, the checkpoint) and the round's total as the
driver sees it. What the total holds beyond the phases is the transport between the driver and
the server (Ray) and the loop itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fedsim import rundir
from fedsim.metrics import FLOAT_FORMAT
from fedsim.rundir import PROFILE_FILE
from fedsim.runtime.round_records import SERVER_PHASES
from fedsim.tables import markdown_table

__all__ = ["PHASES", "PROFILE_COLUMNS", "Profile", "phase_table"]

#: The phases of a round profile.csv times, in the order they run.
PHASES = (*SERVER_PHASES, "callbacks", "checkpoint")
PROFILE_COLUMNS = ["round", *(f"{p}_s" for p in PHASES), "total_s"]
#: What the total holds beyond the phases, as the table names it.
OTHER = "other (transport, loop)"


class Profile:
    """Appends each round's phase times to ``<out>/profile.csv`` (kept in memory without one).

    A resumed run first drops the rows of rounds after its checkpoint's ``start_round``: those
    rounds run again and are timed again.
    """

    def __init__(self, out: Path | None, start_round: int) -> None:
        self.path = out / PROFILE_FILE if out is not None else None
        self.rows: list[dict[str, float]] = []
        if self.path is not None and self.path.exists():
            kept = pd.read_csv(self.path)
            kept = kept[kept["round"] <= start_round].reindex(columns=PROFILE_COLUMNS)
            self.rows = kept.to_dict("records")
            rundir.write_text(self.path, kept.to_csv(index=False, lineterminator="\n"))

    def add(
        self, round_: int, server: Mapping[str, float] | None, loop: Mapping[str, float]
    ) -> None:
        """Record round ``round_``: the server's phase times, and the loop's with ``total``."""
        row: dict[str, float] = {"round": round_}
        for phase in PHASES:
            row[f"{phase}_s"] = (server or {}).get(phase, 0.0) + loop.get(phase, 0.0)
        row["total_s"] = loop["total"]
        self.rows.append(row)
        if self.path is not None:
            values = [str(int(round_))] + [FLOAT_FORMAT % row[c] for c in PROFILE_COLUMNS[1:]]
            header = "" if self.path.exists() else ",".join(PROFILE_COLUMNS) + "\n"
            rundir.append_bytes(self.path, (header + ",".join(values) + "\n").encode())


def phase_table(frame: pd.DataFrame, top: int = len(PHASES) + 1) -> str:
    """The phases of profile.csv's rows sorted by total time, each with its share of the rounds'
    total wall time (what is not in a phase shown as :data:`OTHER`); ``top`` rows at most."""
    total = float(frame["total_s"].sum())
    rounds = max(len(frame), 1)
    sums = {p: float(frame[f"{p}_s"].sum()) for p in PHASES}
    sums[OTHER] = max(0.0, total - sum(sums.values()))
    ranked = sorted(sums.items(), key=lambda kv: kv[1], reverse=True)[:top]
    rows = [
        (name, f"{s:.3f}", f"{1000 * s / rounds:.2f}", f"{100 * s / total if total else 0:.1f}%")
        for name, s in ranked
    ]
    title = f"where the time went: {len(frame)} rounds, {total:.3f} s wall time"
    table = markdown_table(
        ("phase", "total s", "ms/round", "share"), rows, ("left", "right", "right", "right")
    )
    return f"{title}\n\n{table}"
