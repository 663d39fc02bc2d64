"""Building iterative processes: FedAvg, FedProx, any strategy, or an experiment file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fedsim import config as config_mod
from fedsim.aggregators.base import Aggregator
from fedsim.config import Config, PopulationConfig
from fedsim.data import FederatedData
from fedsim.data import load as load_data
from fedsim.learning.process import DEFAULT_NUM_CLIENTS, IterativeProcess
from fedsim.models.base import Model
from fedsim.models.torch_models import as_model
from fedsim.options import ConfigError, build, to_table
from fedsim.population import Population
from fedsim.registry import AGGREGATORS, MODELS, STRATEGIES
from fedsim.strategies.base import Strategy
from fedsim.strategies.optimizer_specs import client_update, optimizer_spec, server_optimizer

#: server.rounds of a built process: the loop has no last round (evaluation follows eval_every).
_NO_LAST_ROUND = 2**31 - 1


def build_weighted_fed_avg(
    model_fn: Any, client_optimizer_fn: Any, server_optimizer_fn: Any = "sgd", **options: Any
) -> IterativeProcess:
    """FedAvg (McMahan et al. 2017): local SGD, the sample-weighted mean update, a server step.

    ``client_optimizer_fn``: ``SGD(learning_rate, momentum, weight_decay)``, a name, a
    ``(name, params)`` pair or a function returning one of those; ``server_optimizer_fn``
    likewise, also ``Adam``, ``Yogi``, ``Adagrad`` (SGD's learning rate defaults to 1 there).
    ``options``: see :func:`build_fed_opt`.
    """
    return build_fed_opt(
        model_fn, client_optimizer_fn, server_optimizer_fn, strategy="fedavg", **options
    )


def build_fed_prox(
    model_fn: Any,
    client_optimizer_fn: Any,
    server_optimizer_fn: Any = "sgd",
    *,
    mu: float = 0.01,
    **options: Any,
) -> IterativeProcess:
    """FedProx (Li et al. 2020): FedAvg whose clients add mu/2 ||w - w_global||^2."""
    return build_fed_opt(
        model_fn,
        client_optimizer_fn,
        server_optimizer_fn,
        strategy="fedprox",
        strategy_options={"mu": mu},
        **options,
    )


def build_fed_opt(
    model_fn: Any,
    client_optimizer_fn: Any,
    server_optimizer_fn: Any = None,
    *,
    strategy: str | Strategy = "fedavg",
    strategy_options: dict[str, Any] | None = None,
    data: FederatedData | None = None,
    population: PopulationConfig | Population | dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    aggregator: Aggregator | None = None,
    seed: int = 0,
    chunks: int = 8,
) -> IterativeProcess:
    """Any strategy (a registered name with ``strategy_options``, or a Strategy object).

    ``server_optimizer_fn`` (if given) replaces the strategy's server optimiser.
    ``model_fn``: a function returning a fedsim Model, a Model, or a model name (with
    ``data``). ``population``: a ``[population]`` table, a PopulationConfig or a Population;
    ``server`` and ``training`` (``local_epochs``, ``batch_size``, ``shuffle``) are tables of
    those sections (the learning rate comes from the client optimiser). By default every
    given client completes (``clients_per_round`` is the population size) and the test set
    is evaluated after every round (``eval_every`` 1).
    """
    model = _model(model_fn, data)
    client_opt = optimizer_spec(client_optimizer_fn, "client_optimizer_fn", 0.1)
    strat = _strategy(strategy, strategy_options or {})
    strat.client = client_update(strat.client, client_opt, "client_optimizer_fn")
    if server_optimizer_fn is not None:
        spec = optimizer_spec(server_optimizer_fn, "server_optimizer_fn", 1.0)
        strat.optimizer = server_optimizer(spec, "server_optimizer_fn")
    pop_table, pop = _population(population)
    n = _num_clients(data, pop_table)
    training = dict(training or {})
    if "learning_rate" in training:
        raise ConfigError("training.learning_rate: set it in client_optimizer_fn")
    raw = {
        "experiment": {"name": "learning", "seed": seed},
        "population": {**pop_table, "num_clients": n},
        "training": {**training, "learning_rate": client_opt.learning_rate},
        "server": {"rounds": _NO_LAST_ROUND, "clients_per_round": n, **(server or {})},
        "runtime": {"backend": "local", "chunks": chunks, "progress": False},
    }
    cfg = config_mod.from_dict(raw)
    if pop is None:
        pop = Population(cfg.population, seed)
    return IterativeProcess(cfg, model, strat, data=data, population=pop, aggregator=aggregator)


def from_config(
    config: Config | str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    strategy: Strategy | None = None,
) -> IterativeProcess:
    """The process of an experiment file: its data, model, strategy, population and server.

    With ``process.sample_clients(state)`` as the cohort, the loop repeats ``fedsim run``.
    ``[runtime]`` is not used: clients train in this process, or on the workers of
    :func:`fedsim.init`.
    """
    cfg, base_dir = config_mod.resolve(config, overrides)
    data = load_data(cfg)
    entry = MODELS.get(cfg.model.name)
    model = entry.factory(cfg.model.options, data.input_shape, data.num_classes)
    _check_task(model, data, "model.task")
    strat = strategy or STRATEGIES.get(cfg.strategy.name).factory(cfg.strategy.options)
    aggregator = AGGREGATORS.get(cfg.aggregator.name).factory(cfg.aggregator.options)
    population = Population(cfg.population, cfg.experiment.seed, base_dir)
    return IterativeProcess(
        cfg, model, strat, data=data, population=population, aggregator=aggregator
    )


def _model(model_fn: Any, data: FederatedData | None) -> Model:
    """The fedsim Model ``model_fn`` names, makes or is."""
    if isinstance(model_fn, str):
        if data is None:
            raise ConfigError(f"model_fn: the model name {model_fn!r} needs data= for its shape")
        try:
            entry = MODELS.get(model_fn)
        except KeyError as err:
            raise ConfigError(f"model_fn: {err.args[0]}") from None
        made = entry.factory(build(entry.options, {}, "model"), data.input_shape, data.num_classes)
    elif callable(model_fn) and not isinstance(model_fn, Model) and not _is_torch(model_fn):
        made = model_fn()
    else:
        made = model_fn
    if _is_torch(made):
        if data is None:
            raise ConfigError(
                "model_fn: a torch nn.Module needs data= (its input shape and number of classes)"
            )
        made = as_model(made, data.input_shape, data.num_classes, "model_fn")
    if not isinstance(made, Model):
        raise ConfigError(f"model_fn: made a {type(made).__name__}, not a fedsim Model")
    if data is not None and tuple(made.input_shape) != data.input_shape:
        raise ConfigError(
            f"model_fn: the model takes inputs of shape {tuple(made.input_shape)}, "
            f"the data has {data.input_shape}"
        )
    _check_task(made, data, "model_fn")
    return made


def _check_task(model: Model, data: FederatedData | None, key: str) -> None:
    task = getattr(data.dataset, "task", "classification") if data is not None else model.task
    if model.task != task:
        raise ConfigError(f"{key}: the model does {model.task}, the data is a {task} set")


def _is_torch(obj: Any) -> bool:
    """Whether ``obj`` is a torch nn.Module (told without importing torch)."""
    return any(c.__module__.startswith("torch.nn") for c in type(obj).__mro__)


def _strategy(strategy: str | Strategy, options: dict[str, Any]) -> Strategy:
    if isinstance(strategy, Strategy):
        return copy.deepcopy(strategy)
    try:
        entry = STRATEGIES.get(strategy)
    except KeyError as err:
        raise ConfigError(f"strategy: {err.args[0]}") from None
    return entry.factory(build(entry.options, options, "strategy_options"))


def _population(
    population: PopulationConfig | Population | dict[str, Any] | None,
) -> tuple[dict[str, Any], Population | None]:
    if population is None:
        return {}, None
    if isinstance(population, Population):
        return to_table(population.cfg), population
    if isinstance(population, PopulationConfig):
        return to_table(population), None
    return dict(population), None


def _num_clients(data: FederatedData | None, table: dict[str, Any]) -> int:
    if data is None:
        return int(table.get("num_clients", DEFAULT_NUM_CLIENTS))
    if "num_clients" in table and table["num_clients"] != data.num_clients:
        raise ConfigError(
            f"population.num_clients: must equal the data's {data.num_clients} clients, "
            f"got {table['num_clients']}"
        )
    return data.num_clients
