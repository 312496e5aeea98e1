#!/usr/bin/env bash
# The README's first command: install dependencies, build, and run the main job under mpirun
# with 4 ranks: `weft train` with its defaults (a small hybrid linear/softmax-attention MoE
# model, 200 steps on the fortunes corpus, about two minutes on 2 CPU cores), writing
# build/quickstart-metrics.jsonl and build/quickstart-params.h5.
# Usage: bash launch/quickstart.sh [extra weft train flags, e.g. --sp 2 --steps 500]
set -euo pipefail
cd "$(dirname "$0")/.."

bash launch/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"

# --oversubscribe: 4 ranks also run on machines with fewer cores; --bind-to none: with more
# ranks than cores, binding would pile ranks onto one core; --allow-run-as-root: containers
# and CI run as root, which Open MPI otherwise refuses.
mpirun_flags=(--oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpirun_flags+=(--allow-run-as-root)
mpirun "${mpirun_flags[@]}" -np 4 build/weft train \
  --metrics build/quickstart-metrics.jsonl --save build/quickstart-params.h5 "$@"
