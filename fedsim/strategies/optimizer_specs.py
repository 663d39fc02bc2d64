"""Optimisers named by what they are: ``SGD(learning_rate, momentum, weight_decay)``, ``Adam``...

A spec is what a researcher passes as ``client_optimizer_fn`` or ``server_optimizer_fn``: a
spec object, a name (``"sgd"``), a ``(name, params)`` pair, a function of no arguments
returning one of those, or a torch optimiser factory (a function of the parameters, such as
``torch.optim.SGD`` or ``functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)``), read
from the optimiser it makes. On the client, SGD maps to the local-SGD client update
(:class:`LocalSGD`, with momentum and weight decay); on the server, SGD maps to
:class:`ServerSGD` (momentum = FedAvgM) and Adam, Yogi and Adagrad to :class:`ServerAdaptive`
(Reddi et al. 2021).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fedsim.options import ConfigError, build, check, finite, in_range, non_negative, positive
from fedsim.strategies.contract import ClientUpdate
from fedsim.strategies.local_sgd import LocalSGD
from fedsim.strategies.optimizers import ServerAdaptive, ServerOptimizer, ServerSGD

_LR = check(positive, finite)
_BETA = check(in_range(0, 1, hi_open=True))


@dataclass(frozen=True)
class SGD:
    """v = momentum * v + g + weight_decay * w; w -= learning_rate * v."""

    learning_rate: float = field(default=0.1, metadata=_LR)
    momentum: float = field(default=0.0, metadata=_BETA)
    weight_decay: float = field(default=0.0, metadata=check(non_negative, finite))


@dataclass(frozen=True)
class _Adaptive:
    rule: ClassVar[str]
    learning_rate: float = field(default=0.01, metadata=_LR)
    beta1: float = field(default=0.9, metadata=_BETA)
    beta2: float = field(default=0.99, metadata=_BETA)
    tau: float = field(default=1e-3, metadata=_LR)


@dataclass(frozen=True)
class Adam(_Adaptive):
    """FedAdam's server step (server only)."""

    rule: ClassVar[str] = "adam"


@dataclass(frozen=True)
class Yogi(_Adaptive):
    """FedYogi's server step (server only)."""

    rule: ClassVar[str] = "yogi"


@dataclass(frozen=True)
class Adagrad(_Adaptive):
    """FedAdagrad's server step (server only)."""

    rule: ClassVar[str] = "adagrad"


OPTIMIZERS: dict[str, type] = {"sgd": SGD, "adam": Adam, "yogi": Yogi, "adagrad": Adagrad}
Spec = SGD | Adam | Yogi | Adagrad


def optimizer_spec(value: Any, key: str, default_lr: float) -> Spec:
    """The validated spec ``value`` names; ``default_lr`` when a name gives no learning rate."""
    if callable(value) and not isinstance(value, Spec):
        value = _made_by(value, key)
    if isinstance(value, Spec):
        return value
    if isinstance(value, str):
        value = (value, {})
    if not (isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[0], str)):
        raise ConfigError(
            f"{key}: expected an optimiser (SGD(...), a name, (name, params) or a function "
            f"returning one), got {type(value).__name__}"
        )
    name, params = value
    if name.lower() not in OPTIMIZERS:
        raise ConfigError(f"{key}: unknown optimiser {name!r} (known: {', '.join(OPTIMIZERS)})")
    if not isinstance(params, dict):
        raise ConfigError(f"{key}: the parameters of {name!r} must be a dict")
    return build(OPTIMIZERS[name.lower()], {"learning_rate": default_lr, **params}, key)


def _made_by(factory: Any, key: str) -> Any:
    """What an optimiser function makes, as a spec.

    A function of no argument is called; one taking the parameters (a torch optimiser
    factory) is called with one placeholder parameter and read from the optimiser it makes.
    """
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read: a function of no argument
        return factory()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not any(p.default is p.empty and p.kind in positional for p in params):
        return factory()
    try:
        import torch
    except ImportError:
        raise ConfigError(
            f"{key}: a function of the parameters is a torch optimiser factory, and torch "
            "is not installed"
        ) from None
    made = factory([torch.nn.Parameter(torch.zeros(1))])
    if not isinstance(made, torch.optim.SGD):
        raise ConfigError(
            f"{key}: made a {type(made).__name__}; of torch's optimisers only torch.optim.SGD "
            "has a fedsim counterpart (fedsim.learning.SGD, Adam, Yogi, Adagrad)"
        )
    d = made.defaults
    if d["dampening"] or d["nesterov"] or d["maximize"]:
        raise ConfigError(f"{key}: torch.optim.SGD with dampening, nesterov or maximize")
    table = {"learning_rate": d["lr"], "momentum": d["momentum"], "weight_decay": d["weight_decay"]}
    return build(SGD, {k: float(v) for k, v in table.items()}, key)


def client_update(current: ClientUpdate, spec: Spec, key: str) -> ClientUpdate:
    """The client update running ``spec`` in place of the strategy's ``current`` one.

    The learning rate travels in each round's context; momentum and weight decay need the
    local-SGD client update (a strategy with its own client update takes plain SGD only).
    """
    if not isinstance(spec, SGD):
        raise ConfigError(f"{key}: clients run SGD, got {type(spec).__name__}")
    if spec.momentum == 0 and spec.weight_decay == 0:
        return current
    if type(current) is not LocalSGD:
        raise ConfigError(
            f"{key}: momentum and weight decay need the local-SGD client update; "
            f"this strategy's client runs {type(current).__name__}"
        )
    return LocalSGD(current.mu, spec.momentum, spec.weight_decay)


def server_optimizer(spec: Spec, key: str) -> ServerOptimizer:
    """The server optimiser of ``spec``."""
    if isinstance(spec, SGD):
        if spec.weight_decay:
            raise ConfigError(f"{key}.weight_decay: the server step has no weight decay")
        return ServerSGD(spec.learning_rate, spec.momentum)
    return ServerAdaptive(spec.rule, spec.learning_rate, spec.beta1, spec.beta2, spec.tau)
