/* Tensor files: lifecycle, dataset queries and error reporting (API in weft/tensor_file.h).
 *
 * Errors: HDF5's automatic stack printing is switched off and every failure is logged here
 * once, naming the file, the dataset and the cause found on HDF5's error stack (the API-level
 * message and the innermost one, e.g. "unable to open file; file signature not found").
 * Rejected: keeping HDF5's printout, which is a dozen lines per rank without the dataset name.
 *
 * Collective files agree on outcomes before any collective HDF5 call (weft_tf_agree): one
 * small all-reduce per operation, negligible next to the I/O, against the alternative of one
 * rank returning early while the others wait forever inside H5Dwrite.
 *
 * WEFT_H5_CHECK (weft/check.h) is not used: its message points at HDF5's printed error
 * stack, which this module turns off; weft_tf_h5_error names the file and dataset instead.
 *
 * The library is used on little-endian hosts only: memory types are the little-endian file
 * types so that no transfer needs a conversion (see the header); a big-endian build stops
 * here at compile time rather than writing byte-swapped tensors. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tensor_file_internal.h"
#include "weft/check.h"
#include "weft/comm_mpi.h"
#include "weft/log.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "weft tensor files assume a little-endian host (memory type == file type)"
#endif

/* ---- error reporting ------------------------------------------------------------------ */

typedef struct tf_h5_cause {
  char top[160];
  char inner[160];
} tf_h5_cause_t;

static herr_t tf_h5_walk(unsigned n, const H5E_error2_t *err, void *data) {
  tf_h5_cause_t *cause = data;
  const char *desc = err->desc && err->desc[0] ? err->desc : err->func_name;
  if (!desc) return 0;
  if (n == 0) snprintf(cause->top, sizeof cause->top, "%s", desc);
  snprintf(cause->inner, sizeof cause->inner, "%s", desc);
  return 0;
}

static void tf_log_error(const char *path, const char *dataset, const char *msg,
                         const char *cause) {
  WEFT_ERROR(WEFT_TF_SUBSYS, "tensor file '%s'%s%s%s: %s%s%s", path ? path : "?",
             dataset ? ", dataset '" : "", dataset ? dataset : "", dataset ? "'" : "", msg,
             cause ? " (HDF5: " : "", cause ? cause : "");
}

weft_status_t weft_tf_error(weft_status_t status, const char *path, const char *dataset,
                            const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  tf_log_error(path, dataset, msg, NULL);
  return status;
}

weft_status_t weft_tf_h5_error(weft_status_t status, const char *path, const char *dataset,
                               const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  tf_h5_cause_t cause = {{0}, {0}};
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, tf_h5_walk, &cause);
  char text[400];
  if (!cause.top[0])
    snprintf(text, sizeof text, "no error stack)");
  else if (strcmp(cause.top, cause.inner) == 0)
    snprintf(text, sizeof text, "%s)", cause.top);
  else
    snprintf(text, sizeof text, "%s; %s)", cause.top, cause.inner);
  tf_log_error(path, dataset, msg, text);
  H5Eclear2(H5E_DEFAULT);
  return status;
}

uint64_t weft_tf_hash(uint64_t hash, const void *bytes, size_t size) {
  const unsigned char *p = bytes;
  for (size_t i = 0; i < size; i++) hash = (hash ^ p[i]) * 1099511628211ull; /* FNV prime */
  return hash;
}

