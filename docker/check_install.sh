#!/usr/bin/env bash
# Runs docker/Dockerfile's install step the way the image does, without Docker: a fresh clone of the committed
# tree, the Dockerfile's own `make install ...` line with /opt/venv replaced by a temporary venv, then
# `multibox --version` and a 1-epoch `multibox demo` from that venv. Part of `make test-all`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
install=$(sed -n 's/^RUN \(make install .*\)$/\1/p' "$repo/docker/Dockerfile")
[ -n "$install" ] || { echo "error: docker/Dockerfile: no 'RUN make install ...' line" >&2; exit 1; }
extras=$(sed -n 's/^ARG EXTRAS=//p' "$repo/docker/Dockerfile" | tr -d '"')
git clone --quiet "$repo" "$work/src"
cd "$work/src"
command -v python3.11 >/dev/null || install=${install/PYTHON=python3.11/PYTHON=python3}
echo "+ ${install//\/opt\/venv/$work/venv}  (EXTRAS=$extras)"
EXTRAS=$extras eval "${install//\/opt\/venv/$work/venv}"
"$work/venv/bin/multibox" --version
(cd "$work" && "$work/venv/bin/multibox" demo --out "$work/demo" train.epochs=1)
test -s "$work/demo/run/metrics.json"
echo "container install check: ok"
