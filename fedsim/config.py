"""Typed experiment config: TOML loading, ``--set`` overrides, validation, saving.

An experiment file has the sections below; every key has a default except where marked. The
``[data]``, ``[partition]``, ``[model]`` and ``[strategy]`` tables name a registered component
(``dataset``, ``scheme``, ``name``) and carry that component's own options beside the name.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import tomli_w

from fedsim import memory
from fedsim.options import (
    ConfigError,
    at_least,
    build,
    check,
    each,
    finite,
    in_range,
    non_negative,
    positive,
    to_table,
)
from fedsim.privacy.config import PrivacyOptions
from fedsim.registry import AGGREGATORS, DATASETS, MODELS, PARTITIONERS, STRATEGIES, Registry
from fedsim.rundir import check_name

_DIST_KINDS = ("constant", "uniform", "lognormal", "tiers")
#: Per-client attributes of the population, each a :class:`Dist`.
PER_CLIENT_ATTRIBUTES = (
    "speed",
    "download_bandwidth",
    "upload_bandwidth",
    "dropout_rate",
    "online_probability",
    "on_fraction",
)
#: Per-client attributes are stored as float32: values must lie in its range.
F32_MAX = 3.4028234663852886e38
F32_TINY = 1.1754943508222875e-38  # smallest normal float32
#: A client's tier is stored as uint8.
MAX_TIERS = 256
#: |z| of a float32 standard normal draw stays below this for any population size here.
_Z_MAX = 8.0


@dataclass(frozen=True)
class Dist:
    """A per-client attribute's distribution.

    TOML forms: a number (constant); ``{dist = "uniform", low, high}``;
    ``{dist = "lognormal", median, sigma}`` (``median * exp(sigma * N(0, 1))``);
    ``{dist = "tiers", values = [...]}`` (one value per device tier of ``population.tiers``).
    """

    dist: str = "constant"
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    median: float = 0.0
    sigma: float = 0.0
    values: tuple[float, ...] = ()

    @classmethod
    def from_value(cls, value: Any, key: str) -> Dist:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cls._checked(cls("constant", value=float(value)), key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a number or a table with 'dist', got {value!r}")
        kind = value.get("dist")
        if kind not in _DIST_KINDS:
            raise ConfigError(f"{key}.dist: must be one of {', '.join(_DIST_KINDS)}, got {kind!r}")
        allowed = {
            "constant": {"value"},
            "uniform": {"low", "high"},
            "lognormal": {"median", "sigma"},
            "tiers": {"values"},
        }[kind]
        extra = sorted(set(value) - allowed - {"dist"})
        if extra:
            raise ConfigError(
                f"{key}.{extra[0]}: not a key of dist = {kind!r} "
                f"(keys: {', '.join(sorted(allowed))})"
            )
        missing = sorted(allowed - set(value))
        if missing:
            raise ConfigError(f"{key}.{missing[0]}: required for dist = {kind!r}")
        return cls._checked(build(cls, value, key), key)

    @staticmethod
    def _checked(d: Dist, key: str) -> Dist:
        """``d`` if its numbers are finite and fit float32 (how they are stored), else error."""
        kind = d.dist
        for name in ("value", "low", "high", "median", "sigma", "values"):
            where = key if kind == "constant" else f"{key}.{name}"
            for v in d.values if name == "values" else (getattr(d, name),):
                if not math.isfinite(v):
                    raise ConfigError(f"{where}: must be finite, got {v!r}")
                if abs(v) > F32_MAX:
                    raise ConfigError(
                        f"{where}: must be at most {F32_MAX:.4g} in size (stored as "
                        f"float32), got {v!r}"
                    )
        if kind == "uniform" and d.low > d.high:
            raise ConfigError(f"{key}.high: must be >= low ({d.low:g}), got {d.high:g}")
        if kind == "lognormal" and (d.median <= 0 or d.sigma < 0):
            raise ConfigError(f"{key}: lognormal needs median > 0 and sigma >= 0")
        if kind == "lognormal" and math.log(d.median) + _Z_MAX * d.sigma > math.log(F32_MAX):
            raise ConfigError(
                f"{key}.sigma: median * exp({_Z_MAX:g} * sigma) overflows float32 (the values "
                f"are stored as float32), got sigma = {d.sigma!r}"
            )
        if kind == "tiers" and not d.values:
            raise ConfigError(f"{key}.values: must list one value per tier")
        return d

    def to_value(self) -> Any:
        if self.dist == "constant":
            return self.value
        keys = {
            "uniform": ("low", "high"),
            "lognormal": ("median", "sigma"),
            "tiers": ("values",),
        }[self.dist]
        return {"dist": self.dist, **{k: to_table(getattr(self, k)) for k in keys}}

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest value the distribution can produce."""
        if self.dist == "constant":
            return self.value, self.value
        if self.dist == "uniform":
            return self.low, self.high
        if self.dist == "lognormal":
            return (0.0, math.inf) if self.sigma > 0 else (self.median, self.median)
        return min(self.values), max(self.values)