/* The agreement behind weft_tf_agree, usable before a file handle exists. */
static weft_status_t tf_agree_comm(weft_comm_t *comm, const char *path, weft_status_t local,
                                   uint64_t key, const char *dataset, const char *what) {
  if (!comm) return local;
  /* MIN over {status, key, -key} gives the worst status and the smallest and largest key;
   * keys are hashes, folded to 62 bits so that negating one cannot overflow. */
  int64_t k = (int64_t)(key >> 2);
  int64_t vals[3] = {(int64_t)local, k, -k};
  weft_status_t st =
      weft_comm_allreduce(comm, vals, vals, 3, WEFT_DTYPE_I64, WEFT_REDUCE_MIN, WEFT_MEM_HOST);
  if (st != WEFT_OK)
    return weft_tf_error(st, path, dataset, "%s: ranks could not agree on the outcome", what);
  /* Failing ranks pass key 0, so keys are compared only when every rank succeeded. */
  if (vals[0] == WEFT_OK && vals[1] != -vals[2]) {
    if (weft_comm_rank(comm) == 0)
      weft_tf_error(WEFT_ERR_INVALID_ARG, path, dataset,
                    "%s: ranks passed different paths, names, dtypes, shapes or values to a "
                    "collective call (every rank must pass the same)",
                    what);
    return WEFT_ERR_INVALID_ARG;
  }
  if (vals[0] != WEFT_OK && local == WEFT_OK)
    WEFT_DEBUG(WEFT_TF_SUBSYS, "tensor file '%s': %s failed on another rank (%s)",
               path ? path : "?", what, weft_status_str((weft_status_t)vals[0]));
  return (weft_status_t)vals[0];
}

weft_status_t weft_tf_agree(weft_tensor_file_t *file, weft_status_t local, uint64_t key,
                            const char *dataset, const char *what) {
  return tf_agree_comm(file->comm, file->path, local, key, dataset, what);
}

/* ---- names, shapes, types ------------------------------------------------------------- */

weft_status_t weft_tf_normalize(const weft_tensor_file_t *file, const char *name, bool root_ok,
                                char *buf) {
  const char *path = file ? file->path : NULL;
  if (!name || !name[0]) return weft_tf_error(WEFT_ERR_INVALID_ARG, path, NULL, "empty name");
  int n = snprintf(buf, WEFT_TF_PATH_MAX, "%s%s", name[0] == '/' ? "" : "/", name);
  if (n < 0 || n >= WEFT_TF_PATH_MAX)
    return weft_tf_error(WEFT_ERR_INVALID_ARG, path, NULL,
                         "name of %zu characters is longer than %d", strlen(name),
                         WEFT_TF_PATH_MAX - 1);
  if (strcmp(buf, "/") == 0) {
    if (root_ok) return WEFT_OK;
    return weft_tf_error(WEFT_ERR_INVALID_ARG, path, name, "the root group is not a dataset");
  }
  bool dot_end =
      (n >= 2 && strcmp(buf + n - 2, "/.") == 0) || (n >= 3 && strcmp(buf + n - 3, "/..") == 0);
  if (strstr(buf, "//") || buf[n - 1] == '/' || strstr(buf, "/./") || strstr(buf, "/../") ||
      dot_end)
    return weft_tf_error(WEFT_ERR_INVALID_ARG, path, name,
                         "malformed path (empty, '.' or '..' component, or trailing '/')");
  return WEFT_OK;
}

weft_status_t weft_tf_link_exists(const weft_tensor_file_t *file, const char *path,
                                  bool *exists_p) {
  /* H5Lexists fails (rather than answering no) when a parent is missing, so each prefix
   * "/a", "/a/b", ... is tested in turn. */
  char prefix[WEFT_TF_PATH_MAX];
  *exists_p = false;
  if (strcmp(path, "/") == 0) {
    *exists_p = true;
    return WEFT_OK;
  }
  size_t len = strlen(path);
  for (size_t i = 1; i <= len; i++) {
    if (path[i] != '/' && path[i] != '\0') continue;
    memcpy(prefix, path, i);
    prefix[i] = '\0';
    htri_t found = H5Lexists(file->fid, prefix, H5P_DEFAULT);
    if (found < 0) {
      /* The usual cause: a parent is a dataset ("/w/sub" after writing "/w"). */
      char parent[WEFT_TF_PATH_MAX];
      memcpy(parent, prefix, i);
      while (i > 1 && parent[i - 1] != '/') i--;
      parent[i > 1 ? i - 1 : 1] = '\0';
      hid_t obj = H5Oopen(file->fid, parent, H5P_DEFAULT);
      bool is_group = obj < 0 || H5Iget_type(obj) == H5I_GROUP;
      if (obj >= 0) H5Oclose(obj);
      if (!is_group)
        return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, path,
                             "'%s' is a dataset, so it cannot have children", parent);
      return weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "cannot look up '%s'", prefix);
    }
    if (!found) return WEFT_OK;
  }
  *exists_p = true;
  return WEFT_OK;
}

