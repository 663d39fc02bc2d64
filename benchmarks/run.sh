#!/usr/bin/env bash
# Reproduce the README's Performance table and the scalability results in one go:
#   benchmarks/run.sh [PATH_TO_A_PYTHON_WITH_FLOWER]
# Without a Flower Python the table has no Flower rows. Takes about 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
flower=()
if [ "$#" -ge 1 ]; then
  flower=(--flower-python "$1")
fi
python -m fedsim.cli bench w1 w2 fmnist_2nn --workers 1,2 --repeat 3 "${flower[@]}" --out results/bench
python experiments/scalability/run.py --repeat 2