def _dist_in(lo: float, hi: float, *, hi_open: bool = False, lo_open: bool = False) -> Any:
    """Check that every value a Dist can produce lies in the given interval."""
    inner = in_range(lo, hi, hi_open=hi_open, lo_open=lo_open)
    # A value > 0 that rounds to 0 (or to a subnormal) in float32 would divide by zero.
    floor = F32_TINY if lo_open and lo == 0 else -math.inf

    def _check(d: Dist) -> str | None:
        if d.dist == "lognormal":
            if hi < math.inf and d.sigma > 0:
                return "a lognormal is unbounded; use constant, uniform or tiers here"
            if math.log(d.median) - _Z_MAX * d.sigma < math.log(F32_TINY) and floor > 0:
                return f"a lognormal of sigma {d.sigma:g} reaches 0 in float32; use a smaller sigma"
            return None
        for v in d.values if d.dist == "tiers" else d.bounds():
            err = inner(v)
            if err:
                return err
            if v < floor:
                return f"must be >= {F32_TINY:.4g} (stored as float32, smaller is 0), got {v!r}"
        return None

    return _check


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
class Tier:
    name: str
    weight: float = field(metadata=check(positive))


@dataclass(frozen=True)
class PopulationConfig:
    num_clients: int = field(default=100, metadata=check(positive))
    tiers: tuple[Tier, ...] = ()
    speed: Dist = field(
        default=Dist(value=100.0), metadata=check(_dist_in(0, math.inf, lo_open=True))
    )
    download_bandwidth: Dist = field(
        default=Dist(value=1.25e6), metadata=check(_dist_in(0, math.inf, lo_open=True))
    )
    upload_bandwidth: Dist = field(
        default=Dist(value=1.25e6), metadata=check(_dist_in(0, math.inf, lo_open=True))
    )
    dropout_rate: Dist = field(
        default=Dist(value=0.0), metadata=check(_dist_in(0, 1, hi_open=True))
    )
    availability: Literal["always", "bernoulli", "periodic", "diurnal", "trace"] = "always"
    online_probability: Dist = field(
        default=Dist(value=1.0), metadata=check(_dist_in(0, 1, lo_open=True))
    )
    period_s: float = field(default=86400.0, metadata=check(at_least(1e-3), finite))
    on_fraction: Dist = field(default=Dist(value=1.0), metadata=check(_dist_in(0, 1, lo_open=True)))
    compute_jitter: float = field(default=0.0, metadata=check(non_negative, finite))
    profiles_csv: str = ""
    # diurnal: peak online probability / trough online probability over the day (period_s)
    diurnal_ratio: float = field(default=4.0, metadata=check(at_least(1.0)))
    diurnal_peak_hour: float = field(default=0.0, metadata=check(in_range(0, 24, hi_open=True)))
    # trace: a CSV of online intervals (client_id, start_s, end_s), repeated over its span
    availability_csv: str = ""

    def validate(self) -> str | None:
        if not math.isfinite(sum(t.weight for t in self.tiers)):
            return "tiers: the sum of the weights must be finite"
        if len(self.tiers) > MAX_TIERS:
            return f"tiers: at most {MAX_TIERS} tiers, got {len(self.tiers)}"
        # Keys of an availability model that is not the chosen one would be ignored.
        default = PopulationConfig.__dataclass_fields__
        used_with = {
            "online_probability": ("bernoulli", "diurnal"),
            "on_fraction": ("periodic",),
            "period_s": ("periodic", "diurnal"),
            "diurnal_ratio": ("diurnal",),
            "diurnal_peak_hour": ("diurnal",),
        }
        for name, modes in used_with.items():
            if self.availability not in modes and getattr(self, name) != default[name].default:
                wants = " or ".join(repr(m) for m in modes)
                return (
                    f"{name}: used only with availability = {wants} "
                    f"(availability is {self.availability!r})"
                )
        for name in PER_CLIENT_ATTRIBUTES:
            d: Dist = getattr(self, name)
            if d.dist == "tiers":
                if not self.tiers:
                    return f"{name}: dist = 'tiers' needs [[population.tiers]] entries"
                if len(d.values) != len(self.tiers):
                    return (
                        f"{name}.values: {len(d.values)} values for {len(self.tiers)} "
                        "population.tiers"
                    )
        if (self.availability == "trace") != bool(self.availability_csv):
            return "availability_csv: needs availability = 'trace' and the other way round"
        return None


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


