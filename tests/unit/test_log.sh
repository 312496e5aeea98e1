#!/bin/sh
# Log format and filters: `weft env` under WEFT_LOG_LEVEL=debug with an unknown variable set
# must print a warning line with the host:pid:rank[dev] prefix, and WEFT_LOG_SUBSYS=^env must
# silence it. Usage: test_log.sh path/to/weft
weft=$1
out=$(WEFT_LOG_LEVEL=info WEFT_NO_SUCH_SETTING=1 "$weft" env 2>&1 >/dev/null)
echo "$out" | grep -Eq "^[^:]+:[0-9]+:-\[-\] WARN env: unknown environment variable WEFT_NO_SUCH_SETTING" ||
  { echo "missing or malformed warning: $out"; exit 1; }
out=$(WEFT_LOG_SUBSYS=^env WEFT_NO_SUCH_SETTING=1 "$weft" env 2>&1 >/dev/null)
[ -z "$out" ] || { echo "subsystem filter did not silence env: $out"; exit 1; }
out=$(WEFT_LOG_LEVEL=error WEFT_NO_SUCH_SETTING=1 "$weft" env 2>&1 >/dev/null)
[ -z "$out" ] || { echo "level filter did not silence the warning: $out"; exit 1; }
echo "test_log: passed"
