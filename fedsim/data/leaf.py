"""LEAF benchmark files (Caldas et al. 2018): ``data.dataset = "leaf"``, one client per user.

LEAF writes each split as JSON files holding ``users`` (ids), ``num_samples`` (one count per
user) and ``user_data`` (user id -> ``{"x": [...], "y": [...]}``). ``data.path`` is a folder
with ``train/`` and ``test/`` subfolders of such files, as LEAF's preprocessing leaves them;
every ``*.json`` file of a subfolder is read, in name order. Clients are the users with
training samples, in the order the files list them; a user's test samples are its own
held-out set and all of them together are the central test set. Tasks:

- ``femnist``: x is 784 pixel values (28x28 images), y a class in 0..61.
- ``shakespeare``: x is a string of characters, y the next character; both are encoded by
  their position in LEAF's 80-symbol alphabet (:data:`SHAKESPEARE_ALPHABET`).
- ``sent140``: x is a tweet (LEAF's raw record, whose fifth field is the text, or the text
  itself), y is 0 or 1; words are lower-cased and mapped to ids by their frequency in the
  training split (``vocab_size`` most frequent; 0 pads, 1 is any other word), and the last
  ``seq_len`` words are kept, padded at the front.

Tokens are stored as float32 (exact below 2**24); token models cast them to integers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedsim.data.arrays import ArrayDataset
from fedsim.data.base import CentralData, Partition
from fedsim.options import ConfigError, check, positive
from fedsim.registry import DATASETS

#: LEAF's Shakespeare alphabet (80 symbols); a character's id is its position here.
SHAKESPEARE_ALPHABET = (
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
)
_CLASSES = {"femnist": 62, "shakespeare": len(SHAKESPEARE_ALPHABET), "sent140": 2}
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class LeafOptions:
    """``path``: folder with LEAF's ``train/`` and ``test/`` JSON files; ``task``: its data."""

    path: str = ""
    task: Literal["femnist", "shakespeare", "sent140"] = "femnist"
    vocab_size: int = field(default=10_000, metadata=check(positive))  # sent140 only
    seq_len: int = field(default=25, metadata=check(positive))  # sent140 only


def read_split(folder: Path) -> list[tuple[str, list[Any], list[Any], Path]]:
    """(user, x, y, file) of every user in the ``*.json`` files of ``folder``, validated."""
    if not folder.is_dir():
        raise ConfigError(f"data.path: {folder} is not a folder (LEAF needs train/ and test/)")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ConfigError(f"data.path: {folder} holds no .json files")
    out = []
    for path in files:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: not a readable JSON file ({err})") from None
        if not isinstance(raw, dict) or not {"users", "num_samples", "user_data"} <= set(raw):
            raise ConfigError(f"{path}: a LEAF file needs keys users, num_samples, user_data")
        users, counts, data = raw["users"], raw["num_samples"], raw["user_data"]
        if not isinstance(users, list) or not isinstance(counts, list) or len(users) != len(counts):
            raise ConfigError(f"{path}: users and num_samples must be lists of equal length")
        for user, count in zip(users, counts, strict=True):
            entry = data.get(user) if isinstance(data, dict) else None
            if not isinstance(entry, dict) or "x" not in entry or "y" not in entry:
                raise ConfigError(f"{path}: user_data has no x and y for user {user!r}")
            x, y = entry["x"], entry["y"]
            if not (isinstance(x, list) and isinstance(y, list) and len(x) == len(y) == count):
                raise ConfigError(
                    f"{path}: user {user!r} has num_samples {count!r} but "
                    f"{_len(x)} x and {_len(y)} y"
                )
            out.append((str(user), x, y, path))
    return out


def _len(v: Any) -> Any:
    return len(v) if isinstance(v, list) else type(v).__name__


