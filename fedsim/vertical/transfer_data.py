"""The generated two-party task of a transfer run, and how each party's data is prepared.

One population of ``source_only + overlap + target_only`` people. Each person has latent
factors ``z ~ N(0, I_k)`` (k = ``latent_dim``) and a label ``y = sign(w . z)`` with a fixed
random unit vector ``w``, flipped with probability ``label_flip``. Each party sees the
person through its own random two-layer map and noise:

    x_P = tanh(z M_P) R_P + noise * N(0, I),   M_P: k x 32, entries N(0, 2/k);
                                               R_P: 32 x features_P, entries N(0, 1/32)

so the two parties' features differ in number and meaning but describe the same z, and
the label is a function of z that neither party's features give linearly. The people are
split at random into the source-only, overlap and target-only sets; the source holds its
labels (source-only and overlap people), the target holds no labels; the target-only
people's labels are kept for scoring only. Everything is drawn from the seed alone
(``Purpose.TRANSFER_DATA``).

Instead, each party's people can come from a CSV file (:func:`load`): an ``id`` column, a
``label`` column and numeric feature columns. The source's labels train; the target's are
read only to score its target-only people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.options import ConfigError, read_csv_input
from fedsim.rng import Purpose, generator
from fedsim.vertical.transfer_config import TransferConfig, TransferParty

HIDDEN = 32  # width of the hidden layer of each party's feature map


@dataclass(frozen=True)
class PartyData:
    """One party's samples: IDs, features, labels in {-1, +1} (the target's: scoring only)."""

    ids: np.ndarray  # str
    x: np.ndarray  # (n, features) float64
    y: np.ndarray  # (n,) float64


def _feature_map(rng: np.random.Generator, z: np.ndarray, features: int) -> np.ndarray:
    k = z.shape[1]
    m = rng.normal(0.0, np.sqrt(2.0 / k), (k, HIDDEN))
    r = rng.normal(0.0, np.sqrt(1.0 / HIDDEN), (HIDDEN, features))
    return np.tanh(z @ m) @ r


def generate(cfg: TransferConfig, seed: int) -> tuple[PartyData, PartyData]:
    """The source's and the target's data, each in its own (random) row order."""
    rng = generator(seed, Purpose.TRANSFER_DATA)
    n = cfg.source_only + cfg.overlap + cfg.target_only
    z = rng.standard_normal((n, cfg.latent_dim))
    w = rng.standard_normal(cfg.latent_dim)
    y = np.where(z @ (w / np.linalg.norm(w)) > 0, 1.0, -1.0)
    y[rng.random(n) < cfg.label_flip] *= -1.0
    xs = []
    for party in cfg.parties:
        clean = _feature_map(rng, z, party.features)
        xs.append(clean + cfg.noise * rng.standard_normal(clean.shape))
    ids = _ids(rng, n)
    order = rng.permutation(n)
    a_end = cfg.source_only + cfg.overlap
    held = [order[:a_end], order[cfg.source_only :]]
    out = []
    for x, rows in zip(xs, held, strict=True):
        rows = rng.permutation(rows)  # each party's own row order
        out.append(PartyData(ids[rows], x[rows], y[rows]))
    return out[0], out[1]


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct customer IDs, unrelated to row order."""
    return np.array([f"T{k:09d}" for k in rng.choice(100 * n, size=n, replace=False)])


def standardise(x: np.ndarray) -> np.ndarray:
    """A party scales its columns by the mean and deviation over all of its own samples."""
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd == 0, 1.0, sd)
    return (x - mu) / sd


def load(party: TransferParty, key: str, base_dir: Path | None) -> PartyData:
    """One party's people from its CSV file (``key``: the config key naming the file)."""
    path = Path(party.file)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    df = read_csv_input(path, key)
    for col in ("id", "label"):
        if col not in df.columns:
            raise ConfigError(f"{key}: {path}: missing column {col!r}")
    ids = df["id"].astype(str).to_numpy()
    if len(ids) == 0 or len(set(ids)) != len(ids):
        raise ConfigError(f"{key}: {path}: the id column must name each person once (and some)")
    features = [c for c in df.columns if c not in ("id", "label")]
    if not features:
        raise ConfigError(f"{key}: {path}: no feature columns besides id and label")
    x = df[features].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"{key}: {path}: a feature column has a non-numeric or empty value")
    y = pd.to_numeric(df["label"], errors="coerce").to_numpy(np.float64)
    values = set(np.unique(y).tolist())
    if not (values <= {0.0, 1.0} or values <= {-1.0, 1.0}):
        raise ConfigError(f"{key}: {path}: column 'label' must hold 0/1 or -1/1")
    return PartyData(ids, x, np.where(y > 0, 1.0, -1.0))


def party_data(
    cfg: TransferConfig, seed: int, base_dir: Path | None
) -> tuple[PartyData, PartyData]:
    """The two parties' data: from their files when named, else generated; sizes checked."""
    if not cfg.source.file:
        return generate(cfg, seed)
    source = load(cfg.source, "transfer.source.file", base_dir)
    target = load(cfg.target, "transfer.target.file", base_dir)
    shared = len(np.intersect1d(source.ids, target.ids))
    if shared < 2 or len(target.ids) - shared < 2:
        raise ConfigError(
            f"transfer.target.file: shares {shared} ids with the source and has "
            f"{len(target.ids) - shared} of its own; needs at least 2 of each"
        )
    return source, target
