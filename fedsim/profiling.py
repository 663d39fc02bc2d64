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
from fedsim.config import Config
from fedsim.metrics import FLOAT_FORMAT
from fedsim.options import ConfigError
from fedsim.rundir import PROFILE_FILE
from fedsim.runtime.round_records import SERVER_PHASES
from fedsim.tables import markdown_table

__all__ = ["PHASES", "PROFILE_COLUMNS", "Profile", "check_profile", "phase_table"]

#: The phases of a round profile.csv times, in the order they run.
PHASES = (*SERVER_PHASES, "callbacks", "checkpoint")
PROFILE_COLUMNS = ["round", *(f"{p}_s" for p in PHASES), "total_s"]
#: What the total holds beyond the phases, as the table names it.
OTHER = "other (transport, loop)"


def check_profile(cfg: Config, out: Path | None) -> None:
    """ConfigError if ``runtime.profile`` is on for a run without a folder to write into."""
    if cfg.runtime.profile and out is None:
        raise ConfigError(
            "runtime.profile: writes profile.csv into the run folder; give the run one"
        )


class Profile:
    """Appends each round's phase times to ``<out>/profile.csv``, as rounds.csv grows.

    A resumed run first drops the rows of rounds after its checkpoint's ``start_round``: those
    rounds run again and are timed again. A file that is not a profile is started anew. The
    file stays open (a line written and flushed per round) until :meth:`close`.
    """

    def __init__(self, out: Path, start_round: int) -> None:
        path = out / PROFILE_FILE
        header = True
        if path.exists():
            try:
                kept = pd.read_csv(path)
                kept = kept[kept["round"] <= start_round].reindex(columns=PROFILE_COLUMNS)
            except (KeyError, ValueError, pd.errors.ParserError):
                path.unlink()
            else:
                text = kept.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
                rundir.write_text(path, text)
                header = False
        self._file = rundir.open_append(path)
        if header:
            self._file.write((",".join(PROFILE_COLUMNS) + "\n").encode())

    def add(
        self, round_: int, server: Mapping[str, float] | None, loop: Mapping[str, float]
    ) -> None:
        """Record round ``round_``: the server's phase times, and the loop's with ``total``."""
        both = [server or {}, loop]
        times = [sum(part.get(phase, 0.0) for part in both) for phase in PHASES]
        values = [
            str(int(round_)),
            *(FLOAT_FORMAT % t for t in times),
            FLOAT_FORMAT % loop["total"],
        ]
        self._file.write((",".join(values) + "\n").encode())
        self._file.flush()

    def close(self) -> None:
        self._file.close()


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
