"""The run folder: its file names, atomic writes, the lock, the claim and what a folder holds.

A run folder (``results/<experiment>/<run-id>/`` by default) holds ``config.toml``,
``rounds.csv``, ``clients.csv``, ``partition.csv``, ``summary.json``, ``plots/`` and
``checkpoint/`` (``state.json``, ``model-<round>.npz``, ``lock``), and the loggers' folders
``tensorboard/`` and ``mlruns/`` when ``[logging]`` turns them on. ``config.toml`` is written
last when a run starts: a folder holding it holds a run (and a checkpoint).

A run *claims* its folder before writing anything in it: it takes the folder's lock, and only
then checks what the folder holds. Of two runs started on one folder, the second finds the lock
taken, or the first's ``config.toml``, and stops with a :class:`ConfigError` having changed
nothing. A folder holding files fedsim did not write is never written into.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fedsim.options import ConfigError

CONFIG_FILE = "config.toml"
ROUNDS_FILE = "rounds.csv"
CLIENTS_FILE = "clients.csv"
PARTITION_FILE = "partition.csv"
SUMMARY_FILE = "summary.json"
PROFILE_FILE = "profile.csv"
#: Written by a sweep in the folder of a run that diverged: ``{"round": N, "message": ...}``.
DIVERGED_FILE = "diverged.json"
PLOTS_DIR = "plots"
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
#: Written by ``fedsim reproduce --record`` into a run it re-ran with identical records.
PROVENANCE_FILE = "provenance.json"

#: Every name fedsim writes at the top of a run folder.
RUN_ENTRIES = frozenset(
    {
        CONFIG_FILE,
        ROUNDS_FILE,
        CLIENTS_FILE,
        PARTITION_FILE,
        SUMMARY_FILE,
        PROFILE_FILE,
        DIVERGED_FILE,
        PLOTS_DIR,
        CHECKPOINT_DIR,
        TENSORBOARD_DIR,
        MLFLOW_DIR,
        PROVENANCE_FILE,
    }
)

#: Longest experiment name in bytes: it is one path component, and most file systems allow 255.
MAX_NAME_BYTES = 200


class FolderState(enum.Enum):
    """What a run folder holds, as far as starting or resuming a run is concerned."""

    MISSING = "missing"  # nothing at that path: a run may start there
    EMPTY = "empty"  # an empty folder: a run may start there
    STARTED = "started"  # fedsim's lock and files, no config.toml: a start that died early
    RUN = "run"  # config.toml: holds a run, which only --resume may continue
    FOREIGN = "foreign"  # holds files fedsim did not write: never written into
    NOT_A_FOLDER = "not a folder"  # a file (or a path through one)


def folder_state(path: Path) -> FolderState:
    """Classify ``path``; reading only, never writing."""
    path = Path(path)
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        return FolderState.NOT_A_FOLDER if parent and not parent.is_dir() else FolderState.MISSING
    if not path.is_dir():
        return FolderState.NOT_A_FOLDER
    try:
        names = [p.name for p in path.iterdir()]
    except OSError:
        return FolderState.FOREIGN
    if not names:
        return FolderState.EMPTY
    if any(not (n in RUN_ENTRIES or _is_temporary(n)) for n in names):
        return FolderState.FOREIGN
    # A claim takes the lock before writing anything else: files with fedsim's names but no
    # lock beside them are the user's own (a summary.json of theirs is never overwritten).
    if not (path / CHECKPOINT_DIR / LOCK_FILE).is_file():
        return FolderState.FOREIGN
    return FolderState.RUN if (path / CONFIG_FILE).is_file() else FolderState.STARTED


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be one path component (an experiment's folder), or None."""
    if not name or name.strip() != name:
        return f"must be a non-empty name without leading or trailing spaces, got {name!r}"
    bad = next((c for c in name if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        return f"must not contain control characters, got {name!r}"
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"must be one folder name (no '/', '\\', '.' or '..'), got {name!r}"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"must be at most {MAX_NAME_BYTES} bytes long, got {len(name.encode())}"
    return None


def default_out_dir(cfg: Any, root: Path = Path("results")) -> Path:
    """``results/<experiment>/<timestamp>-<config hash>``, a path no folder holds yet."""
    import hashlib

    digest = hashlib.sha1(
        json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()
    ).hexdigest()[:6]
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{digest}"
    path = root / cfg.experiment.name / stem
    i = 1
    while path.exists():
        path = root / cfg.experiment.name / f"{stem}-{i}"
        i += 1
    return path


def check_out_dir(path: Path, *, resume: bool = False) -> FolderState:
    """ConfigError unless a run may start in ``path`` (or, with ``resume``, continue there).

    Reads only: this is the check made before anything is built or started. :func:`claim`
    makes it again once it holds the lock.
    """
    path = Path(path)
    try:
        state = folder_state(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    if state is FolderState.NOT_A_FOLDER:
        raise ConfigError(f"{path}: is a file (or under one), not a folder for the run")
    if state is FolderState.FOREIGN:
        raise ConfigError(
            f"{path}: is a folder of other files, not a fedsim run; choose an empty or new folder"
        )
    if state is FolderState.RUN and not resume:
        raise ConfigError(
            f"{path}: already holds a run; continue it with fedsim run --resume {path}, "
            "or choose another output folder"
        )
    if state is not FolderState.RUN and resume:
        raise ConfigError(f"{path}: not a run folder (no {CONFIG_FILE})")
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{existing}: cannot be written (permission denied)")
    return state


class RunLock:
    """One process at a time per run folder: an advisory lock the OS drops when it dies.

    Two processes appending to the same records (a job restarted while the old one still
    runs) would interleave them; the second one stops with a ConfigError instead.
    """

    def __init__(self, run_dir: Path) -> None:
        folder = Path(run_dir) / CHECKPOINT_DIR
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._file = (folder / LOCK_FILE).open("a")
        except OSError as err:
            raise ConfigError(f"{run_dir}: cannot be written ({err.strerror})") from None
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


class Claim:
    """A run folder held by this process: its lock, and the folders the claim created."""

    def __init__(self, path: Path, lock: RunLock, created: list[Path]) -> None:
        self.path, self.lock, self.created = path, lock, created

    def release(self) -> None:
        """Drop the lock; if no run was committed (no config.toml), undo what the claim made.

        A folder the claim created is removed with the files fedsim wrote in it, so a start
        that failed leaves nothing behind; a folder that existed before keeps its leftovers,
        which the next claim clears.
        """
        try:
            if self.created and not (self.path / CONFIG_FILE).exists():
                _remove_run_files(self.path)
                for folder in self.created:
                    try:
                        folder.rmdir()
                    except OSError:
                        break
        finally:
            self.lock.close()


def claim(path: Path, *, resume: bool = False) -> Claim:
    """Take ``path`` for one run: the lock first, then the checks; the caller then writes.

    A new run's folder is created; what a start that died before ``config.toml`` left in it is
    removed. On a refusal the folder is left as it was found.
    """
    path = Path(path)
    check_out_dir(path, resume=resume)
    created: list[Path] = []
    for folder in [*reversed(path.parents), path]:
        try:
            folder.mkdir()
            created.append(folder)
        except FileExistsError:
            continue
        except OSError as err:
            raise ConfigError(f"{folder}: cannot create the run folder ({err.strerror})") from None
    created.reverse()  # deepest first, the order to remove them in
    lock = RunLock(path)
    held = Claim(path, lock, created)
    try:
        # Checked again under the lock: another run may have claimed the folder meanwhile.
        state = check_out_dir(path, resume=resume)
    except BaseException:
        held.release()
        raise
    if state is FolderState.STARTED:
        _remove_run_files(path, keep_checkpoint=True)
    return held


def _remove_run_files(path: Path, *, keep_checkpoint: bool = False) -> None:
    """Delete what fedsim writes in ``path`` (the lock file stays while it is held)."""
    import shutil

    for name in (ROUNDS_FILE, CLIENTS_FILE, SUMMARY_FILE, PARTITION_FILE, PROFILE_FILE):
        (path / name).unlink(missing_ok=True)
    for folder in (PLOTS_DIR, TENSORBOARD_DIR, MLFLOW_DIR):
        shutil.rmtree(path / folder, ignore_errors=True)
    for entry in path.iterdir():
        if _is_temporary(entry.name):
            entry.unlink(missing_ok=True)
    ckpt = path / CHECKPOINT_DIR
    if not keep_checkpoint and ckpt.is_dir():
        for entry in ckpt.iterdir():
            entry.unlink(missing_ok=True)
        ckpt.rmdir()


# --- atomic writes --------------------------------------------------------------------------


def write_bytes(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``path`` atomically: a temporary file beside it, then a rename over it.

    With ``durable`` the data is flushed to disk before the rename, so that after a power cut
    ``path`` holds either the old or the new content, never a mix.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_append(path: Path) -> BinaryIO:
    """``path`` opened to append to (created if missing): a record file that grows by rows."""
    return Path(path).open("ab")


def append_bytes(path: Path, data: bytes) -> int:
    """Append ``data`` to ``path`` (created if missing), flushed; return the file's new size.

    Record files grow this way, a round's rows at a time; the size returned is what a
    checkpoint records to cut the file back to on resume.
    """
    with open_append(path) as f:
        f.write(data)
        f.flush()
        return os.fstat(f.fileno()).st_size


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (numpy scalars as numbers)."""
    write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries: a rename is durable only once its folder is (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"cannot write {type(v).__name__} as JSON")


# --- configs of runs ------------------------------------------------------------------------


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf values of nested tables under dotted keys (``{"server": {"rounds": 5}}`` ->
    ``{"server.rounds": 5}``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
