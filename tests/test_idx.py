"""IDX reading and the IDX-backed datasets (mnist, idx, fashion_mnist)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from fedsim.config import ComponentConfig
from fedsim.data import build_dataset
from fedsim.data.base import CentralData
from fedsim.data.idx import (
    FASHION_MNIST_DEFAULT_DIR,
    FashionMNISTOptions,
    IDXOptions,
    MNISTOptions,
    clear_cache,
    read_idx,
)
from fedsim.data.partition import ShardsOptions
from fedsim.options import ConfigError, build
from fedsim.registry import DATASETS

_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if ``gz``), big-endian as the format says."""
    code = _CODES[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_dataset(
    directory: Path,
    n_train: int = 40,
    n_test: int = 15,
    shape: tuple[int, ...] = (28, 28),
    gz: bool = True,
) -> tuple[np.ndarray, ...]:
    """Write four small random IDX files in the MNIST layout and return their arrays."""
    rng = np.random.default_rng(7)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = (
        rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        rng.integers(0, 10, size=n_train).astype(np.uint8),
        rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        rng.integers(0, 10, size=n_test).astype(np.uint8),
    )
    for stem, a in zip(_STEMS, arrays, strict=True):
        write_idx(directory / (stem + (".gz" if gz else "")), a, gz=gz)
    return arrays


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("FEDSIM_DATA_DIR", raising=False)


# --- read_idx ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        a = rng.normal(size=(3, 4, 5)).astype(dt.newbyteorder("="))
    else:
        info = np.iinfo(dt)
        a = rng.integers(
            info.min, info.max, size=(3, 4, 5), endpoint=True, dtype=dt.newbyteorder("=")
        )
    path = write_idx(tmp_path / ("x.idx" + (".gz" if gz else "")), a, gz=gz)
    b = read_idx(path)
    assert b.dtype == a.dtype and b.dtype.isnative
    assert b.shape == (3, 4, 5)
    np.testing.assert_array_equal(b, a)


def test_read_idx_one_dim_and_empty(tmp_path):
    a = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a", a)), a)
    empty = np.zeros((0, 28, 28), dtype=np.uint8)
    assert read_idx(write_idx(tmp_path / "e", empty)).shape == (0, 28, 28)


def test_read_idx_is_writable_copy(tmp_path):
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    b = read_idx(write_idx(tmp_path / "a", a))
    b[0, 0] = 9
    assert b[0, 0] == 9


def _good_bytes() -> bytes:
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    return bytes([0, 0, 0x08, 2]) + np.array([3, 4], ">i4").tobytes() + a.tobytes()


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda b: b"\x01" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "type code 0x07"),
        (lambda b: b[:-1], "payload has 11 bytes"),
        (lambda b: b + b"\x00", "payload has 13 bytes"),
        (lambda b: b[:6], "truncated header"),
        (lambda b: b"", "magic"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, mutate, words):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(mutate(_good_bytes()))
    with pytest.raises(ConfigError) as err:
        read_idx(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    assert words in msg
    assert "\n" not in msg


def test_read_idx_rejects_truncated_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(_good_bytes())[:-6])
    with pytest.raises(ConfigError, match="bad.gz: corrupt gzip"):
        read_idx(path)


def test_read_idx_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nothere-idx1-ubyte: cannot read"):
        read_idx(tmp_path / "nothere-idx1-ubyte")


# --- mnist / idx datasets ------------------------------------------------------------------------


