#!/bin/bash
# End-to-end checks of the weft CLI under mpirun: `weft info` shows every rank on a CPU device
# with the right mesh; usage errors exit 2 on every rank with a one-line message; runtime
# errors (an impossible mesh) exit non-zero without hanging.
# Usage: test_cli.sh path/to/weft path/to/tests/mpirun.sh NP
set -u
weft=$1 mpirun=$2 np=$3
fail() { echo "FAIL: $*"; exit 1; }

out=$("$mpirun" "$np" "$weft" info --device cpu 2>&1) || fail "weft info exited $?: $out"
grep -q "$np rank(s) on 1 node(s)" <<<"$out" || fail "header missing: $out"
for r in $(seq 0 $((np - 1))); do
  grep -Eq "^ +$r +[^ ]+ +$r/$np +cpu " <<<"$out" || fail "rank $r not listed on cpu: $out"
done
[ "$(grep -Ec '^ +[0-9]+ ' <<<"$out")" -eq "$np" ] || fail "expected $np rank lines: $out"

if [ "$np" -eq 4 ]; then
  out=$("$mpirun" 4 "$weft" info --device cpu --sp 2 --ep 4 --ulysses 2 2>&1) ||
    fail "mesh info exited $?: $out"
  grep -q "dp=2 sp=2 (ulysses=2 x ring=1) ep=4" <<<"$out" || fail "mesh line: $out"
  grep -Eq "^ +3 .* dp 1 sp 1 \(u 1 r 0\) ep 3$" <<<"$out" || fail "rank 3 coordinates: $out"
fi

# Usage error: each rank exits 2 before MPI starts, saying what was wrong; mpirun then stops
# the job (so the message may appear once or once per rank) and exits non-zero.
out=$(timeout 60 "$mpirun" "$np" "$weft" info --no-such-flag 2>&1)
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "bad flag exited $rc"
grep -q "unknown flag '--no-such-flag'" <<<"$out" || fail "the bad flag is not named: $out"
out=$("$weft" info --dp x 2>&1)
[ $? -eq 2 ] || fail "malformed value should exit 2"
grep -q -- "--dp expects an integer, got 'x'" <<<"$out" || fail "malformed value message: $out"

# Runtime error: an impossible mesh fails on every rank (non-zero exit, no hang).
out=$(timeout 60 "$mpirun" "$np" "$weft" info --device cpu --dp 5 2>&1)
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "impossible mesh exited $rc"
grep -q "dp=5 does not divide the world size $np\|dp=5 x sp=1 does not equal the world size $np" <<<"$out" ||
  fail "impossible mesh message: $out"

# Help everywhere.
grep -q "commands:" <<<"$("$weft" --help)" || fail "weft --help"
grep -q -- "--device" <<<"$("$weft" info --help)" || fail "weft info --help"
grep -q "usage: weft env" <<<"$("$weft" env --help)" || fail "weft env --help"
rc=0
err=$("$weft" nosuchcommand 2>&1 >/dev/null) || rc=$?
[ $rc -eq 2 ] || fail "unknown command should exit 2, got $rc; stderr: $err"
grep -q "unknown command 'nosuchcommand'" <<<"$err" || fail "unknown command not named: $err"
grep -q "WEFT_COMM_TIMEOUT_S" <<<"$("$weft" env)" || fail "weft env lists comm variables"
echo "test_cli (np $np): passed"
