#!/bin/sh
# Regenerates results/transfer/runs/: experiments/transfer/ftl.toml at five overlap sizes,
# seeds 0-4. Epochs are set so that every run takes about 400 minibatch steps of 32 overlap
# samples (ceil(overlap / 32) steps an epoch), so that small overlaps are not also short
# trainings. Then make_table.py writes table.csv, table.md and the figure.
set -e
cd "$(dirname "$0")/../.."
for pair in 20:400 50:200 100:100 200:57 400:31; do
  overlap=${pair%%:*}
  epochs=${pair##*:}
  for seed in 0 1 2 3 4; do
    out=results/transfer/runs/overlap$overlap-seed$seed
    rm -rf "$out"
    fedsim run experiments/transfer/ftl.toml --set experiment.seed=$seed \
      --set transfer.overlap=$overlap --set transfer.epochs=$epochs --out "$out" -q
  done
done
python results/transfer/make_table.py
