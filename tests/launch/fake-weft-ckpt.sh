#!/usr/bin/env bash
# A stand-in for `weft train` that behaves as the checkpoint feature is specified, so
# test_slurm.sh can check the SLURM plumbing of launch/slurm/train.sbatch (signal forwarding
# to every rank, requeue, resume on the next run) on its own, whether or not the real weft
# has the feature yet:
#   - --ckpt-dir DIR --resume auto: when DIR/latest exists, rank 0 prints "resumed from PATH"
#     and the run continues after that step;
#   - SIGUSR1 or SIGTERM: the rank finishes its current step, rank 0 writes DIR/latest and
#     prints "checkpoint saved PATH", and every rank exits 0;
#   - a step takes 0.2 s; the run ends after --steps steps.
# Rank = PMIX_RANK (srun --mpi=pmix) or SLURM_PROCID. Not a model of anything else in weft.
set -euo pipefail

[ "${1:-}" = train ] || {
  echo "fake-weft-ckpt: only 'train' is implemented (got '${1:-}')" >&2
  exit 2
}
shift
ckpt_dir="" resume="" steps=5
while [ $# -gt 0 ]; do
  case "$1" in
    --ckpt-dir) ckpt_dir=$2 && shift 2 ;;
    --resume) resume=$2 && shift 2 ;;
    --steps) steps=$2 && shift 2 ;;
    --ckpt-every | --keep) shift 2 ;;
    *) shift ;;
  esac
done
[ -n "$ckpt_dir" ] || {
  echo "fake-weft-ckpt: --ckpt-dir is required" >&2
  exit 2
}
rank=${PMIX_RANK:-${SLURM_PROCID:-0}}

stop=0
trap 'stop=1' USR1 TERM
step=0
if [ "$resume" = auto ] && [ -f "$ckpt_dir/latest" ]; then
  step=$(cat "$ckpt_dir/latest")
  [ "$rank" != 0 ] || echo "fake-weft-ckpt: resumed from $ckpt_dir/step-$step"
fi
echo "fake-weft-ckpt: rank $rank running from step $step"
while [ "$step" -lt "$steps" ]; do
  # SLURM delivers a step's signals to every process of a task, this sleep included: its
  # death by SIGUSR1 is expected, and bash reports it on stderr.
  sleep 0.2 || true
  step=$((step + 1))
  if [ "$stop" -eq 1 ]; then
    if [ "$rank" = 0 ]; then
      echo "$step" >"$ckpt_dir/latest"
      echo "fake-weft-ckpt: checkpoint saved $ckpt_dir/step-$step"
    fi
    echo "fake-weft-ckpt: rank $rank stopped after step $step"
    exit 0
  fi
done
echo "fake-weft-ckpt: rank $rank done after step $step"
