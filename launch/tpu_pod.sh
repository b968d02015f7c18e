#!/usr/bin/env bash
# Train EmoTalker on a Cloud TPU VM slice (v5p / v5e / v6e), one process per host.
#
#   launch/tpu_pod.sh create            # create the slice
#   launch/tpu_pod.sh setup             # copy the committed tree to every worker, runtime venv
#   launch/tpu_pod.sh train --config.train.steps=50000   # emotalker train on every worker
#   launch/tpu_pod.sh train-bg ...      # the same, detached (nohup): survives a lost ssh
#   launch/tpu_pod.sh logs [N]          # last N [40] lines of every worker's train-bg log
#   launch/tpu_pod.sh ssh 'CMD'         # any command on all workers, in the repository
#   launch/tpu_pod.sh delete
#
# Settings come from the environment (defaults in brackets):
#   TPU_NAME [emotalker], ZONE [us-east5-a], PROJECT [gcloud's default], ACCEL [v5p-64],
#   RUNTIME [v2-alpha-tpuv5] (v5e: v2-alpha-tpuv5-lite, v6e: v2-alpha-tpuv6e),
#   CONFIG [configs/mead.py], WORKDIR [gs://YOUR_BUCKET/emotalker/run1] (orbax writes
#   checkpoints there directly), DATA_DIR [gs://YOUR_BUCKET/tfds], REPO_DIR [emotalker-jax]
#   (the copy's folder in each worker's home).
# Every host runs the same command; jax.distributed.initialize() finds the slice from the
# TPU metadata (emotalker_jax/parallel.py), and each host reads its own shard of the data.
set -euo pipefail
TPU_NAME=${TPU_NAME:-emotalker}
ZONE=${ZONE:-us-east5-a}
PROJECT=${PROJECT:-}
ACCEL=${ACCEL:-v5p-64}
RUNTIME=${RUNTIME:-v2-alpha-tpuv5}
CONFIG=${CONFIG:-configs/mead.py}
WORKDIR=${WORKDIR:-gs://YOUR_BUCKET/emotalker/run1}
DATA_DIR=${DATA_DIR:-gs://YOUR_BUCKET/tfds}
REPO_DIR=${REPO_DIR:-emotalker-jax}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

tpu() { gcloud compute tpus tpu-vm "$@" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"}; }
on_all() { tpu ssh "$TPU_NAME" --worker=all --command "$1"; }

# The emotalker train command line, each argument quoted for the workers' shell.
train_cmd() {
  local args
  args=$(printf ' %q' train --config "$CONFIG" --workdir "$WORKDIR" \
    "--config.data.data_dir=$DATA_DIR" "$@")
  echo "JAX_PLATFORMS=tpu .venv/bin/emotalker$args"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  create) tpu create "$TPU_NAME" --accelerator-type "$ACCEL" --version "$RUNTIME" ;;
  setup)
    # The committed tree (git archive HEAD): no .venv, workdirs or data ride along.
    if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]]; then
      echo "tpu_pod.sh: uncommitted changes are not copied (git archive HEAD)" >&2
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    tarball=$tmp/emotalker-jax.tar.gz
    git -C "$ROOT" archive --format=tar.gz -o "$tarball" HEAD
    tpu scp --worker=all "$tarball" "$TPU_NAME:emotalker-jax.tar.gz"
    jax_version=$(grep -i '^jax==' "$ROOT/requirements/runtime.txt" | cut -d= -f3)
    # TPU VM images are Ubuntu 22.04 (Python 3.10): the lock needs Python 3.11. Only the
    # runtime lock (no torch, no test tools), then jax[tpu] at the lock's jax version
    # (it adds libtpu; jaxlib stays the lock's).
    on_all "set -e
      if ! command -v python3.11 >/dev/null || ! command -v make >/dev/null; then
        sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv make
      fi
      mkdir -p $REPO_DIR && tar -xzf emotalker-jax.tar.gz -C $REPO_DIR && cd $REPO_DIR
      make setup-runtime
      .venv/bin/pip install -q 'jax[tpu]==$jax_version'" ;;
  train) on_all "cd $REPO_DIR && $(train_cmd "$@")" ;;
  train-bg)
    on_all "cd $REPO_DIR && nohup bash -c $(printf %q "$(train_cmd "$@")") \
      > train.log 2>&1 < /dev/null &" ;;
  logs) on_all "tail -n ${1:-40} $REPO_DIR/train.log" ;;
  ssh) on_all "cd $REPO_DIR && $*" ;;
  delete) tpu delete "$TPU_NAME" --quiet ;;
  *)
    sed -n '2,19p' "${BASH_SOURCE[0]}"
    exit 2
    ;;
esac
