"""Checkpoints of a run folder: written atomically, read without executing code.

A checkpoint is ``checkpoint/state.json`` (JSON) naming ``checkpoint/model-<round>.npz`` (numpy
arrays, read with ``allow_pickle=False``) and its SHA-256. ``state.json`` carries the SHA-256 of
its own content (``state_sha256``, over the canonical JSON of everything else in it), so an
edited round number, record offset or config is refused rather than trusted. Writing one:

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
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.options import ConfigError
from fedsim.rundir import (
    CHECKPOINT_DIR,
    LOCK_FILE,
    STATE_FILE,
    flatten_config,
    fsync_dir,
    json_default,
    write_bytes,
)

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
        "runtime.profile",
        "faults.kill_worker_at_round",
        "faults.kill_worker_times",
        "logging.tensorboard",
        "logging.mlflow",
    }
)

FORMAT = 2
#: Keys every checkpoint's state holds, with their JSON types.
_REQUIRED = {"round": int, "server": dict, "records": dict, "config": dict, "history": dict}


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
    write_bytes(folder / model_name, blob, durable=True)
    tree = {
        **tree,
        "format": FORMAT,
        "model_file": model_name,
        "model_sha256": hashlib.sha256(blob).hexdigest(),
    }
    tree["state_sha256"] = _state_digest(tree)
    text = json.dumps(tree, indent=1, default=json_default) + "\n"
    write_bytes(folder / STATE_FILE, text.encode(), durable=True)
    fsync_dir(folder)
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
        found = tree.get("format") if isinstance(tree, dict) else None
        raise ConfigError(
            f"{path}: not a fedsim checkpoint of format {FORMAT} (found {found!r}); "
            "it cannot be resumed by this version"
        )
    if tree.pop("state_sha256", None) != _state_digest(tree):
        raise ConfigError(f"{path}: damaged or edited checkpoint (checksum mismatch)")
    name = tree.get("model_file")
    if not isinstance(name, str) or Path(name).name != name or not name:
        raise ConfigError(f"{path}: damaged checkpoint (bad model_file {name!r})")
    model = path.parent / name
    try:
        blob = model.read_bytes()
    except OSError as err:
        raise ConfigError(f"{model}: cannot read checkpoint model ({err.strerror})") from None
    if hashlib.sha256(blob).hexdigest() != tree.get("model_sha256"):
        raise ConfigError(f"{model}: damaged checkpoint (checksum mismatch)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        state = _join(tree, arrays)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{model}: damaged checkpoint ({err})") from None
    for key in ("format", "model_file", "model_sha256"):
        state.pop(key)
    if not isinstance(state.get("round"), int) or isinstance(state["round"], bool):
        raise ConfigError(f"{path}: damaged checkpoint ('round' missing or not an integer)")
    return Checkpoint(state["round"], state, path)


def check_run_state(ckpt: Checkpoint) -> None:
    """ConfigError unless ``ckpt`` holds what resuming a run reads (a run's checkpoint)."""
    for key, kind in _REQUIRED.items():
        value = ckpt.state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(
                f"{ckpt.path}: not a run's checkpoint ({key!r} missing or not {kind.__name__})"
            )


def _state_digest(tree: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a checkpoint's state (keys sorted, no spaces)."""
    text = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def check_resumable(
    ckpt: Checkpoint, cfg: Any, defaults_table: dict[str, Any] | None = None
) -> None:
    """ConfigError unless ``cfg`` (a Config) may continue the run ``ckpt`` was taken from.

    ``defaults_table`` (the default config's tables) stands in for keys the run's config lacks.
    """
    before, now = flatten_config(ckpt.state["config"]), flatten_config(cfg.to_dict())
    # A key added to fedsim after the run started had its default value in that run.
    defaults = flatten_config(defaults_table or {})
    for key in sorted(before.keys() | now.keys()):
        if key in RESUMABLE_KEYS:
            continue
        a, b = before.get(key, defaults.get(key, "unset")), now.get(key, "unset")
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            raise ConfigError(
                f"{key}: the run being resumed has {a!r}, got {b!r}; a resumed run may change "
                "only server.rounds, runtime keys other than chunks, faults.kill_worker_* "
                "and logging.*"
            )
    if cfg.server.rounds < ckpt.round:
        raise ConfigError(
            f"server.rounds: must be >= {ckpt.round}, the round of the checkpoint, "
            f"got {cfg.server.rounds}"
        )


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
