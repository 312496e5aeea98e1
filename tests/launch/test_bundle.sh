#!/usr/bin/env bash
# Proves that launch/bundle-deps.sh makes a dependency bundle that works on its own:
#
#   1. --help works; a non-empty folder that is not a bundle is refused and left alone.
#   2. A bundle is built twice into one place (the second run must give the same tree), then
#      moved elsewhere, so nothing can point back at where it was made.
#   3. From an empty environment (env -i, PATH=bundle/bin:/usr/bin:/bin, env.sh sourced):
#      ldd resolves libmpi/libhdf5/libucp into the bundle; `mpirun -np 2` runs a probe program
#      (MPI allreduce, collective parallel-HDF5 write, UCX context) and, when given, `weft
#      info`; h5dump reads the file back; ucx_info loads its modules from the bundle; ompi_info
#      reports the bundled component/help/config folders. Every shared object any of those
#      processes loads (LD_DEBUG=libs, for mpirun and each rank) must come from the bundle,
#      except glibc/libstdc++/libgcc_s and what the bundle lists as left out (CUDA, NCCL,
#      rdma-core).
#   4. The same again in a private mount namespace where every system file the bundle was
#      copied from, and Open MPI's/PMIx's/UCX's plugin and data folders, are covered by empty
#      files and folders: a node without the packages. Needs root or unprivileged user
#      namespaces; skipped with a note otherwise.
#   In 3 and 4, two-"node" launches too: a fake ssh starts orted in an empty environment, as
#   on another node, with and without `mpirun --prefix`; no warnings may be printed.
#
# Usage: tests/launch/test_bundle.sh [WEFT_BINARY]   (ctest: launch.bundle_deps)
# Exit 0 on success, 77 when MPI's compiler is missing (skipped), 1 on failure. KEEP_T=1 keeps
# the temporary folder (bundle, loader traces) for inspection.
set -euo pipefail
trap 'echo "test_bundle.sh: command failed at line $LINENO: $BASH_COMMAND" >&2' ERR

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bundler="$repo/launch/bundle-deps.sh"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
ok() { echo "ok    $*"; }

mpiflags=(--oversubscribe)
[ "$(id -u)" -ne 0 ] || mpiflags+=(--allow-run-as-root)

# run_clean BUNDLE SCRIPT: runs the bash SCRIPT in an empty environment with BUNDLE/env.sh
# sourced; T (the test folder) and SHELL (Open MPI probes it to start remote daemons) are
# passed along, and so are the sanitizer settings of a
# sanitizer build's test run (they name no library location).
# shellcheck disable=SC2016 # $0/$1 expand in the inner bash
run_clean() {
  local keep=() v
  for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS OMPI_MCA_mca_base_component_disable_dlclose; do
    [ -z "${!v:-}" ] || keep+=("$v=${!v}")
  done
  env -i HOME="$T/home" SHELL=/bin/bash TMPDIR="$T" T="$T" PATH="$1/bin:/usr/bin:/bin" "${keep[@]}" \
    bash -c 'source "$0/env.sh" && eval "$1"' "$1" "$2"
}

