/* Checkpoints: resolve, open, load with verification (see weft/checkpoint.h and
 * docs/checkpoint-format.md); saving is in checkpoint_save.c. */
#include "weft/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint_internal.h"
#include "tensor_file_internal.h"
#include "weft/check.h"
#include "weft/log.h"

#define LATEST "latest"

/* ---- shared helpers (checkpoint_internal.h) ------------------------------------------ */

weft_status_t ckpt_sum_partials(weft_comm_t *comm, uint64_t *partials, int count) {
  const int P = comm ? weft_comm_size(comm) : 1;
  if (P == 1 || count == 0) {
    return WEFT_OK;
  }
  /* Allgathered as int64 bit patterns and added in uint64, so the wrap-around is defined. */
  uint64_t *all = malloc((size_t)P * (size_t)count * sizeof *all);
  if (!all) {
    return WEFT_ERR_NO_MEMORY;
  }
  const weft_status_t st =
      weft_comm_allgather(comm, partials, all, (size_t)count, WEFT_DTYPE_I64, WEFT_MEM_HOST);
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    partials[i] = 0;
    for (int r = 0; r < P; r++) {
      partials[i] += all[(size_t)r * (size_t)count + (size_t)i];
    }
  }
  free(all);
  return st;
}

long long ckpt_parse_step(const char *name, bool tmp) {
  long long step = -1;
  int used = 0;
  if (sscanf(name, "step-%lld.h5%n", &step, &used) != 1 || step < 0) {
    return -1;
  }
  const char *rest = name + used;
  return (tmp ? strcmp(rest, ".tmp") == 0 : *rest == '\0') ? step : -1;
}

/* ---- resolve, open, read ----------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
  const size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* DIR/latest -> DIR/<name>. *found_p false when DIR/latest does not exist. */
static weft_status_t read_latest(const char *dir, char *path, size_t path_size, bool *found_p) {
  char latest[4096];
  snprintf(latest, sizeof latest, "%s/" LATEST, dir);
  FILE *f = fopen(latest, "r");
  *found_p = false;
  if (!f) {
    return WEFT_OK;
  }
  char name[256] = "";
  const bool ok = fgets(name, sizeof name, f) != NULL;
  fclose(f);
  name[strcspn(name, "\r\n")] = '\0';
  if (!ok || ckpt_parse_step(name, false) < 0) {
    WEFT_ERROR("ckpt", "'%s' does not name a checkpoint (holds '%s')", latest, name);
    return WEFT_ERR_CORRUPT;
  }
  snprintf(path, path_size, "%s/%s", dir, name);
  if (access(path, R_OK) != 0) {
    WEFT_ERROR("ckpt", "'%s' names '%s', which cannot be read: %s", latest, path, strerror(errno));
    return WEFT_ERR_IO;
  }
  *found_p = true;
  return WEFT_OK;
}

weft_status_t weft_ckpt_resolve(const char *spec, const char *dir, char *path, size_t path_size,
                                bool *found_p) {
  *found_p = false;
  if (strcmp(spec, "auto") == 0) {
    if (!dir) {
      WEFT_ERROR("ckpt", "--resume auto needs a checkpoint directory (--ckpt-dir)");
      return WEFT_ERR_INVALID_ARG;
    }
    return read_latest(dir, path, path_size, found_p);
  }
  struct stat sb;
  if (stat(spec, &sb) != 0) {
    WEFT_ERROR("ckpt", "checkpoint '%s' does not exist", spec);
    return WEFT_ERR_IO;
  }
  if (S_ISDIR(sb.st_mode)) {
    WEFT_CHECK(read_latest(spec, path, path_size, found_p));
    if (!*found_p) {
      WEFT_ERROR("ckpt",
                 "checkpoint directory '%s' has no '" LATEST
                 "' (no committed "
                 "checkpoint)",
                 spec);
      return WEFT_ERR_IO;
    }
    return WEFT_OK;
  }
  if (ends_with(spec, ".tmp")) {
    WEFT_ERROR("ckpt",
               "'%s' is an unfinished checkpoint (a save that did not commit); load the "
               "file 'latest' names instead",
               spec);
    return WEFT_ERR_CORRUPT;
  }
  snprintf(path, path_size, "%s", spec);
  *found_p = true;
  return WEFT_OK;
}

