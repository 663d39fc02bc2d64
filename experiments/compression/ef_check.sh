#!/bin/sh
# Top-k with error feedback against without it, in results/compression/ef_runs/ (one process
# at a time, local backend; base.toml otherwise): the grid's own setting (100 clients, 10 per
# round) run for 100 rounds instead of 50, and full participation (10 clients on 20 shards,
# all of them every round) with top-k 0.1% and 1%. Repeating the script skips finished runs
# and resumes an interrupted one from its checkpoint.
set -e
cd "$(dirname "$0")/../.."
base=experiments/compression/base.toml
runs=results/compression/ef_runs
sweep() {
  fedsim sweep "$base" --no-plots -q --set "compression.up='topk'" \
    --grid compression.error_feedback=false,true "$@"
}
full="--set population.num_clients=10 --set server.clients_per_round=10 --set partition.num_shards=20"
sweep --set compression.fraction=0.01 --set server.rounds=100 --seeds 3 --out "$runs/partial_topk1"
# shellcheck disable=SC2086
sweep $full --set compression.fraction=0.001 --seeds 3 --out "$runs/full10_topk01"
# shellcheck disable=SC2086
sweep $full --set compression.fraction=0.01 --seeds 3 --out "$runs/full10_topk1"
# What the residuals carry, round by round (results/compression/ef_diagnostics_*.csv):
python experiments/compression/ef_diagnostics.py full10 20
python experiments/compression/ef_diagnostics.py partial 30
# The tables: python experiments/compression/report.py (ef_table.md, ef_pairs.md)
