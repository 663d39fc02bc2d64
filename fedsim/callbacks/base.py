"""Callbacks: what the round loop calls at fixed points of a run, and the run they see."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.config import Config
from fedsim.evaluation import check_evaluations

__all__ = ["Callback", "CallbackList", "RunContext"]


@dataclass
class RunContext:
    """The run a callback is part of, handed to :meth:`Callback.on_run_start`.

    ``records`` is the list of round records so far, the rows of a resumed run's earlier
    start included; it grows as rounds finish. ``stop_reason`` is set once a callback asks
    the run to stop.
    """

    cfg: Config
    out_dir: Path | None
    #: Rounds done before this start: 0, or the checkpoint's round when resuming.
    start_round: int
    records: list[dict[str, Any]]
    stop_reason: str | None = None
    #: What Ctrl-C and SIGTERM set (an object with a ``requested`` flag), once rounds run.
    signals: Any = field(default=None, repr=False)

    @property
    def interrupted(self) -> bool:
        """True once Ctrl-C or SIGTERM asked the run to stop after the current round."""
        return bool(self.signals is not None and self.signals.requested)


class Callback:
    """Hooks the round loop calls, in this order; every one does nothing unless overridden.

    ``on_run_start(run)`` once, before the first round of this start (after a resume too);
    ``on_round_start(round)`` before each round; ``evaluations(round)`` then names the
    evaluations the callback wants after that round; ``on_round_end(record)`` after each round,
    with its record (a copy of the row rounds.csv gets); ``on_run_end(summary)`` once the run
    finished, with the summary (summary.json); ``close()`` always last, also when the run
    failed or was interrupted.

    ``on_round_start`` and ``on_round_end`` may return a string: the run then stops (before
    that round, or after it, with a checkpoint) and the string is its ``stop_reason``. A run
    stopped that way is finished: resuming it changes nothing.
    """

    def on_run_start(self, run: RunContext) -> None:
        """The run starts (or continues from a checkpoint)."""

    def on_round_start(self, round_: int) -> str | None:
        """Round ``round_`` is about to run; return a reason to stop the run before it."""
        return None

    def evaluations(self, round_: int) -> Sequence[str]:
        """The evaluations due after round ``round_`` (names in
        :data:`fedsim.evaluation.EVALUATIONS`: ``"test"``, ``"train"``, ``"clients"``).

        The round runs every evaluation some callback names, once, where the model is (in the
        server; no extra call), and its record holds the scores.
        """
        return ()

    def on_round_end(self, record: dict[str, Any]) -> str | None:
        """A round finished with ``record``; return a reason to stop the run after it."""
        return None

    def on_run_end(self, summary: dict[str, Any]) -> None:
        """The run finished; ``summary`` is what summary.json holds."""

    def close(self) -> None:
        """Release what the callback holds (files, bars); called after success or failure."""


class CallbackList:
    """Calls a list of callbacks in order; the first reason to stop given is the run's."""

    def __init__(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks: {type(cb).__name__} is not a fedsim Callback "
                    "(subclass fedsim.callbacks.Callback)"
                )
        self.run: RunContext | None = None

    def run_start(self, run: RunContext) -> None:
        self.run = run
        for cb in self.callbacks:
            cb.on_run_start(run)

    def round_start(self, round_: int) -> bool:
        """True if a callback stops the run before ``round_``."""
        assert self.run is not None
        for cb in self.callbacks:
            reason = cb.on_round_start(round_)
            if reason:
                self.run.stop_reason = str(reason)
                return True
        return False

    def evaluations(self, round_: int) -> tuple[str, ...]:
        """Every evaluation some callback wants after ``round_``, each once, in a fixed order."""
        wanted: list[str] = []
        for cb in self.callbacks:
            names = cb.evaluations(round_)
            if isinstance(names, str):  # one name, not its letters
                names = (names,)
            wanted += check_evaluations(names, f"callbacks: {type(cb).__name__}")
        return check_evaluations(wanted, "callbacks")

    def round_end(self, record: dict[str, Any]) -> None:
        assert self.run is not None
        for cb in self.callbacks:
            reason = cb.on_round_end(dict(record))
            if reason and self.run.stop_reason is None:
                self.run.stop_reason = str(reason)

    def run_end(self, summary: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_run_end(dict(summary))

    def close(self) -> None:
        """Close every callback, even when one of them fails; the first failure is raised."""
        error: BaseException | None = None
        for cb in self.callbacks:
            try:
                cb.close()
            except Exception as err:  # noqa: BLE001  (the others still close)
                error = error or err
        if error is not None:
            raise error