# check_loaded BUNDLE LABEL FILE...: every shared object named in the LD_DEBUG traces or
# "loaded:" lines of FILE... lies in BUNDLE, or is a base-system library, or is one the
# bundle reports as left out. Prints where the key libraries came from.
check_loaded() {
  local b=$1 label=$2
  shift 2
  local allowed path name bad=() n_bundle=0
  allowed=" $(sed -n 's/^left out: \([^ ]*\) .*/\1/p' "$b/MANIFEST.txt" | tr '\n' ' ') "
  local paths
  paths=$(cat "$@" | sed -n 's/.*calling init: \(\/.*\)$/\1/p; s/^loaded: \(\/.*\)$/\1/p' | sort -u)
  [ -n "$paths" ] || fail "$label: no loader trace was recorded"
  while IFS= read -r path; do
    name=$(basename "$path")
    case "$path" in
      "$b"/*)
        n_bundle=$((n_bundle + 1))
        continue
        ;;
    esac
    case "$name" in
      ld-linux*.so.* | libc.so.* | libm.so.* | libmvec.so.* | libpthread.so.* | libdl.so.* | \
        librt.so.* | libresolv.so.* | libutil.so.* | libanl.so.* | libnss_*.so.* | \
        libstdc++.so.* | libgcc_s.so.*) continue ;;
      libcuda.so* | libnvidia-*.so*) continue ;; # the GPU driver, never bundled
    esac
    case "$path" in */libibverbs/*-rdmav*.so) continue ;; esac # rdma-core providers
    case "$allowed" in *" $name "*) continue ;; esac
    bad+=("$path")
  done <<<"$paths"
  [ ${#bad[@]} -eq 0 ] || fail "$label: loaded from outside the bundle: ${bad[*]}"
  local key evidence=""
  for key in libmpi.so libhdf5_openmpi.so libhdf5_serial.so libucp.so libopen-pal.so libpmix.so; do
    path=$(grep -m1 "/$key" <<<"$paths" || true)
    [ -z "$path" ] || evidence+=" $(basename "$path")<-${path%/*}"
  done
  ok "$label: $n_bundle objects from the bundle, none from the system but base/left-out;$evidence"
}

# no_warnings LABEL OUTPUT: Open MPI/PMIx help boxes and warnings mean something was not found.
no_warnings() {
  if grep -qiE "warning|sorry|help file|not found|unable to|cannot open" <<<"$2"; then
    fail "$1 printed warnings: $2"
  fi
}

# phase_run BUNDLE TAG: the checks of steps 3 and 4 against BUNDLE.
phase_run() {
  local b=$1 tag=$2 out
  local trace="$T/trace-$tag"
  mkdir -p "$trace"

  # ldd sees the bundled libraries first.
  # shellcheck disable=SC2016 # expands inside run_clean's environment
  out=$(run_clean "$b" 'ldd "$OPAL_PREFIX/bin/bundle_hello"')
  local lib line
  for lib in libmpi.so libhdf5_openmpi.so libucp.so libopen-pal.so; do
    line=$(grep -m1 "$lib" <<<"$out" || true)
    [[ "$line" == *"=> $b/lib/"* ]] || fail "[$tag] ldd: $lib resolves to '$line'"
  done
  if grep -q 'not found' <<<"$out"; then fail "[$tag] ldd: $(echo "$out" | grep 'not found')"; fi
  ok "[$tag] ldd bundle_hello: libmpi, libhdf5_openmpi, libucp, libopen-pal from $b/lib"

  # Open MPI uses the bundled component, help and configuration folders.
  out=$(run_clean "$b" 'ompi_info --parsable --path all')
  local want
  for want in "pkglibdir:$b/lib/openmpi3" "pkgdatadir:$b/share/openmpi" "sysconfdir:$b/etc"; do
    grep -qx "path:$want" <<<"$out" || fail "[$tag] ompi_info: no 'path:$want' in: $out"
  done
  [ -f "$b/lib/openmpi3/mca_btl_vader.so" ] || fail "[$tag] no components in $b/lib/openmpi3"
  ok "[$tag] ompi_info: pkglibdir, pkgdatadir, sysconfdir inside the bundle"

  # mpirun -np 2 of the probe program, with loader traces of mpirun and both ranks.
  rm -f "$T/out.h5" "$T/out.h5.loaded"
  out=$(run_clean "$b" "LD_DEBUG=libs LD_DEBUG_OUTPUT='$trace/hello' \
    mpirun ${mpiflags[*]} -np 2 \"\$OPAL_PREFIX/bin/bundle_hello\" '$T/out.h5'" 2>&1) ||
    fail "[$tag] mpirun -np 2 bundle_hello failed: $out"
  if ! grep -q 'hello rank 0 of 2 sum 1' <<<"$out" || ! grep -q 'hello rank 1 of 2 sum 1' <<<"$out"; then
    fail "[$tag] bundle_hello output: $out"
  fi
  no_warnings "[$tag] mpirun -np 2 bundle_hello" "$out"
  [ "$(find "$trace" -name 'hello.*' | wc -l)" -ge 3 ] || fail "[$tag] expected traces of mpirun and 2 ranks"
  ok "[$tag] mpirun -np 2 bundle_hello: $(grep -m1 '^versions:' <<<"$out" | sed 's/, package:[^;]*;/;/')"
  check_loaded "$b" "[$tag] mpirun + 2 ranks" "$trace"/hello.* "$T/out.h5.loaded"

  # The HDF5 tools read what parallel HDF5 wrote; ucx_info names the bundled libucs.
  out=$(run_clean "$b" "command -v h5dump; h5dump --version; \
    LD_DEBUG=libs LD_DEBUG_OUTPUT='$trace/h5dump' h5dump -d /ranks '$T/out.h5'" 2>&1) ||
    fail "[$tag] h5dump failed: $out"
  grep -qx "$b/bin/h5dump" <<<"$out" || fail "[$tag] h5dump is not the bundled one: $out"
  grep -q '(0): 0, 1' <<<"$out" || fail "[$tag] h5dump did not show ranks 0, 1: $out"
  ok "[$tag] $(grep -m1 'Version' <<<"$out") reads the file bundle_hello wrote: (0): 0, 1"
  check_loaded "$b" "[$tag] h5dump" "$trace"/h5dump.*

  # ucx_info -d loads every transport module: they must come from the bundle's lib/ucx.
  out=$(run_clean "$b" "command -v ucx_info; ucx_info -v; \
    LD_DEBUG=libs LD_DEBUG_OUTPUT='$trace/ucx' ucx_info -d" 2>&1) ||
    fail "[$tag] ucx_info failed: $out"
  grep -qx "$b/bin/ucx_info" <<<"$out" || fail "[$tag] ucx_info is not the bundled one: $out"
  grep -q 'Transport: posix' <<<"$out" || fail "[$tag] ucx_info -d lists no transports: $out"
  grep -q "$b/lib/ucx/libuct_cma.so" <<<"$(grep -h 'calling init:' "$trace"/ucx.*)" ||
    fail "[$tag] ucx_info did not load its cma module from $b/lib/ucx"
  ok "[$tag] ucx_info: $(grep -m1 '# Version' <<<"$out" | sed 's/^# *//'), transports$(echo "$out" | sed -n 's/^#  *Transport: //p' | sort -u | tr '\n' ' ' | sed 's/^/ /'), modules from $b/lib/ucx"
  check_loaded "$b" "[$tag] ucx_info -d" "$trace"/ucx.*

  # weft itself.
  if [ -n "$weft" ]; then
    out=$(run_clean "$b" "LD_DEBUG=libs LD_DEBUG_OUTPUT='$trace/weft' \
      mpirun ${mpiflags[*]} -np 2 \"\$OPAL_PREFIX/bin/$(basename "$weft")\" info" 2>&1) ||
      fail "[$tag] mpirun -np 2 weft info failed: $out"
    ok "[$tag] mpirun -np 2 weft info: exit 0, $(echo "$out" | grep -c .) lines of output"
    check_loaded "$b" "[$tag] mpirun + 2 weft ranks" "$trace"/weft.*
  fi
}

