#!/usr/bin/env bash
# The GPU suite: everything multibox has to check and measure on a GPU, in one run of under 8 minutes on one
# H100/H200, written to one markdown file ready to paste into benchmarks/RESULTS.md:
#
#   1. the GPU tests (tests/gpu, `pytest -m cuda`): bf16/fp16 training, predict --half, nvJPEG decode,
#      channels_last, a 1-GPU NCCL DDP step, ONNX Runtime's CUDA provider when installed
#   2. the user path on the GPU: `multibox train` (bf16, channels_last, data.decode=gpu), `eval`, `bench`
#   3. a training step against torchvision: SSD300-VGG16 and SSDLite320, bf16, channels_last, batch 64
#   4. a training epoch with the real loader: data.decode=gpu (nvJPEG) against decode=cpu (OpenCV workers)
#   5. postprocess (decode, threshold, top-k, NMS) on the GPU against torchvision's
#   6. COCO evaluation (faster-coco-eval) against pycocotools, 5,000 images
#
# Each part runs under its own time limit, and no part starts past the suite's budget (SUITE_BUDGET, 470 s);
# a part that fails or times out is recorded as such in the markdown and the rest still run. The exit status
# is the number of parts that did not pass.
#
#   bash benchmarks/gpu_suite.sh                          # on the GPU machine: writes gpu_suite.md
#   bash benchmarks/gpu_suite.sh --out $OUT/gpu_suite.md  # (the device tool brings back what is under $OUT)
#   bash benchmarks/gpu_suite.sh --device cpu --quick     # dry run on a CPU-only machine: tiny sizes, every part
#   bash benchmarks/gpu_suite.sh --only tests,epoch       # some parts: tests cli train_step epoch postprocess eval
#
# Python: $PYTHON, else .venv/bin/python when `make install` made one, else python3. A GPU machine that
# reaches no package index (so `make install` cannot run there) needs the packages its image lacks: fetch
# them beforehand with `bash benchmarks/gpu_wheels.sh` where the index is reachable, and bring .whl/ along;
# they are installed with --no-index into .gpu-site/ (git-ignored), which goes first on PYTHONPATH.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT_MD=gpu_suite.md
DEVICE=cuda
QUICK=0
ONLY=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) OUT_MD=$2; shift 2 ;;
        --device) DEVICE=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "error: $1: unknown option (see --help)" >&2; exit 2 ;;
    esac
done
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite.XXXXXX")
WORK=$LOGS/work
mkdir -p "$WORK" "$(dirname "$OUT_MD")"
START=$(date +%s)
BUDGET=${SUITE_BUDGET:-470}
FAILED=0

# --- Python and packages ------------------------------------------------------------------------------
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
SITE=$ROOT/.gpu-site
NEEDED="import pydantic, albumentations, faster_coco_eval, pycocotools"
if compgen -G ".whl/*.whl" >/dev/null && ! "$PYTHON" -c "$NEEDED" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$SITE" .whl/*.whl \
        >"$LOGS/wheels.log" 2>&1 || echo "warning: installing .whl/ failed (see $LOGS/wheels.log)" >&2
