"""``fedsim bench``: fedsim, the plain numpy floor and, optionally, Flower on the same workload.

Every system runs as its own process, measured from outside (wall time, peak memory of its
largest process) and from inside (seconds per round). The systems of one workload take turns
within each repetition, so a noisy neighbour slows all of them alike, and each figure is the
median over repetitions. Steady state is the median round time after the first two rounds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedsim import config as config_mod
from fedsim.bench.probe import Measured, note_peak, run_measured

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WORKLOADS = ("w1", "w2")
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


def find_config(name: str) -> Path:
    """A workload's config: a path, or a name under experiments/bench/."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    for base in (Path.cwd(), REPO):
        candidate = base / "experiments" / "bench" / f"{name}.toml"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no workload {name!r}: not a file, nor experiments/bench/{name}.toml")


def find_reference_dir(given: str | None) -> Path | None:
    """The folder of the reference scripts: given, or ``shared/bench`` beside the work tree."""
    candidates = [Path(given)] if given else [REPO.parent / "shared" / "bench"]
    for c in candidates:
        if (c / "raw_floor.py").exists() or (c / "flower_softmax.py").exists():
            return c
    return None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The subprocesses import this very fedsim, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
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
    head = (
        "| workload | system | workers | rounds | s/round (steady) | first round | process | "
        "vs floor | Flower / this | peak RSS (MiB, largest process) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    body = "".join(
        f"| {r['workload']} | {r['system']} | {r['workers']} | {r['rounds']} | "
        f"{_fmt(r['steady_s'], 's')} | {_fmt(r['first_s'], 's')} | {_fmt(r['process_s'], 's')} | "
        f"{_fmt(r['vs_floor'], 'x')} | {_fmt(r['flower_over_this'], 'x')} | "
        f"{_peak(r)} |\n"
        for r in rows
    )
    return head + body


def machine() -> dict[str, Any]:
    """What the numbers came from."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    from importlib.metadata import PackageNotFoundError, version

    for package in ("numpy", "ray"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    return info


def run_bench(args: argparse.Namespace) -> int:
    configs = [(Path(w).stem if Path(w).suffix else w, find_config(w)) for w in args.workloads]
    ref_dir = find_reference_dir(args.reference_dir)
    workers = [w.strip() for w in args.workers.split(",") if w.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    runs: list[Run] = []

    def done(run: Run) -> None:
        runs.append(run)
        print(
            f"  {run.workload} {run.system} workers={run.workers} #{run.repeat}: "
            f"{_fmt(run.steady_s, 's')}/round steady, process {_fmt(run.process_s, 's')}",
            flush=True,
        )

    for name, config in configs:
        cfg = config_mod.load(config)
        rounds = args.rounds or max(cfg.server.rounds, 10)
        is_w = cfg.data.name == "softmax_bench"
        print(f"{name}: {config} ({rounds} rounds)", flush=True)
        for rep in range(args.repeat):
            done(run_floor(name, config, rounds, args.floor_threads, rep))
            if is_w and ref_dir is not None and (ref_dir / "raw_floor.py").exists():
                done(run_reference_floor(name, config, cfg.server.rounds, ref_dir, rep))
            for w in workers:
                done(run_fedsim(name, config, rounds, w, rep))
        if is_w and args.flower_python:
            if ref_dir is None or not (ref_dir / "flower_softmax.py").exists():
                print("  Flower skipped: flower_softmax.py not found (--reference-dir)")
                continue
            for rep in range(args.flower_repeat):
                flower_rounds = args.flower_rounds or cfg.server.rounds
                done(run_flower(name, config, flower_rounds, args.flower_python, ref_dir, rep))
    rows = summarise(runs)
    table = markdown(rows)
    print()
    print(table)
    _write_csv(out / "runs.csv", [asdict(r) for r in runs])
    _write_csv(out / "summary.csv", rows)
    (out / "table.md").write_text(table)
    (out / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"written: {out}/summary.csv, runs.csv, table.md, machine.json")
    return 0


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``fedsim bench``."""
    p.add_argument(
        "workloads",
        nargs="*",
        default=list(DEFAULT_WORKLOADS),
        metavar="WORKLOAD",
        help="names under experiments/bench/ or config paths (default: w1 w2)",
    )
    p.add_argument(
        "--workers",
        default="1,2",
        help="fedsim worker counts, comma separated; 'local' = in-process (default: 1,2)",
    )
    p.add_argument("--rounds", type=int, default=0, help="rounds (default: max(config, 10))")
    p.add_argument("--repeat", type=int, default=3, help="repetitions, medians reported (3)")
    p.add_argument(
        "--floor-threads", type=int, default=1, help="BLAS threads of the floor (1; 0 = default)"
    )
    p.add_argument(
        "--flower-python",
        metavar="PATH",
        help="a Python with flwr[simulation] installed; adds Flower to W workloads",
    )
    p.add_argument(
        "--flower-rounds", type=int, default=0, help="Flower's rounds (default: the config's)"
    )
    p.add_argument("--flower-repeat", type=int, default=1, help="Flower repetitions (1)")
    p.add_argument(
        "--reference-dir",
        metavar="DIR",
        help="folder of raw_floor.py / flower_softmax.py (default: ../shared/bench of the repo)",
    )
    p.add_argument("--out", default="results/bench", help="output folder (results/bench)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedsim bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
