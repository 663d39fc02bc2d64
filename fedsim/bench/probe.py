"""Run a command and measure it from outside: wall time, timestamped output lines, peak memory.

Peak memory is the largest high-water mark of resident memory (``VmHWM`` in Linux's
``/proc/PID/status``) over the command's whole process tree, which for a Ray program includes
the Ray daemons and every worker. The tree is sampled every ``poll_s`` seconds; a high-water
mark only grows, so only a process that is born and dies between two samples can be missed.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")


@dataclass
class Measured:
    """What :func:`run_measured` saw."""

    returncode: int
    wall_s: float
    lines: list[tuple[float, str]]  # (seconds since start, line without its newline)
    peak_rss_bytes: int = 0  # largest VmHWM of any process of the tree (0 where unknown)
    peak_process: str = ""  # that process's command name
    peaks: dict[int, tuple[str, int]] = field(default_factory=dict)  # pid -> (name, VmHWM)

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces; the parent pid follows.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    children = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def peak_rss(pid: int) -> tuple[str, int] | None:
    """(command name, peak resident bytes) of a live process, or None."""
    try:
        status = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    name, hwm = "", 0
    for line in status.splitlines():
        if line.startswith("Name:"):
            name = line[len("Name:") :].strip()
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return name, hwm


def self_peak_rss() -> int:
    """This process's own peak resident bytes (``VmHWM``; ``ru_maxrss`` where there is none).

    ``VmHWM`` starts afresh at exec; ``ru_maxrss`` may still count the parent that forked us.
    """
    got = peak_rss(os.getpid())
    if got is not None and got[1]:
        return got[1]
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_measured(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 0.5,
) -> Measured:
    """Run ``cmd`` (stdout and stderr merged), timestamping each line as it arrives.

    A Python child is run unbuffered (``PYTHONUNBUFFERED=1``): writing to a pipe, it would
    otherwise hold its lines back until exit and every timestamp would be the last one.
    """
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env=env,
        cwd=cwd,
    )
    result = Measured(returncode=-1, wall_s=0.0, lines=[])
    done = threading.Event()
    watch = _PROC.is_dir()

    def sample() -> None:
        for pid in process_tree(proc.pid):
            got = peak_rss(pid)
            if got is not None and got[1] >= result.peaks.get(pid, ("", -1))[1]:
                result.peaks[pid] = got

    def poll() -> None:
        while not done.wait(poll_s):
            sample()

    poller = threading.Thread(target=poll, daemon=True) if watch else None
    if poller is not None:
        poller.start()
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            result.lines.append((time.perf_counter() - start, line.rstrip("\n")))
            if watch and "FEDSIM_BENCH_SAMPLE" in line:
                sample()  # the program asks for a sample before it shuts its processes down
        result.returncode = proc.wait()
    finally:
        timer.cancel()
        done.set()
        if poller is not None:
            poller.join()
    result.wall_s = time.perf_counter() - start
    _set_peak(result)
    return result


def note_peak(result: Measured, name: str, peak_bytes: int) -> None:
    """Add a peak the program reported itself (a process too short-lived to be sampled)."""
    if peak_bytes > result.peaks.get(-1, ("", -1))[1]:
        result.peaks[-1] = (name, peak_bytes)
    _set_peak(result)


def _set_peak(result: Measured) -> None:
    if result.peaks:
        pid = max(result.peaks, key=lambda p: result.peaks[p][1])
        result.peak_process, result.peak_rss_bytes = result.peaks[pid]
