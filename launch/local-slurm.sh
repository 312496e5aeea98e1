#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for testing weft's launch scripts: munged,
# slurmctld and slurmd, with every file they write (configuration, munge key and socket,
# state, spool, logs, pid files) in one private folder, so nothing in /etc is touched and a
# SLURM the machine may already run is left alone.
#
#   launch/local-slurm.sh start    # writes the configuration, starts the daemons, waits idle
#   eval "$(launch/local-slurm.sh env)"   # SLURM_CONF for sinfo/srun/sbatch in this shell
#   launch/local-slurm.sh status
#   launch/local-slurm.sh stop     # cancels jobs, stops the three daemons
#
# The folder is $WEFT_SLURM_DIR (default /tmp/weft-slurm). Pass it on the command line
# (`WEFT_SLURM_DIR=/x launch/local-slurm.sh start`) rather than exporting it: jobs inherit
# the submitting shell's environment, and weft warns about every WEFT_* variable it does not
# know. The controller listens on $WEFT_SLURM_PORT (default 16817) and slurmd on the next
# port, not on SLURM's 6817/6818, for the same reason the files are private.
#
# Choices, found by trying on Debian 12 (SLURM 22.05, munge 0.5.15) as root in a container:
#   - The daemons run as root and daemonize normally: no -D or other foreground flag is
#     needed. slurmctld accepts SlurmctldHost=localhost.
#   - munged runs with its own key and socket (AuthInfo=socket=... tells SLURM where); it
#     refuses a socket folder that is not executable by all (0755 it is).
#   - proctrack/linuxproc and task/none: cgroups are usually unavailable or read-only in
#     containers; linuxproc follows the process tree instead.
#   - No slurmdbd (AccountingStorageType=accounting_storage/none), so `sacct` does not work
#     here: use `scontrol show job` (finished jobs stay visible for MinJobAge seconds) and the
#     job's output file.
#   - select/cons_tres with CR_CPU and CPUs = nproc. OverSubscribe=FORCE on the partition
#     lets jobs share CPUs, but it does NOT let one job start more tasks than CPUs: 4 tasks on
#     2 CPUs need --overcommit (-O) on sbatch/srun (launch/weft-run adds it to srun when asked
#     for more ranks than the allocation has). select/linear behaves the same.
#   - Both daemons start with -c (no state from an earlier run): a test cluster should come up
#     empty, without jobs left over from a run that was killed.
set -euo pipefail
trap 'echo "local-slurm.sh: error: command failed at line $LINENO: $BASH_COMMAND" >&2' ERR

prog=local-slurm.sh
dir=${WEFT_SLURM_DIR:-/tmp/weft-slurm}
ctld_port=${WEFT_SLURM_PORT:-16817}
slurmd_port=$((ctld_port + 1))
conf="$dir/slurm.conf"
munge_socket="$dir/munge/munge.socket"

usage() {
  cat <<EOF
Usage: launch/local-slurm.sh start|stop|status|env

  start   write $dir/slurm.conf (and a munge key when there is none), start munged,
          slurmctld and slurmd, and wait until sinfo shows the node idle; does nothing
          when they already run
  stop    cancel this cluster's jobs and stop the three daemons (nothing running: no-op)
  status  say what runs; exit 0 when all three daemons run and the node responds
  env     print 'export SLURM_CONF=...' for eval, so SLURM's commands find this cluster

Settings (pass on the command line, do not export: weft warns about unknown WEFT_* names):
  WEFT_SLURM_DIR   private folder for every file (default /tmp/weft-slurm)
  WEFT_SLURM_PORT  slurmctld port; slurmd uses the next one (default 16817)
EOF
}

die() {
  echo "$prog: error: $*" >&2
  exit 1
}
note() { echo "$prog: $*"; }

