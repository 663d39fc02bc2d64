#!/bin/sh
# Regenerates results/finance/runs/ (3 seeds of each config); then make_table.py writes the table.
set -e
cd "$(dirname "$0")/../.."
for cfg in splitnn hetero_lr breast_cancer_splitnn; do
  for seed in 0 1 2; do
    out=results/finance/runs/$cfg-seed$seed
    rm -rf "$out"
    fedsim run experiments/finance/$cfg.toml --set experiment.seed=$seed --out "$out" -q
  done
done
python results/finance/make_table.py
