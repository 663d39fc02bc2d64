"""Typed experiment config: TOML loading, ``--set`` overrides, validation, saving.

An experiment file has the sections below; every key has a default except where marked. The
``[data]``, ``[partition]``, ``[model]`` and ``[strategy]`` tables name a registered component
(``dataset``, ``scheme``, ``name``) and carry that component's own options beside the name.

The sections' dataclasses are in :mod:`fedsim.config_sections`, the population's distributions
in :mod:`fedsim.config_population`; this module loads, overrides and cross-checks them, and
re-exports their names.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomli_w

from fedsim import memory
from fedsim.config_population import (
    F32_MAX,
    F32_TINY,
    MAX_TIERS,
    PER_CLIENT_ATTRIBUTES,
    Dist,
    PopulationConfig,
    Tier,
)
from fedsim.config_population import _dist_in as _dist_in  # the vertical options use it
from fedsim.config_sections import (
    _COMPONENTS,
    _FIELDS,
    _PLAIN,
    HORIZONTAL,
    KIND_MODULES,
    SECTIONS,
    AsyncConfig,
    ComponentConfig,
    CompressionConfig,
    Config,
    ExperimentConfig,
    FaultsConfig,
    LoggingConfig,
    RuntimeConfig,
    ServerConfig,
    TrainingConfig,
)
from fedsim.options import ConfigError, build, each


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
    stored = pop.draws == "columns"
    per_client_data = getattr(cfg.data.options, "bytes_per_client", memory.DATASET_BYTES_PER_CLIENT)
    memory.require(
        "population.num_clients",
        memory.population_bytes(
            n,
            drawn if stored else 0,
            bool(pop.tiers) and stored,
            pop.availability == "periodic" and stored,
            per_client_data,
        ),
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
    "F32_MAX",
    "F32_TINY",
    "HORIZONTAL",
    "KIND_MODULES",
    "MAX_TIERS",
    "PER_CLIENT_ATTRIBUTES",
    "SECTIONS",
    "AsyncConfig",
    "ComponentConfig",
    "CompressionConfig",
    "Config",
    "ConfigError",
    "Dist",
    "ExperimentConfig",
    "FaultsConfig",
    "LoggingConfig",
    "PopulationConfig",
    "RuntimeConfig",
    "ServerConfig",
    "Tier",
    "TrainingConfig",
    "apply_overrides",
    "dumps_toml",
    "each",
    "from_dict",
    "load",
    "parse_override",
    "read_toml",
    "replace_section",
    "resolve",
    "with_overrides",
]
