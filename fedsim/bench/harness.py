"""``fedsim bench``: fedsim, the plain numpy floor and, optionally, Flower on the same workload.

Every system runs as its own process, measured from outside (wall time, peak memory of its
largest process) and from inside (seconds per round). The systems of one workload take turns
within each repetition, so a noisy neighbour slows all of them alike, and each figure is the
median over repetitions. Steady state is the median round time after the first two rounds.
"""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedsim import config as config_mod
from fedsim.bench.probe import Measured, note_peak, run_measured
from fedsim.tables import markdown_table

# The folder that holds this fedsim package: a source checkout, or site-packages when installed.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# The workloads that ship with the package, by name (w1, w2, ...).
WORKLOADS = Path(__file__).resolve().with_name("workloads")
_ROUND_LINE = re.compile(r"\[ROUND (\d+)\]")
_SUMMARY_LINE = re.compile(r"\[SUMMARY\]")


@dataclass
class Run:
    """One process of one system on one workload."""

    workload: str
    system: str  # fedsim | floor | floor (reference script) | Flower
    workers: str  # fedsim: a number or "local"; others: "-"
    repeat: int
    rounds: int
    steady_s: float  # median seconds per round after the first two
    first_s: float  # the first round (NaN where unknown)
    process_s: float  # the whole process, start-up and shutdown included
    peak_rss_mib: float
    peak_process: str
    server_s: float = float("nan")  # fedsim: median selection + timeline time per round
    train_s: float = float("nan")  # fedsim: median training + aggregation time per round


def steady_state(round_s: list[float]) -> float:
    """Median of the rounds after the first two (after the first when there are 2-3 rounds)."""
    if not round_s:
        return float("nan")
    skip = 2 if len(round_s) >= 4 else min(1, len(round_s) - 1)
    return statistics.median(round_s[skip:])


def workload_names() -> list[str]:
    """The names of the workloads that ship with the package."""
    return sorted(p.stem for p in WORKLOADS.glob("*.toml"))


def find_config(name: str) -> Path:
    """A workload's config: a path, or the name of a workload shipped in ``workloads/``."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    candidate = WORKLOADS / f"{name}.toml"
    if candidate.exists():
        return candidate
    raise FileNotFoundError(
        f"no workload {name!r}: not a file, nor one of {', '.join(workload_names())}"
    )


def find_reference_dir(given: str | None) -> Path | None:
    """The folder of the reference scripts: given, or ``shared/bench`` beside a source checkout."""
    if given:
        candidates = [Path(given)]
    elif (PACKAGE_ROOT / "pyproject.toml").exists():
        candidates = [PACKAGE_ROOT.parent / "shared" / "bench"]
    else:
        candidates = []  # an installed package: only --reference-dir names them
    for c in candidates:
        if (c / "raw_floor.py").exists() or (c / "flower_softmax.py").exists():
            return c
    return None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The subprocesses import this very fedsim, whatever is installed.
    root = str(PACKAGE_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RAY_DEDUP_LOGS", "1")
    # A Ray of its own, even where a cluster started with `ray start` is running on the machine.
    env["RAY_ADDRESS"] = "local"
    return env


def _last_json(m: Measured) -> dict[str, Any]:
    for _, line in reversed(m.lines):
        if line.startswith("{"):
            out = json.loads(line)
            note_peak(m, "python", out.get("peak_rss_bytes", 0))
            return out
    raise RuntimeError(f"no result (exit code {m.returncode}):\n{m.output[-3000:]}")


def _mib(m: Measured) -> float:
    return m.peak_rss_bytes / 2**20


def _sets(overrides: list[str] | tuple[str, ...]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def run_fedsim(
    workload: str,
    config: Path,
    rounds: int,
    workers: str,
    repeat: int,
    overrides: list[str] | tuple[str, ...] = (),
) -> Run:
    """fedsim in its own process; seconds per round as its driver sees them."""
    cmd = [sys.executable, "-m", "fedsim.bench.target", str(config), "--rounds", str(rounds)]
    m = run_measured([*cmd, "--workers", workers, *_sets(overrides)], env=_env())
    out = _last_json(m)
    return Run(
        workload,
        "fedsim",
        workers,
        repeat,
        rounds,
        steady_state(out["round_s"]),
        out["round_s"][0],
        m.wall_s,
        _mib(m),
        m.peak_process,
        statistics.median(out["server_s"]),
        statistics.median(out["train_s"]),
    )


def run_floor(
    workload: str,
    config: Path,
    rounds: int,
    threads: int,
    repeat: int,
    overrides: list[str] | tuple[str, ...] = (),
) -> Run:
    """The plain numpy loop of :mod:`fedsim.bench.floors` in its own process."""
    cmd = [sys.executable, "-m", "fedsim.bench.floors", str(config), "--rounds", str(rounds)]
    m = run_measured([*cmd, "--threads", str(threads), *_sets(overrides)], env=_env())
    times = _last_json(m)["round_s"]
    return Run(
        workload, "floor", "-", repeat, rounds, steady_state(times), times[0], m.wall_s, _mib(m),
        m.peak_process,
    )  # fmt: skip


def _nk(config: Path) -> tuple[int, int]:
    cfg = config_mod.load(config)
    return cfg.population.num_clients, cfg.server.clients_per_round


def run_reference_floor(
    workload: str, config: Path, rounds: int, ref_dir: Path, repeat: int
) -> Run:
    n, k = _nk(config)
    m = run_measured([sys.executable, str(ref_dir / "raw_floor.py"), str(n), str(k), str(rounds)])
    if m.returncode:
        raise RuntimeError(f"raw_floor.py failed:\n{m.output[-3000:]}")
    nan = float("nan")
    return Run(
        workload, "floor (reference script)", "-", repeat, rounds, nan, nan, m.wall_s, _mib(m),
        m.peak_process,
    )  # fmt: skip


def flower_round_times(lines: list[tuple[float, str]]) -> list[float]:
    """Seconds per round from the arrival times of Flower's ``[ROUND k]`` and summary lines."""
    marks = [t for t, line in lines if _ROUND_LINE.search(line)]
    end = [t for t, line in lines if _SUMMARY_LINE.search(line)]
    if end:
        marks.append(end[0])
    return [b - a for a, b in zip(marks[:-1], marks[1:], strict=False)]


