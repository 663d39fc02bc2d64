"""The round loop of a horizontal run: the session, the records, checkpoints and callbacks.

The loop owns what must happen in a fixed order (claim the folder, write the records, commit
checkpoints, stop on Ctrl-C); what happens at points of it (progress, early stopping, when to
checkpoint, logging) is done by callbacks (:mod:`fedsim.callbacks`).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedsim import checkpoint, rundir
from fedsim import config as config_mod
from fedsim.callbacks import Callback, CallbackList, Checkpointing, RunContext
from fedsim.callbacks.loggers import check_loggers
from fedsim.errors import WorkerFailedError
from fedsim.experiment import Experiment, RunInterrupted, RunResult, run_summary
from fedsim.metrics import Recorder
from fedsim.options import ConfigError
from fedsim.profiling import Profile, check_profile
from fedsim.rundir import CONFIG_FILE, PARTITION_FILE, SUMMARY_FILE
from fedsim.runtime.session import Session, open_session

__all__ = ["execute"]


class Checkpoints:
    """Writes a run's checkpoints (none without a run folder) and keeps its history."""

    def __init__(
        self,
        exp: Experiment,
        out: Path | None,
        session: Session,
        recorder: Recorder,
        ckpt: checkpoint.Checkpoint | None,
        t0: float,
    ) -> None:
        self.exp, self.out, self.session, self.recorder = exp, out, session, recorder
        self.t0 = t0  # when this start began
        history: dict[str, Any] = {"wall_time_s": 0.0, "resumed_from_rounds": [], "restarts": 0}
        if ckpt is not None:
            history = {k: ckpt.state["history"][k] for k in history}
            history["resumed_from_rounds"] = [*history["resumed_from_rounds"], ckpt.round]
        self.history = history
        self.saved = ckpt.round if ckpt is not None else 0
        self.save_s = 0.0  # wall time spent saving, for runtime.profile

    def wall_time(self) -> float:
        """Wall time of the run, its earlier starts included (s)."""
        return self.history["wall_time_s"] + time.perf_counter() - self.t0

    def restarts(self) -> int:
        return self.history["restarts"] + self.session.worker_restarts()

    def save(self, done: int, finished: str | None = None) -> None:
        """Commit the state after round ``done``; ``finished`` names why the run ended."""
        self.saved = done
        if self.out is None:
            return
        t0 = time.perf_counter()
        self.recorder.sync()
        base_dir = self.exp.base_dir
        state = {
            "round": done,
            "finished": finished,
            "server": self.session.state_dict(),
            "records": dict(self.recorder.offsets),
            "records_sha256": self.recorder.digests(),
            "config": self.exp.cfg.to_dict(),
            "base_dir": str(base_dir) if base_dir is not None else None,
            "history": {
                **self.history,
                "wall_time_s": self.wall_time(),
                "restarts": self.restarts(),
            },
        }
        checkpoint.save(self.out, state)
        self.save_s += time.perf_counter() - t0


def execute(
    exp: Experiment,
    out: Path | None,
    ckpt: checkpoint.Checkpoint | None,
    callbacks: Sequence[Callback],
    write_partition: Callable[[Experiment, Path], None],
) -> RunResult:
    """Run (or continue from ``ckpt``) the rounds of a validated experiment."""
    check_loggers(exp.cfg, out)
    check_profile(exp.cfg, out)
    calls = CallbackList(callbacks)
    try:
        return _execute(exp, out, ckpt, calls, write_partition)
    finally:
        calls.close()


