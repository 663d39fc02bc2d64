"""The population's per-client attribute distributions and the ``[population]`` section.

A per-client attribute (speed, bandwidths, dropout, availability) is a :class:`Dist`;
``_dist_in`` builds the validator that bounds every value a Dist can produce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from fedsim.options import (
    ConfigError,
    at_least,
    build,
    check,
    finite,
    in_range,
    non_negative,
    positive,
    to_table,
)

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


@dataclass(frozen=True)
class Tier:
    name: str
    weight: float = field(metadata=check(positive))


@dataclass(frozen=True)
class PopulationConfig:
    num_clients: int = field(default=100, metadata=check(positive))
    # "columns": every drawn attribute stored for all clients (one vectorised draw each);
    # "keyed": nothing stored, a client's attributes drawn from (seed, client id) when asked.
    draws: Literal["columns", "keyed"] = "columns"
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