def run_flower(
    workload: str, config: Path, rounds: int, python: str, ref_dir: Path, repeat: int
) -> Run:
    n, k = _nk(config)
    env = {key: v for key, v in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    env["RAY_ADDRESS"] = "local"
    script = ref_dir / "flower_softmax.py"
    m = run_measured([python, str(script), str(n), str(k), str(rounds)], env=env)
    times = flower_round_times(m.lines)
    if m.returncode or len(times) != rounds:
        raise RuntimeError(f"Flower failed (exit {m.returncode}):\n{m.output[-3000:]}")
    return Run(
        workload, "Flower", "-", repeat, rounds, steady_state(times), times[0], m.wall_s, _mib(m),
        m.peak_process,
    )  # fmt: skip


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (workload, system, workers): medians over repetitions, with ratios."""
    keys: list[tuple[str, str, str]] = []
    for r in runs:
        if (r.workload, r.system, r.workers) not in keys:
            keys.append((r.workload, r.system, r.workers))
    rows = []
    for workload, system, workers in keys:
        mine = [r for r in runs if (r.workload, r.system, r.workers) == (workload, system, workers)]
        rows.append(
            {
                "workload": workload,
                "system": system,
                "workers": workers,
                "runs": len(mine),
                "rounds": mine[0].rounds,
                "steady_s": _median([r.steady_s for r in mine]),
                "first_s": _median([r.first_s for r in mine]),
                "process_s": _median([r.process_s for r in mine]),
                "peak_rss_mib": max(r.peak_rss_mib for r in mine),
                "peak_process": max(mine, key=lambda r: r.peak_rss_mib).peak_process,
                "server_s": _median([r.server_s for r in mine]),
                "train_s": _median([r.train_s for r in mine]),
            }
        )
    for row in rows:
        floor = _find(rows, row["workload"], "floor")
        flower = _find(rows, row["workload"], "Flower")
        row["vs_floor"] = row["steady_s"] / floor if floor else float("nan")
        row["flower_over_this"] = flower / row["steady_s"] if flower else float("nan")
    return rows


def _median(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


def _find(rows: list[dict[str, Any]], workload: str, system: str) -> float | None:
    for row in rows:
        if (
            row["workload"] == workload
            and row["system"] == system
            and row["steady_s"] == row["steady_s"]
        ):
            return row["steady_s"]
    return None


def _fmt(v: float, unit: str = "", digits: int = 3) -> str:
    if v != v:
        return "-"
    if unit == "s":
        return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "x":
        return f"{v:.{digits}g}x"
    return f"{v:.0f}"


def _peak(row: dict[str, Any]) -> str:
    # A process too short-lived for the sampler that did not report itself: unknown.
    return f"{row['peak_rss_mib']:.0f} ({row['peak_process']})" if row["peak_rss_mib"] else "-"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The summary rows as the Markdown table ``fedsim bench`` prints and saves."""
    headers = [
        "workload", "system", "workers", "rounds", "s/round (steady)", "first round", "process",
        "vs floor", "Flower / this", "peak RSS (MiB, largest process)",
    ]  # fmt: skip
    cells = [
        [
            r["workload"],
            r["system"],
            r["workers"],
            r["rounds"],
            _fmt(r["steady_s"], "s"),
            _fmt(r["first_s"], "s"),
            _fmt(r["process_s"], "s"),
            _fmt(r["vs_floor"], "x"),
            _fmt(r["flower_over_this"], "x"),
            _peak(r),
        ]  # fmt: skip
        for r in rows
    ]
    return markdown_table(headers, cells)


def machine() -> dict[str, Any]:
    """What the numbers came from: the code, libraries, machine and command
    (:func:`fedsim.provenance.provenance`) and the load average when the bench started."""
    from fedsim.provenance import provenance

    info = provenance()
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


@dataclass(frozen=True)
class Plan:
    """What ``fedsim bench`` runs of each workload (its options' defaults are the command's)."""

    workers: tuple[str, ...]  # fedsim worker counts; "local" = in-process
    rounds: int  # 0: max(the config's, 10)
    repeat: int
    floor_threads: int  # BLAS threads of the floor; 0 = the library's default
    reference_dir: Path | None  # raw_floor.py / flower_softmax.py
    flower_python: str | None  # a Python with flwr[simulation]; None: no Flower
    flower_rounds: int  # 0: the config's
    flower_repeat: int


def run_workloads(
    workloads: Sequence[str], plan: Plan, log: Callable[[str], None] = print
) -> list[Run]:
    """Every system of ``plan`` on each workload, in turns within each repetition."""
    configs = [(Path(w).stem if Path(w).suffix else w, find_config(w)) for w in workloads]
    ref_dir = plan.reference_dir
    runs: list[Run] = []

    def done(run: Run) -> None:
        runs.append(run)
        log(
            f"  {run.workload} {run.system} workers={run.workers} #{run.repeat}: "
            f"{_fmt(run.steady_s, 's')}/round steady, process {_fmt(run.process_s, 's')}"
        )

    for name, config in configs:
        cfg = config_mod.load(config)
        rounds = plan.rounds or max(cfg.server.rounds, 10)
        is_w = cfg.data.name == "softmax_bench"
        log(f"{name}: {config} ({rounds} rounds)")
        for rep in range(plan.repeat):
            done(run_floor(name, config, rounds, plan.floor_threads, rep))
            if is_w and ref_dir is not None and (ref_dir / "raw_floor.py").exists():
                done(run_reference_floor(name, config, cfg.server.rounds, ref_dir, rep))
            for w in plan.workers:
                done(run_fedsim(name, config, rounds, w, rep))
        if is_w and plan.flower_python:
            if ref_dir is None or not (ref_dir / "flower_softmax.py").exists():
                log("  Flower skipped: flower_softmax.py not found (--reference-dir)")
                continue
            for rep in range(plan.flower_repeat):
                flower_rounds = plan.flower_rounds or cfg.server.rounds
                done(run_flower(name, config, flower_rounds, plan.flower_python, ref_dir, rep))
    return runs


def write_results(runs: list[Run], out: Path, info: dict[str, Any]) -> tuple[str, list[Path]]:
    """Write summary.csv, runs.csv, table.md and ``info`` as machine.json; return the table and
    the files."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(runs)
    table = markdown(rows)
    written = [out / "summary.csv", out / "runs.csv", out / "table.md", out / "machine.json"]
    _write_csv(written[0], rows)
    _write_csv(written[1], [asdict(r) for r in runs])
    written[2].write_text(table + "\n")
    written[3].write_text(json.dumps(info, indent=2) + "\n")
    return table, written


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
