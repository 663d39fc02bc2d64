"""Tabular data for vertical runs and how it is held: columns per party, IDs per party.

``credit`` is generated (the process is stated in ``experiments/finance/README.md`` and in
:func:`credit`); ``breast_cancer`` is scikit-learn's copy of the Wisconsin diagnostic data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.options import ConfigError
from fedsim.rng import Purpose, generator
from fedsim.vertical.config import VerticalConfig
from fedsim.vertical.logistic import sigmoid

BANK_COLUMNS = ("income", "balance", "tenure_years", "utilisation", "late_payments")
SHOP_COLUMNS = (
    "monthly_spend",
    "orders_per_month",
    "return_rate",
    "night_order_share",
    "pay_later_share",
    "discount_share",
)


@dataclass(frozen=True)
class Table:
    """People (one row each, with an ID string), named columns and the binary label."""

    ids: np.ndarray  # str
    columns: tuple[str, ...]
    x: np.ndarray  # (n, len(columns)) float64
    y: np.ndarray  # (n,) int8


def credit(n: int, seed: int) -> Table:
    """Credit default among ``n`` customers of a bank who also shop at an e-commerce partner.

    Three latent traits per person, each N(0, 1): financial stress ``s``, impulsive spending
    ``c``, stability ``a``. The bank's columns see mostly ``s`` and ``a``, the shop's mostly
    ``c`` and partly ``s``; default is Bernoulli(sigmoid(-2.2 + 1.1 s + 1.0 c - 0.6 a
    + 0.5 s c)), so neither party's columns alone carry all the signal.
    """
    rng = generator(seed, Purpose.VERTICAL_DATA)
    s, c, a = rng.standard_normal((3, n))

    def noise(scale: float) -> np.ndarray:
        return scale * rng.standard_normal(n)

    bank = [
        np.exp(10.5 + 0.35 * a - 0.15 * s + noise(0.3)),  # yearly income
        1000 * (1.5 - 0.8 * s + 0.4 * a + noise(1.0)),  # account balance
        np.clip(8 + 4 * a + noise(3.0), 0, None),  # years as a customer
        sigmoid(0.9 * s + 0.2 * c + noise(0.9)),  # credit-line utilisation
        rng.poisson(np.exp(-1.2 + 0.5 * s)).astype(float),  # late payments, last 12 months
    ]
    shop = [
        np.exp(5 + 0.5 * c + 0.2 * a + noise(0.4)),  # spend per month
        rng.poisson(np.exp(1 + 0.5 * c)).astype(float),
        sigmoid(-1.5 + 0.6 * c + noise(0.5)),
        sigmoid(-1 + 0.5 * s + 0.5 * c + noise(0.7)),
        sigmoid(-1 + 0.6 * s + 0.6 * c + noise(0.6)),
        sigmoid(0.5 * s + 0.3 * c - 0.2 * a + noise(0.8)),
    ]
    logit = -2.2 + 1.1 * s + 1.0 * c - 0.6 * a + 0.5 * s * c
    y = (rng.random(n) < sigmoid(logit)).astype(np.int8)
    x = np.column_stack(bank + shop)
    return Table(_ids("C", n, seed), BANK_COLUMNS + SHOP_COLUMNS, x, y)


def breast_cancer(seed: int) -> Table:
    """scikit-learn's breast-cancer data (569 patients, 30 columns); label 1 = malignant."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:
        raise ConfigError(
            "vertical.dataset: 'breast_cancer' needs scikit-learn (pip install fedsim[vertical])"
        ) from None
    data = load_breast_cancer()
    names = tuple(str(c).replace(" ", "_") for c in data.feature_names)
    # sklearn codes malignant as 0; the positive class here is the disease.
    y = (data.target == 0).astype(np.int8)
    return Table(_ids("P", len(y), seed), names, np.asarray(data.data, np.float64), y)


def _ids(prefix: str, n: int, seed: int) -> np.ndarray:
    """Distinct customer IDs, unrelated to row order."""
    rng = generator(seed, Purpose.VERTICAL_DATA, 1)
    numbers = rng.choice(10 * n, size=n, replace=False)
    return np.array([f"{prefix}{k:08d}" for k in numbers])


def load_table(cfg: VerticalConfig, seed: int) -> Table:
    if cfg.dataset == "credit":
        return credit(cfg.num_samples, seed)
    return breast_cancer(seed)


def assign_columns(cfg: VerticalConfig, columns: tuple[str, ...]) -> list[np.ndarray]:
    """Column indices of each party: named ones, then counts take the next unclaimed ones."""
    index = {c: i for i, c in enumerate(columns)}
    out: list[np.ndarray | None] = []
    taken: set[int] = set()
    for k, party in enumerate(cfg.parties):
        if isinstance(party.features, int):
            out.append(None)
            continue
        missing = [f for f in party.features if f not in index]
        if missing:
            raise ConfigError(
                f"vertical.parties[{k}].features: no column {missing[0]!r} in "
                f"{cfg.dataset} (columns: {', '.join(columns)})"
            )
        cols = np.array([index[f] for f in party.features])
        taken.update(cols.tolist())
        out.append(cols)
    free = [i for i in range(len(columns)) if i not in taken]
    for k, party in enumerate(cfg.parties):
        if isinstance(party.features, int):
            if party.features > len(free):
                raise ConfigError(
                    f"vertical.parties[{k}].features: {party.features} columns asked, "
                    f"{len(free)} of {cfg.dataset}'s {len(columns)} are left"
                )
            out[k], free = np.array(free[: party.features]), free[party.features :]
    return [c for c in out if c is not None]


def holdings(cfg: VerticalConfig, n: int, seed: int) -> list[np.ndarray]:
    """Row indices each party holds: a shared ``overlap`` share, and a disjoint part of the rest.

    Raises ConfigError when the shared part is too small to train and test on.
    """
    rng = generator(seed, Purpose.VERTICAL_DATA, 2)
    order = rng.permutation(n)
    shared = int(round(cfg.overlap * n))
    if shared < 20:
        raise ConfigError(
            f"vertical.overlap: {cfg.overlap:g} of {n} people is {shared} shared, "
            "too few to train and test on (need 20)"
        )
    rest = np.array_split(order[shared:], len(cfg.parties))
    return [np.sort(np.concatenate([order[:shared], r])) for r in rest]
