#!/usr/bin/env bash
# Checks launch/weft-run without SLURM:
#   1. the command it would run (--dry-run) for each situation: mpirun outside an allocation,
#      with --oversubscribe --bind-to none only when there are more ranks than cores and
#      --allow-run-as-root only as root; srun --mpi=pmix inside one (SLURM_JOB_ID set), with
#      --overcommit only beyond the allocation's CPUs; SRUN_MPI and WEFT_RUN_LAUNCHER_ARGS;
#      WEFT_BIN, and the error for a missing binary or a bad -n;
#   2. a real run: `weft-run -n 4 info` under mpirun starts 4 ranks, and weft sees no WEFT_BIN
#      (it would warn about an unknown WEFT_* variable).
# (launch.slurm runs weft-run inside a real allocation.)
#
# Usage: tests/launch/test_weft_run.sh [WEFT_BINARY]   (ctest: launch.weft_run)
set -euo pipefail
trap 'echo "test_weft_run.sh: command failed at line $LINENO: $BASH_COMMAND" >&2' ERR

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
weft=${1:-$repo/build/weft}
run="$repo/launch/weft-run"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
ok() { echo "ok    $*"; }

[ -x "$weft" ] || fail "weft binary '$weft' not found (build first, or pass its path)"
weft=$(cd "$(dirname "$weft")" && pwd)/$(basename "$weft")

# dry ARGS...: the command weft-run would run, outside any SLURM allocation.
dry() { env -u SLURM_JOB_ID -u SLURM_JOB_CPUS_PER_NODE WEFT_BIN="$weft" "$run" --dry-run "$@"; }
# has / lacks TEXT WORD: the dry-run line contains / does not contain the word.
has() { grep -qw -- "$2" <<<"$1" || fail "expected '$2' in: $1"; }
lacks() { ! grep -qw -- "$2" <<<"$1" || fail "did not expect '$2' in: $1"; }

cores=$(lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l || true)
[ -n "$cores" ] && [ "$cores" -gt 0 ] && [ "$cores" -le "$(nproc)" ] || cores=$(nproc)

# 1. Outside SLURM: mpirun.
line=$(dry -n $((cores + 1)) train --sp 2)
case "$line" in mpirun\ *) ;; *) fail "outside SLURM weft-run should use mpirun: $line" ;; esac
has "$line" "-np $((cores + 1))"
has "$line" --oversubscribe
has "$line" "--bind-to none"
grep -q -- "$weft train --sp 2" <<<"$line" || fail "weft and its flags not at the end: $line"
if [ "$(id -u)" -eq 0 ]; then has "$line" --allow-run-as-root; else lacks "$line" --allow-run-as-root; fi
line=$(dry -n 1 info)
lacks "$line" --oversubscribe
lacks "$line" --bind-to
line=$(dry info)
lacks "$line" -np
ok "outside SLURM: mpirun; --oversubscribe --bind-to none only beyond $cores core(s)"

# Inside an allocation of 2 CPUs: srun.
line=$(SLURM_JOB_ID=1 SLURM_JOB_CPUS_PER_NODE='1(x2)' WEFT_BIN="$weft" "$run" --dry-run -n 4 train)
case "$line" in srun\ --mpi=pmix\ *) ;; *) fail "inside SLURM weft-run should use srun --mpi=pmix: $line" ;; esac
has "$line" "-n 4"
has "$line" --overcommit
line=$(SLURM_JOB_ID=1 SLURM_JOB_CPUS_PER_NODE='4(x2),2' WEFT_BIN="$weft" "$run" --dry-run -n 10 info)
lacks "$line" --overcommit
line=$(SLURM_JOB_ID=1 SLURM_JOB_CPUS_PER_NODE=2 WEFT_BIN="$weft" "$run" --dry-run info)
lacks "$line" -n
line=$(SLURM_JOB_ID=1 SRUN_MPI=pmix_v4 WEFT_RUN_LAUNCHER_ARGS="--gpu-bind=none --label" \
  WEFT_BIN="$weft" "$run" --dry-run info)
has "$line" --mpi=pmix_v4
has "$line" --gpu-bind=none
has "$line" --label
line=$(SLURM_JOB_ID=1 WEFT_BIN="$weft" "$run" --dry-run --launcher mpirun -n 2 info)
case "$line" in mpirun\ *) ;; *) fail "--launcher mpirun ignored: $line" ;; esac
ok "inside SLURM: srun --mpi=pmix; --overcommit only beyond the allocation's CPUs; SRUN_MPI, extra args, --launcher"

# Errors.
if out=$(WEFT_BIN=/nonexistent/weft "$run" -n 2 info 2>&1); then fail "a missing WEFT_BIN was accepted"; fi
grep -q "not found" <<<"$out" || fail "unclear error for a missing binary: $out"
if out=$(WEFT_BIN="$weft" "$run" -n zero info 2>&1); then fail "-n zero was accepted"; fi
grep -q "positive number" <<<"$out" || fail "unclear error for a bad -n: $out"
if out=$(WEFT_BIN="$weft" "$run" -n 2 2>&1); then fail "no weft command was accepted"; fi
ok "clear errors for a missing binary, a bad -n and no command"

# 2. A real run under mpirun.
out=$(env -u SLURM_JOB_ID WEFT_BIN="$weft" WEFT_LOG_LEVEL=warn "$run" -n 4 info 2>&1) ||
  fail "weft-run -n 4 info failed: $out"
grep -q "4 rank(s) on 1 node(s)" <<<"$out" || fail "weft-run -n 4 info did not start 4 ranks: $out"
! grep -q "WEFT_BIN" <<<"$out" || fail "WEFT_BIN reached weft: $out"
ok "weft-run -n 4 info: 4 ranks under mpirun, no WEFT_BIN warning"
echo "PASS: test_weft_run.sh"
