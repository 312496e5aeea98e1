#!/bin/sh
# Source checks that the compiler cannot do (style.md rules 1 and 8):
#  - every C/CUDA file is formatted per .clang-format;
#  - mpi.h, nccl.h and ucp.h are included only in comm/, hdf5.h only in checkpoints/,
#    and __global__ appears only in kernels/.
# Usage: check_source.sh CLANG_FORMAT SOURCE_DIR
clang_format=$1
cd "$2" || exit 1
status=0
files=$(find src kernels comm parallel checkpoints tests bench -type f \
          \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null | sort)
for f in $files; do
  if ! "$clang_format" --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "not formatted (run: clang-format -i $f)"
    status=1
  fi
done
layer_check() { # pattern allowed_dir description
  bad=$(grep -lE "$1" $files | grep -v "^$2/" || true)
  if [ -n "$bad" ]; then
    echo "$3 outside $2/: $bad"
    status=1
  fi
}
layer_check '#include <(mpi|mpi-ext|nccl)\.h>' comm "mpi.h/nccl.h"
layer_check '#include <ucp/' comm "ucp.h"
layer_check '#include <hdf5\.h>' checkpoints "hdf5.h"
layer_check '__global__' kernels "__global__"
[ $status -eq 0 ] && echo "check_source: $(echo "$files" | wc -l) files formatted, layering clean"
exit $status