def _component(section: str, table: dict[str, Any]) -> ComponentConfig:
    key, registry = _COMPONENTS[section]
    if not isinstance(table, dict):
        raise ConfigError(f"{section}: must be a table, got {table!r}")
    name = table.get(key, getattr(Config(), section).name)
    if not isinstance(name, str):
        raise ConfigError(f"{section}.{key}: must be a string, got {name!r}")
    try:
        entry = registry.get(name)
    except KeyError as err:
        raise ConfigError(f"{section}.{key}: {err.args[0]}") from None
    options = build(entry.options, {k: v for k, v in table.items() if k != key}, section)
    return ComponentConfig(name, options)


def from_dict(raw: dict[str, Any]) -> Config:
    """Validate a raw TOML mapping into a :class:`Config`; raises ConfigError on bad input."""
    unknown = sorted(set(raw) - set(SECTIONS) - set(KIND_MODULES))
    if unknown:
        known = ", ".join([*SECTIONS, *KIND_MODULES])
        raise ConfigError(f"{unknown[0]}: unknown section (sections: {known})")
    experiment = build(ExperimentConfig, raw.get("experiment", {}), "experiment")
    if experiment.kind != HORIZONTAL:
        return _other_kind(experiment, raw)
    other = sorted(set(raw) & set(KIND_MODULES))
    if other:
        raise ConfigError(
            f"{other[0]}: read only when experiment.kind = {other[0]!r}; this run is "
            f"{HORIZONTAL!r} (set experiment.kind or remove the section)"
        )
    sections: dict[str, Any] = {}
    for section in SECTIONS:
        table = raw.get(section, {})
        name = _FIELDS.get(section, section)
        if section in _COMPONENTS:
            sections[name] = _component(section, table)
        else:
            sections[name] = build(_PLAIN[section], table, section)
    cfg = Config(**sections)
    _cross_check(cfg)
    return cfg