def _femnist(x: list[Any], y: list[Any], where: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        xs = np.asarray(x, dtype=np.float32).reshape(len(x), 28, 28)
        ys = np.asarray(y, dtype=np.int64)
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: femnist x must be lists of 784 numbers, y integers") from None
    return xs, ys


def _encode_chars(text: str, where: Path) -> list[int]:
    ids = [SHAKESPEARE_ALPHABET.find(ch) for ch in text]
    if -1 in ids:
        bad = text[ids.index(-1)]
        raise ConfigError(f"{where}: character {bad!r} is not in LEAF's Shakespeare alphabet")
    return ids


def _shakespeare(x: list[Any], y: list[Any], where: Path) -> tuple[np.ndarray, np.ndarray]:
    if not all(isinstance(s, str) for s in x) or not all(
        isinstance(c, str) and len(c) == 1 for c in y
    ):
        raise ConfigError(f"{where}: shakespeare x must be strings, y single characters")
    if len({len(s) for s in x}) > 1:
        raise ConfigError(f"{where}: shakespeare sequences must all have the same length")
    xs = np.asarray([_encode_chars(s, where) for s in x], dtype=np.float32).reshape(len(x), -1)
    ys = np.asarray([_encode_chars(c, where)[0] for c in y], dtype=np.int64)
    return xs, ys


def _tweet(record: Any, where: Path) -> list[str]:
    text = record[4] if isinstance(record, list) and len(record) > 4 else record
    if not isinstance(text, str):
        raise ConfigError(f"{where}: sent140 x must be LEAF records or strings, got {record!r}")
    return _WORD.findall(text.lower())


def _sent140(
    users: list[tuple[str, list[Any], list[Any], Path]], vocab: dict[str, int], seq_len: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _, x, y, where in users:
        xs = np.zeros((len(x), seq_len), dtype=np.float32)
        for i, record in enumerate(x):
            ids = [vocab.get(word, 1) for word in _tweet(record, where)][-seq_len:]
            if ids:
                xs[i, seq_len - len(ids) :] = ids
        out.append((xs, _ints(y, where)))
    return out


def _ints(y: list[Any], where: Path) -> np.ndarray:
    if not all(isinstance(v, int | float) and float(v).is_integer() for v in y):
        raise ConfigError(f"{where}: labels y must be integers")
    return np.asarray(y, dtype=np.int64)


def _encode(
    task: str, users: list[tuple[str, list[Any], list[Any], Path]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    if task == "femnist":
        return [_femnist(x, y, where) for _, x, y, where in users]
    return [_shakespeare(x, y, where) for _, x, y, where in users]


class LeafDataset(ArrayDataset):
    """An :class:`ArrayDataset` whose clients also keep their own LEAF test samples."""

    def __init__(
        self, central: CentralData, partition: Partition, test_offsets: np.ndarray, classes: int
    ) -> None:
        super().__init__(central, partition)
        self.num_classes = classes
        self.test_offsets = test_offsets

    def client_test(self, client_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        a, b = self.test_offsets[client_id], self.test_offsets[client_id + 1]
        return self.x_test[a:b], self.y_test[a:b]


def _stack(parts: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]) -> tuple:
    xs = [p[0] for p in parts] or [np.zeros((0, *shape), np.float32)]
    ys = [p[1] for p in parts] or [np.zeros(0, np.int64)]
    return np.concatenate(xs), np.concatenate(ys)


@DATASETS.register("leaf", LeafOptions)
def leaf(options: LeafOptions, *, num_clients: int, seed: int) -> LeafDataset:
    """The first ``num_clients`` users of a LEAF dataset, each its own client."""
    if not options.path:
        raise ConfigError("data.path: the leaf dataset needs LEAF's folder (with train/, test/)")
    root = Path(options.path).expanduser()
    train = read_split(root / "train")
    if num_clients > len(train):
        raise ConfigError(
            f"population.num_clients: {root / 'train'} has {len(train)} users, "
            f"asked for {num_clients}"
        )
    train = train[:num_clients]
    tests = {user: (x, y, where) for user, x, y, where in read_split(root / "test")}
    test = [(u, *tests.get(u, ([], [], root / "test"))) for u, *_ in train]
    if options.task == "sent140":
        words = Counter(w for _, x, _, where in train for r in x for w in _tweet(r, where))
        ranked = sorted(words, key=lambda w: (-words[w], w))[: options.vocab_size]
        vocab = {w: i + 2 for i, w in enumerate(ranked)}
        train_parts = _sent140(train, vocab, options.seq_len)
        test_parts = _sent140(test, vocab, options.seq_len)
    else:
        train_parts = _encode(options.task, train)
        test_parts = _encode(options.task, test)
    classes = _CLASSES[options.task]
    for (_, _, _, where), (_, y) in zip(train + test, train_parts + test_parts, strict=True):
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise ConfigError(f"{where}: {options.task} labels must lie in [0, {classes})")
    shape = train_parts[0][0].shape[1:]
    if any(p[0].shape[1:] != shape for p in train_parts + test_parts if len(p[0])):
        raise ConfigError(f"data.path: samples of {root} do not all have the same shape")
    x_train, y_train = _stack(train_parts, shape)
    x_test, y_test = _stack(test_parts, shape)
    sizes = [len(p[1]) for p in train_parts]
    partition = Partition(np.concatenate([[0], np.cumsum(sizes)]), np.arange(len(y_train)))
    test_offsets = np.concatenate([[0], np.cumsum([len(p[1]) for p in test_parts])])
    central = CentralData(x_train, y_train, x_test, y_test)
    return LeafDataset(central, partition, test_offsets.astype(np.int64), classes)
