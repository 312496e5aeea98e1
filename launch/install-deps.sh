#!/usr/bin/env bash
# Installs every Debian package weft's build, tests and default training corpus need.
#
# Idempotent and non-interactive: packages already present are skipped by apt, and nothing is
# asked. Runs as root, or through sudo when started by another user. The CUDA toolkit is not a
# Debian package here: when nvcc is on PATH (or under /usr/local/cuda) the CUDA backend is
# built, otherwise it is skipped; this script does not install CUDA.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang-format # toolchain and the formatter CI checks with
  libopenmpi-dev openmpi-bin                    # MPI (Open MPI)
  libhdf5-openmpi-dev hdf5-tools                # parallel HDF5 and h5dump/h5ls
  libucx-dev ucx-utils                          # UCX for one-sided KV transfer
  libopenblas-dev                               # CBLAS GEMM on the CPU device
  libcjson-dev                                  # JSON configuration files
  python3 python3-numpy python3-h5py            # test oracles that read weft's HDF5 files
  python3-torch                                 # PyTorch reference implementations (tests/ref)
  fortunes                                      # default training corpus
  slurm-wlm munge                               # SLURM for launch/local-slurm.sh and its test
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: not root and sudo is missing" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

missing=()
for p in "${packages[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps.sh: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