case "$dir" in
  /*) ;;
  *) die "WEFT_SLURM_DIR must be an absolute path (got '$dir'): the daemons change folder" ;;
esac
[[ "$ctld_port" =~ ^[0-9]+$ ]] || die "WEFT_SLURM_PORT must be a number (got '$ctld_port')"

# SLURM's commands read $SLURM_CONF; every command below must talk to this cluster only.
export SLURM_CONF="$conf"

# pid_alive NAME: the pid in $dir/NAME.pid when that process runs, else nothing (status 1).
pid_alive() {
  local pidfile="$dir/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A recycled pid belongs to some other program: check the name as well.
  [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$1" ] || return 1
  echo "$pid"
}

node_state() { # the node's state as sinfo reports it (idle, mixed, down*, ...), or nothing
  timeout 10 sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n 1 || true
}

node=$(hostname -s)
[ -n "$node" ] || die "hostname -s printed nothing: the node needs a name"

# The pieces that must be installed; the test turns a missing one into "skipped".
need_binaries() {
  local b missing=()
  for b in munged munge slurmctld slurmd sinfo scontrol squeue scancel; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  [ ${#missing[@]} -eq 0 ] ||
    die "not installed: ${missing[*]} (Debian packages slurm-wlm and munge: sudo bash launch/install-deps.sh)"
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  # RealMemory as slurmd itself measures it: a configured value above that would drain the
  # node ("Low RealMemory"). /proc/meminfo is the fallback.
  mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n 1)
  [ -n "$mem" ] || mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
  cat >"$conf" <<EOF
# Written by launch/local-slurm.sh for a one-node test cluster; rewritten on every start.
ClusterName=weft-local
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge_socket
MpiDefault=pmix
# No mail on this test cluster (slurmctld logs an error when MailProg is missing).
MailProg=/bin/true
# No cgroups in containers: follow process trees, do no binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# No slurmdbd: sacct is unavailable; scontrol show job keeps finished jobs for MinJobAge s.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
# A node that was down comes back by itself when its slurmd registers.
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job is cancelled or reaches its time limit:
# enough for weft to finish a step and save a checkpoint of a small model.
KillWait=30
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
# FORCE:4 lets up to 4 jobs share each CPU (one job's tasks beyond its CPUs need --overcommit).
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  # The PMIx plugin reads mpi.conf next to slurm.conf: its per-step folders go under $dir too.
  mkdir -p "$dir/pmix"
  cat >"$dir/mpi.conf" <<EOF
# Written by launch/local-slurm.sh.
PMIxCliTmpDirBase=$dir/pmix
EOF
}

start_munged() {
  if pid_alive munged >/dev/null; then return 0; fi
  mkdir -p "$dir/munge"
  # munged refuses a socket folder that others cannot enter (every folder above it too),
  # and a key others can read.
  chmod 0755 "$dir" "$dir/munge"
  local up
  up=$(dirname "$dir")
  while [ "$up" != / ]; do
    [ "$(( 0$(stat -c %a "$up") & 01 ))" -ne 0 ] ||
      die "munged needs every folder above its socket to be searchable by all; '$up' is mode $(stat -c %a "$up") (chmod o+x it, or choose another WEFT_SLURM_DIR)"
    up=$(dirname "$up")
  done
  if [ ! -s "$dir/munge/munge.key" ]; then
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$dir/munge/munge.key"
    else
      dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    fi
  fi
  chmod 0400 "$dir/munge/munge.key"
  rm -f "$munge_socket" "$munge_socket.lock"
  munged --socket="$munge_socket" --key-file="$dir/munge/munge.key" \
    --log-file="$dir/log/munged.log" --pid-file="$dir/munged.pid" \
    --seed-file="$dir/munge/munged.seed" ||
    die "munged did not start; its log: $(tail -n 3 "$dir/log/munged.log" 2>/dev/null)"
  # Prove the socket answers before SLURM depends on it.
  local _
  for _ in $(seq 50); do
    if munge -S "$munge_socket" -n </dev/null 2>/dev/null | unmunge -S "$munge_socket" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  die "munged runs but does not answer on $munge_socket; see $dir/log/munged.log"
}

show_logs() {
  local f
  for f in "$dir"/log/slurmctld.log "$dir"/log/slurmd.log; do
    [ -f "$f" ] || continue
    echo "--- last lines of $f" >&2
    tail -n 15 "$f" >&2
  done
}

# start_failed MESSAGE: the daemon logs, everything this start began stopped, then the error.
start_failed() {
  show_logs
  do_stop >/dev/null 2>&1 || true
  die "$1"
}

do_start() {
  need_binaries
  # slurmd has to be root to start jobs as their owner (and SlurmUser=root above).
  [ "$(id -u)" -eq 0 ] || die "start needs root (slurmd runs jobs as their owner); try: sudo $0 start"
  if pid_alive munged >/dev/null && pid_alive slurmctld >/dev/null && pid_alive slurmd >/dev/null; then
    note "already running (SLURM_CONF=$conf); node $node is $(node_state)"
    return 0
  fi
  # Something half-up (one daemon died): start over cleanly.
  if pid_alive slurmctld >/dev/null || pid_alive slurmd >/dev/null; then
    note "only some daemons run: restarting all"
    do_stop
  fi
  local p
  for p in "$ctld_port" "$slurmd_port"; do
    # A connection that succeeds means something else listens there.
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      die "port $p is in use (another cluster from this script? choose WEFT_SLURM_PORT=...)"
    fi
  done
  mkdir -p "$dir"/{state,spool,log}
  write_conf
  start_munged
  # -c: no job or node state from an earlier run (see the notes at the top).
  slurmctld -c -f "$conf" || start_failed "slurmctld did not start"
  slurmd -c -f "$conf" || start_failed "slurmd did not start"
  # The node becomes usable once slurmd has registered with the controller.
  local _ state=""
  for _ in $(seq 60); do
    state=$(node_state)
    case "$state" in
      idle) break ;;
      down* | drain* | fail*) # an old state file can leave it down: ReturnToService handles
        # that at registration, this makes sure of it
        scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
    esac
    pid_alive slurmctld >/dev/null || start_failed "slurmctld exited during start-up"
    pid_alive slurmd >/dev/null || start_failed "slurmd exited during start-up"
    sleep 0.5
  done
  [ "$state" = idle ] || start_failed "node $node is '${state:-unknown}', not idle, 30 s after start"
  note "running: node $node idle, $(nproc) CPU(s), files in $dir"
  note "use it with: export SLURM_CONF=$conf"
}

# wait_gone PID SECONDS: 0 once the process has exited, 1 if it still runs after SECONDS.
wait_gone() {
  local _
  for _ in $(seq $(($2 * 10))); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# stop_daemon NAME: SIGTERM, then SIGKILL after 10 s, the daemon whose pid file we wrote.
stop_daemon() {
  local pid
  pid=$(pid_alive "$1") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" 10; then
    note "$1 (pid $pid) ignored SIGTERM for 10 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || true
  fi
}

# Job step daemons (slurmstepd) of this cluster: they inherit slurmd's environment, which has
# our SLURM_CONF, so they are found without touching another SLURM's processes.
our_stepds() {
  local p env_list
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null || true)" = slurmstepd ] || continue
    # Read first, then match: grep -q quitting early would SIGPIPE tr and, under pipefail,
    # turn a match into a failure.
    env_list=$(tr '\0' '\n' <"$p/environ" 2>/dev/null || true)
    grep -qxF "SLURM_CONF=$conf" <<<"$env_list" || continue
    echo "${p#/proc/}"
  done
}

do_stop() {
  local pid ids
  if pid_alive slurmctld >/dev/null; then
    # Jobs first: slurmstepd and the job's processes outlive slurmd otherwise. SIGKILL to
    # every step and batch shell, then cancel: a plain scancel would wait KillWait seconds.
    ids=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
    if [ -n "$ids" ]; then
      note "cancelling this cluster's jobs: $(tr '\n' ' ' <<<"$ids")"
      # shellcheck disable=SC2086 # one job id per word
      timeout 10 scancel --full --signal=KILL $ids 2>/dev/null || true
      # shellcheck disable=SC2086
      timeout 10 scancel $ids 2>/dev/null || true
      for _ in $(seq 100); do
        [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null || true)" ] && break
        sleep 0.1
      done
    fi
  fi
  stop_daemon slurmd
  stop_daemon slurmctld
  # A step daemon that outlived slurmd (a job that did not end in time) would hold its ports.
  for pid in $(our_stepds); do
    note "stopping leftover slurmstepd $pid"
    kill -KILL "$pid" 2>/dev/null || true
  done
  if pid=$(pid_alive munged); then
    munged --stop --socket="$munge_socket" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
  fi
  note "stopped (files stay in $dir)"
}

do_status() {
  local name pid rc=0
  for name in munged slurmctld slurmd; do
    if pid=$(pid_alive "$name"); then
      echo "$name: running (pid $pid)"
    else
      echo "$name: not running"
      rc=1
    fi
  done
  if [ $rc -eq 0 ]; then
    local state
    state=$(node_state)
    echo "node $node: ${state:-not responding}"
    [ -n "$state" ] || rc=1
    echo "SLURM_CONF=$conf"
  fi
  return $rc
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status || exit $? ;; # not running is an answer, not an error
  env) echo "export SLURM_CONF=$conf" ;;
  -h | --help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