hid_t weft_tf_h5_type(const weft_tensor_file_t *file, weft_dtype_t dtype) {
  switch (dtype) {
  case WEFT_DTYPE_F32: return H5T_IEEE_F32LE;
  case WEFT_DTYPE_BF16: return file->bf16_type;
  case WEFT_DTYPE_I32: return H5T_STD_I32LE;
  case WEFT_DTYPE_I64: return H5T_STD_I64LE;
  case WEFT_DTYPE_F16: break; /* no stored format agreed yet (design.md section 8) */
  }
  return H5I_INVALID_HID;
}

/* bf16: an IEEE f32 cut to its top 16 bits. Fields are placed before the precision shrinks,
 * because HDF5 refuses a precision that would cut through a field. */
static hid_t tf_bf16_type_create(void) {
  hid_t type = H5Tcopy(H5T_IEEE_F32LE);
  if (type < 0) return H5I_INVALID_HID;
  if (H5Tset_fields(type, 15, 7, 8, 0, 7) < 0 || H5Tset_offset(type, 0) < 0 ||
      H5Tset_precision(type, 16) < 0 || H5Tset_size(type, 2) < 0 || H5Tset_ebias(type, 127) < 0) {
    H5Tclose(type);
    return H5I_INVALID_HID;
  }
  return type;
}

/* The weft dtype an HDF5 type stores, if any. */
static bool tf_dtype_of_type(hid_t type, weft_dtype_t *dtype_p) {
  size_t size = H5Tget_size(type);
  switch (H5Tget_class(type)) {
  case H5T_FLOAT: {
    size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
    if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
    if (size == 4 && esize == 8 && msize == 23)
      *dtype_p = WEFT_DTYPE_F32;
    else if (size == 2 && esize == 8 && msize == 7 && H5Tget_ebias(type) == 127)
      *dtype_p = WEFT_DTYPE_BF16;
    else
      return false;
    return true;
  }
  case H5T_INTEGER:
    if (H5Tget_sign(type) != H5T_SGN_2) return false;
    if (size == 4)
      *dtype_p = WEFT_DTYPE_I32;
    else if (size == 8)
      *dtype_p = WEFT_DTYPE_I64;
    else
      return false;
    return true;
  default: return false;
  }
}

const char *weft_tf_describe(weft_dtype_t dtype, int ndim, const int64_t *shape, char *buf,
                             size_t size) {
  int n = snprintf(buf, size, "%s[", weft_dtype_name(dtype));
  for (int d = 0; d < ndim && n > 0 && (size_t)n < size; d++)
    n += snprintf(buf + n, size - (size_t)n, "%s%lld", d ? "," : "", (long long)shape[d]);
  if (n > 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, "]");
  return buf;
}

weft_status_t weft_tf_check_shape(const weft_tensor_file_t *file, const char *dataset, int ndim,
                                  const int64_t *shape, const char *what) {
  if (ndim < 0 || ndim > WEFT_TENSOR_MAX_DIMS)
    return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, dataset, "%s has %d dims (0..%d)", what,
                         ndim, WEFT_TENSOR_MAX_DIMS);
  if (ndim > 0 && !shape)
    return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, dataset, "%s is NULL", what);
  for (int d = 0; d < ndim; d++)
    if (shape[d] < 0)
      return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, dataset, "%s[%d] = %lld < 0", what, d,
                           (long long)shape[d]);
  return WEFT_OK;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static void tf_free(weft_tensor_file_t *file) {
  if (file->dxpl >= 0 && file->dxpl != H5P_DEFAULT) H5Pclose(file->dxpl);
  if (file->bf16_type >= 0) H5Tclose(file->bf16_type);
  free(file->path);
  free(file);
}

