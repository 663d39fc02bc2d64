"""Summarise results/finance/runs/*/summary.json into table.csv and table.md (mean ± sd)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def rows() -> list[dict]:
    out = []
    for f in sorted((HERE / "runs").glob("*/summary.json")):
        s = json.loads(f.read_text())
        config = f.parent.name.rsplit("-seed", 1)[0]
        common = {"config": config, "seed": s["seed"]}
        bytes_total = s["bytes_up_total"] + s["bytes_down_total"]
        out.append(
            {
                **common,
                "method": s["algorithm"],
                "auc": s["test_auc"],
                "accuracy": s["final_test_accuracy"],
                "bytes": bytes_total,
                "psi_bytes": s["psi_bytes"],
                "sim_time_s": s["sim_time_s"],
                "wall_time_s": s["wall_time_s"],
            }
        )
        for base in ("centralised", "active_only"):
            out.append(
                {
                    **common,
                    "method": base,
                    "auc": s[f"{base}_auc"],
                    "accuracy": s[f"{base}_accuracy"],
                    "bytes": 0,
                    "psi_bytes": 0,
                    "sim_time_s": float("nan"),
                    "wall_time_s": s[f"{base}_wall_time_s"],
                }
            )
    return out


def main() -> None:
    frame = pd.DataFrame(rows())
    frame.to_csv(HERE / "table.csv", index=False)
    lines = [
        "| config | method | AUC | accuracy | MB sent (of which PSI) | sim. time s | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for (config, method), g in frame.groupby(["config", "method"], sort=False):

        def ms(col: str, fmt: str, g: pd.DataFrame = g) -> str:
            return f"{g[col].mean():{fmt}} ± {g[col].std():{fmt}}"

        mb = f"{g['bytes'].mean() / 1e6:.2f} ({g['psi_bytes'].mean() / 1e6:.2f})"
        sim = "-" if g["sim_time_s"].isna().all() else ms("sim_time_s", ".1f")
        lines.append(
            f"| {config} | {method} | {ms('auc', '.4f')} | {ms('accuracy', '.4f')} | {mb} | "
            f"{sim} | {ms('wall_time_s', '.1f')} |"
        )
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