# phase_remote BUNDLE TAG: two-"node" launches. A fake ssh runs the remote command here in an
# empty environment, as a fresh login on another node would, so orted and the ranks under it
# see only what mpirun passes on: once plainly (env.sh's launch agent bin/orted-env), once
# with --prefix.
phase_remote() {
  local b=$1 tag=$2 out variant prefix_arg
  cat >"$T/fake-ssh" <<'EOF'
#!/bin/sh
# Stands in for ssh: drops ssh options and the host name, runs the command here in an empty
# environment (but the test's TMPDIR: another node would have its own /tmp for Open MPI's
# session folder, and this one may hold another user's).
echo "fake-ssh: $*" >>"$FAKE_SSH_LOG"
while [ $# -gt 0 ]; do case "$1" in -x | -T | -q | -n) shift ;; -o | -p | -l) shift 2 ;; *) break ;; esac; done
shift
exec env -i HOME=/tmp TMPDIR="${TMPDIR:-/tmp}" PATH=/usr/bin:/bin /bin/sh -c "$*"
EOF
  chmod +x "$T/fake-ssh"
  for variant in plain --prefix; do
    prefix_arg=""
    # shellcheck disable=SC2016 # expands inside run_clean's environment
    [ "$variant" = plain ] || prefix_arg='--prefix "$OPAL_PREFIX"'
    rm -f "$T/fake-ssh.log" "$T/out.h5" "$T/out.h5.loaded"
    out=$(run_clean "$b" "FAKE_SSH_LOG='$T/fake-ssh.log' mpirun ${mpiflags[*]} $prefix_arg \
      --mca plm_rsh_agent '$T/fake-ssh' --host weft-fake-node:2 \
      -np 2 \"\$OPAL_PREFIX/bin/bundle_hello\" '$T/out.h5'" 2>&1 | tr -d '\0') ||
      fail "[$tag] remote launch ($variant) failed: $out"
    grep -q "$b/bin/orted-env" "$T/fake-ssh.log" ||
      fail "[$tag] ($variant) orted was not started through fake ssh and bin/orted-env: $(cat "$T/fake-ssh.log")"
    grep -q 'hello rank 1 of 2 sum 1' <<<"$out" || fail "[$tag] remote launch ($variant) output: $out"
    no_warnings "[$tag] remote launch ($variant)" "$out"
    ok "[$tag] mpirun over (fake) ssh, $variant: orted started by bin/orted-env in an empty shell, 2 ranks, no warnings"
    check_loaded "$b" "[$tag] rank 0 under the remote orted ($variant)" "$T/out.h5.loaded"
  done
}

# ---------------------------------------------------------------------------------------
# Inside the private mount namespace (step 4): hide, prove it is hidden, rerun.
if [ "${1:-}" = "--inside-namespace" ]; then
  b=$2
  T=$3
  weft=${4:-}
  empty="$T/empty-file"
  : >"$empty"
  hidden=0
  # Plugin folders and the data/config folders copied wholesale.
  while IFS= read -r dir; do
    [ -d "$dir" ] || continue
    mount -t tmpfs -o size=1m weft-hidden "$dir"
    hidden=$((hidden + 1))
  done <"$T/hide-dirs"
  # Every file the bundle copied from the system.
  while IFS= read -r src; do
    [ -e "$src" ] || continue # inside a folder hidden above
    mount --bind "$empty" "$src"
    hidden=$((hidden + 1))
  done < <(sed -n 's/^[^#].* <- \(\/\(usr\|lib\|etc\|bin\|opt\)\/.*\)$/\1/p' "$b/MANIFEST.txt")
  # The system copies are unusable now: the probe program cannot start without the bundle.
  if env -i "$b/bin/bundle_hello" "$T/x.h5" >"$T/unbundled.log" 2>&1; then
    fail "[hidden] bundle_hello still runs on the system's libraries"
  fi
  ok "[hidden] $hidden system files/folders covered; without env.sh bundle_hello fails: $(head -1 "$T/unbundled.log")"
  phase_run "$b" hidden
  phase_remote "$b" hidden
  exit 0
fi

# ---------------------------------------------------------------------------------------
weft=${1:-}
if [ -n "$weft" ]; then
  [ -x "$weft" ] || fail "'$weft' is not an executable"
  weft=$(readlink -f "$weft")
fi
command -v mpicc >/dev/null || {
  echo "SKIP: mpicc not found (install libopenmpi-dev)"
  exit 77
}
T=$(mktemp -d "${TMPDIR:-/tmp}/weft-bundle-test.XXXXXX")
T=$(readlink -f "$T")
trap '[ -n "${KEEP_T:-}" ] || rm -rf "$T"' EXIT
mkdir -p "$T/home"
start=$SECONDS

# The probe program, linked against the system's libraries like weft. It lives here rather
# than in a .c file because tests/check_source.sh keeps mpi.h/ucp.h/hdf5.h inside their layers.
# It touches each runtime as weft does (MPI allreduce, a collective parallel-HDF5 write of
# /ranks[rank] = rank, a UCX context), and rank 0 lists every shared object it loaded in
# OUT.h5.loaded (a file: mpirun interleaves the ranks' stdout in chunks, not lines).
cat >"$T/bundle_hello.c" <<'C_EOF'
#define _GNU_SOURCE
#include <hdf5.h>
#include <link.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <ucp/api/ucp.h>

static int print_object(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  if (info->dlpi_name && info->dlpi_name[0] == '/')
    fprintf((FILE *)data, "loaded: %s\n", info->dlpi_name);
  return 0;
}

static int fail(const char *what) {
  fprintf(stderr, "bundle_hello: %s failed\n", what);
  MPI_Abort(MPI_COMM_WORLD, 1);
  return 1;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc != 2) return fail("usage: bundle_hello OUT.h5; argument check");

  int sum = 0;
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);

  /* UCX: a context is enough to load libucp/libuct and the transport modules. */
  ucp_params_t params;
  memset(&params, 0, sizeof params);
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA;
  ucp_config_t *config = NULL;
  ucp_context_h context = NULL;
  if (ucp_config_read(NULL, NULL, &config) != UCS_OK) return fail("ucp_config_read");
  if (ucp_init(&params, config, &context) != UCS_OK) return fail("ucp_init");
  ucp_config_release(config);

  /* Parallel HDF5: every rank writes its rank number into /ranks[rank] collectively. */
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0 || H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL) < 0)
    return fail("H5Pset_fapl_mpio");
  hid_t file = H5Fcreate(argv[1], H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  if (file < 0) return fail("H5Fcreate");
  hsize_t dims[1] = {(hsize_t)size}, start[1] = {(hsize_t)rank}, count[1] = {1};
  hid_t filespace = H5Screate_simple(1, dims, NULL);
  hid_t dset = H5Dcreate2(file, "ranks", H5T_NATIVE_INT, filespace, H5P_DEFAULT, H5P_DEFAULT,
                          H5P_DEFAULT);
  if (dset < 0) return fail("H5Dcreate2");
  H5Sselect_hyperslab(filespace, H5S_SELECT_SET, start, NULL, count, NULL);
  hid_t memspace = H5Screate_simple(1, count, NULL);
  hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
  if (H5Dwrite(dset, H5T_NATIVE_INT, memspace, filespace, dxpl, &rank) < 0)
    return fail("H5Dwrite");
  H5Pclose(dxpl);
  H5Sclose(memspace);
  H5Sclose(filespace);
  H5Dclose(dset);
  H5Fclose(file);
  H5Pclose(fapl);

  unsigned h5_major = 0, h5_minor = 0, h5_release = 0, ucx_major = 0, ucx_minor = 0,
           ucx_release = 0;
  H5get_libversion(&h5_major, &h5_minor, &h5_release);
  ucp_get_version(&ucx_major, &ucx_minor, &ucx_release);
  char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(mpi_version, &len);
  char *newline = strchr(mpi_version, '\n');
  if (newline) *newline = '\0';

  printf("hello rank %d of %d sum %d\n", rank, size, sum);
  if (rank == 0) {
    printf("versions: %s; HDF5 %u.%u.%u; UCX %u.%u.%u\n", mpi_version, h5_major, h5_minor,
           h5_release, ucx_major, ucx_minor, ucx_release);
    char path[4096];
    snprintf(path, sizeof path, "%s.loaded", argv[1]);
    FILE *list = fopen(path, "w");
    if (!list) return fail("opening OUT.h5.loaded");
    dl_iterate_phdr(print_object, list);
    fclose(list);
  }
  fflush(stdout);
  ucp_cleanup(context);
  MPI_Finalize();
  return 0;
}
C_EOF
flags=$(pkg-config --cflags --libs hdf5-openmpi ucx 2>/dev/null) ||
  flags="-I/usr/include/hdf5/openmpi -L/usr/lib/$(gcc -print-multiarch)/hdf5/openmpi -lhdf5 -lucp -lucs"