/* Allocates the handle and the property lists; the caller opens fid with *fapl_p. */
static weft_status_t tf_prepare(const char *path, weft_comm_t *comm, weft_tensor_file_t **file_p,
                                hid_t *fapl_p) {
  *file_p = NULL;
  *fapl_p = H5I_INVALID_HID;
  if (!path || !path[0]) return weft_tf_error(WEFT_ERR_INVALID_ARG, "", NULL, "empty path");
  /* Off before the first HDF5 call that can fail: errors are reported by weft_tf_h5_error. */
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  weft_tensor_file_t *file = calloc(1, sizeof *file);
  if (!file) return WEFT_ERR_NO_MEMORY;
  file->fid = H5I_INVALID_HID;
  file->dxpl = H5P_DEFAULT;
  file->comm = comm;
  file->rank = comm ? weft_comm_rank(comm) : 0;
  file->path = strdup(path);
  file->bf16_type = tf_bf16_type_create();
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  weft_status_t st = WEFT_OK;
  if (!file->path)
    st = WEFT_ERR_NO_MEMORY;
  else if (file->bf16_type < 0 || fapl < 0)
    st = weft_tf_h5_error(WEFT_ERR_IO, path, NULL, "cannot set up HDF5 types and properties");
  /* 1.8 object headers and later: attributes above 64 KiB (JSON run configurations) move to
   * dense storage instead of failing. */
  else if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0)
    st = weft_tf_h5_error(WEFT_ERR_IO, path, NULL, "cannot set the file format version");
  if (st == WEFT_OK && comm) {
    file->dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (file->dxpl < 0 || H5Pset_fapl_mpio(fapl, weft_comm_mpi(comm), MPI_INFO_NULL) < 0 ||
        H5Pset_coll_metadata_write(fapl, 1) < 0 ||
        H5Pset_dxpl_mpio(file->dxpl, H5FD_MPIO_COLLECTIVE) < 0)
      st = weft_tf_h5_error(WEFT_ERR_IO, path, NULL, "cannot set up the MPI-IO driver");
  }
  if (st != WEFT_OK) {
    if (fapl >= 0) H5Pclose(fapl);
    tf_free(file);
    return st;
  }
  *file_p = file;
  *fapl_p = fapl;
  return WEFT_OK;
}

/* Releases what tf_prepare made when the open or create failed. */
static void tf_abandon(weft_tensor_file_t *file, hid_t fapl) {
  if (fapl >= 0) H5Pclose(fapl);
  if (!file) return;
  if (file->fid >= 0) H5Fclose(file->fid);
  tf_free(file);
}

/* Collective files: all ranks must name the same file in the same mode. */
static uint64_t tf_open_key(const char *path, int mode) {
  if (!path) return 0;
  uint64_t key = weft_tf_hash(WEFT_TF_HASH_INIT, path, strlen(path));
  return weft_tf_hash(key, &mode, sizeof mode);
}

