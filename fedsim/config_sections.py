"""The experiment config's section dataclasses and :class:`Config`, the whole of them.

Each plain section is an options dataclass validated field by field (:func:`fedsim.options.build`);
the ``[population]`` section and its distributions are in :mod:`fedsim.config_population`.
Loading, overrides and cross-section checks are in :mod:`fedsim.config`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from fedsim.config_population import PopulationConfig
from fedsim.options import at_least, check, finite, in_range, non_negative, positive, to_table
from fedsim.privacy.config import PrivacyOptions
from fedsim.registry import AGGREGATORS, DATASETS, MODELS, PARTITIONERS, STRATEGIES, Registry
from fedsim.rundir import check_name

#: Experiment kinds beside horizontal FL (the default): kind -> module that runs it. The kind's
#: settings are the section named like it (``[vertical]``), validated by that module's
#: ``Options`` when the run starts; the module is imported only then, by the runner.
KIND_MODULES: dict[str, str] = {
    "vertical": "fedsim.vertical.experiment",
    "transfer": "fedsim.vertical.transfer",
}
HORIZONTAL = "horizontal"


def _known_kind(v: str) -> str | None:
    kinds = (HORIZONTAL, *KIND_MODULES)
    return None if v in kinds else f"must be one of {', '.join(map(repr, kinds))}, got {v!r}"


@dataclass(frozen=True)
class ExperimentConfig:
    # One path component: the run's folder is results/<name>/<run-id>.
    name: str = field(default="experiment", metadata=check(check_name))
    seed: int = field(default=0, metadata=check(non_negative))
    kind: str = field(default=HORIZONTAL, metadata=check(_known_kind))


@dataclass(frozen=True)
class ComponentConfig:
    """A registered component chosen by name, with its validated options."""

    name: str
    options: Any


@dataclass(frozen=True)
class TrainingConfig:
    local_epochs: int = field(default=1, metadata=check(positive))
    batch_size: int | Literal["full"] = field(default=10, metadata=check(lambda v: None if v == "full" or v >= 0 else f"must be >= 0 or 'full', got {v!r}"))  # fmt: skip  # noqa: E501
    learning_rate: float = field(default=0.1, metadata=check(positive, lambda v: None if math.isfinite(v) else f"must be finite, got {v!r}"))  # fmt: skip  # noqa: E501
    shuffle: bool = True

    @property
    def full_batch(self) -> bool:
        return self.batch_size in (0, "full")


@dataclass(frozen=True)
class ServerConfig:
    mode: Literal["sync", "async"] = "sync"
    rounds: int = field(default=10, metadata=check(positive))
    clients_per_round: int = field(default=10, metadata=check(positive))
    # Who is drawn: "uniform" (distinct clients, equally likely) or "by_samples" (with
    # replacement, probability n_k / n, Li et al. 2020's Algorithms 1-2).
    sampling: Literal["uniform", "by_samples"] = "uniform"
    # How contributions are averaged: "samples" (weight n_k) or "uniform" (simple mean; a
    # client drawn twice counts twice).
    weighting: Literal["samples", "uniform"] = "samples"
    over_selection: float = field(default=1.0, metadata=check(at_least(1.0), finite))
    deadline_s: float = field(default=math.inf, metadata=check(positive))
    straggler_policy: Literal["drop", "partial"] = "drop"
    straggler_fraction: float = field(default=0.0, metadata=check(in_range(0, 1, hi_open=True)))
    min_completed: int = field(default=1, metadata=check(positive))
    eval_every: int = field(default=1, metadata=check(non_negative))
    eval_train: bool = False
    client_eval_every: int = field(default=0, metadata=check(non_negative))
    client_eval_clients: int = field(default=100, metadata=check(positive))
    target_accuracy: float = field(default=0.0, metadata=check(in_range(0, 1)))
    # L2 norm of a client's update (w_k - w_global) above which it is rejected; inf = no bound.
    max_update_norm: float = field(default=math.inf, metadata=check(positive))


@dataclass(frozen=True)
class AsyncConfig:
    """Asynchronous training (``server.mode = "async"``): FedBuff, FedAsync for K = 1."""

    concurrency: int = field(default=100, metadata=check(positive))  # clients training at once
    buffer_size: int = field(default=10, metadata=check(positive))  # K updates per server step
    staleness_weight: Literal["constant", "polynomial", "hinge"] = "polynomial"
    staleness_exponent: float = field(default=0.5, metadata=check(non_negative))
    hinge_a: float = field(default=10.0, metadata=check(non_negative))
    hinge_b: float = field(default=4.0, metadata=check(non_negative))
    # Updates staler than this many versions are discarded; inf = keep all.
    max_staleness: float = field(default=math.inf, metadata=check(non_negative))
    # Simulated seconds before an empty slot tries again when no client is online.
    idle_retry_s: float = field(default=60.0, metadata=check(positive))


def _ray_address(v: str) -> str | None:
    """'' (start a local Ray), 'auto', 'ray://host:port' (Ray Client) or 'host:port' (GCS)."""
    if v in ("", "auto"):
        return None
    hostport = v.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if host and port.isdigit() and 0 < int(port) < 65536:
        return None
    return f"must be '', 'auto', 'ray://host:port' or 'host:port', got {v!r}"


@dataclass(frozen=True)
class RuntimeConfig:
    backend: Literal["ray", "local"] = "ray"
    workers: int = field(default=0, metadata=check(non_negative))
    address: str = field(default="", metadata=check(_ray_address))
    chunks: int = field(default=8, metadata=check(positive))
    progress: bool = True
    checkpoint_every: int = field(default=10, metadata=check(non_negative))
    max_worker_restarts: int = field(default=3, metadata=check(non_negative))
    # Time each phase of every round into <run>/profile.csv (fedsim run --profile).
    profile: bool = False
    # Where torch models compute: "auto" = CUDA when torch finds it, else the CPU.
    device: Literal["cpu", "cuda", "auto"] = "cpu"


@dataclass(frozen=True)
class LoggingConfig:
    """Loggers writing the round records into the run folder (optional extras)."""

    tensorboard: bool = False  # TensorBoard event files in <run>/tensorboard/
    mlflow: bool = False  # an MLflow run in the file store <run>/mlruns/


@dataclass(frozen=True)
class FaultsConfig:
    """Fault injection, for testing that a run survives them; every draw is keyed."""

    kill_worker_at_round: int = field(default=0, metadata=check(non_negative))  # 0 = never
    kill_worker_times: int = field(default=1, metadata=check(positive))
    nan_update_rate: float = field(default=0.0, metadata=check(in_range(0, 1)))
    # Faulty clients (fedsim/faults.py), a fixed share of the population chosen from the seed.
    byzantine_fraction: float = field(default=0.0, metadata=check(in_range(0, 1, hi_open=True)))
    byzantine_attack: Literal["sign_flip", "gaussian", "scaled", "little_is_enough"] = "sign_flip"
    byzantine_scale: float = field(default=1.0, metadata=check(positive, finite))
    noisy_client_fraction: float = field(default=0.0, metadata=check(in_range(0, 1)))
    label_noise: float = field(default=0.0, metadata=check(in_range(0, 1)))  # share of labels

    def validate(self) -> str | None:
        if (self.label_noise > 0) != (self.noisy_client_fraction > 0):
            return (
                "label_noise: label noise needs both faults.label_noise and "
                f"faults.noisy_client_fraction > 0, got {self.label_noise} and "
                f"{self.noisy_client_fraction}"
            )
        return None


@dataclass(frozen=True)
class CompressionConfig:
    """``[compression]``: how updates (``up``) and the broadcast model (``down``) are encoded.

    Formats and their exact sizes: :mod:`fedsim.pipeline.encoding`.
    """

    up: Literal["none", "int8", "qsgd", "topk", "randk", "sign"] = "none"
    bits: int = field(default=4, metadata=check(in_range(2, 8)))  # qsgd: bits per value
    fraction: float = field(default=0.01, metadata=check(in_range(0, 1, lo_open=True)))
    error_feedback: bool = False  # keep each client's compression error and add it next time
    down: Literal["none", "int8"] = "none"

    def validate(self) -> str | None:
        if self.error_feedback and self.up == "none":
            return "error_feedback: needs an update encoding (compression.up), got 'none'"
        return None


@dataclass(frozen=True)
class Config:
    experiment: ExperimentConfig = ExperimentConfig()
    data: ComponentConfig = ComponentConfig("synthetic", None)
    partition: ComponentConfig = ComponentConfig("natural", None)
    population: PopulationConfig = PopulationConfig()
    model: ComponentConfig = ComponentConfig("softmax", None)
    training: TrainingConfig = TrainingConfig()
    strategy: ComponentConfig = ComponentConfig("fedavg", None)
    aggregator: ComponentConfig = ComponentConfig("mean", None)
    server: ServerConfig = ServerConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    logging: LoggingConfig = LoggingConfig()
    faults: FaultsConfig = FaultsConfig()
    privacy: PrivacyOptions = PrivacyOptions()
    compression: CompressionConfig = CompressionConfig()
    async_: AsyncConfig = AsyncConfig()  # the TOML section [async] (a Python keyword)
    # The section of a kind other than horizontal (e.g. [vertical]) as written; its module
    # validates it. A horizontal run has none.
    kind_table: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain TOML-ready tables (inverse of :func:`from_dict`)."""
        kind = self.experiment.kind
        if kind != HORIZONTAL:
            return {"experiment": to_table(self.experiment), kind: copy.deepcopy(self.kind_table)}
        out: dict[str, Any] = {}
        for section, (key, _) in _COMPONENTS.items():
            comp: ComponentConfig = getattr(self, section)
            out[section] = {key: comp.name, **to_table(comp.options)}
        for section in _PLAIN:
            out[section] = to_table(getattr(self, _FIELDS.get(section, section)))
        # The default kind is not written, so horizontal configs and checkpoints read as before.
        del out["experiment"]["kind"]
        return {s: out[s] for s in SECTIONS}


_COMPONENTS: dict[str, tuple[str, Registry]] = {
    "data": ("dataset", DATASETS),
    "partition": ("scheme", PARTITIONERS),
    "model": ("name", MODELS),
    "strategy": ("name", STRATEGIES),
    "aggregator": ("name", AGGREGATORS),
}
_PLAIN: dict[str, type] = {
    "experiment": ExperimentConfig,
    "population": PopulationConfig,
    "training": TrainingConfig,
    "server": ServerConfig,
    "runtime": RuntimeConfig,
    "logging": LoggingConfig,
    "faults": FaultsConfig,
    "privacy": PrivacyOptions,
    "async": AsyncConfig,
    "compression": CompressionConfig,
}
#: TOML section name -> Config field, where they differ.
_FIELDS = {"async": "async_"}
#: The TOML sections, in Config's order.
SECTIONS = [
    {v: k for k, v in _FIELDS.items()}.get(f, f)
    for f in Config.__dataclass_fields__
    if f != "kind_table"
]