weft_status_t weft_ckpt_open(weft_comm_t *comm, const char *path, weft_tensor_file_t **file_p) {
  weft_tensor_file_t *file = NULL;
  WEFT_CHECK(weft_tensor_file_open(path, WEFT_TENSOR_FILE_READ, comm, &file));
  int64_t version = -1;
  bool exists = false;
  weft_status_t st = weft_tensor_file_attr_exists(file, NULL, "format_version", &exists);
  if (st == WEFT_OK && exists) {
    st = weft_tensor_file_attr_read_i64(file, NULL, "format_version", &version);
  }
  if (st == WEFT_OK && version != WEFT_CKPT_FORMAT_VERSION) {
    WEFT_ERROR("ckpt", "'%s': checkpoint format version %lld, this weft reads version %d%s", path,
               (long long)version, WEFT_CKPT_FORMAT_VERSION,
               exists ? "" : " (no format_version attribute: not a weft checkpoint)");
    st = WEFT_ERR_CORRUPT;
  }
  st = comm ? weft_comm_agree(comm, st) : st;
  if (st != WEFT_OK) {
    weft_tensor_file_close(file);
    return st;
  }
  *file_p = file;
  return WEFT_OK;
}

/* Dataset `t->name` exists with t's dtype and shape. */
static weft_status_t check_dataset(weft_tensor_file_t *file, const weft_ckpt_tensor_t *t) {
  bool exists = false;
  WEFT_CHECK(weft_tensor_file_exists(file, t->name, &exists));
  if (!exists) {
    WEFT_ERROR("ckpt", "'%s': dataset %s is missing", weft_tensor_file_path(file), t->name);
    return WEFT_ERR_CORRUPT;
  }
  weft_tensor_file_info_t info;
  WEFT_CHECK(weft_tensor_file_query(file, t->name, &info));
  bool same = info.dtype == WEFT_DTYPE_F32 && info.ndim == t->ndim;
  for (int d = 0; d < t->ndim && same; d++) {
    same = info.shape[d] == t->shape[d];
  }
  if (!same) {
    char want[96] = "", got[96] = "";
    for (int d = 0; d < t->ndim; d++) {
      snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "",
               (long long)t->shape[d]);
    }
    for (int d = 0; d < info.ndim; d++) {
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "",
               (long long)info.shape[d]);
    }
    WEFT_ERROR("ckpt",
               "'%s': dataset %s has shape [%s], the model needs [%s] (another model "
               "configuration?)",
               weft_tensor_file_path(file), t->name, got, want);
    return WEFT_ERR_CORRUPT;
  }
  return WEFT_OK;
}

/* Reads rows [t->start, t->start + t->rows) of dataset t, whose elements start at byte
 * `offset` of the file open as fd, with pread in 8 MiB pieces; the checksum of each piece is
 * added while the piece is still in cache. */
static weft_status_t read_direct(int fd, const char *path, weft_ckpt_tensor_t *t, int64_t offset,
                                 uint64_t *sum) {
  const int64_t per_row = weft_ckpt_row_elems(t), n = t->rows * per_row;
  const int64_t first = t->start * per_row, piece = (int64_t)1 << 21;
  posix_fadvise(fd, (off_t)(offset + first * 4), (off_t)(n * 4), POSIX_FADV_SEQUENTIAL);
  for (int64_t done = 0; done < n;) {
    const int64_t elems = n - done < piece ? n - done : piece;
    char *dst = (char *)(t->data + done);
    const size_t want = (size_t)elems * sizeof(float);
    for (size_t got = 0; got < want;) {
      const ssize_t r =
          pread(fd, dst + got, want - got, (off_t)(offset + (first + done) * 4 + (int64_t)got));
      if (r < 0 && errno == EINTR) {
        continue;
      }
      if (r <= 0) {
        WEFT_ERROR("ckpt", "'%s': dataset %s: %s", path, t->name,
                   r == 0 ? "the file ends inside the dataset (truncated)" : strerror(errno));
        return r == 0 ? WEFT_ERR_CORRUPT : WEFT_ERR_IO;
      }
      got += (size_t)r;
    }
    if (t->owner) {
      *sum += ckpt_checksum_copy(NULL, t->data + done, elems, (uint64_t)(first + done));
    }
    done += elems;
  }
  return WEFT_OK;
}

/* Datasets stored contiguously (every file weft writes) are read with pread at their byte
 * offsets, bypassing MPI-IO's collective buffering: each rank's rows are one contiguous range,
 * so there is nothing for two-phase I/O to merge, and the checksum runs on cache-hot pieces.
 * Any other layout (a file rewritten by another tool) goes through HDF5. The choice is made
 * from the file's metadata, so it is the same on every rank. */
