#!/usr/bin/env bash
# Fetch, on a machine that reaches the package index, the wheels that benchmarks/gpu_suite.sh needs on a GPU
# machine that reaches nothing: the packages multibox uses beyond those such an image already has (PyTorch,
# torchvision, Lightning, OpenCV, ONNX Runtime, matplotlib, rich, PyYAML, pytest, ...). They land in .whl/
# (git-ignored), for CPython 3.12 on x86-64 Linux by default; the suite installs them with --no-index.
#
#   bash benchmarks/gpu_wheels.sh                   # then carry .whl to the GPU machine with the repository
#   PY_VERSION=3.11 bash benchmarks/gpu_wheels.sh   # for another Python on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PY_VERSION=${PY_VERSION:-3.12}
DEST=${WHEEL_DIR:-.whl}
# Versions as in the local environment when it has them (pydantic and pydantic-core must match each other).
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection albumentations albucore stringzilla simsimd
          typing-extensions faster-coco-eval pycocotools)
mkdir -p "$DEST"
specs=()
for name in "${PACKAGES[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
    specs+=("${name}${version:+==$version}")
done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    "${platforms[@]}" -d "$DEST" "${specs[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
ls -1 "$DEST"
du -sh "$DEST"
