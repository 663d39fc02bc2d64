"""IDX files (the MNIST file format) and the ``fashion_mnist``, ``mnist`` and ``idx`` datasets.

IDX layout: two zero bytes, a type code, the number of dimensions, one big-endian int32 per
dimension, then the values in row-major order, big-endian. Files may be gzip-compressed.

Nothing here touches the network: the files must already be on disk. Fashion-MNIST is found in
``data.path``, else ``$FEDSIM_DATA_DIR/fashion-mnist``, else ``/usr/share/datasets/fashion-mnist``
(where Debian's ``dataset-fashion-mnist`` package installs it). MNIST is found in ``data.path``,
else ``$FEDSIM_DATA_DIR/mnist``; it has no default location.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.data.base import CentralData
from fedsim.options import ConfigError
from fedsim.registry import DATASETS

__all__ = [
    "DATA_DIR_ENV",
    "FASHION_MNIST_DEFAULT_DIR",
    "FashionMNISTOptions",
    "IDXOptions",
    "MNISTOptions",
    "clear_cache",
    "load_idx_dir",
    "read_idx",
]

DATA_DIR_ENV = "FEDSIM_DATA_DIR"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

# Type code -> big-endian dtype of the stored values.
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# File stems in the order train images, train labels, test images, test labels.
_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a native-endian array of its stored type and shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    # Sniff the gzip header rather than trusting the suffix: IDX data starts with zero bytes.
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ConfigError(f"{path}: corrupt gzip data ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ConfigError(f"{path}: not an IDX file (magic must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_TYPES)
        raise ConfigError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ConfigError(f"{path}: truncated header ({len(raw)} bytes, {ndim} dims need {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        raise ConfigError(
            f"{path}: payload has {got} bytes, dims {shape} of type {dtype.name} need {expected}"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header)
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    """The plain or gzip file of ``stem`` in ``directory`` (plain wins), or None."""
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _scale(x: np.ndarray, where: Path) -> np.ndarray:
    """Images as float32; unsigned bytes are pixels and are divided by 255 to lie in [0, 1]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype.kind == "f":
        return x.astype(np.float32)
    raise ConfigError(f"{where}: images must be unsigned bytes or floats, got {x.dtype.name}")


def _labels(y: np.ndarray, n: int, where: Path) -> np.ndarray:
    """Labels as int64 of shape (n,), checked against the image count."""
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ConfigError(
            f"{where}: labels must be a 1-D integer array, got {y.dtype.name} {y.shape}"
        )
    if len(y) != n:
        raise ConfigError(f"{where}: {len(y)} labels for {n} images")
    if len(y) and y.min() < 0:
        raise ConfigError(f"{where}: labels must be >= 0, got {int(y.min())}")
    return y.astype(np.int64)


# Resolved directory -> (file fingerprints, arrays); a handful of entries at most.
_CACHE: OrderedDict[str, tuple[tuple, tuple[np.ndarray, ...]]] = OrderedDict()
_CACHE_SIZE = 4


def clear_cache() -> None:
    """Forget every loaded IDX directory."""
    _CACHE.clear()


def load_idx_dir(
    directory: str | os.PathLike[str],
    *,
    source: str = "data.path",
    missing_hint: str = "",
    key: str = "data.path",
) -> CentralData:
    """Load the four train/t10k IDX files of ``directory`` (cached per directory; arrays read-only).

    A missing file raises ConfigError on ``key`` naming the directory, where it came from
    (``source``), the file, and ``missing_hint``.
    """
    directory = Path(directory).expanduser()
    files = []
    for stem in _FILES:
        found = _find(directory, stem)
        if found is None:
            if directory.is_dir():
                what = f"has no {stem}[.gz]"
            else:
                what = "is not a directory" if directory.exists() else "does not exist"
            hint = f"; {missing_hint}" if missing_hint else ""
            raise ConfigError(f"{key}: directory {directory} (from {source}) {what}{hint}")
        files.append(found)
    resolved = str(directory.resolve())
    # Size and mtime of each file, so replacing a file on disk invalidates the entry.
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    hit = _CACHE.get(resolved)
    if hit is not None and hit[0] == stamp:
        _CACHE.move_to_end(resolved)
        arrays = hit[1]
    else:
        x_train, y_train, x_test, y_test = (read_idx(f) for f in files)
        x_train, x_test = _scale(x_train, files[0]), _scale(x_test, files[2])
        y_train = _labels(y_train, len(x_train), files[1])
        y_test = _labels(y_test, len(x_test), files[3])
        if x_train.shape[1:] != x_test.shape[1:]:
            raise ConfigError(
                f"{files[2]}: test images are {x_test.shape[1:]}, train images {x_train.shape[1:]}"
            )
        arrays = (x_train, y_train, x_test, y_test)
        # Read-only because every caller shares the cached arrays.
        for a in arrays:
            a.setflags(write=False)
        _CACHE[resolved] = (stamp, arrays)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return CentralData(*arrays)


