#!/usr/bin/env bash
# configs/custom_data.yaml against the hand-made baseline (demo config + the data's input size + anchors.auto,
# 10 epochs) on a synthetic set unlike the demo's (benchmarks/custom_data_sets.py). Issue 15.
#
#   benchmarks/custom_data_bench.sh parcels /tmp/cd-bench [WALL_LIMIT_S] [both|base|recipe]
#
# Each run is bounded by WALL_LIMIT_S (default 900) and timed with /usr/bin/time -v (CPU seconds beside the
# wall clock, since a shared machine's load stretches the wall clock); `uptime` is logged every 60 s, and
# every epoch's val mAP is in <out>/runs/<name>/metrics.csv. The runs go one after the other (side by side, each
# would get one of two cores and its wall clock would say nothing). The recipe runs with MULTIBOX_OFFLINE=1: from
# scratch, as on a machine that cannot download the ImageNet file (model.scratch_width_mult).
set -euo pipefail
kind=${1:?set: parcels or tall}; out=${2:?output folder}; limit=${3:-900}; which=${4:-both}
here=$(cd "$(dirname "$0")/.." && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
sets=$out/sets/$kind
[ -f "$sets/val/annotations.json" ] || python "$here/benchmarks/custom_data_sets.py" "$kind" "$sets"
short=$(python -c "import json,sys; i=json.load(open(sys.argv[1]))['images'][0]; print(min(i['height'],i['width']), max(i['height'],i['width']), int(i['height']<=i['width']))" "$sets/train/annotations.json")
read -r s l landscape <<<"$short"
if [ "$landscape" = 1 ]; then size="[$s,$l]"; else size="[$l,$s]"; fi
data=(data.train.images="$sets/train/images" data.train.annotations="$sets/train/annotations.json"
      data.val.images="$sets/val/images" data.val.annotations="$sets/val/annotations.json" train.progress=false)
mkdir -p "$out/logs"
( while true; do echo "$(date -u +%T) $(uptime)"; sleep 60; done ) >"$out/logs/$kind-uptime.log" &
sampler=$!
run() {  # name, config, overrides...
  local name=$1 config=$2; shift 2
  /usr/bin/time -v timeout "$limit" multibox train -c "$config" "${data[@]}" train.output_dir="$out/runs/$kind-$name" "$@" \
    >"$out/logs/$kind-$name.log" 2>&1 || true
}
if [ "$which" != recipe ]; then
  run base "$here/configs/demo.yaml" "data.input_size=$size" anchors.auto=true train.epochs=10
fi
if [ "$which" != base ]; then
  MULTIBOX_OFFLINE=1 run recipe "$here/configs/custom_data.yaml"
fi
kill "$sampler"
for name in base recipe; do
  log=$out/logs/$kind-$name.log
  [ -f "$log" ] || continue
  echo "$kind $name: $(grep -E 'Elapsed \(wall|User time|System time|Exit status' "$log" | tr -s ' \t' ' ' | paste -sd';')"
  python - "$out/runs/$kind-$name/metrics.csv" <<'EOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("val/map_50")]
for r in rows:
    print(f"  epoch {r['epoch']}: mAP@0.5 {float(r['val/map_50']):.3f}  mAP {float(r['val/map']):.3f}")
EOF
done
