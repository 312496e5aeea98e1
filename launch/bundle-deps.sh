#!/usr/bin/env bash
# Packs weft's runtime dependencies into one relocatable folder, for nodes without package
# access (a GPU node where `apt-get install` is not allowed): copy the folder there, then
#   source BUNDLE/env.sh; mpirun -np 2 BUNDLE/bin/weft info
#
# What goes in: Open MPI (libraries, mpirun/orted and friends, MCA components, help files,
# the system MCA parameter file), the external PMIx it is built against (with its
# components), parallel HDF5 (+ h5dump/h5ls/h5diff, which Debian links to serial HDF5),
# UCX (+ its transport modules, ucx_info, ucx_perftest), OpenBLAS, cJSON, hwloc's PCI plugin,
# the given binaries (build/weft by default), and every shared library any of those needs,
# found with ldd. Real files are copied; sonames become relative symlinks; nothing the
# runtime reads holds an absolute path (MANIFEST.txt records where each file came from), so
# the folder works wherever it is copied.
#
# What stays out, and must come from the node:
#   - glibc, libstdc++ and libgcc_s: the base system, tied to the kernel/loader. The node's
#     glibc must be at least as new as the build machine's (env.sh warns when it is older).
#   - the GPU stack (driver, CUDA runtime, NCCL, cuBLAS...): driver-matched and large.
#     --with-cuda-libs adds the CUDA toolkit's runtime libraries (never the driver).
#   - rdma-core (libibverbs, librdmacm, libmlx5, libefa...): the user-space half of the NIC
#     driver, which must match the node's kernel driver and finds its providers through
#     absolute paths. UCX's InfiniBand modules use the node's rdma-core when it has one and
#     are skipped (UCX falls back to TCP/shared memory) when it has none.
#
# How relocation works: Open MPI reads OPAL_PREFIX and the OPAL_<DIR> variables in place of
# its compiled-in install directories (Debian's libdir is ${prefix}/lib/<triplet>/openmpi/lib
# and its sysconfdir /etc/openmpi is absolute, so OPAL_PREFIX alone is not enough); PMIx
# reads PMIX_<DIR> the same way but its Debian config file names an absolute component path,
# so env.sh also sets PMIX_MCA_mca_base_component_path; UCX finds modules in UCX_MODULE_DIR
# (and next to libucs); hwloc finds plugins in HWLOC_PLUGINS_PATH. For other nodes, env.sh
# makes bin/orted-env (which sources env.sh, then runs orted) mpirun's launch agent, since
# the orted that mpirun starts over ssh sees none of these variables (`--prefix` forwards
# only OPAL_PREFIX and OPAL_LIBDIR, so PMIx would miss its components). Rejected: rewriting
# RPATHs with patchelf (not installed by install-deps.sh, and plugins would still need the
# variables) and a static build (Open MPI's components are loaded with dlopen).
#
# Usage: launch/bundle-deps.sh DEST [--binary PATH ...] [options]; see --help.
set -euo pipefail
# A command that fails under set -e would otherwise end the script without a word.
trap 'echo "bundle-deps.sh: error: command failed at line $LINENO: $BASH_COMMAND" >&2' ERR

prog=bundle-deps.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)

usage() {
  cat <<EOF
Usage: launch/bundle-deps.sh DEST [--binary PATH ...] [--no-default-binary] [--with-cuda-libs]

Packs the runtime of Open MPI, PMIx, parallel HDF5, UCX, OpenBLAS and cJSON, the given
binaries, and every shared library they need (except glibc, libstdc++, libgcc_s, the GPU
driver/CUDA/NCCL and rdma-core) into DEST, a relocatable folder:

  DEST/bin/      mpirun (orterun), orted, orted-env, ompi_info, h5dump, h5ls, h5diff,
                 ucx_info, ucx_perftest, and the binaries
  DEST/lib/      shared libraries; lib/openmpi3 (MCA components), lib/pmix, lib/ucx, lib/hwloc
  DEST/share/    Open MPI and PMIx help files
  DEST/etc/      openmpi-mca-params.conf, openmpi-default-hostfile
  DEST/env.sh    source it (bash or zsh) from anywhere: sets PATH, LD_LIBRARY_PATH,
                 OPAL_PREFIX and the other OPAL_*/PMIX_* directories, UCX_MODULE_DIR,
                 HWLOC_PLUGINS_PATH, and OMPI_MCA_orte_launch_agent=DEST/bin/orted-env so
                 orted on other nodes gets the same environment
  DEST/MANIFEST.txt  where every file came from, and what was left out

Then, on a node without package access:
  source DEST/env.sh
  mpirun -np 2 DEST/bin/weft info

Options:
  --binary PATH        also bundle this executable (repeatable) into DEST/bin with its
                       libraries; by default build/weft is bundled when it exists
  --no-default-binary  do not add build/weft
  --with-cuda-libs     also bundle the CUDA toolkit runtime libraries the binaries link
                       (libcudart, libnccl, libcublas, ...); the driver (libcuda) never
  -h, --help           show this help

DEST is replaced when it holds an earlier bundle (running twice gives the same result);
a non-empty folder that is not a bundle is left alone and the script stops.
EOF
}

