#!/usr/bin/env bash
# One SLURM task = one JAX process = one GPU. launch/gpu_slurm.sbatch runs this through srun
# on every task: it checks the environment JAX's SLURM detection reads, then execs
# `emotalker "$@"` (EMOTALKER overrides the program: tests/test_launch.py puts a stub there).
#
# jax.distributed.initialize() (emotalker_jax/parallel.py calls it without arguments) reads
# jax/_src/clusters/slurm_cluster.py's variables:
#   SLURM_JOB_ID         coordinator port = 61440 + SLURM_JOB_ID % 4096 (JAX_COORDINATOR_PORT
#                        overrides it, e.g. when two jobs share a first node)
#   SLURM_STEP_NODELIST  coordinator host = the step's first node ("node[001-002]" -> node001)
#   SLURM_NTASKS         number of processes
#   SLURM_PROCID         process id
#   SLURM_LOCALID        local_device_ids = [SLURM_LOCALID]: an index into the GPUs that this
#                        process sees, so every task must see all of its node's GPUs. This
#                        script never narrows CUDA_VISIBLE_DEVICES (narrowing it to one GPU
#                        leaves local ids 1..7 without the device JAX selects), and it stops
#                        with an error when SLURM bound fewer GPUs to the task than that.
set -euo pipefail

die() {
  echo "slurm_task.sh: $*" >&2
  exit 2
}

for var in SLURM_JOB_ID SLURM_STEP_NODELIST SLURM_NTASKS SLURM_PROCID SLURM_LOCALID; do
  [[ -n "${!var:-}" ]] || die "$var is not set: run this script through srun inside an" \
    "allocation (sbatch launch/gpu_slurm.sbatch), where SLURM sets it for every task"
done

if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  IFS=, read -r -a visible <<< "$CUDA_VISIBLE_DEVICES"
  if (( SLURM_LOCALID >= ${#visible[@]} )); then
    die "task $SLURM_PROCID (SLURM_LOCALID=$SLURM_LOCALID) sees" \
      "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES (${#visible[@]} GPU(s)), but JAX selects" \
      "visible GPU number $SLURM_LOCALID: request GPUs per node (--gpus-per-node), not per" \
      "task (--gpus-per-task), and run srun with --gpu-bind=none"
  fi
fi

exec "${EMOTALKER:-.venv/bin/emotalker}" "$@"
