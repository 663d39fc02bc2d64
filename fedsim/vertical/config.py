"""The ``[vertical]`` section: parties, data, algorithm and its hyper-parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from fedsim.config import Dist, _dist_in
from fedsim.options import check, in_range, non_negative, positive

#: Speed (samples/s of model work) of the machine on which ``mulmod_s`` was measured; a
#: party's cryptography takes ``REFERENCE_SPEED / speed`` times the reference time.
REFERENCE_SPEED = 1e4


def _not_tiers(d: Dist) -> str | None:
    return (
        "dist = 'tiers' needs population tiers, which parties do not have"
        if (d.dist == "tiers")
        else None
    )


_POSITIVE_DIST = check(_not_tiers, _dist_in(0, math.inf, lo_open=True))


def _features(v: tuple[str, ...] | int) -> str | None:
    if isinstance(v, int):
        return None if v > 0 else f"a count must be > 0, got {v}"
    if not v:
        return "must name at least one column, or be a count"
    dup = sorted({f for f in v if v.count(f) > 1})
    return f"lists {dup[0]!r} twice" if dup else None


@dataclass(frozen=True)
class PartyConfig:
    """One party: its columns, whether it holds the labels, its machine and its link."""

    name: str
    # Column names, or a count: the next that many columns (dataset order) no party names.
    features: tuple[str, ...] | int = field(metadata=check(_features))
    role: Literal["active", "passive"] = "passive"
    speed: Dist = field(default=Dist(value=REFERENCE_SPEED), metadata=_POSITIVE_DIST)
    bandwidth: Dist = field(default=Dist(value=1.25e7), metadata=_POSITIVE_DIST)


def _key_length(v: int) -> str | None:
    return None if v >= 256 and v % 8 == 0 else f"must be a multiple of 8, >= 256, got {v}"


@dataclass(frozen=True)
class VerticalConfig:
    """Settings of a vertical run; see the README section "Vertical federated learning"."""

    dataset: Literal["credit", "breast_cancer"] = "credit"
    # People in the generated credit data (breast_cancer: its 569 patients).
    num_samples: int = field(default=4000, metadata=check(positive))
    # Share of the people that every party holds; the rest is split among the parties.
    overlap: float = field(default=0.8, metadata=check(in_range(0, 1, lo_open=True)))
    test_fraction: float = field(default=0.25, metadata=check(in_range(0, 1, lo_open=True, hi_open=True)))  # fmt: skip  # noqa: E501
    algorithm: Literal["splitnn", "hetero_lr"] = "splitnn"
    epochs: int = field(default=10, metadata=check(positive))
    batch_size: int = field(default=64, metadata=check(positive))
    learning_rate: float = field(default=0.01, metadata=check(positive))
    l2: float = field(default=0.0, metadata=check(non_negative))
    # Split NN: hidden units of each bottom model, embedding width, hidden units of the top.
    hidden: int = field(default=16, metadata=check(positive))
    embedding: int = field(default=4, metadata=check(positive))
    top_hidden: int = field(default=8, metadata=check(positive))
    # Paillier modulus bits for hetero LR (1024 is FATE's default; 2048 costs ~8x more).
    key_length: int = field(default=1024, metadata=check(_key_length))
    # Seconds of one 2048-bit modular multiplication at REFERENCE_SPEED (cost model).
    mulmod_s: float = field(default=1.4e-6, metadata=check(positive))
    parties: tuple[PartyConfig, ...] = ()

    def validate(self) -> str | None:
        if len(self.parties) < 2:
            return "parties: a vertical run needs at least two [[vertical.parties]]"
        names = [p.name for p in self.parties]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            return f"parties: two parties are named {dup[0]!r}"
        bad = [n for n in names if not n or not n.replace("_", "").isalnum()]
        if bad:
            return f"parties: name {bad[0]!r} must be letters, digits and '_'"
        active = [p.name for p in self.parties if p.role == "active"]
        if not active:
            return "parties: no party has role = 'active' (exactly one holds the labels)"
        if len(active) > 1:
            return f"parties: {len(active)} active parties ({', '.join(active)}); exactly one holds the labels"  # noqa: E501
        owner: dict[str, str] = {}
        for p in self.parties:
            for f in p.features if isinstance(p.features, tuple) else ():
                if f in owner:
                    return f"parties: feature {f!r} is held by both {owner[f]!r} and {p.name!r}"
                owner[f] = p.name
        return None

    @property
    def active(self) -> PartyConfig:
        return next(p for p in self.parties if p.role == "active")
