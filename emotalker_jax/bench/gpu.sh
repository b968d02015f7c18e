#!/usr/bin/env bash
# The three GPU goals in one run (under 8 minutes on one H100/H200): base256 bf16 train-step
# MFU, sampler frames/s at 256x256 with 25 guided steps, and the PyTorch/JAX sampler time
# ratio; one JSON (`emotalker bench gpu`, emotalker_jax/bench/gpu.py) and a printed summary.
#
#   bash emotalker_jax/bench/gpu.sh [--wheels DIR] [--python PY] [--out OUT.json]
#        [--config configs/X.py] [--dtype bfloat16|float32] [other `emotalker bench` flags]
#
# The machine needs a CUDA JAX and a CUDA PyTorch already installed; it needs no network.
# The project's other (pure-Python and CPU) dependencies travel as a wheel folder, prepared
# on a machine with network and the same Python version and platform:
#
#   bash emotalker_jax/bench/gpu.sh --prepare-wheels DIR
#
# which runs `pip download --no-deps --only-binary=:all: -d DIR -r <locks minus jax, jaxlib,
# torch>` (requirements/runtime.txt and test.txt pin every package; jax/jaxlib/torch are the
# CUDA builds already on the GPU machine). On the GPU machine, `--wheels DIR` first runs
# `pip install --no-index --no-deps --find-links DIR -r <the same list>`.
#
# Defaults: --config configs/base256.py --dtype bfloat16 --batch 32 --steps 25 --repeats 3
# --warmup 1 --out bench_gpu.json. A CPU smoke run at tiny size (what tests/test_bench.py does):
#   JAX_PLATFORMS=cpu bash emotalker_jax/bench/gpu.sh --config configs/tiny.py --dtype float32 \
#       --batch 2 --steps 2 --repeats 1 --warmup 0 --matmul-n 512 --out /tmp/gpu.json
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"         # the checkout (or site-packages) holding the package
PY="${PYTHON:-python}"
WHEELS=""
PREPARE=""
OUT="bench_gpu.json"
CONFIG="$ROOT/configs/base256.py"
DTYPE="bfloat16"
REST=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --prepare-wheels) PREPARE="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --dtype) DTYPE="$2"; shift 2 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) REST+=("$1"); shift ;;
  esac
done

# The locks (runtime + test: the benchmark needs torch and diffusers) without the packages
# the GPU machine brings in their CUDA builds.
requirements() {
  local lock
  for lock in "$ROOT/requirements/runtime.txt" "$ROOT/requirements/test.txt"; do
    if [[ ! -f "$lock" ]]; then
      echo "gpu.sh: $lock not found (run from a checkout of the repository)" >&2
      exit 2
    fi
  done
  cat "$ROOT/requirements/runtime.txt" "$ROOT/requirements/test.txt" | grep -v -E '^(-r|#)' \
    | grep -v -i -E '^(jax|jaxlib|torch|triton|nvidia-[a-z0-9-]+)([=<>~ ;[]|$)'
}

if [[ -n "$PREPARE" ]]; then
  mkdir -p "$PREPARE"
  "$PY" -m pip download --no-deps --only-binary=:all: -d "$PREPARE" -r <(requirements)
  echo "gpu.sh: wheels in $PREPARE; copy it to the GPU machine and pass --wheels DIR"
  exit 0
fi

if [[ -n "$WHEELS" ]]; then
  "$PY" -m pip install --no-index --no-deps --find-links "$WHEELS" -r <(requirements)
fi

# Run this checkout's code (no install needed); relative paths are the caller's; the last
# --batch/--steps/... given wins.
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m emotalker_jax.cli bench gpu \
  --config "$CONFIG" "--config.dtype=$DTYPE" --batch 32 --steps 25 --repeats 3 --warmup 1 \
  --json "$OUT" ${REST[@]+"${REST[@]}"}
