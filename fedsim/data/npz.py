"""Arrays from an ``.npz`` file: ``data.dataset = "arrays"``.

The file (``numpy.savez``) holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and may hold
``client_train``, one client id per training sample: then the dataset is already split by
device (clients are the distinct ids in sorted order, ``partition.scheme = "natural"``);
otherwise any partition scheme splits it. Unsigned-byte features are pixels scaled to [0, 1],
other numbers are cast to float32; labels are integers >= 0. Object arrays are refused (the
file is read with ``allow_pickle=False``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.data.arrays import ArrayDataset
from fedsim.data.base import CentralData
from fedsim.data.idx import _labels, _scale
from fedsim.data.partition.common import partition_from_owner
from fedsim.options import ConfigError
from fedsim.registry import DATASETS

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class ArraysOptions:
    """``path``: the ``.npz`` file."""

    path: str = ""


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, without unpickling anything."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    if magic[:2] != b"PK":  # an .npz is a zip archive
        raise ConfigError(f"{path}: not an .npz file (numpy.savez writes a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ConfigError(f"{path}: holds object arrays; save numeric arrays") from None
        raise ConfigError(f"{path}: not a readable .npz file ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{path}: not a readable .npz file ({err})") from None


@DATASETS.register("arrays", ArraysOptions)
def arrays(options: ArraysOptions, *, num_clients: int, seed: int) -> CentralData | ArrayDataset:
    """The arrays of ``data.path``; split by its ``client_train`` ids when it has them."""
    if not options.path:
        raise ConfigError("data.path: the arrays dataset needs an .npz file")
    path = Path(options.path).expanduser()
    found = read_npz(path)
    missing = [k for k in REQUIRED if k not in found]
    if missing:
        raise ConfigError(f"{path}: has no array {missing[0]!r} (needs {', '.join(REQUIRED)})")
    for key in ("x_train", "x_test"):
        if found[key].dtype.kind not in "uif" or found[key].ndim < 2:
            raise ConfigError(
                f"{path}: {key} must be numbers of shape (n, ...), got "
                f"{found[key].dtype.name} {found[key].shape}"
            )
    x_train, x_test = _scale(found["x_train"], path), _scale(found["x_test"], path)
    if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
        raise ConfigError(f"{path}: x_train and x_test must be finite")
    y_train = _labels(found["y_train"], len(x_train), path)
    y_test = _labels(found["y_test"], len(x_test), path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(
            f"{path}: x_test samples are {x_test.shape[1:]}, x_train's {x_train.shape[1:]}"
        )
    central = CentralData(x_train, y_train, x_test, y_test)
    if "client_train" not in found:
        return central
    owner = found["client_train"]
    if owner.dtype.kind not in "iu" or owner.shape != (len(y_train),):
        raise ConfigError(
            f"{path}: client_train must hold one integer client id per training sample"
        )
    ids, codes = np.unique(owner, return_inverse=True)
    if len(ids) != num_clients:
        raise ConfigError(
            f"population.num_clients: {path} names {len(ids)} clients in client_train, "
            f"got {num_clients}"
        )
    return ArrayDataset(central, partition_from_owner(codes.astype(np.int64), num_clients))