die() {
  echo "$prog: error: $*" >&2
  exit 1
}
note() { echo "$prog: $*"; }
warn() { echo "$prog: warning: $*" >&2; }

# ---------------------------------------------------------------------------------------
# Arguments.
dest=""
binaries=()
default_binary=1
with_cuda=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --binary)
      [ $# -ge 2 ] || die "--binary needs a path"
      binaries+=("$2")
      shift 2
      ;;
    --binary=*)
      binaries+=("${1#--binary=}")
      shift
      ;;
    --no-default-binary)
      default_binary=0
      shift
      ;;
    --with-cuda-libs)
      with_cuda=1
      shift
      ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
      [ -z "$dest" ] || die "only one DEST may be given ('$dest', then '$1')"
      dest=$1
      shift
      ;;
  esac
done
[ -n "$dest" ] || {
  usage >&2
  exit 2
}
if [ "$default_binary" -eq 1 ] && [ -x "$repo_root/build/weft" ]; then
  binaries=("$repo_root/build/weft" "${binaries[@]}")
fi
for b in "${binaries[@]}"; do
  if [ ! -f "$b" ] || [ ! -x "$b" ]; then die "--binary '$b' is not an executable file"; fi
done

# A shell that sourced some bundle's env.sh would make ldd, ompi_info and the tool lookup
# see that bundle instead of the system: drop its variables and path entries first.
strip_bundles() { # strip_bundles LIST: the colon list without entries inside a bundle
  local out="" entry
  local IFS=:
  for entry in $1; do
    if [ -z "$entry" ] || [ -f "$entry/../.weft-bundle" ]; then continue; fi
    out="${out:+$out:}$entry"
  done
  echo "$out"
}
PATH=$(strip_bundles "$PATH")
LD_LIBRARY_PATH=$(strip_bundles "${LD_LIBRARY_PATH:-}")
[ -n "$LD_LIBRARY_PATH" ] || unset LD_LIBRARY_PATH
for v in $(compgen -e | grep -E '^(OPAL|PMIX)_(PREFIX|EXEC_PREFIX|[A-Z]*DIR)$|^PMIX_MCA_mca_base_component_path$|^UCX_MODULE_DIR$|^HWLOC_PLUGINS_PATH$' || true); do
  unset "$v"
done

for tool in ldd ldconfig readlink cp ln du find sort; do
  command -v "$tool" >/dev/null || [ -x "/sbin/$tool" ] || die "'$tool' is needed"
done
ldconfig_cmd=$(command -v ldconfig || echo /sbin/ldconfig)

# ---------------------------------------------------------------------------------------
# Where the system keeps things. Open MPI says where its directories are (ompi_info), so the
# script follows Debian's layout without hard-coding it; the multiarch triplet is the
# fallback.
triplet=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$triplet" ] || triplet="$(uname -m)-linux-gnu"
syslib="/usr/lib/$triplet"

command -v ompi_info >/dev/null ||
  die "ompi_info not found: Open MPI is not installed (run: sudo bash launch/install-deps.sh)"