# shellcheck disable=SC2086
mpicc -O1 -o "$T/bundle_hello" "$T/bundle_hello.c" $flags || fail "cannot compile bundle_hello.c"

# 1. Help and refusal.
grep -q '^Usage: launch/bundle-deps.sh DEST' <<<"$(bash "$bundler" --help)" || fail "--help"
mkdir "$T/not-a-bundle"
echo keep >"$T/not-a-bundle/data"
if bash "$bundler" "$T/not-a-bundle" --no-default-binary >"$T/refuse.log" 2>&1; then
  fail "bundle-deps.sh overwrote a folder that is not a bundle"
fi
[ "$(cat "$T/not-a-bundle/data")" = keep ] || fail "the refused folder was changed"
ok "--help; refuses a non-bundle folder: $(grep -m1 error "$T/refuse.log")"

# 2. Build twice (idempotent), then move.
args=(--no-default-binary --binary "$T/bundle_hello")
[ -z "$weft" ] || args+=(--binary "$weft")
bash "$bundler" "$T/made/bundle" "${args[@]}" >"$T/bundle1.log" 2>&1 || fail "bundle-deps.sh: $(cat "$T/bundle1.log")"
(cd "$T/made/bundle" && find . -printf '%p %y %s %l\n' | sort) >"$T/tree1"
bash "$bundler" "$T/made/bundle" "${args[@]}" >"$T/bundle2.log" || fail "bundle-deps.sh (second run)"
(cd "$T/made/bundle" && find . -printf '%p %y %s %l\n' | sort) >"$T/tree2"
cmp -s "$T/tree1" "$T/tree2" || fail "the second run gave a different tree: $(diff "$T/tree1" "$T/tree2" | head)"
leftovers=$(find "$T/made" -mindepth 1 -maxdepth 1 ! -name bundle)
[ -z "$leftovers" ] || fail "staging leftovers: $leftovers"
sed -n '/bundle ready/,$p' "$T/bundle2.log"
ok "built twice, same tree ($(wc -l <"$T/tree1") entries)"
mkdir -p "$T/moved"
mv "$T/made/bundle" "$T/moved/deps"
rmdir "$T/made"
b="$T/moved/deps"
if grep -rlF "$T/made" "$b" >/dev/null 2>&1; then fail "the bundle names its build path: $(grep -rlF "$T/made" "$b")"; fi
ok "moved to $b; no file names the old path"

