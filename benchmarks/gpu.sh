#!/usr/bin/env bash
# Time REARM on Baby, Sports and Clothing (paper presets) in one run on a bare GPU machine.
#
# The GPU machine has Python and torch with CUDA but no DGL and no network, so DGL travels as
# a wheel in .whl/ (git ignores it). Here, with network, once:
#   benchmarks/gpu.sh --fetch-wheels          # dgl 2.1.0 for CPython 3.12 into .whl/
#   mkdir -p data/amazon && cp -r ../shared/data/amazon/{baby,sports,clothing} data/amazon/
# There (carry .whl and data/amazon with the working tree):
#   benchmarks/gpu.sh --source data/amazon --out "$OUT"
# On the CPU, as the test does:
#   benchmarks/gpu.sh --device cpu --quick --datasets baby --source DIR --out DIR
# Every other argument goes to benchmarks/gpu.py (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # DGL's other requirements (numpy, scipy, networkx, requests, tqdm, psutil) are on the
    # GPU machine already; torchdata is not needed (rearm_dgl._dgl stubs graphbolt).
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux1_x86_64 -d .whl dgl==2.1.0
fi

has_dgl='import importlib.util, sys; sys.exit(importlib.util.find_spec("dgl") is None)'
if ! python3 -c "$has_dgl" && compgen -G ".whl/*.whl" > /dev/null; then
    site="${TMPDIR:-/tmp}/rearm-dgl-site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu.py "$@"
