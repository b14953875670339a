#!/usr/bin/env bash
# Both published-comparison runs, one after the other, each holding the shared heavy-run lock.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src
for dataset in mnist fashion-mnist; do
    flock /tmp/aelab-heavy.lock nice -n 5 python benchmarks/published.py --dataset "$dataset" "$@"
done
