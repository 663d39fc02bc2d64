"""Typed experiment config: TOML loading, ``--set`` overrides, validation, saving.

An experiment file has the sections below; every key has a default except where marked. The
``[data]``, ``[partition]``, ``[model]`` and ``[strategy]`` tables name a registered component
(``dataset``, ``scheme``, ``name``) and carry that component's own options beside the name.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

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

_DIST_KINDS = ("constant", "uniform", "lognormal", "tiers")


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
            return cls("constant", value=float(value))
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
        d = build(cls, value, key)
        for name in ("value", "low", "high", "median", "sigma"):
            v = getattr(d, name)
            if not math.isfinite(v):
                raise ConfigError(f"{key}.{name}: must be finite, got {v!r}")
        if kind == "uniform" and d.low > d.high:
            raise ConfigError(f"{key}.high: must be >= low ({d.low:g}), got {d.high:g}")
        if kind == "lognormal" and (d.median <= 0 or d.sigma < 0):
            raise ConfigError(f"{key}: lognormal needs median > 0 and sigma >= 0")
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

    def _check(d: Dist) -> str | None:
        if d.dist == "lognormal":
            bounded = hi < math.inf and d.sigma > 0
            return (
                "a lognormal is unbounded; use constant, uniform or tiers here" if bounded else None
            )
        for v in d.values if d.dist == "tiers" else d.bounds():
            err = inner(v)
            if err:
                return err
        return None

    return _check


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    seed: int = field(default=0, metadata=check(non_negative))


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
    availability: Literal["always", "bernoulli", "periodic"] = "always"
    online_probability: Dist = field(
        default=Dist(value=1.0), metadata=check(_dist_in(0, 1, lo_open=True))
    )
    period_s: float = field(default=86400.0, metadata=check(positive))
    on_fraction: Dist = field(default=Dist(value=1.0), metadata=check(_dist_in(0, 1, lo_open=True)))
    compute_jitter: float = field(default=0.0, metadata=check(non_negative))
    profiles_csv: str = ""

    def validate(self) -> str | None:
        for name in (
            "speed",
            "download_bandwidth",
            "upload_bandwidth",
            "dropout_rate",
            "online_probability",
            "on_fraction",
        ):
            d: Dist = getattr(self, name)
            if d.dist == "tiers":
                if not self.tiers:
                    return f"{name}: dist = 'tiers' needs [[population.tiers]] entries"
                if len(d.values) != len(self.tiers):
                    return (
                        f"{name}.values: {len(d.values)} values for {len(self.tiers)} "
                        "population.tiers"
                    )
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
    rounds: int = field(default=10, metadata=check(positive))
    clients_per_round: int = field(default=10, metadata=check(positive))
    over_selection: float = field(default=1.0, metadata=check(at_least(1.0)))
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
    faults: FaultsConfig = FaultsConfig()
    privacy: PrivacyOptions = PrivacyOptions()

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain TOML-ready tables (inverse of :func:`from_dict`)."""
        out: dict[str, Any] = {}
        for section, (key, _) in _COMPONENTS.items():
            comp: ComponentConfig = getattr(self, section)
            out[section] = {key: comp.name, **to_table(comp.options)}
        for section in _PLAIN:
            out[section] = to_table(getattr(self, section))
        order = list(Config.__dataclass_fields__)
        return {s: out[s] for s in order}


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
    "faults": FaultsConfig,
    "privacy": PrivacyOptions,
}


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
    unknown = sorted(set(raw) - set(Config.__dataclass_fields__))
    if unknown:
        known = ", ".join(Config.__dataclass_fields__)
        raise ConfigError(f"{unknown[0]}: unknown section (sections: {known})")
    sections: dict[str, Any] = {}
    for section in Config.__dataclass_fields__:
        table = raw.get(section, {})
        if section in _COMPONENTS:
            sections[section] = _component(section, table)
        else:
            sections[section] = build(_PLAIN[section], table, section)
    cfg = Config(**sections)
    _cross_check(cfg)
    return cfg


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
    out = _deepcopy(raw)
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


def _deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value


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


def dumps_toml(tables: dict[str, Any]) -> str:
    """Write config tables as TOML (the subset fedsim configs use)."""
    lines: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_list(v)}
        subtables = {k: v for k, v in table.items() if _is_table(v)}
        arrays = {k: v for k, v in table.items() if _is_table_list(v)}
        if prefix:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in subtables.items():
            inline = ", ".join(f"{ik} = {_toml_value(iv)}" for ik, iv in v.items())
            lines.append(f"{k} = {{ {inline} }}")
        lines.append("")
        for k, items in arrays.items():
            for item in items:
                lines.append(f"[[{prefix}.{k}]]")
                for ik, iv in item.items():
                    lines.append(f"{ik} = {_toml_value(iv)}")
                lines.append("")

    for section, table in tables.items():
        emit(section, table)
    return "\n".join(lines)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
        return repr(v)
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(i)}" for k, i in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


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