def _execute(
    exp: Experiment,
    out: Path | None,
    ckpt: checkpoint.Checkpoint | None,
    calls: CallbackList,
    write_partition: Callable[[Experiment, Path], None],
) -> RunResult:
    cfg = exp.cfg
    t0 = time.perf_counter()
    # Ray is started (or reached) before anything is written, so a bad address leaves no folder.
    session = open_session(exp)
    held = None
    try:
        if out is not None:
            held = rundir.claim(out, resume=ckpt is not None)
        recorder, ckpt = _open_records(exp, out, ckpt, session, write_partition)
        state = Checkpoints(exp, out, session, recorder, ckpt, t0)
        done = state.saved
        # On resume too: reopening may have rewritten the records (new columns), so the
        # checkpoint must count their bytes as they are now.
        state.save(done)
        # config.toml last: a folder holding it always holds a checkpoint as well.
        if out is not None:
            rundir.write_text(out / CONFIG_FILE, config_mod.dumps_toml(cfg.to_dict()))
        run = RunContext(cfg, out, done, recorder.rounds)
        calls.callbacks.append(Checkpointing(state, cfg.runtime.checkpoint_every))
        calls.run_start(run)
        profile = Profile(out, done) if out is not None and cfg.runtime.profile else None
        try:
            with _StopSignals() as stop:
                run.signals = stop
                done = _rounds(session, recorder, calls, state, done, profile)
        finally:
            if profile is not None:
                profile.close()
        # The last checkpoint says the run finished, so resuming it changes nothing.
        stop_reason = run.stop_reason or "rounds"
        state.save(done, stop_reason)
        w = session.model()
        nodes = session.nodes()
        restarts = state.restarts()
    finally:
        if held is not None:
            held.release()
        session.close()
    rounds = recorder.rounds_frame()
    summary = run_summary(
        exp,
        rounds,
        state.wall_time(),
        session.num_workers,
        nodes=nodes,
        worker_restarts=restarts,
        resumed_from_rounds=state.history["resumed_from_rounds"],
        stop_reason=stop_reason,
    )
    calls.run_end(summary)
    if out is not None:
        rundir.write_json(out / SUMMARY_FILE, summary)
    return RunResult(cfg, rounds, recorder.clients_frame(), summary, w, out)


def _open_records(
    exp: Experiment,
    out: Path | None,
    ckpt: checkpoint.Checkpoint | None,
    session: Session,
    write_partition: Callable[[Experiment, Path], None],
) -> tuple[Recorder, checkpoint.Checkpoint | None]:
    """The run's records: new ones, or a resumed run's cut back to its checkpoint."""
    if ckpt is None:
        recorder = Recorder(out)
        if out is not None:
            write_partition(exp, out)
        return recorder, None
    assert out is not None
    ckpt = _same_checkpoint(out, ckpt)
    session.load_state_dict(ckpt.state["server"])
    recorder = Recorder.reopen(
        out, ckpt.state["records"], digests=ckpt.state.get("records_sha256", {})
    )
    rundir.write_text(out / CONFIG_FILE, config_mod.dumps_toml(exp.cfg.to_dict()))
    if not (out / PARTITION_FILE).exists():
        write_partition(exp, out)
    return recorder, ckpt


def _rounds(
    session: Session,
    recorder: Recorder,
    calls: CallbackList,
    state: Checkpoints,
    done: int,
    profile: Profile | None,
) -> int:
    """Run rounds until ``server.rounds`` or a callback stops the run; the last round done."""
    run = calls.run
    assert run is not None
    rounds = run.cfg.server.rounds
    while done < rounds:
        t0 = time.perf_counter()
        if calls.round_start(done + 1):
            break
        due = calls.evaluations(done + 1)
        t1 = time.perf_counter()
        try:
            result = session.round(due)
        except WorkerFailedError:
            # The server state is still that of the last completed round.
            if state.saved < done:
                state.save(done)
            raise
        t2 = time.perf_counter()
        recorder.add(result.record, result.clients)
        done = int(result.record["round"])
        t3, save_s = time.perf_counter(), state.save_s
        calls.round_end(result.record)  # Checkpointing, last, saves when due
        if profile is not None:
            t4, ckpt_s = time.perf_counter(), state.save_s - save_s
            loop = {"record": t3 - t2, "callbacks": t1 - t0 + t4 - t3 - ckpt_s}
            profile.add(done, result.phases, {**loop, "checkpoint": ckpt_s, "total": t4 - t0})
        last = done == rounds or run.stop_reason is not None
        if run.interrupted and not last:
            raise RunInterrupted(done, rounds, run.out_dir)
        if run.stop_reason is not None:
            break
    return done


def _same_checkpoint(out: Path, ckpt: checkpoint.Checkpoint) -> checkpoint.Checkpoint:
    """The checkpoint read again under the folder's lock: it must be the one checked before."""
    now = checkpoint.load(out)
    if now is None or now.round != ckpt.round:
        raise ConfigError(
            f"{checkpoint.state_path(out)}: changed while this run was starting; run again"
        )
    return now


class _StopSignals:
    """Ctrl-C or SIGTERM asks the run to stop after the current round (with a checkpoint).

    A second Ctrl-C stops at once. Signal handlers can be set only from the main thread;
    elsewhere the signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nfedsim: stopping after the current round (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