weft_status_t weft_tensor_file_create(const char *path, weft_comm_t *comm,
                                      weft_tensor_file_t **file_p) {
  weft_tensor_file_t *file = NULL;
  hid_t fapl = H5I_INVALID_HID;
  *file_p = NULL;
  weft_status_t st = tf_prepare(path, comm, &file, &fapl);
  st = tf_agree_comm(comm, path, st, tf_open_key(path, -1), NULL, "create");
  if (st == WEFT_OK) {
    file->writable = true;
    file->fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file->fid < 0) st = weft_tf_h5_error(WEFT_ERR_IO, path, NULL, "cannot create the file");
    st = weft_tf_agree(file, st, 0, NULL, "create");
  }
  if (st != WEFT_OK) {
    tf_abandon(file, fapl);
    return st;
  }
  H5Pclose(fapl);
  WEFT_DEBUG(WEFT_TF_SUBSYS, "created tensor file '%s' (%s)", path, comm ? "collective" : "serial");
  *file_p = file;
  return WEFT_OK;
}

weft_status_t weft_tensor_file_open(const char *path, weft_tensor_file_mode_t mode,
                                    weft_comm_t *comm, weft_tensor_file_t **file_p) {
  weft_tensor_file_t *file = NULL;
  hid_t fapl = H5I_INVALID_HID;
  *file_p = NULL;
  weft_status_t st = tf_prepare(path, comm, &file, &fapl);
  /* stat first: "No such file" is a clearer message than HDF5's, and on a collective file the
   * ranks agree before entering the collective open (a file visible to only some ranks of a
   * shared file system would otherwise hang the open). */
  struct stat sb;
  if (st == WEFT_OK && stat(path, &sb) != 0)
    st = weft_tf_error(WEFT_ERR_IO, path, NULL, "cannot open: %s", strerror(errno));
  else if (st == WEFT_OK && !S_ISREG(sb.st_mode))
    st = weft_tf_error(WEFT_ERR_IO, path, NULL, "cannot open: not a regular file");
  st = tf_agree_comm(comm, path, st, tf_open_key(path, (int)mode), NULL, "open");
  if (st == WEFT_OK) {
    file->writable = mode == WEFT_TENSOR_FILE_READ_WRITE;
    file->fid = H5Fopen(path, file->writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl);
    if (file->fid < 0)
      st = weft_tf_h5_error(WEFT_ERR_IO, path, NULL, "cannot open as HDF5 (%s)",
                            file->writable ? "read-write" : "read-only");
    st = weft_tf_agree(file, st, 0, NULL, "open");
  }
  if (st != WEFT_OK) {
    tf_abandon(file, fapl);
    return st;
  }
  H5Pclose(fapl);
  *file_p = file;
  return WEFT_OK;
}

weft_status_t weft_tensor_file_close(weft_tensor_file_t *file) {
  if (!file) return WEFT_OK;
  weft_status_t st = WEFT_OK;
  /* Every function closes what it opens; an object still open here is a bug in this module
   * (and would keep the file open after H5Fclose under the default close degree). */
  ssize_t open_objects = H5Fget_obj_count(
      file->fid, H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR | H5F_OBJ_LOCAL);
  if (open_objects > 0)
    st = weft_tf_error(WEFT_ERR_INTERNAL, file->path, NULL,
                       "%zd HDF5 objects left open at close (a weft bug)", open_objects);
  if (file->writable && H5Fflush(file->fid, H5F_SCOPE_GLOBAL) < 0)
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, NULL, "cannot flush the file to disk");
  if (H5Fclose(file->fid) < 0 && st == WEFT_OK)
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, NULL, "cannot close the file");
  tf_free(file);
  return st;
}

const char *weft_tensor_file_path(const weft_tensor_file_t *file) { return file->path; }

bool weft_tensor_file_is_collective(const weft_tensor_file_t *file) { return file->comm != NULL; }

bool weft_tensor_file_last_transfer_collective(const weft_tensor_file_t *file) {
  return file->last_collective;
}

/* ---- dataset queries ------------------------------------------------------------------ */

