#!/bin/sh
# Every run of results/compression/, in priority order (one process at a time, local backend):
# the headline comparisons with 3 seeds, then one seed of every other configuration, then
# their other two seeds. Repeating the script skips finished runs (fedsim sweep) and resumes
# an interrupted one from its checkpoint.
set -e
cd "$(dirname "$0")/../.."
base=experiments/compression/base.toml
runs=results/compression/runs
sweep() { fedsim sweep "$base" --no-plots -q "$@"; }
sweep --seeds 3 --out "$runs/int8" --grid compression.up=none,int8
sweep --seeds 3 --out "$runs/topk1" --grid compression.up=topk --grid compression.fraction=0.01 \
  --grid compression.error_feedback=false,true
for seeds in 1 3; do
  sweep --seeds $seeds --out "$runs/qsgd" --grid compression.up=qsgd --grid compression.bits=4,2
  sweep --seeds $seeds --out "$runs/topk10" --grid compression.up=topk \
    --grid compression.fraction=0.1 --grid compression.error_feedback=false,true
  sweep --seeds $seeds --out "$runs/sign" --grid compression.up=sign
done
# The figures and the table: python experiments/compression/report.py