ompi_path() { # no early-exiting reader in a pipe: under pipefail its SIGPIPE would end the script
  local out
  out=$(ompi_info --parsable --path "$1" 2>/dev/null || true)
  awk -v key="path:$1:" 'index($0, key) == 1 && !done {print substr($0, length(key) + 1); done = 1}' <<<"$out"
}
ompi_pkglibdir=$(ompi_path pkglibdir)
ompi_pkgdatadir=$(ompi_path pkgdatadir)
ompi_sysconfdir=$(ompi_path sysconfdir)
[ -d "$ompi_pkglibdir" ] || die "Open MPI component directory '$ompi_pkglibdir' is missing"
[ -d "$ompi_pkgdatadir" ] || die "Open MPI data directory '$ompi_pkgdatadir' is missing"

# resolve_soname PATTERN: path of the library ldconfig knows under a soname matching PATTERN
# (an extended regex of the whole soname, e.g. 'libmpi\.so\.[0-9]+'), for this architecture.
ld_cache=$("$ldconfig_cmd" -p)
resolve_soname() {
  local arch_tag
  case "$(uname -m)" in
    x86_64) arch_tag="x86-64" ;;
    aarch64) arch_tag="AArch64" ;;
    *) arch_tag="" ;;
  esac
  # A here-string, not `echo | awk ... exit`: awk leaving early would SIGPIPE the echo once the
  # cache outgrows a pipe buffer, and pipefail would then end the script without a message.
  awk -v re="^($1)\$" -v tag="$arch_tag" \
    '$1 ~ re && (tag == "" || index($0, tag)) && !done {print $NF; done = 1}' <<<"$ld_cache"
}

# ---------------------------------------------------------------------------------------
# Staging: build next to DEST and swap at the end, so an interrupted run never leaves a
# half-made bundle where a good one was.
dest_parent=$(dirname "$dest")
mkdir -p "$dest_parent"
dest_parent=$(cd "$dest_parent" && pwd)
dest="$dest_parent/$(basename "$dest")"
marker=".weft-bundle"
if [ -e "$dest" ]; then
  [ -d "$dest" ] || die "'$dest' exists and is not a folder"
  if [ ! -f "$dest/$marker" ] && [ -n "$(ls -A "$dest")" ]; then
    die "'$dest' is a non-empty folder that is not a weft bundle; choose another DEST"
  fi
fi
stage=$(mktemp -d "$dest_parent/.$(basename "$dest").partial.XXXXXX")
cleanup() { [ -z "${stage:-}" ] || rm -rf "$stage"; }
trap cleanup EXIT
mkdir -p "$stage"/{bin,lib,share,etc}

