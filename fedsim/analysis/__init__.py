"""Analysis of finished runs: loading run folders, comparison tables and paper-ready figures.

Names are imported on first use, so importing one module of the package does not pay for
pandas and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsim.analysis.compare import compare_runs, write_comparison
    from fedsim.analysis.figure import save_figure
    from fedsim.analysis.plots import (
        plot_accuracy_loss_vs_rounds,
        plot_accuracy_vs_bytes,
        plot_accuracy_vs_time,
        plot_runs,
    )
    from fedsim.analysis.run_plots import (
        plot_client_times,
        plot_label_distribution,
        plot_round_outcomes,
    )
    from fedsim.analysis.runs import (
        Run,
        config_differences,
        flatten_config,
        group_seeds,
        load_run,
        load_runs,
        rounds_to_target,
    )

_HOMES = {
    "Run": "runs",
    "load_run": "runs",
    "load_runs": "runs",
    "flatten_config": "runs",
    "config_differences": "runs",
    "group_seeds": "runs",
    "rounds_to_target": "runs",
    "compare_runs": "compare",
    "write_comparison": "compare",
    "plot_accuracy_vs_bytes": "plots",
    "plot_accuracy_vs_time": "plots",
    "plot_accuracy_loss_vs_rounds": "plots",
    "plot_round_outcomes": "run_plots",
    "plot_client_times": "run_plots",
    "plot_label_distribution": "run_plots",
    "plot_runs": "plots",
    "save_figure": "figure",
}

__all__ = [
    "Run",
    "compare_runs",
    "config_differences",
    "flatten_config",
    "group_seeds",
    "load_run",
    "load_runs",
    "plot_accuracy_loss_vs_rounds",
    "plot_accuracy_vs_bytes",
    "plot_accuracy_vs_time",
    "plot_client_times",
    "plot_label_distribution",
    "plot_round_outcomes",
    "plot_runs",
    "rounds_to_target",
    "save_figure",
    "write_comparison",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    # Cache, so the lookup runs once per name.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
