"""Checkpoints of a run folder: written atomically, read without executing code.

A checkpoint is ``checkpoint/state.json`` (JSON) naming ``checkpoint/model-<round>.npz`` (numpy
arrays, read with ``allow_pickle=False``) and its SHA-256. Writing one:

1. the arrays go to a temporary file, which is flushed to disk and renamed to
   ``model-<round>.npz`` (a name no earlier checkpoint uses);
2. the state goes to a temporary file, flushed and renamed over ``state.json``: this rename is
   the commit;
3. the folder is flushed, then model files no longer named by ``state.json`` are deleted.

A process killed at any point leaves ``state.json`` naming either the previous checkpoint's
model file (still present, since deletion comes after the commit) or the new one: never a
model of round r with the state of round r-1.

The state is any nested dict of JSON values and numpy arrays; arrays are stored in the npz
under their dotted path and replaced in the JSON by ``{"__array__": path}``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.options import ConfigError

#: Config keys a resumed run may change: they do not alter any result.
RESUMABLE_KEYS = frozenset(
    {
        "server.rounds",
        "runtime.backend",
        "runtime.workers",
        "runtime.address",
        "runtime.progress",
        "runtime.checkpoint_every",
        "runtime.max_worker_restarts",
        "faults.kill_worker_at_round",
        "faults.kill_worker_times",
    }
)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
FORMAT = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``state`` with every array restored in place."""

    round: int
    state: dict[str, Any]
    path: Path


def state_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / STATE_FILE


def save(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (must hold an int ``round``) as the run's checkpoint; returns state.json."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    tree = _split(state, "", arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    model_name = f"model-{int(state['round']):06d}.npz"
    _write_durably(folder / model_name, blob)
    tree = {
        **tree,
        "format": FORMAT,
        "model_file": model_name,
        "model_sha256": hashlib.sha256(blob).hexdigest(),
    }
    text = json.dumps(tree, indent=1, default=_json_default) + "\n"
    _write_durably(folder / STATE_FILE, text.encode())
    _fsync_dir(folder)
    for stale in folder.iterdir():
        if stale.name not in (model_name, STATE_FILE, LOCK_FILE):
            stale.unlink(missing_ok=True)
    return folder / STATE_FILE


def load(run_dir: Path) -> Checkpoint | None:
    """The run's committed checkpoint, or None if it has none; ConfigError if it is damaged."""
    path = state_path(run_dir)
    if not path.exists():
        return None
    try:
        tree = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: damaged checkpoint ({err})") from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a fedsim checkpoint of format {FORMAT}")
    model = path.parent / str(tree.get("model_file", ""))
    try:
        blob = model.read_bytes()
    except OSError as err:
        raise ConfigError(f"{model}: cannot read checkpoint model ({err.strerror})") from None
    if hashlib.sha256(blob).hexdigest() != tree.get("model_sha256"):
        raise ConfigError(f"{model}: damaged checkpoint (checksum mismatch)")
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    state = _join(tree, arrays)
    for key in ("format", "model_file", "model_sha256"):
        state.pop(key)
    return Checkpoint(int(state["round"]), state, path)


class RunLock:
    """One process at a time per run folder: an advisory lock the OS drops when it dies.

    Two processes appending to the same records (a job restarted while the old one still
    runs) would interleave them; the second one stops with a ConfigError instead.
    """

    def __init__(self, run_dir: Path) -> None:
        folder = Path(run_dir) / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self._file = (folder / LOCK_FILE).open("a")
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise ConfigError(f"{run_dir}: another fedsim process is running this run") from None

    def close(self) -> None:
        self._file.close()


def check_resumable(
    ckpt: Checkpoint, cfg: Any, defaults_table: dict[str, Any] | None = None
) -> None:
    """ConfigError unless ``cfg`` (a Config) may continue the run ``ckpt`` was taken from.

    ``defaults_table`` (the default config's tables) stands in for keys the run's config lacks.
    """
    before, now = _flatten(ckpt.state["config"]), _flatten(cfg.to_dict())
    # A key added to fedsim after the run started had its default value in that run.
    defaults = _flatten(defaults_table or {})
    for key in sorted(before.keys() | now.keys()):
        if key in RESUMABLE_KEYS:
            continue
        a, b = before.get(key, defaults.get(key, "unset")), now.get(key, "unset")
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            raise ConfigError(
                f"{key}: the run being resumed has {a!r}, got {b!r}; a resumed run may change "
                "only server.rounds, runtime keys other than chunks, and faults.kill_worker_*"
            )
    if cfg.server.rounds < ckpt.round:
        raise ConfigError(
            f"server.rounds: must be >= {ckpt.round}, the round of the checkpoint, "
            f"got {cfg.server.rounds}"
        )


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _split(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays[path] = value
        return {"__array__": path}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or k == "__array__":
                raise ValueError(f"checkpoint state key {k!r}: must be a string, not '__array__'")
            out[k] = _split(v, f"{path}.{k}" if path else k, arrays)
        return out
    if isinstance(value, list | tuple):
        return [_split(v, f"{path}.{i}", arrays) for i, v in enumerate(value)]
    return value


def _join(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        return {k: _join(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, arrays) for v in value]
    return value


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    # A rename is durable only once its folder is flushed (POSIX); not possible on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"cannot write {type(v).__name__} to a checkpoint")
