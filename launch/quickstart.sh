#!/usr/bin/env bash
# The README's first command: install dependencies, build, and run the main job under
# mpirun with 4 ranks. (Until the trainer lands, the main job is `weft info`.)
# Usage: bash launch/quickstart.sh [extra weft info flags]
set -euo pipefail
cd "$(dirname "$0")/.."

bash launch/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"

# --oversubscribe: 4 ranks also run on machines with fewer cores; --allow-run-as-root:
# containers and CI run as root, which Open MPI otherwise refuses.
mpirun_flags=(--oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpirun_flags+=(--allow-run-as-root)
mpirun "${mpirun_flags[@]}" -np 4 build/weft info "$@"
