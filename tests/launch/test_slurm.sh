#!/usr/bin/env bash
# Runs weft under a real, private, one-node SLURM (launch/local-slurm.sh) and checks the
# launch scripts end to end:
#
#   1. the cluster starts (munged, slurmctld, slurmd; node idle) and `srun --mpi=list` offers
#      pmix; `srun --mpi=pmix` starts 2 ranks of `weft info` that see each other;
#   2. launch/weft-run inside an allocation uses srun: 2 ranks, and 4 ranks in a 2-CPU
#      allocation (weft-run adds --overcommit);
#   3. `sbatch --wait launch/slurm/train.sbatch` trains a tiny model for 5 steps on 2 tasks:
#      sbatch's exit status, the output file and `scontrol show job` (COMPLETED, 0:0) agree;
#      with the checkpoint feature, the periodic checkpoints land in CKPT_DIR;
#   4. the signal/requeue/resume plumbing of train.sbatch, with tests/launch/fake-weft-ckpt.sh
#      standing in for weft: `scancel --signal=USR1 --batch` reaches every rank through the
#      batch shell's trap, "checkpoint saved" appears, the step exits 0, the job requeues
#      itself, and its next run prints "resumed from" and completes;
#   5. the same with the real weft (tiny model): "checkpoint saved" with the path, a clean
#      exit, requeue, "resumed from" in the next run;
#   6. finetune.sbatch refuses to start without --from/--data; with `weft finetune`, a short
#      fine-tuning job from the checkpoint of 3 completes, and a signalled fine-tuning job
#      checkpoints, requeues, and its next run resumes from its own CKPT_DIR (not --from).
# Parts 3 (checkpoints), 5 and 6 (the runs) need `weft train --ckpt-dir` / `weft finetune`;
# where weft lacks them those parts are skipped with a note and the rest still runs.
# Requeued jobs are released early (scontrol update StartTime=now, see requeued()).
# `sacct` is not used: the test cluster has no slurmdbd (see launch/local-slurm.sh).
#
# Usage: tests/launch/test_slurm.sh [WEFT_BINARY]   (ctest: launch.slurm)
# Exit 0 on success, 77 (skipped) when SLURM or munge is not installed, the test is not root,
# or the daemons cannot start here (the reason is printed), 1 on failure. KEEP_T=1 keeps the
# temporary folder (configuration, daemon logs, job output).
set -euo pipefail
trap 'echo "test_slurm.sh: command failed at line $LINENO: $BASH_COMMAND" >&2' ERR

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
weft=${1:-$repo/build/weft}
start=$SECONDS

skip() {
  echo "SKIPPED: test_slurm.sh: $*"
  exit 77
}
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
ok() { echo "ok    $*  ($((SECONDS - start)) s)"; }
note() { echo "note  $*"; }

[ -x "$weft" ] || fail "weft binary '$weft' not found (build first, or pass its path)"
weft=$(cd "$(dirname "$weft")" && pwd)/$(basename "$weft")

# ---------------------------------------------------------------------------------------
# Can SLURM run here at all?
missing=()
for b in munged munge slurmctld slurmd sbatch srun scontrol squeue sinfo scancel; do
  command -v "$b" >/dev/null || missing+=("$b")
