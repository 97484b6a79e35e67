#!/usr/bin/env bash
# Issue 19's measurement: 12 `multibox tune` trials within a fixed 25-minute budget on a small-object synthetic
# set, then the default config trained the same way. Run from any folder: ./run_measurement.sh WORKDIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-tune_measurement}
mkdir -p "$work" && cd "$work"
cp "$here/small_objects.yaml" "$here/space.yaml" .
[ -d data/train ] || multibox data synth data/train --images 96 --size 96x160 --seed 11 --min-size 0.08 --max-size 0.3
[ -d data/val ] || multibox data synth data/val --images 32 --size 96x160 --seed 12 --min-size 0.08 --max-size 0.3
uptime
start=$(date +%s)
multibox tune -c small_objects.yaml --space space.yaml --trials 12 --timeout 1500 --out tune --study small-objects
echo "tune wall seconds: $(( $(date +%s) - start ))"; uptime
start=$(date +%s)
multibox train -c small_objects.yaml train.output_dir=runs/default
echo "default wall seconds: $(( $(date +%s) - start ))"; uptime