weft_status_t weft_tf_dataset_open(weft_tensor_file_t *file, const char *path, hid_t *dset_p) {
  bool exists = false;
  *dset_p = H5I_INVALID_HID;
  WEFT_CHECK(weft_tf_link_exists(file, path, &exists));
  if (!exists) return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, path, "no such dataset");
  hid_t obj = H5Oopen(file->fid, path, H5P_DEFAULT);
  if (obj < 0) return weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "cannot open the object");
  if (H5Iget_type(obj) != H5I_DATASET) {
    H5Oclose(obj);
    return weft_tf_error(WEFT_ERR_INVALID_ARG, file->path, path, "is a group, not a dataset");
  }
  *dset_p = obj;
  return WEFT_OK;
}

/* Reads the dataset's `dtype` attribute into *dtype_p; *found_p false when it has none. */
static weft_status_t tf_dtype_attr(weft_tensor_file_t *file, const char *path, hid_t dset,
                                   bool *found_p, weft_dtype_t *dtype_p) {
  *found_p = false;
  htri_t has = H5Aexists(dset, "dtype");
  if (has < 0) return weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "cannot look up 'dtype'");
  if (!has) return WEFT_OK;
  char *text = NULL;
  WEFT_CHECK(weft_tensor_file_attr_read_str(file, path, "dtype", &text));
  weft_status_t st = weft_dtype_parse(text, dtype_p);
  if (st != WEFT_OK || *dtype_p == WEFT_DTYPE_F16)
    st = weft_tf_error(WEFT_ERR_CORRUPT, file->path, path,
                       "attribute dtype = '%s' is not one of f32, bf16, i32, i64", text);
  free(text);
  *found_p = st == WEFT_OK;
  return st;
}

weft_status_t weft_tf_dataset_info(weft_tensor_file_t *file, const char *path, hid_t dset,
                                   weft_tensor_file_info_t *info_p) {
  weft_tensor_file_info_t info = {.dtype = WEFT_DTYPE_F32, .ndim = 0, .shape = {1, 1, 1, 1}};
  weft_status_t st = WEFT_OK;
  hid_t type = H5Dget_type(dset);
  hid_t space = H5Dget_space(dset);
  if (type < 0 || space < 0) {
    st = weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "cannot read the type and shape");
    goto done;
  }
  weft_dtype_t from_type = WEFT_DTYPE_F32;
  bool known = tf_dtype_of_type(type, &from_type);
  bool has_attr = false;
  weft_dtype_t from_attr = WEFT_DTYPE_F32;
  WEFT_CHECK_GOTO(tf_dtype_attr(file, path, dset, &has_attr, &from_attr), st, done);
  if (!known) {
    st = weft_tf_error(WEFT_ERR_CORRUPT, file->path, path,
                       "HDF5 type (class %d, %zu bytes) is not one of f32, bf16, i32, i64",
                       (int)H5Tget_class(type), H5Tget_size(type));
    goto done;
  }
  if (has_attr && from_attr != from_type) {
    st = weft_tf_error(WEFT_ERR_CORRUPT, file->path, path,
                       "attribute dtype = '%s' but the HDF5 type stores %s",
                       weft_dtype_name(from_attr), weft_dtype_name(from_type));
    goto done;
  }
  info.dtype = from_type;
  H5S_class_t cls = H5Sget_simple_extent_type(space);
  if (cls == H5S_SIMPLE) {
    int ndim = H5Sget_simple_extent_ndims(space);
    if (ndim < 1 || ndim > WEFT_TENSOR_MAX_DIMS) {
      st = weft_tf_error(WEFT_ERR_CORRUPT, file->path, path, "has %d dims (at most %d)", ndim,
                         WEFT_TENSOR_MAX_DIMS);
      goto done;
    }
    hsize_t dims[WEFT_TENSOR_MAX_DIMS];
    H5Sget_simple_extent_dims(space, dims, NULL);
    info.ndim = ndim;
    for (int d = 0; d < ndim; d++) info.shape[d] = (int64_t)dims[d];
  } else if (cls != H5S_SCALAR) {
    st = weft_tf_error(WEFT_ERR_CORRUPT, file->path, path, "has an empty (null) dataspace");
    goto done;
  }
  *info_p = info;