weft_status_t weft_ckpt_read(weft_tensor_file_t *file, weft_ckpt_tensor_t *tensors, int count) {
  const char *path = weft_tensor_file_path(file);
  weft_comm_t *comm = weft_tensor_file_is_collective(file) ? file->comm : NULL;
  uint64_t *sums = calloc((size_t)(count > 0 ? count : 1), sizeof *sums);
  int64_t *stored = calloc((size_t)(count > 0 ? count : 1), sizeof *stored);
  int64_t *offsets = calloc((size_t)(count > 0 ? count : 1), sizeof *offsets);
  weft_status_t st = sums && stored && offsets ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  bool direct = true;
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    st = check_dataset(file, &tensors[i]);
    if (st == WEFT_OK)
      st = weft_tensor_file_attr_read_i64(file, tensors[i].name, "checksum", &stored[i]);
    if (st == WEFT_OK) st = weft_tensor_file_data_offset(file, tensors[i].name, &offsets[i]);
    direct = direct && offsets[i] >= 0;
  }
  const int fd = st == WEFT_OK && direct ? open(path, O_RDONLY) : -1;
  if (st == WEFT_OK && direct && fd < 0) {
    WEFT_ERROR("ckpt", "cannot open '%s' for reading: %s", path, strerror(errno));
    st = WEFT_ERR_IO;
  }
  st = comm ? weft_comm_agree(comm, st) : st; /* the slab reads below may be collective */
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    weft_ckpt_tensor_t *t = &tensors[i];
    if (direct) {
      st = t->rows > 0 ? read_direct(fd, path, t, offsets[i], &sums[i]) : WEFT_OK;
      continue;
    }
    int64_t start[4] = {t->start, 0, 0, 0}, cnt[4];
    for (int d = 0; d < 4; d++) {
      cnt[d] = d == 0 ? t->rows : t->shape[d];
    }
    st = weft_tensor_file_read_slab(file, t->name, WEFT_DTYPE_F32, t->ndim, t->shape, start, cnt,
                                    t->data);
    sums[i] = t->owner ? weft_ckpt_checksum_rows(t, t->start, t->rows, t->data) : 0;
  }
  if (fd >= 0) {
    close(fd);
  }
  st = comm ? weft_comm_agree(comm, st) : st;
  if (st == WEFT_OK) {
    st = ckpt_sum_partials(comm, sums, count);
  }
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    if (sums[i] != (uint64_t)stored[i]) {
      WEFT_ERROR("ckpt",
                 "'%s': dataset %s fails its checksum (stored %016llx, computed %016llx): "
                 "the file is corrupt",
                 path, tensors[i].name, (unsigned long long)(uint64_t)stored[i],
                 (unsigned long long)sums[i]);
      st = WEFT_ERR_CORRUPT;
    }
  }
  free(sums);
  free(stored);
  free(offsets);
  return comm ? weft_comm_agree(comm, st) : st;
}

weft_status_t weft_ckpt_read_whole(weft_tensor_file_t *file, const char *name,
                                   weft_ckpt_tensor_t *t) {
  weft_tensor_file_info_t info;
  memset(t, 0, sizeof *t);
  WEFT_CHECK(weft_tensor_file_query(file, name, &info));
  if (info.dtype != WEFT_DTYPE_F32 || info.ndim < 1) {
    WEFT_ERROR("ckpt", "'%s': dataset %s is not an f32 tensor", weft_tensor_file_path(file), name);
    return WEFT_ERR_CORRUPT;
  }
  snprintf(t->name, sizeof t->name, "%s", name);
  t->ndim = info.ndim;
  t->owner = true;
  int64_t numel = 1;
  for (int d = 0; d < info.ndim; d++) {
    t->shape[d] = info.shape[d];
    numel *= info.shape[d];
  }
  t->rows = info.shape[0];
  t->data = malloc((size_t)(numel > 0 ? numel : 1) * sizeof(float));
  if (!t->data) {
    return WEFT_ERR_NO_MEMORY;
  }
  const weft_status_t st = weft_ckpt_read(file, t, 1);
  if (st != WEFT_OK) {
    free(t->data);
    t->data = NULL;
  }
  return st;
}

weft_status_t weft_ckpt_verify(const char *path, FILE *report) {
  weft_tensor_file_t *file = NULL;
  WEFT_CHECK(weft_ckpt_open(NULL, path, &file));
  weft_tensor_file_names_t names = {0};
  weft_status_t st = weft_tensor_file_list(file, &names);
  for (int i = 0; i < names.count && st == WEFT_OK; i++) {
    weft_ckpt_tensor_t t;
    st = weft_ckpt_read_whole(file, names.names[i], &t);
    if (st == WEFT_OK && report) {
      fprintf(report, "ok %s\n", t.name);
    }
    free(t.data);
  }
  weft_tensor_file_names_cleanup(&names);
  weft_tensor_file_close(file);
  return st;
}