def _check_28x28(data: CentralData, directory: Path, name: str) -> CentralData:
    """Reject files that are valid IDX but not 28x28 images."""
    if data.input_shape != (28, 28):
        raise ConfigError(f"data.path: {name} in {directory} must be 28x28, got {data.input_shape}")
    return data


def _data_dir(path: str, subdir: str) -> tuple[Path, str] | None:
    """(directory, where it came from) from ``data.path`` or ``$FEDSIM_DATA_DIR/subdir``."""
    if path:
        return Path(path), "data.path"
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return Path(env) / subdir, DATA_DIR_ENV
    return None


@dataclass(frozen=True)
class FashionMNISTOptions:
    """Options of the ``fashion_mnist`` dataset (Xiao et al. 2017: 60,000 + 10,000 28x28 images)."""

    path: str = ""


@dataclass(frozen=True)
class MNISTOptions:
    """Options of the ``mnist`` dataset (LeCun et al. 1998); ``path`` or FEDSIM_DATA_DIR needed."""

    path: str = ""


@dataclass(frozen=True)
class IDXOptions:
    """Options of the generic ``idx`` dataset: a directory holding the four MNIST-named files."""

    path: str


_FILE_LIST = ", ".join(f"{s}[.gz]" for s in _FILES)


@DATASETS.register("fashion_mnist", FashionMNISTOptions)
def fashion_mnist(options: FashionMNISTOptions, *, num_clients: int, seed: int) -> CentralData:
    """Fashion-MNIST: x float32 in [0, 1] of shape (n, 28, 28), y int64 in 0..9."""
    found = _data_dir(options.path, "fashion-mnist")
    directory, source = found or (Path(FASHION_MNIST_DEFAULT_DIR), "the default location")
    hint = (
        "get Fashion-MNIST with `apt-get install dataset-fashion-mnist`, or set data.path "
        f"or {DATA_DIR_ENV} (then {DATA_DIR_ENV}/fashion-mnist is used)"
    )
    data = load_idx_dir(directory, source=source, missing_hint=hint)
    return _check_28x28(data, directory, "Fashion-MNIST")


@DATASETS.register("mnist", MNISTOptions)
def mnist(options: MNISTOptions, *, num_clients: int, seed: int) -> CentralData:
    """MNIST digits: x float32 in [0, 1] of shape (n, 28, 28), y int64 in 0..9."""
    found = _data_dir(options.path, "mnist")
    if found is None:
        raise ConfigError(
            f"data.path: mnist needs the directory of its IDX files ({_FILE_LIST}); set data.path "
            f"or {DATA_DIR_ENV} (then {DATA_DIR_ENV}/mnist is used); nothing is downloaded"
        )
    directory, source = found
    hint = f"put the MNIST files there ({_FILE_LIST}); nothing is downloaded"
    data = load_idx_dir(directory, source=source, missing_hint=hint)
    return _check_28x28(data, directory, "MNIST")


@DATASETS.register("idx", IDXOptions)
def idx(options: IDXOptions, *, num_clients: int, seed: int) -> CentralData:
    """Any IDX dataset in the MNIST file layout; byte images are scaled to [0, 1]."""
    if not options.path:
        raise ConfigError("data.path: the idx dataset needs the directory of its IDX files")
    hint = f"the idx dataset needs {_FILE_LIST} there"
    return load_idx_dir(options.path, missing_hint=hint)
