"""Planning a sweep: grid specs parsed, expanded into runs (times seeds), named and validated.

A sweep is either a grid (the cartesian product of config values, times seeds), each run named
after its grid values and seed (``strategy.name=fedprox,server.clients_per_round=20,seed=1``),
or an explicit list of :class:`SweepPoint` (a name, overrides and the values a table shows),
for sets of runs that are not a product (FedAvg, then DP-FedAvg at several noise levels). A
run's name is its folder under the sweep folder. Running the plan is
:func:`fedsim.analysis.sweep.sweep`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim import config as config_mod
from fedsim.analysis.runs import SEED_KEY, format_value
from fedsim.config import Config
from fedsim.options import ConfigError

# Folder names stay well below the usual 255-byte file-name limit.
_MAX_NAME = 150
_SAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
_BRACKETS = {"[": "]", "{": "}"}


@dataclass(frozen=True)
class GridAxis:
    """One ``--grid key=v1,v2,...``: the dotted key, the value texts and the parsed values."""

    key: str
    texts: tuple[str, ...]
    values: tuple[Any, ...]


@dataclass(frozen=True)
class SweepPoint:
    """One named run of an explicit sweep.

    ``name`` is its folder under the sweep folder (``/`` makes sub-folders); ``overrides`` apply
    after the sweep's own; ``values`` are what a table of the sweep shows for it; ``config`` is
    the TOML file it runs (None: the sweep's).
    """

    name: str
    overrides: tuple[str, ...] = ()
    values: Mapping[str, Any] = field(default_factory=dict)
    config: Path | None = None


@dataclass(frozen=True)
class SweepRun:
    """One planned run: its grid values, seed, folder name and validated config.

    ``source`` is the TOML file the run reads (None when the sweep was given a Config).
    """

    index: int
    values: dict[str, Any]
    seed: int
    name: str
    overrides: tuple[str, ...]
    config: Config = field(repr=False)
    source: Path | None = None


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,...`` at commas outside brackets, braces and quotes (arrays stay whole)."""
    parts: list[str] = []
    depth: list[str] = []
    quote = ""
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in _BRACKETS:
            depth.append(_BRACKETS[ch])
        elif depth and ch == depth[-1]:
            depth.pop()
        elif ch == "," and not depth:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_grid(specs: Sequence[str]) -> list[GridAxis]:
    """Parse ``key=v1,v2,...`` specs; values read like ``--set`` values (TOML, else a string)."""
    axes: list[GridAxis] = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--grid {spec}: expected section.key=value1,value2,...")
        key_text, values_text = spec.split("=", 1)
        texts = split_values(values_text)
        if not values_text.strip() or any(not t for t in texts):
            raise ConfigError(f"--grid {spec}: empty value")
        parsed = [config_mod.parse_override(f"{key_text}={t}") for t in texts]
        key = ".".join(parsed[0][0])
        if key == SEED_KEY:
            raise ConfigError(f"--grid {spec}: use --seeds N to repeat runs over seeds")
        if any(a.key == key for a in axes):
            raise ConfigError(f"--grid {spec}: {key} is given twice")
        values = tuple(value for _, value in parsed)
        for i, value in enumerate(values):
            if any(same_value(value, v) for v in values[:i]):
                raise ConfigError(f"--grid {spec}: value {texts[i]} is listed twice")
        axes.append(GridAxis(key, tuple(texts), values))
    return axes


def plan_sweep(
    config: Config | str | Path,
    grid: Sequence[str] | Sequence[GridAxis] = (),
    *,
    points: Sequence[SweepPoint] | None = None,
    overrides: Sequence[str] = (),
    seeds: int = 1,
    build: bool = True,
) -> list[SweepRun]:
    """Every run of the sweep, each config validated; raises ConfigError before anything runs.

    Grid values are applied after ``overrides``; run i of a grid point has
    ``experiment.seed = base seed + i`` for i < ``seeds``, where the base seed is the config's.
    With ``points`` (instead of a grid), the runs are those points in order, each seeded by its
    own overrides. With ``build``, the dataset, model, strategy and population of every grid
    point (first seed) are built too, which catches errors that span sections (a partition that
    does not fit the population) before the first run starts.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {seeds}")
    if points is not None:
        if grid or seeds != 1:
            raise ConfigError("sweep: give either named points or a grid with seeds, not both")
        return _plan_points(config, points, overrides, build)
    axes = [a if isinstance(a, GridAxis) else parse_grid([a])[0] for a in grid]
    if len({a.key for a in axes}) != len(axes):
        raise ConfigError("--grid: a key is given twice")
    raw = config.to_dict() if isinstance(config, Config) else config_mod.read_toml(config)
    base = config_mod.apply_overrides(raw, list(overrides))
    base_seed = config_mod.from_dict(base).experiment.seed
    base_dir = None if isinstance(config, Config) else Path(config).resolve().parent

    runs: list[SweepRun] = []
    for point in itertools.product(*(range(len(a.values)) for a in axes)):
        grid_overrides = [f"{a.key}={a.texts[j]}" for a, j in zip(axes, point, strict=True)]
        values = {a.key: a.values[j] for a, j in zip(axes, point, strict=True)}
        for i in range(seeds):
            seed = base_seed + i
            name = run_name(values, seed)
            run_overrides = (*grid_overrides, f"{SEED_KEY}={seed}")
            try:
                cfg = config_mod.from_dict(config_mod.apply_overrides(base, list(run_overrides)))
            except ConfigError as err:
                raise ConfigError(f"{err} (sweep run {name})") from None
            source = None if base_dir is None else Path(config)
            runs.append(SweepRun(len(runs) + 1, values, seed, name, run_overrides, cfg, source))
    _make_names_unique(runs)
    if build:
        build_runs(runs)
    return runs


def build_runs(runs: Sequence[SweepRun]) -> None:
    """Build the dataset, model, strategy and population of each distinct setting of ``runs``.

    Runs that differ only in their seed share one build. This catches errors that span
    sections (a partition that does not fit the population) before the first run starts.
    """
    from fedsim.runner import prepare

    built: set[tuple[str, ...]] = set()
    for r in runs:
        shape = (str(r.source), *(o for o in r.overrides if not o.startswith(SEED_KEY)))
        if shape in built:
            continue
        built.add(shape)
        try:
            prepare(r.config, None if r.source is None else r.source.resolve().parent)
        except ConfigError as err:
            raise ConfigError(f"{err} (sweep run {r.name})") from None


def _plan_points(
    config: Config | str | Path,
    points: Sequence[SweepPoint],
    overrides: Sequence[str],
    build: bool,
) -> list[SweepRun]:
    """The runs of an explicit list of points; names are checked to be distinct folder paths."""
    runs: list[SweepRun] = []
    for point in points:
        parts = Path(point.name).parts
        if not point.name or Path(point.name).is_absolute() or ".." in parts:
            raise ConfigError(f"sweep point {point.name!r}: not a relative folder name")
        if any(r.name == point.name for r in runs):
            raise ConfigError(f"sweep point {point.name}: the name is given twice")
        source = point.config if point.config is not None else config
        path = None if isinstance(source, Config) else Path(source)
        try:
            raw = source.to_dict() if isinstance(source, Config) else config_mod.read_toml(source)
            merged = [*overrides, *point.overrides]
            cfg = config_mod.from_dict(config_mod.apply_overrides(raw, merged))
        except ConfigError as err:
            raise ConfigError(f"{err} (sweep run {point.name})") from None
        values = dict(point.values)
        runs.append(
            SweepRun(
                len(runs) + 1, values, cfg.experiment.seed, point.name, point.overrides, cfg, path
            )
        )
    if build:
        build_runs(runs)
    return runs


def run_name(values: Mapping[str, Any], seed: int) -> str:
    """A run's folder name: ``key=value,...,seed=N``, safe in file names and shells."""
    parts = [f"{k}={_value_text(v)}" for k, v in values.items()] + [f"seed={seed}"]
    name = _SAFE.sub("_", ",".join(parts))
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_NAME - 9]}-{digest}"
    return name


def _make_names_unique(runs: list[SweepRun]) -> None:
    # Sanitising can map different values to one name ("a b" and "a_b"); a digest of the
    # overrides tells them apart, the same way every time.
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    for i, r in enumerate(runs):
        if counts[r.name] > 1:
            digest = hashlib.sha1("\n".join(r.overrides).encode()).hexdigest()[:8]
            runs[i] = SweepRun(
                r.index, r.values, r.seed, f"{r.name}-{digest}", r.overrides, r.config, r.source
            )


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "_".join(_value_text(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return format_value(value)


def same_value(a: Any, b: Any) -> bool:
    """Equal config values, NaN equal to NaN, lists and tables compared item by item."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b