done
[ ${#missing[@]} -eq 0 ] ||
  skip "not installed: ${missing[*]} (Debian packages slurm-wlm and munge; launch/install-deps.sh installs them)"
[ "$(id -u)" -eq 0 ] || skip "slurmd must run as root to start jobs, and this test is not root"

has_ckpt=0
if "$weft" train --help 2>/dev/null | grep -q -- --ckpt-dir; then has_ckpt=1; fi
has_finetune=0
if "$weft" finetune --help >/dev/null 2>&1; then has_finetune=1; fi

T=$(mktemp -d /tmp/weft-slurm-test.XXXXXX)
chmod 0755 "$T" # munged wants every folder above its socket searchable by all
# Two free ports in a row for slurmctld and slurmd, so a local SLURM someone already runs
# (launch/local-slurm.sh uses 16817/16818, a site SLURM 6817/6818) is not disturbed. A
# connection that succeeds means the port is taken.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=""
for p in $(seq 17817 2 17999); do
  if port_free "$p" && port_free $((p + 1)); then
    port=$p
    break
  fi
done
[ -n "$port" ] || fail "no two free consecutive ports between 17817 and 18000"
# Only for local-slurm.sh: exported, these would reach the jobs, and weft warns about every
# WEFT_* variable it does not know.
cluster() { WEFT_SLURM_DIR="$T/slurm" WEFT_SLURM_PORT="$port" bash "$repo/launch/local-slurm.sh" "$@"; }
export SLURM_CONF="$T/slurm/slurm.conf"

cleanup() {
  local rc=$?
  cluster stop >/dev/null 2>&1 || echo "test_slurm.sh: warning: local-slurm.sh stop failed" >&2
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    local f
    for f in "$T"/slurm/log/*.log "$T"/*.out; do
      [ -f "$f" ] || continue
      echo "--- last lines of $f" >&2
      tail -n 25 "$f" >&2
    done
  fi
  if [ "${KEEP_T:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

if ! out=$(cluster start 2>&1); then
  echo "$out"
  skip "the local SLURM cluster could not start in this environment (output above)"
fi
ok "local SLURM started (port $port, $(nproc) CPU(s))"

mpi_list=$(srun --mpi=list 2>&1 || true)
grep -qw pmix <<<"$mpi_list" || fail "srun --mpi=list does not offer pmix: $mpi_list"
cd "$T"
out=$(timeout 60 srun --mpi=pmix -n 2 "$weft" info 2>&1) || fail "srun --mpi=pmix -n 2 weft info failed: $out"
grep -q "2 rank(s) on 1 node(s)" <<<"$out" || fail "srun --mpi=pmix: the ranks do not form one job of 2: $out"
ok "srun --mpi=pmix -n 2 weft info: 2 ranks"

# ---------------------------------------------------------------------------------------
# job_field ID NAME: a field of `scontrol show job` (JobState, ExitCode, Restarts, ...).
job_field() {
  scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
# wait_for ID SECONDS FILE PATTERN: until FILE matches PATTERN (grep -E); fails when the job
# ends first or time runs out.
wait_for() {
  local id=$1 limit=$2 file=$3 pattern=$4 t0=$SECONDS state
  while ! grep -qE "$pattern" "$file" 2>/dev/null; do
    state=$(job_field "$id" JobState)
    case "$state" in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL)
        grep -qE "$pattern" "$file" 2>/dev/null && return 0
        fail "job $id ended ($state) before its output showed /$pattern/"
        ;;
    esac
    [ $((SECONDS - t0)) -lt "$limit" ] || fail "job $id: no /$pattern/ in $file after $limit s (state $state)"
    sleep 0.2
  done
}
# wait_state ID SECONDS STATE...: until the job is in one of the states.
wait_state() {
  local id=$1 limit=$2 t0=$SECONDS state s
  shift 2
  while :; do
    state=$(job_field "$id" JobState)
    for s in "$@"; do [ "$state" != "$s" ] || return 0; done
    [ $((SECONDS - t0)) -lt "$limit" ] || fail "job $id is '$state' after $limit s, expected: $*"
    sleep 0.2
  done
}
# requeued ID: waits until the job is back in the queue after requeueing itself, then lets
# it start early: SLURM holds a requeued job for the credential lifetime (120 s by default),
# longer than this test should take. Not at once, though: slurmd refuses ("Job credential
# revoked", the job FAILS) a new launch whose credential dates from the same second as the
# revocation of the old run's, so 2 s pass first.
requeued() {
  local id=$1 t0=$SECONDS
  while [ "$(job_field "$id" Restarts)" != 1 ] || [ "$(job_field "$id" JobState)" != PENDING ]; do
    [ $((SECONDS - t0)) -lt 60 ] ||
      fail "job $id did not requeue itself (state $(job_field "$id" JobState), restarts $(job_field "$id" Restarts))"
    sleep 0.2
  done
  sleep 2
  scontrol update JobId="$id" StartTime=now >/dev/null || fail "could not release requeued job $id"
}
# wait_done ID SECONDS: until the job has ended. Polling here instead of `sbatch --wait`,
# which checks at growing intervals and adds up to 10 s to every short job.
wait_done() {
  wait_state "$1" "$2" COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL OUT_OF_MEMORY BOOT_FAIL
}

# ---------------------------------------------------------------------------------------
# 2. weft-run inside an allocation.
id=$(sbatch --parsable -N 1 -n 2 -o "$T/weftrun-%j.out" --wrap \
  "WEFT_BIN='$weft' '$repo/launch/weft-run' info && WEFT_BIN='$weft' '$repo/launch/weft-run' -n 4 info") ||
  fail "sbatch --wrap 'launch/weft-run info' was refused"
wait_done "$id" 60
out="$T/weftrun-$id.out"
[ "$(job_field "$id" ExitCode)" = 0:0 ] || fail "launch/weft-run info under sbatch failed: $(cat "$out")"
grep -q "2 rank(s) on 1 node(s)" "$out" || fail "weft-run in an allocation of 2 did not start 2 ranks"
grep -q "4 rank(s) on 1 node(s)" "$out" || fail "weft-run -n 4 in an allocation of 2 CPUs did not start 4 ranks"
ok "launch/weft-run under sbatch: srun with 2 ranks, and 4 ranks with --overcommit"

# ---------------------------------------------------------------------------------------
# 3. A short training job through train.sbatch.
tiny=(--dim 32 --layers LS --heads 2 --kv-heads 1 --experts 2 --topk 1 --ffn-dim 32 --seq 32
  --batch 4 --eval-every 0)
if [ $has_ckpt -eq 1 ]; then
  short_ckpt="$T/ckpt-short"
else
  short_ckpt=none
  note "weft train has no --ckpt-dir yet: the short job runs with CKPT_DIR=none, and the checkpoint parts are skipped"
fi
rc=0
id=$(CKPT_DIR="$short_ckpt" CKPT_EVERY=2 WEFT_BIN="$weft" \
  sbatch --parsable --wait -N 1 --ntasks-per-node=2 -o "$T/train-%j.out" \
  "$repo/launch/slurm/train.sbatch" "${tiny[@]}" --steps 5) || rc=$?
[ -n "$id" ] || fail "sbatch train.sbatch printed no job id"
out="$T/train-$id.out"
[ $rc -eq 0 ] || fail "sbatch --wait train.sbatch exited $rc: $(cat "$out" 2>/dev/null)"
grep -q "weft train: done" "$out" || fail "train.sbatch output has no 'weft train: done'"
grep -q "mesh dp=2" "$out" || fail "train.sbatch did not train on 2 ranks (no 'mesh dp=2')"
grep -q "step exited with status 0" "$out" || fail "train.sbatch did not report its step's status"
[ "$(job_field "$id" JobState)" = COMPLETED ] || fail "job $id is $(job_field "$id" JobState), not COMPLETED"
[ "$(job_field "$id" ExitCode)" = 0:0 ] || fail "job $id exit code $(job_field "$id" ExitCode), not 0:0"
if grep -q "unknown environment variable" "$out"; then
  fail "weft warned about an environment variable the scripts leaked: $(grep 'unknown environment' "$out")"
fi
ok "sbatch --wait train.sbatch: 5 steps on 2 tasks, COMPLETED 0:0"
if [ $has_ckpt -eq 1 ]; then
  [ -e "$short_ckpt/latest" ] || fail "--ckpt-every 2 left no $short_ckpt/latest: $(ls -la "$short_ckpt")"
  ok "periodic checkpoints in CKPT_DIR ($(cd "$short_ckpt" && echo *))"
fi

# ---------------------------------------------------------------------------------------
# 4. Signal, requeue, resume: the plumbing, with a stand-in for weft.
fake_ckpt="$T/ckpt-fake"
id=$(CKPT_DIR="$fake_ckpt" WEFT_BIN="$here/fake-weft-ckpt.sh" \
  sbatch --parsable -N 1 --ntasks-per-node=2 -o "$T/fake-%j.out" \
  "$repo/launch/slurm/train.sbatch" --steps 40) || fail "sbatch of the stand-in job failed"
out="$T/fake-$id.out"
# Both ranks run (their traps are set) before the signal goes out.
wait_for "$id" 60 "$out" "rank 1 running from step 0"
wait_for "$id" 10 "$out" "rank 0 running from step 0"
scancel --signal=USR1 --batch "$id"
wait_for "$id" 30 "$out" "requeueing job $id"
grep -q "checkpoint saved $fake_ckpt/step-" "$out" || fail "stand-in: no 'checkpoint saved' after SIGUSR1"
[ "$(grep -c "stopped after step" "$out")" -eq 2 ] || fail "stand-in: SIGUSR1 did not reach both ranks"
requeued "$id"
wait_state "$id" 60 COMPLETED FAILED CANCELLED
grep -q "resumed from $fake_ckpt/step-" "$out" || fail "stand-in: the requeued run did not resume"
if [ "$(job_field "$id" JobState)" != COMPLETED ] || [ "$(job_field "$id" ExitCode)" != 0:0 ]; then
  fail "stand-in job ended $(job_field "$id" JobState) $(job_field "$id" ExitCode), not COMPLETED 0:0"
fi
ok "train.sbatch plumbing (stand-in weft): USR1 -> both ranks checkpoint -> requeue -> resumed -> COMPLETED"

# ---------------------------------------------------------------------------------------
# 5. The same with the real weft.
if [ $has_ckpt -eq 1 ]; then
  real_ckpt="$T/ckpt-real"
  # Enough steps that the run is still going when the signal comes; the job is cancelled
  # once the resumed run has shown itself.
  id=$(CKPT_DIR="$real_ckpt" CKPT_EVERY=1000000 WEFT_BIN="$weft" \
    sbatch --parsable -N 1 --ntasks-per-node=2 -o "$T/signal-%j.out" \
    "$repo/launch/slurm/train.sbatch" "${tiny[@]}" --steps 1000000 --log-every 20) ||
    fail "sbatch of the signal job failed"
  out="$T/signal-$id.out"
  wait_for "$id" 60 "$out" "^step [0-9]+/"
  scancel --signal=USR1 --batch "$id"
  wait_for "$id" 60 "$out" "requeueing job $id|step exited with status"
  grep -q "checkpoint saved.*$real_ckpt" "$out" || fail "weft printed no 'checkpoint saved' line with a path in $real_ckpt"
  grep -q "step exited 0 after SIGUSR1" "$out" || fail "weft's ranks did not all exit 0 after SIGUSR1"
  [ -e "$real_ckpt/latest" ] || fail "no $real_ckpt/latest after the signal"
  ok "weft train: SIGUSR1 -> 'checkpoint saved' -> clean exit -> requeue"
  requeued "$id"
  wait_for "$id" 60 "$out" "resumed from"
  ok "weft train: the requeued run resumed ($(grep -m 1 'resumed from' "$out"))"
  scancel "$id"
  wait_state "$id" 60 CANCELLED COMPLETED FAILED
else
  note "SKIPPED part 5 (weft train on SIGUSR1: checkpoint, requeue, resume): weft train --help lists no --ckpt-dir yet"
fi

# ---------------------------------------------------------------------------------------
# 6. finetune.sbatch.
id=$(WEFT_BIN="$weft" sbatch --parsable -N 1 -n 1 -o "$T/ft-noargs-%j.out" \
  "$repo/launch/slurm/finetune.sbatch" --steps 1) || fail "sbatch finetune.sbatch was refused"
wait_done "$id" 60
[ "$(job_field "$id" JobState)" = FAILED ] || fail "finetune.sbatch without --from/--data did not fail"
grep -q "missing --from" "$T/ft-noargs-$id.out" || fail "finetune.sbatch without --from gave no clear error"
ok "finetune.sbatch refuses to start without --from"
if [ $has_finetune -eq 1 ] && [ $has_ckpt -eq 1 ]; then
  # --from takes a checkpoint folder (its latest): the short job's. The license texts are in
  # every Debian system (base-files).
  ft=(--from "$short_ckpt" --data /usr/share/common-licenses --seq 32 --batch 4 --eval-every 0)
  id=$(CKPT_DIR="$T/ckpt-ft" WEFT_BIN="$weft" sbatch --parsable -N 1 --ntasks-per-node=2 \
    -o "$T/ft-%j.out" "$repo/launch/slurm/finetune.sbatch" "${ft[@]}" --steps 3) ||
    fail "sbatch finetune.sbatch was refused"
  wait_done "$id" 90
  out="$T/ft-$id.out"
  [ "$(job_field "$id" JobState)" = COMPLETED ] ||
    fail "finetune job $id is $(job_field "$id" JobState) $(job_field "$id" ExitCode): $(cat "$out")"
  grep -q "weft finetune: starting from $short_ckpt" "$out" || fail "weft finetune did not start from --from"
  grep -q "weft finetune: done" "$out" || fail "weft finetune did not finish"
  ok "finetune.sbatch --from the short job's checkpoint: 3 steps on 2 tasks, COMPLETED"

  # Signal, requeue, resume, as for training: the requeued run must continue the fine-tuning
  # run from CKPT_DIR, not start over from --from.
  ft_ckpt="$T/ckpt-ft-signal"
  id=$(CKPT_DIR="$ft_ckpt" CKPT_EVERY=1000000 WEFT_BIN="$weft" sbatch --parsable -N 1 \
    --ntasks-per-node=2 -o "$T/ft-signal-%j.out" "$repo/launch/slurm/finetune.sbatch" "${ft[@]}" \
    --steps 1000000 --log-every 20) || fail "sbatch of the fine-tuning signal job was refused"
  out="$T/ft-signal-$id.out"
  wait_for "$id" 60 "$out" "^step [0-9]+/"
  scancel --signal=USR1 --batch "$id"
  wait_for "$id" 60 "$out" "requeueing job $id|step exited with status"
  grep -q "checkpoint saved.*$ft_ckpt" "$out" || fail "weft finetune printed no 'checkpoint saved' in $ft_ckpt"
  grep -q "step exited 0 after SIGUSR1" "$out" || fail "weft finetune's ranks did not all exit 0 after SIGUSR1"
  requeued "$id"
  # The second run's first line says where it started.
  wait_for "$id" 60 "$out" "restart 1"
  t0=$SECONDS
  while [ "$(grep -cE "weft finetune: (starting|resumed) from" "$out")" -lt 2 ]; do
    [ $((SECONDS - t0)) -lt 60 ] || fail "the requeued fine-tuning run printed no start line"
    sleep 0.2
  done
  second=$(grep -E "weft finetune: (starting|resumed) from" "$out" | sed -n 2p)
  scancel "$id"
  wait_done "$id" 60
  case "$second" in
    *"resumed from $ft_ckpt"*) ok "weft finetune: USR1 -> checkpoint -> requeue -> $second" ;;
    *) fail "the requeued fine-tuning run did not resume from CKPT_DIR ($ft_ckpt) but printed: '$second' (weft finetune --from X --resume auto must prefer CKPT_DIR's checkpoint once there is one)" ;;
  esac
else
  note "SKIPPED part 6's fine-tuning runs: need weft finetune ($has_finetune) and weft train --ckpt-dir ($has_ckpt)"
fi

echo "PASS: test_slurm.sh ($((SECONDS - start)) s)"
