"""CIFAR-10 in its binary version (Krizhevsky 2009): ``data.dataset = "cifar10"``.

``data.path`` is the folder holding ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
``test_batch.bin`` (or the ``cifar-10-batches-bin`` folder inside it). Each file is a sequence
of 3,073-byte records: the label byte (0-9), then the 32x32 red, green and blue planes, each
row-major. Images become float32 in [0, 1] of shape (3, 32, 32). Nothing is unpickled and
nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.data.base import CentralData
from fedsim.options import ConfigError
from fedsim.registry import DATASETS

TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
_RECORD = 1 + 3 * 32 * 32


@dataclass(frozen=True)
class Cifar10Options:
    """``path``: the folder of the binary CIFAR-10 files."""

    path: str = ""


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 3, 32, 32), labels int64 (n,)) of one binary CIFAR-10 file."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    if raw.size == 0 or raw.size % _RECORD:
        raise ConfigError(
            f"{path}: {raw.size} bytes is not a whole number of {_RECORD}-byte CIFAR-10 records"
        )
    records = raw.reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        row = int(np.argmax(labels > 9))
        raise ConfigError(f"{path}: record {row} has label {int(labels[row])}, expected 0-9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _folder(path: str) -> Path:
    if not path:
        raise ConfigError(
            "data.path: cifar10 needs the folder of its binary files; nothing is downloaded"
        )
    root = Path(path).expanduser()
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    if not root.is_dir():
        raise ConfigError(f"data.path: {root} is not a folder")
    return root


@DATASETS.register("cifar10", Cifar10Options)
def cifar10(options: Cifar10Options, *, num_clients: int, seed: int) -> CentralData:
    """CIFAR-10: x float32 in [0, 1] of shape (n, 3, 32, 32), y int64 in 0..9."""
    root = _folder(options.path)
    missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (root / n).is_file()]
    if missing:
        raise ConfigError(f"data.path: {root} has no {missing[0]} (the binary CIFAR-10 files)")
    parts = [read_batch(root / n) for n in TRAIN_FILES]
    x_test, y_test = read_batch(root / TEST_FILE)
    x_train = np.concatenate([p[0] for p in parts]).astype(np.float32) / np.float32(255.0)
    y_train = np.concatenate([p[1] for p in parts])
    return CentralData(x_train, y_train, x_test.astype(np.float32) / np.float32(255.0), y_test)
