"""Why a run stopped before its last round (as opposed to bad input, which is ConfigError)."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run stopped at ``round``; the records of the rounds before it are intact."""

    def __init__(self, round_: int, message: str) -> None:
        super().__init__(message)
        self.round = round_

    def __reduce__(self) -> tuple:
        # Crosses process boundaries (Ray): rebuild from both arguments, not just the message.
        return type(self), (self.round, str(self))


class WorkerFailedError(RunError):
    """Training workers kept dying in one round, beyond ``runtime.max_worker_restarts``."""


class DivergedError(RunError):
    """Training diverged: a non-finite loss or model, or every update of a round rejected."""