def _load(name: str, options) -> CentralData:
    return DATASETS.get(name).factory(options, num_clients=4, seed=0)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loads_small_files(tmp_path, gz):
    clear_cache()
    x_tr, y_tr, x_te, y_te = write_dataset(tmp_path / "m", gz=gz)
    data = _load("mnist", MNISTOptions(path=str(tmp_path / "m")))
    assert data.x_train.dtype == np.float32 and data.x_train.shape == (40, 28, 28)
    assert data.y_train.dtype == np.int64 and data.y_test.shape == (15,)
    np.testing.assert_allclose(data.x_train, x_tr / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(data.x_test, x_te / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.y_train, y_tr)
    np.testing.assert_array_equal(data.y_test, y_te)
    assert data.input_shape == (28, 28)
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0


def test_mnist_uses_data_dir_env(tmp_path, monkeypatch):
    clear_cache()
    _, y_tr, _, _ = write_dataset(tmp_path / "mnist", n_train=12)
    monkeypatch.setenv("FEDSIM_DATA_DIR", str(tmp_path))
    data = _load("mnist", MNISTOptions())
    np.testing.assert_array_equal(data.y_train, y_tr)


def test_mnist_requires_a_path():
    with pytest.raises(ConfigError) as err:
        _load("mnist", MNISTOptions())
    msg = str(err.value)
    assert msg.startswith("data.path: ")
    assert "FEDSIM_DATA_DIR" in msg and "train-images-idx3-ubyte" in msg


def test_missing_file_is_named(tmp_path):
    write_dataset(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConfigError) as err:
        _load("mnist", MNISTOptions(path=str(tmp_path / "m")))
    msg = str(err.value)
    assert msg.startswith("data.path: ")
    assert str(tmp_path / "m") in msg and "t10k-labels-idx1-ubyte" in msg


def test_mnist_rejects_other_image_sizes(tmp_path):
    write_dataset(tmp_path / "m", shape=(8, 8))
    with pytest.raises(ConfigError, match=r"must be 28x28, got \(8, 8\)"):
        _load("mnist", MNISTOptions(path=str(tmp_path / "m")))


def test_label_count_mismatch_names_file(tmp_path):
    write_dataset(tmp_path / "m")
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte.gz", np.zeros(39, np.uint8), gz=True)
    with pytest.raises(ConfigError, match="train-labels-idx1-ubyte.gz: 39 labels for 40 images"):
        _load("mnist", MNISTOptions(path=str(tmp_path / "m")))


def test_generic_idx_dataset_keeps_float_images(tmp_path):
    clear_cache()
    rng = np.random.default_rng(3)
    d = tmp_path / "any"
    d.mkdir()
    x_tr = rng.random((9, 3, 5)).astype(np.float32)
    x_te = rng.random((4, 3, 5)).astype(np.float32)
    y_tr, y_te = np.arange(9, dtype=np.uint8) % 3, np.arange(4, dtype=np.uint8) % 3
    for stem, a in zip(_STEMS, (x_tr, y_tr, x_te, y_te), strict=True):
        write_idx(d / stem, a)
    data = _load("idx", IDXOptions(path=str(d)))
    np.testing.assert_array_equal(data.x_train, x_tr)
    np.testing.assert_array_equal(data.x_test, x_te)
    assert data.input_shape == (3, 5) and data.num_classes == 3


def test_generic_idx_path_is_required():
    with pytest.raises(ConfigError, match="data.path: required key is missing"):
        build(IDXOptions, {}, "data")


def test_cache_shares_arrays_and_notices_changes(tmp_path):
    clear_cache()
    write_dataset(tmp_path / "m", n_train=20)
    opts = MNISTOptions(path=str(tmp_path / "m"))
    a, b = _load("mnist", opts), _load("mnist", opts)
    assert a.x_train is b.x_train
    assert not a.x_train.flags.writeable
    with pytest.raises(ValueError):
        a.x_train[0, 0, 0] = 1.0
    write_dataset(tmp_path / "m", n_train=25)
    c = _load("mnist", opts)
    assert c.x_train.shape == (25, 28, 28)


# --- fashion_mnist -------------------------------------------------------------------------------


def test_fashion_mnist_missing_directory_hint(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as err:
        _load("fashion_mnist", FashionMNISTOptions(path=str(missing)))
    msg = str(err.value)
    assert msg.startswith("data.path: ")
    assert str(missing) in msg and "does not exist" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "FEDSIM_DATA_DIR" in msg
    assert "\n" not in msg


def test_fashion_mnist_env_dir_is_a_root(tmp_path, monkeypatch):
    clear_cache()
    _, y_tr, _, _ = write_dataset(tmp_path / "fashion-mnist", n_train=10)
    monkeypatch.setenv("FEDSIM_DATA_DIR", str(tmp_path))
    np.testing.assert_array_equal(_load("fashion_mnist", FashionMNISTOptions()).y_train, y_tr)
    monkeypatch.setenv("FEDSIM_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="empty.fashion-mnist .from FEDSIM_DATA_DIR."):
        _load("fashion_mnist", FashionMNISTOptions())


@pytest.fixture(scope="module")
def fashion() -> CentralData:
    # A test requirement (.ci/run installs it), checked rather than skipped: without the real
    # files these checks would silently not run.
    assert os.path.isdir(FASHION_MNIST_DEFAULT_DIR), (
        "Fashion-MNIST is needed by the tests: apt-get install dataset-fashion-mnist"
    )
    return DATASETS.get("fashion_mnist").factory(FashionMNISTOptions(), num_clients=1, seed=0)


def test_fashion_mnist_default_location(fashion):
    assert fashion.x_train.shape == (60_000, 28, 28) and fashion.x_test.shape == (10_000, 28, 28)
    assert fashion.x_train.dtype == np.float32 and fashion.y_train.dtype == np.int64
    assert fashion.x_train.min() == 0.0 and fashion.x_train.max() == 1.0
    assert fashion.x_test.min() >= 0.0 and fashion.x_test.max() <= 1.0
    assert fashion.num_classes == 10
    np.testing.assert_array_equal(np.bincount(fashion.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(fashion.y_test), np.full(10, 1000))
    # Pixels are k / 255 exactly as float32 division makes them.
    levels = np.unique(fashion.x_train[:100])
    np.testing.assert_allclose(levels * 255, np.round(levels * 255), atol=1e-4)


def test_fashion_mnist_shards_end_to_end(fashion):
    data = ComponentConfig("fashion_mnist", FashionMNISTOptions())
    part = ComponentConfig("shards", ShardsOptions(num_shards=200, shards_per_client=2))
    ds = build_dataset(data, part, num_clients=100, seed=1)
    assert ds.num_clients == 100 and ds.input_shape == (28, 28) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.client_sizes(), np.full(100, 600))
    counts = ds.label_counts(np.arange(100))
    assert counts.sum() == 60_000
    assert ((counts > 0).sum(axis=1) <= 2).all()
    x, y = ds.client_train(17)
    assert x.shape == (600, 28, 28)
    np.testing.assert_array_equal(np.bincount(y, minlength=10), counts[17])
    assert ds.x_train is fashion.x_train  # the cached arrays, not a copy