fi
export PYTHONPATH=$ROOT${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore MPLBACKEND=Agg
if [[ $DEVICE == cpu ]]; then export MULTIBOX_GPU_TESTS_DEVICE=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi
CORES=$(getconf _NPROCESSORS_ONLN)  # (nproc follows OMP_NUM_THREADS)
export PYTHON WORK DEVICE CORES

# --- sizes: a full run on the GPU, or tiny ones for the CPU dry run ----------------------------------------
if [[ $QUICK == 1 ]]; then
    STEP_ARGS=(--model ssdlite320_mobilenet_v3_large --batch 2 --steps 1 --warmup 1 --no-memory)
    EPOCH_ARGS=(--images 16 --size 96x128 --workers 1 --epochs 1)
    POST_ARGS=(--batch 2 --repeats 1)
    EVAL_IMAGES=50
    CLI_IMAGES=16
    CLI_SIZE=64x64
    LIMIT_SCALE=${LIMIT_SCALE:-4}
else
    LIMIT_SCALE=${LIMIT_SCALE:-1}
    STEP_ARGS=(--batch 64 --steps 10 --warmup 3)
    EPOCH_ARGS=(--images 1024 --size 480x640 --workers "$(( $CORES > 2 ? $CORES - 2 : 1 ))" --epochs 2)
    POST_ARGS=(--batch 64 --repeats 20)
    EVAL_IMAGES=5000
    CLI_IMAGES=512
    CLI_SIZE=320x320
fi
PRECISION=bf16
if [[ $DEVICE == cpu ]]; then PRECISION=fp32; fi  # bf16 convolutions on a CPU measure nothing useful

# --- one part: time-limited, logged, its stdout (markdown tables) kept, a failure recorded ---------------
# part NAME SECONDS TITLE COMMAND...
part() {
    local name=$1 limit=$2 title=$3
    shift 3
    if [[ -n $ONLY && ,$ONLY, != *,$name,* && ,$ONLY, != *,${name%%_*},* ]]; then return 0; fi
    local log=$LOGS/$name.log out=$LOGS/$name.out rc=0 begin end left
    left=$(( START + BUDGET - $(date +%s) ))
    if (( left < 20 )); then
        printf '### %s\n\n**not run**: the suite budget of %s s was spent\n\n' "$title" "$BUDGET" >>"$OUT_MD"
        FAILED=$((FAILED + 1))
        return 0
    fi
    limit=$(( limit * LIMIT_SCALE ))  # the CPU dry run is slower than a GPU; a loaded machine more so
    (( limit > left )) && limit=$left
    echo "[$(date -u +%H:%M:%S)] $name (limit ${limit} s): $*" >&2
    begin=$(date +%s.%N)
    # bash -c: a part may be a function of this script (exported below)
    timeout --kill-after=10 "$limit" bash -c '"$@"' part "$@" >"$out" 2>"$log" || rc=$?
    end=$(date +%s.%N)
    local seconds
    seconds=$(awk -v a="$begin" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    local status="passed"
    if [[ $rc == 124 || $rc == 137 ]]; then status="**TIMED OUT** after ${limit} s"; FAILED=$((FAILED + 1))
    elif [[ $rc != 0 ]]; then status="**FAILED** (exit status $rc)"; FAILED=$((FAILED + 1)); fi
    {
        echo "### $title"
        echo
        echo "\`$*\` — $status, ${seconds} s"
        echo
        if [[ $name == tests ]]; then
            echo '```'
            grep -E "passed|failed|error|skipped|^(FAILED|ERROR|SKIPPED)" "$out" | tail -n 30 || true
            echo '```'
        else
            cat "$out"
        fi
        if [[ $status != passed ]]; then
            echo
            echo '<details><summary>last lines of stderr</summary>'
            echo
            echo '```'
            tail -n 25 "$log" | cut -c1-300
            echo '```'
            echo '</details>'
        fi
        echo
    } >>"$OUT_MD"
    echo "[$(date -u +%H:%M:%S)] $name: $status, ${seconds} s" >&2
}

# --- the header: machine, versions ------------------------------------------------------------------------
{
    echo "## GPU suite ($(date -u +%Y-%m-%d), $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'), device $DEVICE$([[ $QUICK == 1 ]] && echo ', quick dry run'))"
    echo
    echo "\`bash benchmarks/gpu_suite.sh $([[ $DEVICE != cuda ]] && echo "--device $DEVICE ")$([[ $QUICK == 1 ]] && echo '--quick')\`"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    echo "$CORES CPU cores, load $(cut -d' ' -f1 /proc/loadavg)"
    "$PYTHON" - <<'PY' 2>&1 || true
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "torchvision", "lightning", "onnxruntime", "albumentations", "faster_coco_eval", "pydantic"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:  # a missing package: the parts that need it fail and say so
        print(name, "MISSING:", type(error).__name__, error)
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import onnxruntime
print("onnxruntime providers", onnxruntime.get_available_providers())
PY
    echo '```'
    echo
} >"$OUT_MD"
if [[ $DEVICE == cuda ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "**No CUDA device visible to $PYTHON: every part below fails or skips.**" >>"$OUT_MD"
    echo >>"$OUT_MD"
fi

# --- 1. the GPU tests ---------------------------------------------------------------------------------------
part tests 150 "GPU tests (tests/gpu)" "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda -rfEs tests/gpu

# --- 2. the user path: synth, train, eval, bench --------------------------------------------------------------
cli_path() {
    set -euo pipefail
    local data=$WORK/cli_data run=$WORK/cli_run accelerator=gpu decode=gpu precision=bf16-mixed
    if [[ $DEVICE == cpu ]]; then accelerator=cpu; precision="'32'"; fi
    "$PYTHON" -m multibox data synth "$data" --images "$CLI_IMAGES" --size "$CLI_SIZE" --seed 0 >/dev/null
    local t0 t1 t2 t3
    t0=$(date +%s.%N)
    "$PYTHON" -m multibox train -c configs/demo.yaml "data.train.images=$data/images" \
        "data.train.annotations=$data/annotations.json" data.val_split=0.2 "data.decode=$decode" \
        "data.num_workers=$(( $CORES > 2 ? 4 : 1 ))" "train.accelerator=$accelerator" "train.precision=$precision" \
        train.channels_last=true train.epochs=2 train.progress=false "train.output_dir=$run" >/dev/null
    t1=$(date +%s.%N)
    "$PYTHON" -m multibox eval --weights "$run/checkpoints/last.ckpt" "train.accelerator=$accelerator" \
        --out "$WORK/cli_metrics.json" >/dev/null
    t2=$(date +%s.%N)
    echo '```'  # bench prints a terminal table
    "$PYTHON" -m multibox bench --weights "$run/checkpoints/last.ckpt" --device "$DEVICE" --batch-sizes 1,32
    echo '```'
    t3=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v n="$CLI_IMAGES" -v s="$CLI_SIZE" 'BEGIN {
        printf "\n| step (%d synthetic images of %s, configs/demo.yaml) | seconds |\n|---|---|\n", n, s
        printf "| multibox train, 2 epochs (decode gpu, channels_last, mixed precision), with its final eval and report | %.1f |\n", b - a
        printf "| multibox eval of the 20%% val split | %.1f |\n| multibox bench | %.1f |\n", c - b, d - c }'
    "$PYTHON" -c "import json, sys; m = json.load(open(sys.argv[1])); print(f\"\nmAP {m['map']:.3f}, mAP@0.5 {m['map_50']:.3f} after 2 epochs\")" \
        "$WORK/cli_metrics.json"
}
export -f cli_path
export CLI_IMAGES CLI_SIZE
part cli 120 "The user path on the device: multibox train, eval, bench" cli_path

# --- 3. training step against torchvision --------------------------------------------------------------------
part train_step 150 "Training step against torchvision ($PRECISION, channels_last)" \
    "$PYTHON" benchmarks/bench_train_step.py --device "$DEVICE" --precision "$PRECISION" --channels-last "${STEP_ARGS[@]}"

# --- 4. epoch with the real loader, GPU decode against CPU decode --------------------------------------------
part epoch_gpu_decode 90 "Training epoch, data.decode=gpu (nvJPEG + transforms.v2 on the device)" \
    "$PYTHON" benchmarks/bench_epoch.py --device "$DEVICE" --decode gpu "${EPOCH_ARGS[@]}"
part epoch_cpu_decode 90 "Training epoch, data.decode=cpu (OpenCV + albumentations in loader workers)" \
    "$PYTHON" benchmarks/bench_epoch.py --device "$DEVICE" --decode cpu "${EPOCH_ARGS[@]}"

# --- 5. postprocess; 6. COCO evaluation ------------------------------------------------------------------------
part postprocess 45 "Postprocess on the device against torchvision" \
    "$PYTHON" benchmarks/bench_postprocess.py --device "$DEVICE" "${POST_ARGS[@]}"
part eval 150 "COCO evaluation: faster-coco-eval against pycocotools" \
    "$PYTHON" benchmarks/bench_eval.py --images "$EVAL_IMAGES"

TOTAL=$(( $(date +%s) - START ))
{
    echo "Whole suite: ${TOTAL} s; parts not passed: $FAILED. Logs: $LOGS"
} >>"$OUT_MD"
echo "wrote $OUT_MD (${TOTAL} s, $FAILED part(s) not passed)" >&2
exit "$FAILED"
