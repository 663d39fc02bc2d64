"""The callbacks every run is made of: evaluation schedule, progress bar, early stopping and
checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from fedsim.callbacks.base import Callback, RunContext
from fedsim.config import Config, ServerConfig
from fedsim.evaluation import Schedule

__all__ = [
    "Checkpointing",
    "EvaluationSchedule",
    "PrivacyBudget",
    "ProgressBar",
    "RoundFunction",
    "TargetAccuracy",
    "for_run",
]


def for_run(
    cfg: Config,
    out: Path | None,
    progress: bool,
    on_round: Callable[[dict[str, Any]], None] | None,
    user: Sequence[Callback],
) -> list[Callback]:
    """A run's callbacks in the order they are called: built-in ones, the user's, loggers."""
    from fedsim.callbacks.loggers import loggers_for
    from fedsim.privacy.rounds import round_accountant

    calls: list[Callback] = [ProgressBar()] if progress else []
    if not any(isinstance(cb, EvaluationSchedule) for cb in user):
        calls.append(EvaluationSchedule.from_config(cfg.server))
    if on_round is not None:
        calls.append(RoundFunction(on_round))
    if cfg.server.target_accuracy:
        calls.append(TargetAccuracy(cfg.server.target_accuracy))
    budget = round_accountant(cfg.privacy, cfg.population.num_clients, cfg.server.clients_per_round)
    if budget is not None:
        calls.append(PrivacyBudget(budget))
    return [*calls, *user, *loggers_for(cfg, out)]


class EvaluationSchedule(Callback):
    """Which evaluations run after each round (:class:`fedsim.evaluation.Schedule`).

    Every run has one, built from ``[server]``'s ``eval_every``, ``eval_train`` and
    ``client_eval_every``, unless the callbacks given to ``fedsim.run`` hold an
    ``EvaluationSchedule`` of their own, which then replaces it. Any other callback may ask for
    more evaluations with :meth:`Callback.evaluations`.
    """

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    @classmethod
    def from_config(cls, srv: ServerConfig) -> EvaluationSchedule:
        return cls(Schedule.from_config(srv))

    def evaluations(self, round_: int) -> tuple[str, ...]:
        return self.schedule.due(round_)


class ProgressBar(Callback):
    """A tqdm bar of rounds with the last test accuracy, simulated time and bytes sent."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.run: RunContext | None = None

    def on_run_start(self, run: RunContext) -> None:
        from tqdm import tqdm

        self.run = run
        self.bar = tqdm(
            total=run.cfg.server.rounds,
            initial=run.start_round,
            desc=run.cfg.experiment.name,
            unit="round",
            dynamic_ncols=True,
        )

    def on_round_end(self, record: dict[str, Any]) -> None:
        assert self.run is not None
        acc = next(
            (
                r["test_accuracy"]
                for r in reversed(self.run.records)
                if not math.isnan(r["test_accuracy"])
            ),
            math.nan,
        )
        self.bar.set_postfix_str(
            f"acc={acc:.3f} sim={_fmt_time(record['sim_time_s'])} "
            f"bytes={_fmt_bytes(record['cum_bytes'])}",
            refresh=False,
        )
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RoundFunction(Callback):
    """Calls ``fn(record)`` after each round (the ``on_round`` argument of ``fedsim.run``)."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.fn = fn

    def on_round_end(self, record: dict[str, Any]) -> None:
        self.fn(record)


class TargetAccuracy(Callback):
    """Stops the run after the first round whose test accuracy reaches ``target``."""

    def __init__(self, target: float) -> None:
        self.target = target

    def on_round_end(self, record: dict[str, Any]) -> str | None:
        return "target_accuracy" if record["test_accuracy"] >= self.target else None


class _Accountant(Protocol):
    def allows(self, rounds: int) -> bool: ...


class PrivacyBudget(Callback):
    """Stops the run before the first round whose epsilon would exceed privacy.target_epsilon."""

    def __init__(self, accountant: _Accountant) -> None:
        self.accountant = accountant

    def on_round_start(self, round_: int) -> str | None:
        return None if self.accountant.allows(round_) else "target_epsilon"


class _Checkpoints(Protocol):
    def save(self, done: int, finished: str | None = None) -> None: ...


class Checkpointing(Callback):
    """Saves a checkpoint every ``every`` rounds, after the last round and when interrupted.

    The loop puts it after every other callback, so that it sees whether one of them stops
    the run after this round (the last round, whose checkpoint is always written).
    """

    def __init__(self, checkpoints: _Checkpoints, every: int) -> None:
        self.checkpoints, self.every = checkpoints, every
        self.run: RunContext | None = None

    def on_run_start(self, run: RunContext) -> None:
        self.run = run

    def on_round_end(self, record: dict[str, Any]) -> None:
        assert self.run is not None
        done = int(record["round"])
        last = done == self.run.cfg.server.rounds or self.run.stop_reason is not None
        if (self.every and done % self.every == 0) or last or self.run.interrupted:
            self.checkpoints.save(done)


def _fmt_time(s: float) -> str:
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if b < 1000:
            return f"{b:.1f}{unit}"
        b /= 1000
    return f"{b:.1f}TB"
