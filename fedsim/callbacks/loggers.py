"""Loggers: a run's round records as TensorBoard event files and as an MLflow run.

Both write inside the run folder (``tensorboard/``, ``mlruns/``), never to a server. A logger
writes every round record as it comes, one scalar per numeric column of rounds.csv at step
``round``. When a run is resumed, a logger writes its log again from the records kept up to the
checkpoint: rounds run after the checkpoint are computed again, and a log must not hold both
(TensorBoard's folder is written anew; the earlier MLflow run is deleted, MLflow keeping it
in its trash).
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fedsim.callbacks.base import Callback, RunContext
from fedsim.config import Config
from fedsim.metrics import FLOAT_FORMAT, ROUND_COLUMNS, TEXT_COLUMNS
from fedsim.options import ConfigError
from fedsim.rundir import MLFLOW_DIR, TENSORBOARD_DIR, flatten_config

__all__ = ["MLflowLogger", "TensorBoardLogger", "check_loggers", "loggers_for", "scalars"]

#: [logging] key -> (the module its logger imports, the extra that installs it).
_NEEDS = {"tensorboard": ("tensorboardX", "tensorboard"), "mlflow": ("mlflow", "mlflow")}

#: What MLflow reads from the environment: no usage reports sent home, and the file store
#: (``mlruns/``), which recent versions refuse unless allowed.
MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ALLOW_FILE_STORE": "true",
}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric columns of a round record that hold a number this round (not NaN).

    Each value is the one rounds.csv holds (:data:`fedsim.metrics.FLOAT_FORMAT`), so a log
    and the records agree, a resumed run's rows (read back from rounds.csv) included.
    """
    out: dict[str, float] = {}
    for name in ROUND_COLUMNS:
        if name == "round" or name in TEXT_COLUMNS:
            continue
        value = record.get(name)
        if value is None or isinstance(value, str):
            continue
        value = float(value)
        if not math.isnan(value):
            out[name] = float(FLOAT_FORMAT % value)
    return out


def check_loggers(cfg: Config, out_dir: Path | None) -> None:
    """ConfigError unless every logger ``[logging]`` turns on can write: its package, a folder."""
    for key, (module, extra) in _NEEDS.items():
        if not getattr(cfg.logging, key):
            continue
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"logging.{key}: needs the {module} package; install it with "
                f"pip install 'fedsim[{extra}]'"
            )
        if out_dir is None:
            raise ConfigError(f"logging.{key}: writes into the run folder; give the run one")


def loggers_for(cfg: Config, out_dir: Path | None) -> list[Callback]:
    """The loggers ``[logging]`` turns on (see :func:`check_loggers`)."""
    check_loggers(cfg, out_dir)
    loggers: list[Callback] = []
    if out_dir is not None and cfg.logging.tensorboard:
        loggers.append(TensorBoardLogger(out_dir / TENSORBOARD_DIR))
    if out_dir is not None and cfg.logging.mlflow:
        loggers.append(MLflowLogger(out_dir / MLFLOW_DIR))
    return loggers


class TensorBoardLogger(Callback):
    """Event files in ``log_dir`` (tensorboardX's writer), flushed after every round."""

    def __init__(self, log_dir: Path) -> None:
        # Imported here, before the run starts (tensorboardX imports torch when it finds it).
        from tensorboardX import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer: Any = None
        self._writer_class = SummaryWriter

    def on_run_start(self, run: RunContext) -> None:
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.writer = self._writer_class(
            logdir=str(self.log_dir), flush_secs=3600, comet_config={"disabled": True}
        )
        for record in run.records:
            self._write(record)
        self.writer.flush()

    def on_round_end(self, record: dict[str, Any]) -> None:
        self._write(record)
        self.writer.flush()

    def _write(self, record: dict[str, Any]) -> None:
        step = int(record["round"])
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowLogger(Callback):
    """One MLflow run in the file store ``store``: the config as parameters, rounds as metrics.

    The MLflow experiment is named after ``experiment.name``, the run after the run folder.
    """

    def __init__(self, store: Path) -> None:
        os.environ.update(MLFLOW_ENV)  # read when mlflow is first imported
        from mlflow.tracking import MlflowClient

        _reset_mlflow_telemetry()
        self.store = Path(store)
        self.client: Any = None
        self.run_id = ""
        self._client_class = MlflowClient

    def on_run_start(self, run: RunContext) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        self.client = self._client_class(tracking_uri=self.store.resolve().as_uri())
        known = self.client.get_experiment_by_name(run.cfg.experiment.name)
        if known is None:
            experiment = self.client.create_experiment(run.cfg.experiment.name)
        else:  # a resumed run: its earlier start's MLflow run is replaced by a complete one
            experiment = known.experiment_id
            for earlier in self.client.search_runs([experiment]):
                self.client.delete_run(earlier.info.run_id)
        name = run.out_dir.name if run.out_dir is not None else run.cfg.experiment.name
        self.run_id = self.client.create_run(experiment, run_name=name).info.run_id
        params = flatten_config(run.cfg.to_dict())
        items = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters a batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        for record in run.records:
            self._write(record)

    def on_round_end(self, record: dict[str, Any]) -> None:
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, now = int(record["round"]), int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_run_end(self, summary: dict[str, Any]) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")
        self.client = None

    def close(self) -> None:
        if self.client is not None and self.run_id:
            self.client.set_terminated(self.run_id, "KILLED")
        self.client = None


def _reset_mlflow_telemetry() -> None:
    """Drop MLflow's telemetry client if mlflow was imported before the switch above was set."""
    try:
        from mlflow.telemetry import set_telemetry_client
    except ImportError:  # a version without telemetry
        return
    set_telemetry_client()
