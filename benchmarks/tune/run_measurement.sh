#!/usr/bin/env bash
# Issue 19's measurement: 12 `multibox tune` trials within a fixed 20-minute budget on a small-object synthetic
# set, by two workers sharing one SQLite study (one per core, one thread each, as the README's multi-worker
# recipe runs them), then the default config trained the same way. Run from any folder:
#   benchmarks/tune/run_measurement.sh WORKDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-tune_measurement}
mkdir -p "$work" && cd "$work"
cp "$here/small_objects.yaml" "$here/space.yaml" .
export OMP_NUM_THREADS=1
[ -d data/train ] || multibox data synth data/train --images 480 --size 96x160 --seed 11 --min-size 0.08 --max-size 0.3
[ -d data/val ] || multibox data synth data/val --images 96 --size 96x160 --seed 12 --min-size 0.08 --max-size 0.3
uptime
start=$(date +%s)
for worker in 1 2; do
  multibox tune -c small_objects.yaml --space space.yaml --trials 6 --timeout 1200 --out tune --study small-objects \
    > "worker$worker.log" 2>&1 &
  sleep 20  # the first worker creates the study
done
wait
echo "tune wall seconds: $(( $(date +%s) - start ))"; uptime
start=$(date +%s)
multibox train -c small_objects.yaml train.output_dir=runs/default > default.log 2>&1
echo "default wall seconds: $(( $(date +%s) - start ))"; uptime
tail -n 20 worker1.log worker2.log default.log
