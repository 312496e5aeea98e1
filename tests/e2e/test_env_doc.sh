#!/bin/sh
# docs/env.md must document every variable `weft env` lists.
# Usage: test_env_doc.sh path/to/weft path/to/docs/env.md
missing=0
for name in $("$1" env | grep -oE '^WEFT_[A-Z0-9_]+'); do
  grep -q "\`$name\`" "$2" || { echo "docs/env.md does not document $name"; missing=1; }
done
[ $missing -eq 0 ] && echo "test_env_doc: every variable documented"
exit $missing
