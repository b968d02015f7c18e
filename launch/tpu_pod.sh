#!/usr/bin/env bash
# Train EmoTalker on a Cloud TPU VM slice (v5e / v5p / v6e), one process per host.
#
#   launch/tpu_pod.sh create            # create the slice
#   launch/tpu_pod.sh setup             # copy the repo to every worker and `make setup`
#   launch/tpu_pod.sh train --config.train.batch_size=1024 --config.mesh.fsdp=16
#   launch/tpu_pod.sh ssh 'nvidia-smi || true'  # any command on all workers
#   launch/tpu_pod.sh delete
#
# Settings come from the environment (defaults in brackets):
#   TPU_NAME [emotalker], ZONE [us-central2-b], ACCEL [v5p-64], RUNTIME [v2-alpha-tpuv5],
#   CONFIG [configs/base256.py], WORKDIR [gs://YOUR_BUCKET/emotalker/run1] (orbax writes
#   checkpoints there directly), DATA_DIR [gs://YOUR_BUCKET/tfds].
# Every host runs the same command; jax.distributed.initialize() finds the slice from the
# TPU metadata (emotalker_jax/parallel.py), and each host reads its own shard of the data.
set -euo pipefail
TPU_NAME=${TPU_NAME:-emotalker}
ZONE=${ZONE:-us-central2-b}
ACCEL=${ACCEL:-v5p-64}
RUNTIME=${RUNTIME:-v2-alpha-tpuv5}
CONFIG=${CONFIG:-configs/base256.py}
WORKDIR=${WORKDIR:-gs://YOUR_BUCKET/emotalker/run1}
DATA_DIR=${DATA_DIR:-gs://YOUR_BUCKET/tfds}
REPO_DIR=${REPO_DIR:-emotalker-jax}

tpu() { gcloud compute tpus tpu-vm "$@" --zone "$ZONE"; }
on_all() { tpu ssh "$TPU_NAME" --worker=all --command "$1"; }

cmd=${1:-help}; shift || true
case "$cmd" in
  create) tpu create "$TPU_NAME" --accelerator-type "$ACCEL" --version "$RUNTIME" ;;
  setup)
    tpu scp --recurse --worker=all "$(git rev-parse --show-toplevel)" "$TPU_NAME:$REPO_DIR"
    # On TPU hosts jax needs the TPU runtime: install jax[tpu] at the lock's version.
    on_all "cd $REPO_DIR && make setup && .venv/bin/pip install -q 'jax[tpu]==$(grep '^jax==' requirements/lock.txt | cut -d= -f3)'" ;;
  train)
    on_all "cd $REPO_DIR && JAX_PLATFORMS=tpu .venv/bin/emotalker train --config $CONFIG \
      --workdir $WORKDIR --config.data.data_dir=$DATA_DIR $*" ;;
  ssh) on_all "$*" ;;
  delete) tpu delete "$TPU_NAME" --quiet ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