done:
  if (space >= 0) H5Sclose(space);
  if (type >= 0) H5Tclose(type);
  return st;
}

weft_status_t weft_tensor_file_query(weft_tensor_file_t *file, const char *name,
                                     weft_tensor_file_info_t *info_p) {
  char path[WEFT_TF_PATH_MAX];
  hid_t dset = H5I_INVALID_HID;
  WEFT_CHECK(weft_tf_normalize(file, name, false, path));
  WEFT_CHECK(weft_tf_dataset_open(file, path, &dset));
  weft_status_t st = weft_tf_dataset_info(file, path, dset, info_p);
  H5Dclose(dset);
  return st;
}

weft_status_t weft_tensor_file_exists(weft_tensor_file_t *file, const char *name, bool *exists_p) {
  char path[WEFT_TF_PATH_MAX];
  *exists_p = false;
  WEFT_CHECK(weft_tf_normalize(file, name, false, path));
  bool link = false;
  WEFT_CHECK(weft_tf_link_exists(file, path, &link));
  if (!link) return WEFT_OK;
  hid_t obj = H5Oopen(file->fid, path, H5P_DEFAULT);
  if (obj < 0) return weft_tf_h5_error(WEFT_ERR_IO, file->path, path, "cannot open the object");
  *exists_p = H5Iget_type(obj) == H5I_DATASET;
  H5Oclose(obj);
  return WEFT_OK;
}

typedef struct tf_list_ctx {
  weft_tensor_file_names_t *names;
  int capacity;
  weft_status_t st;
} tf_list_ctx_t;

static herr_t tf_list_visit(hid_t group, const char *name, const H5L_info_t *info, void *data) {
  tf_list_ctx_t *ctx = data;
  if (info->type != H5L_TYPE_HARD) return 0; /* soft and external links are not datasets */
  hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
  if (obj < 0) return -1;
  bool is_dataset = H5Iget_type(obj) == H5I_DATASET;
  H5Oclose(obj);
  if (!is_dataset) return 0;
  weft_tensor_file_names_t *names = ctx->names;
  if (names->count == ctx->capacity) {
    int capacity = ctx->capacity ? 2 * ctx->capacity : 16;
    char **grown = realloc(names->names, (size_t)capacity * sizeof *grown);
    if (!grown) goto no_memory;
    names->names = grown;
    ctx->capacity = capacity;
  }
  size_t len = strlen(name);
  char *copy = malloc(len + 2);
  if (!copy) goto no_memory;
  copy[0] = '/';
  memcpy(copy + 1, name, len + 1);
  names->names[names->count++] = copy;
  return 0;
no_memory:
  ctx->st = WEFT_ERR_NO_MEMORY;
  return -1;
}

static int tf_strcmp_p(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

weft_status_t weft_tensor_file_list(weft_tensor_file_t *file, weft_tensor_file_names_t *names_p) {
  names_p->count = 0;
  names_p->names = NULL;
  tf_list_ctx_t ctx = {names_p, 0, WEFT_OK};
  if (H5Lvisit(file->fid, H5_INDEX_NAME, H5_ITER_INC, tf_list_visit, &ctx) < 0) {
    if (ctx.st != WEFT_OK)
      return weft_tf_error(ctx.st, file->path, NULL, "out of memory listing datasets");
    return weft_tf_h5_error(WEFT_ERR_IO, file->path, NULL, "cannot list the datasets");
  }
  if (names_p->count > 1)
    qsort(names_p->names, (size_t)names_p->count, sizeof *names_p->names, tf_strcmp_p);
  return WEFT_OK;
}

void weft_tensor_file_names_cleanup(weft_tensor_file_names_t *names) {
  if (!names) return;
  for (int i = 0; i < names->count; i++) free(names->names[i]);
  free(names->names);
  names->names = NULL;
  names->count = 0;
}