# 3. Scrubbed environment, system still visible.
phase_run "$b" scrubbed
phase_remote "$b" scrubbed

# 4. System copies hidden in a private mount namespace.
unshare_cmd=()
if [ "$(id -u)" -eq 0 ] && unshare -m --propagation private true 2>/dev/null; then
  unshare_cmd=(unshare -m --propagation private)
elif unshare -r -m --propagation private true 2>/dev/null; then
  unshare_cmd=(unshare -r -m --propagation private) # root only inside a user namespace
fi
if [ ${#unshare_cmd[@]} -eq 0 ]; then
  echo "note  [hidden] skipped: no mount namespace (needs root or unprivileged user namespaces)"
else
  {
    sed -n 's/^[^#].* <- \(\/.*\)$/\1/p' "$b/MANIFEST.txt" | grep -E '^/(usr|lib|etc|opt)/' |
      while IFS= read -r src; do
        case "$src" in
          */openmpi3/* | */pmix/* | */ucx/* | */hwloc/*) dirname "$src" ;;
        esac
      done
    # Open MPI's help files and configuration; PMIx's whole prefix (its components, help
    # files and the config file naming the component folder).
    ompi_info --parsable --path pkgdatadir | sed -n 's/^path:pkgdatadir://p'
    ompi_info --parsable --path sysconfdir | sed -n 's/^path:sysconfdir://p'
    sed -n 's/^lib\/pmix\/.* <- \(\/.*\)\/lib\/pmix\/.*/\1/p' "$b/MANIFEST.txt"
  } | sort -u >"$T/hide-dirs"
  "${unshare_cmd[@]}" bash "${BASH_SOURCE[0]}" --inside-namespace "$b" "$T" "$weft" ||
    fail "checks with the system copies hidden"
fi

echo "PASS: test_bundle.sh ($((SECONDS - start)) s, bundle $(du -sh "$b" | awk '{print $1}'))"