# ---------------------------------------------------------------------------------------
# Library policy: what the node must provide itself.
is_base_lib() { # glibc, libstdc++, libgcc_s and the loader
  case "$1" in
    linux-vdso.so.* | linux-gate.so.* | ld-linux*.so.* | libc.so.* | libm.so.* | \
      libmvec.so.* | libpthread.so.* | libdl.so.* | librt.so.* | libresolv.so.* | \
      libutil.so.* | libanl.so.* | libnsl.so.* | libBrokenLocale.so.* | libthread_db.so.* | \
      libnss_*.so.* | libc_malloc_debug.so.* | libcrypt.so.* | libstdc++.so.* | libgcc_s.so.*)
      return 0
      ;;
  esac
  return 1
}
is_gpu_driver_lib() { # the NVIDIA driver: never bundled
  case "$1" in
    libcuda.so* | libnvidia-*.so* | libnvcuvid.so* | libcudadebugger.so*) return 0 ;;
  esac
  return 1
}
is_cuda_toolkit_lib() { # path or name from the CUDA toolkit / NCCL: only with --with-cuda-libs
  case "$(basename "$1")" in
    libcudart.so* | libnccl*.so* | libcublas*.so* | libcufft*.so* | libcurand.so* | \
      libcusolver*.so* | libcusparse.so* | libnvrtc*.so* | libnvJitLink.so* | libnvToolsExt.so* | \
      libnvtx*.so* | libcudnn*.so* | libcupti.so* | libnvblas.so* | libnpp*.so*)
      return 0
      ;;
  esac
  case "$1" in /usr/local/cuda*/* | /opt/nvidia/*) return 0 ;; esac
  return 1
}
is_rdma_lib() { # rdma-core: must match the node's kernel NIC driver
  case "$1" in
    libibverbs.so.* | librdmacm.so.* | libibumad.so.* | libibmad.so.* | libmlx4.so.* | \
      libmlx5.so.* | libefa.so.* | libhns.so.* | libmana.so.* | libionic.so.* | libbnxt_re*.so.*)
      return 0
      ;;
  esac
  return 1
}

# ---------------------------------------------------------------------------------------
# Copying. copied_real["dir/name"]=source keeps two different files from taking one name.
declare -A copied_real=() linked=() left_out=() missing=()

# copy_real SRC DIR: copies the file SRC resolves to into DIR under its real name, which it
# leaves in $copied_name (not printed: a $(...) subshell would lose the bookkeeping).
copied_name=""
copy_real() {
  local src=$1 dir=$2 real name
  real=$(readlink -f "$src")
  name=$(basename "$real")
  local key="$dir/$name"
  if [ -n "${copied_real[$key]:-}" ]; then
    [ "${copied_real[$key]}" = "$real" ] || cmp -s "${copied_real[$key]}" "$real" ||
      die "two different files are both named $name: ${copied_real[$key]} and $real"
  else
    cp -p "$real" "$stage/$dir/$name"
    chmod u+w "$stage/$dir/$name"
    copied_real[$key]=$real
  fi
  copied_name=$name
}

# add_lib NAME PATH: bundles the library the loader found for NAME at PATH into lib/, with
# NAME as a symlink to the real file when they differ. Policy-excluded libraries are noted.
add_lib() {
  local name=$1 path=$2 real
  if is_base_lib "$name"; then return 0; fi
  if is_gpu_driver_lib "$name"; then
    left_out[$name]="GPU driver"
    return 0
  fi
  if is_cuda_toolkit_lib "$path" || is_cuda_toolkit_lib "$name"; then
    if [ "$with_cuda" -eq 0 ]; then
      left_out[$name]="CUDA toolkit/NCCL (add --with-cuda-libs to bundle)"
      return 0
    fi
  fi
  if is_rdma_lib "$name"; then
    left_out[$name]="rdma-core (node's NIC driver stack)"
    return 0
  fi
  [ -z "${linked[$name]:-}" ] || return 0
  copy_real "$path" lib
  real=$copied_name
  if [ "$real" != "$name" ]; then
    ln -sfn "$real" "$stage/lib/$name"
  fi
  linked[$name]=$real
}

# add_deps FILE...: bundles every library ldd lists for the files (ldd already gives the
# transitive closure as the loader would resolve it on this machine).
add_deps() {
  local name arrow path rest
  while read -r name arrow path rest; do
    [ "$arrow" = "=>" ] || continue # the loader, vdso, and "file:" headers
    case "$path" in
      /*) add_lib "$name" "$path" ;;
      not) missing[$name]=1 ;; # "=> not found"
    esac
  done < <(ldd "$@" 2>/dev/null || true)
}

is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' \n')" = '177ELF' ]; }

# ---------------------------------------------------------------------------------------
# 1. Core libraries, by soname pattern so minor version bumps need no edit.
note "collecting libraries (Open MPI, PMIx, HDF5, UCX, OpenBLAS, cJSON) from $syslib"
roots=(
  'libmpi\.so\.[0-9]+' 'libopen-rte\.so\.[0-9]+' 'libopen-pal\.so\.[0-9]+'
  'libhdf5_openmpi\.so\.[0-9]+' 'libhdf5_openmpi_hl\.so\.[0-9]+'
  'libucp\.so\.[0-9]+' 'libucs\.so\.[0-9]+' 'libuct\.so\.[0-9]+' 'libucm\.so\.[0-9]+'
  'libucs_signal\.so\.[0-9]+'
  'libopenblas\.so\.[0-9]+' 'libcjson\.so\.[0-9]+'
)
root_paths=()
for re in "${roots[@]}"; do
  p=$(resolve_soname "$re")
  if [ -z "$p" ]; then
    case "$re" in
      libucs_signal*) continue ;; # optional helper, absent in some UCX builds
    esac
    die "no library matching '${re//\\/}' is installed (run: sudo bash launch/install-deps.sh)"
  fi
  add_lib "$(basename "$p")" "$p"
  root_paths+=("$p")
done
add_deps "${root_paths[@]}"

# 2. Open MPI's MCA components (every one: which load depends on the node and the MCA
#    parameters), its help/data files and its system parameter files.
# The component folder keeps Debian's name (lib/openmpi3): Open MPI's compiled-in pkglibdir is
# ${libdir}/openmpi3, and `mpirun --prefix` forwards only OPAL_PREFIX and OPAL_LIBDIR to the
# orted daemons it starts on other nodes, which must still find their components.
ompi_compdir="lib/$(basename "$ompi_pkglibdir")"
note "collecting Open MPI components from $ompi_pkglibdir"
mkdir -p "$stage/$ompi_compdir"
ompi_components=()
for f in "$ompi_pkglibdir"/*.so; do
  copy_real "$f" "$ompi_compdir"
  ompi_components+=("$f")
done
add_deps "${ompi_components[@]}"
mkdir -p "$stage/share/openmpi"
cp -pR "$ompi_pkgdatadir"/. "$stage/share/openmpi/"
for f in openmpi-mca-params.conf openmpi-default-hostfile; do
  if [ -f "$ompi_sysconfdir/$f" ]; then cp -p "$ompi_sysconfdir/$f" "$stage/etc/$f"; fi
done

# 3. PMIx, when Open MPI uses an external one: the library is already in lib/ (a dependency
#    of the pmix component); add its components and help files.
pmix_lib=$(ldd "$ompi_pkglibdir"/mca_pmix_*.so 2>/dev/null | awk '$1 ~ /^libpmix\.so/ && !done {print $3; done = 1}' || true)
if [ -n "$pmix_lib" ]; then
  pmix_libdir=$(dirname "$(readlink -f "$pmix_lib")")
  pmix_prefix=$(dirname "$pmix_libdir")
  if [ -d "$pmix_libdir/pmix" ]; then
    note "collecting PMIx components from $pmix_libdir/pmix"
    mkdir -p "$stage/lib/pmix"
    pmix_components=()
    for f in "$pmix_libdir"/pmix/*.so; do
      copy_real "$f" lib/pmix
      pmix_components+=("$f")
    done
    add_deps "${pmix_components[@]}"
  fi
  if [ -d "$pmix_prefix/share/pmix" ]; then
    mkdir -p "$stage/share/pmix"
    cp -pR "$pmix_prefix/share/pmix"/. "$stage/share/pmix/"
  fi
fi

# 4. UCX transport modules (next to libucs, in ucx/), keeping their soname links.
ucs_real=$(readlink -f "$(resolve_soname 'libucs\.so\.[0-9]+')")
ucx_moddir="$(dirname "$ucs_real")/ucx"
if [ -d "$ucx_moddir" ]; then
  note "collecting UCX modules from $ucx_moddir"
  mkdir -p "$stage/lib/ucx"
  ucx_modules=()
  for f in "$ucx_moddir"/*.so.*; do
    [ -e "$f" ] || continue
    if [ -L "$f" ]; then
      ln -sfn "$(basename "$(readlink -f "$f")")" "$stage/lib/ucx/$(basename "$f")"
    else
      copy_real "$f" lib/ucx
      ucx_modules+=("$f")
    fi
  done
  [ ${#ucx_modules[@]} -eq 0 ] || add_deps "${ucx_modules[@]}"
fi

# 5. hwloc's PCI plugin (PCI locality of GPUs and NICs). The OpenCL, GL and libxml plugins
#    stay out: they pull in X11, OpenCL and ICU (30 MB) for information weft does not use.
hwloc_real=$(readlink -f "$(resolve_soname 'libhwloc\.so\.[0-9]+')" 2>/dev/null || true)
if [ -n "$hwloc_real" ] && [ -f "$(dirname "$hwloc_real")/hwloc/hwloc_pci.so" ]; then
  mkdir -p "$stage/lib/hwloc"
  copy_real "$(dirname "$hwloc_real")/hwloc/hwloc_pci.so" lib/hwloc
  add_deps "$(dirname "$hwloc_real")/hwloc/hwloc_pci.so"
fi

# 6. Tools. mpirun and mpiexec are links to orterun, as Debian installs them.
note "collecting tools"
tool_paths=()
add_tool() { # add_tool NAME [required]
  local p
  p=$(command -v "$1" 2>/dev/null || true)
  if [ -z "$p" ]; then
    [ "${2:-}" != required ] || die "'$1' not found (run: sudo bash launch/install-deps.sh)"
    return 0
  fi
  copy_real "$p" bin
  local real
  real=$(basename "$(readlink -f "$p")")
  [ "$real" = "$1" ] || ln -sfn "$real" "$stage/bin/$1"
  tool_paths+=("$p")
}
add_tool mpirun required
add_tool mpiexec
add_tool orterun
add_tool orted
add_tool ompi_info required
add_tool orte-info
add_tool orte-clean
add_tool ompi-clean
add_tool h5dump required
add_tool h5ls required
add_tool h5diff
add_tool ucx_info required
add_tool ucx_perftest
add_deps "${tool_paths[@]}"

# 7. The user's binaries.
for b in "${binaries[@]}"; do
  note "bundling binary $b"
  name=$(basename "$b")
  cp -p "$(readlink -f "$b")" "$stage/bin/$name"
  if is_elf "$b"; then add_deps "$b"; fi
done

# ---------------------------------------------------------------------------------------
# env.sh: found from its own location, so the folder can live anywhere.
cat >"$stage/env.sh" <<'ENV_SH'
# weft dependency bundle: source this file (bash or zsh) to use the bundled Open MPI, PMIx,
# HDF5, UCX, OpenBLAS and cJSON:   source /path/to/bundle/env.sh
# It locates the bundle from its own path; sourcing it twice is harmless. Made by
# launch/bundle-deps.sh; see docs/install.md in the weft repository.
if [ -n "${BASH_VERSION:-}" ]; then
  _wb_self=${BASH_SOURCE[0]}
elif [ -n "${ZSH_VERSION:-}" ]; then
  eval '_wb_self=${(%):-%x}'
else
  _wb_self=${_WB_ENV_SH:-}
fi
if [ -z "${_wb_self:-}" ] || [ ! -f "$_wb_self" ]; then
  echo "env.sh: cannot tell where this file is; source it from bash or zsh" >&2
  echo "        (other shells: _WB_ENV_SH=/path/to/bundle/env.sh . /path/to/bundle/env.sh)" >&2
  return 1 2>/dev/null || exit 1
fi
_wb_root=$(cd "$(dirname "$_wb_self")" && pwd -P)

_wb_prepend() { # _wb_prepend VAR DIR: puts DIR first in the colon list VAR, once
  eval "_wb_cur=\${$1:-}"
  case ":$_wb_cur:" in
    *":$2:"*) ;;
    *) if [ -n "$_wb_cur" ]; then eval "export $1=\"\$2:\$_wb_cur\""; else eval "export $1=\"\$2\""; fi ;;
  esac
  unset _wb_cur
}
_wb_prepend PATH "$_wb_root/bin"
_wb_prepend LD_LIBRARY_PATH "$_wb_root/lib"

# Open MPI: every install directory, because Debian's compiled-in ones are not all below the
# prefix (sysconfdir is /etc/openmpi, libdir is <prefix>/lib/<triplet>/openmpi/lib).
export OPAL_PREFIX="$_wb_root"
export OPAL_EXEC_PREFIX="$_wb_root"
export OPAL_BINDIR="$_wb_root/bin"
export OPAL_LIBDIR="$_wb_root/lib"
export OPAL_PKGLIBDIR="$_wb_root/@OMPI_COMPDIR@"
export OPAL_DATAROOTDIR="$_wb_root/share"
export OPAL_DATADIR="$_wb_root/share"
export OPAL_PKGDATADIR="$_wb_root/share/openmpi"
export OPAL_SYSCONFDIR="$_wb_root/etc"
# PMIx (used by mpirun, orted and every rank): the same for its directories; the component
# path is also set as an MCA parameter because Debian's pmix-mca-params.conf names the
# system folder outright.
export PMIX_PREFIX="$_wb_root"
export PMIX_EXEC_PREFIX="$_wb_root"
export PMIX_BINDIR="$_wb_root/bin"
export PMIX_LIBDIR="$_wb_root/lib"
export PMIX_PKGLIBDIR="$_wb_root/lib/pmix"
export PMIX_DATAROOTDIR="$_wb_root/share"
export PMIX_DATADIR="$_wb_root/share"
export PMIX_PKGDATADIR="$_wb_root/share/pmix"
export PMIX_SYSCONFDIR="$_wb_root/etc"
export PMIX_MCA_mca_base_component_path="$_wb_root/lib/pmix"
# UCX transport modules and hwloc plugins.
export UCX_MODULE_DIR="$_wb_root/lib/ucx"
export HWLOC_PLUGINS_PATH="$_wb_root/lib/hwloc"
# mpirun starts an orted on every other node through ssh (or srun), in a fresh shell that has
# none of the above. Starting it through bin/orted-env, which sources this file first, gives
# orted and the ranks it forks the same environment (the bundle must be at the same path on
# every node). `mpirun --prefix` alone forwards OPAL_PREFIX/OPAL_LIBDIR but not PMIx's.
export OMPI_MCA_orte_launch_agent="$_wb_root/bin/orted-env"

# The bundled libraries need a glibc at least as new as the one they were built against.
_wb_need=$(sed -n "s/^glibc=//p" "$_wb_root/.weft-bundle" 2>/dev/null)
_wb_have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [ -n "$_wb_need" ] && [ -n "$_wb_have" ] &&
  [ "$(printf '%s\n%s\n' "$_wb_need" "$_wb_have" | sort -V | head -n 1)" != "$_wb_need" ]; then
  echo "env.sh: warning: this node has glibc $_wb_have; the bundle was built with glibc" \
    "$_wb_need and needs at least that" >&2
fi
unset _wb_self _wb_root _wb_need _wb_have
unset -f _wb_prepend
ENV_SH
sed -i "s|@OMPI_COMPDIR@|$ompi_compdir|" "$stage/env.sh"

cat >"$stage/bin/orted-env" <<'ORTED_ENV'
#!/usr/bin/env bash
# Open MPI's launch agent for this bundle (env.sh sets OMPI_MCA_orte_launch_agent to this
# file): mpirun runs it on remote nodes in place of orted; it sets up the bundle's
# environment, then becomes orted with the same arguments.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
source "$here/../env.sh" || exit 1
exec "$here/orted" "$@"
ORTED_ENV
chmod 755 "$stage/bin/orted-env"

# ---------------------------------------------------------------------------------------
# Marker and manifest, then swap into place.
glibc_version=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
{
  echo "# weft dependency bundle made by launch/bundle-deps.sh"
  echo "built_on=$(hostname) $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") $(uname -m)"
  echo "glibc=$glibc_version"
  echo "openmpi=$(ompi_info --version 2>/dev/null | head -1)"
  echo "with_cuda_libs=$with_cuda"
} >"$stage/$marker"
{
  echo "# bundle path <- source path"
  for key in "${!copied_real[@]}"; do echo "$key <- ${copied_real[$key]}"; done | sort
  for b in "${binaries[@]}"; do echo "bin/$(basename "$b") <- $(readlink -f "$b")"; done
  for name in "${!left_out[@]}"; do echo "left out: $name (${left_out[$name]})"; done | sort
} >"$stage/MANIFEST.txt"

if [ ${#missing[@]} -gt 0 ]; then
  warn "libraries ldd could not find on this machine (components needing them will not load):"
  for name in "${!missing[@]}"; do echo "    $name" >&2; done
fi

rm -rf "$dest"
mv "$stage" "$dest"
stage=""

n_files=$(find "$dest" -type f | wc -l)
n_links=$(find "$dest" -type l | wc -l)
size=$(du -sh "$dest" | awk '{print $1}')
note "bundle ready: $dest"
echo "  $n_files files, $n_links symlinks, $size"
echo "  libraries: $(find "$dest/lib" -maxdepth 1 -type f | wc -l)," \
  "Open MPI components: $(find "$dest/$ompi_compdir" -type f | wc -l)," \
  "UCX modules: $(find "$dest/lib/ucx" -type f 2>/dev/null | wc -l)," \
  "tools: $(find "$dest/bin" \( -type f -o -type l \) | wc -l)"
if [ ${#left_out[@]} -gt 0 ]; then
  echo "  not bundled, the node must provide them if used:"
  for name in "${!left_out[@]}"; do echo "    $name (${left_out[$name]})"; done | sort
fi
echo "  use it: source $dest/env.sh"