def _other_kind(experiment: ExperimentConfig, raw: dict[str, Any]) -> Config:
    """A run of another kind: [experiment] and the kind's own section, nothing horizontal."""
    kind = experiment.kind
    stray = [s for s in raw if s not in ("experiment", kind)]
    if stray:
        raise ConfigError(
            f"{stray[0]}: not used when experiment.kind = {kind!r} (its settings are in "
            f"[{kind}]); remove the section"
        )
    table = raw.get(kind, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{kind}: must be a table, got {table!r}")
    return Config(experiment=experiment, kind_table=copy.deepcopy(table))


def _cross_check(cfg: Config) -> None:
    n, k = cfg.population.num_clients, cfg.server.clients_per_round
    if k > n:
        raise ConfigError(
            f"server.clients_per_round: must be <= population.num_clients ({n}), got {k}"
        )
    if cfg.server.straggler_fraction > 0 and math.isfinite(cfg.server.deadline_s):
        raise ConfigError(
            "server.straggler_fraction: the fraction straggler model replaces the deadline; "
            f"set server.deadline_s = inf (got {cfg.server.deadline_s:g})"
        )
    if cfg.server.min_completed > k:
        raise ConfigError(
            f"server.min_completed: must be <= server.clients_per_round ({k}), "
            f"got {cfg.server.min_completed}"
        )
    check_cohort = getattr(cfg.aggregator.options, "check_cohort", None)
    err = check_cohort(k) if check_cohort is not None else None
    if err:
        raise ConfigError(f"aggregator.{err}")
    err = cfg.privacy.check_against(n, k, cfg.server.over_selection)
    if err:
        raise ConfigError(f"privacy.{err}")
    pop = cfg.population
    drawn = sum(getattr(pop, name).dist != "constant" for name in PER_CLIENT_ATTRIBUTES)
    memory.require(
        "population.num_clients",
        memory.population_bytes(n, drawn, bool(pop.tiers), pop.availability == "periodic"),
        f"a population of {n} clients",
    )
    if cfg.server.mode == "async":
        _check_async(cfg)
    _check_sampling(cfg)
    _check_compression(cfg)


def _check_async(cfg: Config) -> None:
    """What asynchronous training cannot combine with, each refused in one line."""
    if cfg.privacy.enabled or cfg.privacy.secure_aggregation:
        raise ConfigError(
            "server.mode: 'async' with [privacy] is refused: DP-FedAvg's accounting and secure "
            "aggregation's masks assume a synchronous cohort per round"
        )
    if math.isfinite(cfg.server.deadline_s) or cfg.server.straggler_fraction > 0:
        raise ConfigError(
            "server.deadline_s: round deadlines and straggler_fraction are synchronous; async "
            "has no rounds (set deadline_s = inf, straggler_fraction = 0)"
        )
    if cfg.async_.concurrency > cfg.population.num_clients:
        raise ConfigError(
            f"async.concurrency: must be <= population.num_clients "
            f"({cfg.population.num_clients}), got {cfg.async_.concurrency}"
        )


def _check_sampling(cfg: Config) -> None:
    """Sampling and weighting other than the defaults: synchronous rounds without DP only."""
    srv, p = cfg.server, cfg.privacy
    for key, value, default in (
        ("sampling", srv.sampling, "uniform"),
        ("weighting", srv.weighting, "samples"),
    ):
        if value == default:
            continue
        if srv.mode == "async":
            raise ConfigError(
                f"server.{key}: {value!r} is for synchronous rounds; async mode draws and "
                f"weighs its own way (use server.{key} = {default!r})"
            )
        if p.enabled or p.secure_aggregation:
            raise ConfigError(
                f"server.{key}: {value!r} cannot combine with [privacy] (DP samples by Poisson "
                f"and weighs every client 1; use server.{key} = {default!r})"
            )


def _check_compression(cfg: Config) -> None:
    """Update encodings compose with central DP only (compress, then clip, then noise)."""
    up, p = cfg.compression.up, cfg.privacy
    if up == "none":
        return
    if p.secure_aggregation:
        raise ConfigError(
            f"compression.up: {up!r} is not additive (per-client scales or positions), which "
            "privacy.secure_aggregation needs; use compression.up = 'none'"
        )
    if p.enabled and (p.local_noise_multiplier > 0 or p.distributed_noise):
        raise ConfigError(
            f"compression.up: client-side DP noise makes the update dense after {up!r}; "
            "compress only with central DP (privacy.local_noise_multiplier = 0)"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (path, value); the value uses TOML syntax, else is a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected section.key=value")
    path, value_text = text.split("=", 1)
    keys = [p.strip() for p in path.strip().split(".")]
    if len(keys) < 2 or not all(keys):
        raise ConfigError(f"--set {text}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text
    return keys, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``section.key=value`` override applied."""
    out = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                # A scalar becomes a table, e.g. speed = 100 overridden with speed.dist=...
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML experiment file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot be read (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: TOML syntax error: {err}") from None


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load an experiment file, apply ``--set`` overrides and validate."""
    return from_dict(apply_overrides(read_toml(path), list(overrides)))


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A validated copy of ``cfg`` with ``section.key=value`` overrides applied."""
    return from_dict(apply_overrides(cfg.to_dict(), overrides))


def resolve(
    config: Config | str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Config, Path | None]:
    """(config with overrides applied, the folder its relative paths start from).

    ``config`` is a Config (no folder: None) or the path of an experiment file (its folder).
    """
    if isinstance(config, str | Path):
        return load(config, overrides), Path(config).resolve().parent
    return (with_overrides(config, list(overrides)) if overrides else config), None


def dumps_toml(tables: dict[str, Any]) -> str:
    """Write config tables as TOML (``tomli-w``: strings, keys and floats escaped per the spec)."""
    return tomli_w.dumps(tables)


def replace_section(cfg: Config, section: str, **changes: Any) -> Config:
    """A copy of ``cfg`` with fields of one plain section replaced (no re-validation)."""
    return replace(cfg, **{section: replace(getattr(cfg, section), **changes)})


__all__ = [
    "Config",
    "ConfigError",
    "Dist",
    "Tier",
    "apply_overrides",
    "dumps_toml",
    "each",
    "from_dict",
    "load",
    "with_overrides",
]
