"""The pieces of a run: validated and built before anything is written or started."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim import memory
from fedsim.aggregators.base import Aggregator
from fedsim.aggregators.robust import per_client_mean
from fedsim.config import Config
from fedsim.data import FederatedDataset, build_dataset
from fedsim.data.noisy import NoisyLabels
from fedsim.faults import ClientFaults
from fedsim.models.base import Model
from fedsim.models.torch_models import as_model, on_device
from fedsim.options import ConfigError
from fedsim.population import Population
from fedsim.provenance import provenance
from fedsim.registry import AGGREGATORS, MODELS, STRATEGIES
from fedsim.runtime.asynchronous import check_strategy
from fedsim.runtime.session import Experiment
from fedsim.strategies.base import Strategy

__all__ = ["Experiment", "RunInterrupted", "RunResult", "prepare", "run_summary"]


@dataclass
class RunResult:
    """What a run produced: per-round and per-client records, summary, final model."""

    config: Config
    rounds: pd.DataFrame
    clients: pd.DataFrame | None
    summary: dict[str, Any]
    model: np.ndarray
    out_dir: Path | None
    #: True when resuming found the run already finished: nothing was run or written.
    unchanged: bool = False


class RunInterrupted(KeyboardInterrupt):  # noqa: N818  (it is a KeyboardInterrupt)
    """Ctrl-C or SIGTERM stopped the run after ``round``; ``out_dir`` holds its checkpoint."""

    def __init__(self, round_: int, rounds: int, out_dir: Path | None) -> None:
        super().__init__(f"stopped after round {round_} of {rounds}")
        self.round, self.rounds, self.out_dir = round_, rounds, out_dir


def prepare(
    cfg: Config,
    base_dir: Path | None = None,
    strategy: Strategy | None = None,
    model: Any = None,
) -> Experiment:
    """Build dataset, model, strategy and population; raises ConfigError on bad input.

    ``strategy`` replaces the configured one (the Python API's ``run(cfg, strategy=...)``);
    ``model`` (a :class:`Model` or a torch ``nn.Module``) replaces the ``[model]`` section.
    """
    dataset = build_dataset(
        cfg.data, cfg.partition, cfg.population.num_clients, cfg.experiment.seed
    )
    faults = ClientFaults.from_config(cfg.faults, cfg.experiment.seed, dataset.num_clients)
    if faults.noisy.any():
        task = getattr(dataset, "task", "classification")
        if task != "classification":
            raise ConfigError(
                f"faults.label_noise: replaces class labels; dataset {cfg.data.name!r} is a "
                f"{task} set"
            )
        dataset = NoisyLabels(dataset, faults.noisy, cfg.faults.label_noise, cfg.experiment.seed)
    shape, classes = dataset.input_shape, dataset.num_classes
    if model is None:
        # Checked on the options first: a classifier cannot even be built for 0 classes.
        _check_task(cfg, dataset, getattr(cfg.model.options, "task", None))
        model = MODELS.get(cfg.model.name).factory(cfg.model.options, shape, classes)
    model = on_device(as_model(model, shape, classes, "model"), cfg.runtime.device)
    memory.check_model(cfg, model)
    _check_task(cfg, dataset, getattr(model, "task", "classification"))
    if strategy is None:
        strategy = STRATEGIES.get(cfg.strategy.name).factory(cfg.strategy.options)
    _check_strategy(strategy, "strategy.name")
    if cfg.server.mode == "async":
        check_strategy(strategy, cfg.strategy.name)
    aggregator = AGGREGATORS.get(cfg.aggregator.name).factory(cfg.aggregator.options)
    if not isinstance(aggregator, Aggregator):
        raise ConfigError(f"aggregator.name: {cfg.aggregator.name!r} did not make an Aggregator")
    private = cfg.privacy.enabled or cfg.privacy.secure_aggregation
    if private and strategy.client.payloads:
        raise ConfigError(
            f"strategy.name: {cfg.strategy.name!r} uploads {', '.join(strategy.client.payloads)} "
            "beside the update, which [privacy] does not protect; use it without privacy"
        )
    if private and not aggregator.streaming:
        raise ConfigError(
            f"aggregator.name: {cfg.aggregator.name!r} needs each client's update, which "
            "[privacy] hides (DP clips and noises the sum; secure aggregation reveals only "
            "the sum); use aggregator.name = 'mean'"
        )
    if faults.server_side:
        if private:
            raise ConfigError(
                f"faults.byzantine_attack: {cfg.faults.byzantine_attack!r} crafts its update "
                "from the round's other updates, which [privacy] hides; use another attack"
            )
        if aggregator.streaming:  # the attacker needs every update: the mean from them too
            aggregator = per_client_mean()
    population = Population(cfg.population, cfg.experiment.seed, base_dir)
    return Experiment(cfg, dataset, model, strategy, population, aggregator, base_dir)


def _check_strategy(strategy: Any, key: str) -> None:
    if not isinstance(strategy, Strategy):
        raise ConfigError(
            f"{key}: made a {type(strategy).__name__}, not a fedsim Strategy "
            "(subclass fedsim.strategies.Strategy)"
        )


def _check_task(cfg: Config, dataset: FederatedDataset, task: str | None) -> None:
    """The model learns what the dataset holds; accuracy-only keys need classification."""
    if task is None:
        return
    if task != dataset.task:
        raise ConfigError(
            f"model.task: dataset {cfg.data.name!r} is a {dataset.task} set, the model does "
            f"{task}; set model.task = {dataset.task!r} (softmax and mlp have it)"
        )
    if task == "regression":
        for key, value in (
            ("client_eval_every", cfg.server.client_eval_every),
            ("target_accuracy", cfg.server.target_accuracy),
        ):
            if value:
                raise ConfigError(f"server.{key}: measures accuracy, a regression run has none")


def run_summary(
    exp: Experiment, rounds: pd.DataFrame, wall: float, workers: int, **runtime: Any
) -> dict[str, Any]:
    """What summary.json says of a run: from its records, ``runtime`` (how it ran) and privacy."""
    evaluated = rounds.dropna(subset=["test_accuracy"])
    last = evaluated.iloc[-1] if len(evaluated) else None
    summary = {
        "experiment": exp.cfg.experiment.name,
        "seed": exp.cfg.experiment.seed,
        "num_parameters": exp.model.num_parameters,
        "model_bytes": exp.model.model_bytes,
        "rounds": len(rounds),
        "failed_rounds": int(rounds["failed"].sum()) if len(rounds) else 0,
        "final_test_accuracy": float(last["test_accuracy"]) if last is not None else math.nan,
        "final_test_loss": float(last["test_loss"]) if last is not None else math.nan,
        **_final_regression_scores(rounds, exp.model),
        "sim_time_s": float(rounds["sim_time_s"].iloc[-1]) if len(rounds) else 0.0,
        "bytes_up_total": int(rounds["bytes_up"].sum()),
        "bytes_down_total": int(rounds["bytes_down"].sum()),
        "rejected_updates": int(rounds["rejected"].sum()) if len(rounds) else 0,
        "wall_time_s": wall,
        "backend": exp.cfg.runtime.backend,
        "workers": workers,
        "provenance": provenance(),
        **runtime,
    }
    if exp.cfg.privacy.enabled:
        eps = rounds["epsilon"].iloc[-1] if len(rounds) else 0.0
        summary.update(epsilon=float(eps), delta=exp.cfg.privacy.delta)
    if exp.cfg.privacy.secure_aggregation:
        summary["aborted_rounds"] = int(rounds["aborted"].sum()) if len(rounds) else 0
    return summary


def _final_regression_scores(rounds: pd.DataFrame, model: Model) -> dict[str, float]:
    """``final_test_mae`` and ``final_test_rmse`` of a regression run (last evaluated round)."""
    if getattr(model, "task", "classification") != "regression":
        return {}
    evaluated = rounds.dropna(subset=["test_rmse"])
    last = evaluated.iloc[-1] if len(evaluated) else None
    return {
        f"final_{k}": float(last[k]) if last is not None else math.nan
        for k in ("test_mae", "test_rmse")
    }
