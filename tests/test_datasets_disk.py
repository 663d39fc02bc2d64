"""On-disk datasets: LEAF JSON, binary CIFAR-10 and .npz arrays, from files the tests write."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedsim import cli
from fedsim import config as config_mod
from fedsim.data import build_dataset
from fedsim.data.leaf import SHAKESPEARE_ALPHABET

RUN = """
[experiment]
name = "disk"
[data]
{data}
[population]
num_clients = {clients}
[model]
name = "softmax"
[server]
rounds = 1
clients_per_round = {clients}
[runtime]
backend = "local"
progress = false
"""


def _dataset(data: str, clients: int, partition: str = 'scheme = "natural"'):
    text = RUN.format(data=data, clients=clients) + f"[partition]\n{partition}\n"
    cfg = config_mod.from_dict(tomllib.loads(text))
    return build_dataset(cfg.data, cfg.partition, clients, 0)


def _run_cli(tmp_path: Path, data: str, clients: int, capsys) -> tuple[int, str]:
    path = tmp_path / "exp.toml"
    path.write_text(RUN.format(data=data, clients=clients))
    out = tmp_path / "out"
    code = cli.main(["run", str(path), "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert not out.exists(), "nothing is written for a bad dataset"
    return code, err


def write_leaf(root: Path, users: dict[str, tuple[list, list]], split: str) -> Path:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "users": list(users),
        "num_samples": [len(x) for x, _ in users.values()],
        "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()},
    }
    path = folder / "all_data_0.json"
    path.write_text(json.dumps(body))
    return path


def _femnist_users(rng: np.random.Generator, sizes: list[int]) -> dict[str, tuple[list, list]]:
    return {
        f"f{i:04d}": (rng.random((n, 784)).round(3).tolist(), rng.integers(0, 62, n).tolist())
        for i, n in enumerate(sizes)
    }


def test_leaf_femnist_is_one_client_per_user_with_its_own_test_samples(tmp_path):
    rng = np.random.default_rng(0)
    train = _femnist_users(rng, [5, 3, 7])
    test = {u: (x[:2], y[:2]) for u, (x, y) in train.items()}
    write_leaf(tmp_path, train, "train")
    write_leaf(tmp_path, test, "test")
    ds = _dataset(f'dataset = "leaf"\npath = "{tmp_path}"\ntask = "femnist"', 3)
    assert ds.num_clients == 3 and ds.num_classes == 62 and ds.input_shape == (28, 28)
    assert ds.client_sizes().tolist() == [5, 3, 7]
    x, y = ds.client_train(1)
    np.testing.assert_allclose(x.reshape(3, -1), np.asarray(train["f0001"][0], np.float32))
    assert y.tolist() == train["f0001"][1]
    xt, yt = ds.client_test(2)
    assert yt.tolist() == test["f0002"][1] and xt.shape == (2, 28, 28)
    assert len(ds.test_set()[1]) == 6


def test_leaf_shakespeare_encodes_characters_by_leaf_alphabet(tmp_path):
    lines = {"ROMEO": ("But soft, what light th", "r"), "JULIET": ("O Romeo, Romeo! wherefo", "e")}
    users = {u: ([s], [c]) for u, (s, c) in lines.items()}
    write_leaf(tmp_path, users, "train")
    write_leaf(tmp_path, users, "test")
    ds = _dataset(f'dataset = "leaf"\npath = "{tmp_path}"\ntask = "shakespeare"', 2)
    assert ds.num_classes == len(SHAKESPEARE_ALPHABET) == 80
    x, y = ds.client_train(0)
    assert x.shape == (1, 23)
    assert "".join(SHAKESPEARE_ALPHABET[int(i)] for i in x[0]) == "But soft, what light th"
    assert SHAKESPEARE_ALPHABET[int(y[0])] == "r"


def test_leaf_sent140_maps_words_by_training_frequency_and_pads_in_front(tmp_path):
    rec = lambda text: ["id", "date", "query", "user", text]  # noqa: E731
    users = {
        "a": ([rec("good good day"), rec("bad day")], [1, 0]),
        "b": ([rec("good night")], [1]),
    }
    write_leaf(tmp_path, users, "train")
    write_leaf(tmp_path, {"a": ([rec("good unseen")], [1])}, "test")
    data = f'dataset = "leaf"\npath = "{tmp_path}"\ntask = "sent140"\nseq_len = 4'
    ds = _dataset(data, 2)
    x, y = ds.client_train(0)
    # Frequencies: good 3, day 2, then bad and night once each (alphabetical): ids 2, 3, 4, 5.
    assert x.tolist() == [[0, 2, 2, 3], [0, 0, 4, 3]] and y.tolist() == [1, 0]
    assert ds.client_test(0)[0].tolist() == [[0, 0, 2, 1]]  # unseen word -> 1
    assert ds.client_test(1)[0].shape == (0, 4)


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (lambda p: p.write_text("{not json"), "not a readable JSON file"),
        (lambda p: p.write_text(json.dumps({"users": ["u"]})), "needs keys users"),
        (
            lambda p: p.write_text(
                json.dumps(
                    {
                        "users": ["u"],
                        "num_samples": [2],
                        "user_data": {"u": {"x": [[0.0] * 784], "y": [1]}},
                    }
                )  # noqa: E501
            ),
            "user 'u' has num_samples 2 but 1 x and 1 y",
        ),
    ],
    ids=["not-json", "missing-keys", "wrong-count"],
)
def test_corrupt_leaf_file_exits_2_with_one_line_naming_it(tmp_path, capsys, corrupt, expected):
    rng = np.random.default_rng(1)
    write_leaf(tmp_path, _femnist_users(rng, [2]), "test")
    path = write_leaf(tmp_path, _femnist_users(rng, [2]), "train")
    corrupt(path)
    code, err = _run_cli(tmp_path, f'dataset = "leaf"\npath = "{tmp_path}"', 1, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{path}: " in err and expected in err


def write_cifar(root: Path, per_file: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    records = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = np.arange(per_file, dtype=np.uint8) % 10
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        rec = np.concatenate([labels[:, None], pixels], axis=1)
        rec.tofile(root / name)
        records[name] = rec
    return records


def test_cifar10_binary_records_become_channel_first_images_in_unit_range(tmp_path):
    records = write_cifar(tmp_path / "cifar-10-batches-bin", 10, np.random.default_rng(2))
    ds = _dataset(f'dataset = "cifar10"\npath = "{tmp_path}"', 5, 'scheme = "iid"')
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.client_sizes().sum() == 50
    first = records["data_batch_1.bin"][0]
    k = int(np.argmax([0 in ds.client_indices(c) for c in range(5)]))
    row = int(np.flatnonzero(ds.client_indices(k) == 0)[0])
    x, y = ds.client_train(k)
    assert y[row] == first[0]
    # Red plane first, each plane row-major.
    np.testing.assert_allclose(x[row, 0, 0, :4], first[1:5] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(x[row, 2, 31, 31], first[3072] / 255.0, rtol=1e-6)
    xt, yt = ds.test_set()
    assert xt.shape == (10, 3, 32, 32) and yt.tolist() == list(range(10))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-7]), "is not a whole number of 3073-byte"),
        (lambda p: p.write_bytes(b"\x0b" + p.read_bytes()[1:]), "record 0 has label 11"),
        (lambda p: p.unlink(), "has no data_batch_3.bin"),
    ],
    ids=["truncated", "bad-label", "missing"],
)
def test_corrupt_cifar10_exits_2_with_one_line(tmp_path, capsys, damage, expected):
    write_cifar(tmp_path, 4, np.random.default_rng(3))
    damage(tmp_path / "data_batch_3.bin")
    code, err = _run_cli(tmp_path, f'dataset = "cifar10"\npath = "{tmp_path}"', 2, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert expected in err and "data_batch_3.bin" in err


def _arrays(rng: np.random.Generator, **extra: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "x_train": rng.integers(0, 256, (12, 4, 4), dtype=np.uint8),
        "y_train": rng.integers(0, 3, 12),
        "x_test": rng.integers(0, 256, (5, 4, 4), dtype=np.uint8),
        "y_test": np.arange(5) % 3,
        **extra,
    }


def test_arrays_client_train_gives_the_natural_partition(tmp_path):
    owner = np.array([7, 3, 7, 3, 3, 9, 9, 9, 9, 3, 7, 7])
    data = _arrays(np.random.default_rng(4), client_train=owner)
    np.savez(tmp_path / "d.npz", **data)
    ds = _dataset(f'dataset = "arrays"\npath = "{tmp_path / "d.npz"}"', 3)
    assert ds.client_sizes().tolist() == [4, 4, 4]
    for k, cid in enumerate([3, 7, 9]):
        assert ds.client_indices(k).tolist() == np.flatnonzero(owner == cid).tolist()
    x, y = ds.client_train(2)
    np.testing.assert_allclose(x, data["x_train"][owner == 9] / np.float32(255.0))
    assert y.tolist() == data["y_train"][owner == 9].tolist()


def test_arrays_without_client_ids_take_any_partition_scheme(tmp_path):
    np.savez(tmp_path / "d.npz", **_arrays(np.random.default_rng(5)))
    ds = _dataset(f'dataset = "arrays"\npath = "{tmp_path / "d.npz"}"', 4, 'scheme = "iid"')
    assert ds.num_clients == 4 and ds.client_sizes().sum() == 12 and ds.input_shape == (4, 4)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p, d: p.write_bytes(b"not a zip"), "not an .npz file"),
        (lambda p, d: p.write_bytes(b"PK\x03\x04 cut short"), "not a readable .npz file"),
        (
            lambda p, d: np.savez(p, **{k: v for k, v in d.items() if k != "y_test"}),
            "no array 'y_test'",
        ),  # noqa: E501
        (
            lambda p, d: np.savez(p, **{**d, "x_train": np.array([None] * 12, dtype=object)}),
            "holds object arrays",
        ),
        (lambda p, d: np.savez(p, **{**d, "y_train": d["y_train"][:5]}), "5 labels for 12 images"),
        (
            lambda p, d: np.savez(p, **d, client_train=np.arange(3)),
            "client_train must hold one integer client id per training sample",
        ),
    ],
    ids=["not-zip", "cut-zip", "missing-key", "object", "label-count", "client-ids"],
)
def test_bad_npz_exits_2_with_one_line_naming_it(tmp_path, capsys, make, expected):
    path = tmp_path / "d.npz"
    make(path, _arrays(np.random.default_rng(6)))
    code, err = _run_cli(tmp_path, f'dataset = "arrays"\npath = "{path}"', 2, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(path) in err and expected in err
