/* Checkpoints: save with the commit protocol, resolve, load with verification (see
 * weft/checkpoint.h and docs/checkpoint-format.md). */
#include "weft/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor_file_internal.h"
#include "weft/check.h"
#include "weft/log.h"

#define LATEST "latest"

/* ---- checksum ------------------------------------------------------------------------ */

int64_t weft_ckpt_row_elems(const weft_ckpt_tensor_t *t) {
  int64_t n = 1;
  for (int d = 1; d < t->ndim; d++) {
    n *= t->shape[d];
  }
  return n;
}

/* Element i with bit pattern b contributes (b + 1) k_i, k_i = ((i + 1) * golden) | 1: one
 * multiply-add per element (the checksum must not cost more than reading the bytes). k_i is
 * odd, so changing any single element (|delta b| < 2^32) always changes the sum mod 2^64;
 * several changes cancel only when their deltas satisfy one linear relation mod 2^64. */
uint64_t weft_ckpt_checksum_rows(const weft_ckpt_tensor_t *t, int64_t start, int64_t rows,
                                 const float *data) {
  const int64_t per_row = weft_ckpt_row_elems(t);
  const uint64_t first = (uint64_t)(start * per_row);
  const uint32_t *bits = (const uint32_t *)(const void *)data;
  const int64_t n = rows * per_row;
  uint64_t sum[4] = {0, 0, 0, 0}; /* independent lanes: the adds need not wait on each other */
  int64_t e = 0;
  for (; e + 4 <= n; e += 4) {
    for (int j = 0; j < 4; j++) {
      const uint64_t i = first + (uint64_t)(e + j);
      sum[j] += ((uint64_t)bits[e + j] + 1) * (((i + 1) * 0x9E3779B97F4A7C15ull) | 1);
    }
  }
  for (; e < n; e++) {
    const uint64_t i = first + (uint64_t)e;
    sum[0] += ((uint64_t)bits[e] + 1) * (((i + 1) * 0x9E3779B97F4A7C15ull) | 1);
  }
  return sum[0] + sum[1] + sum[2] + sum[3];
}

/* Wrapping sum over the ranks of each of `count` partial checksums (allgathered as int64 bit
 * patterns, added in uint64 so the wrap-around is defined). */
static weft_status_t sum_partials(weft_comm_t *comm, uint64_t *partials, int count) {
  const int P = comm ? weft_comm_size(comm) : 1;
  if (P == 1 || count == 0) {
    return WEFT_OK;
  }
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

/* Every rank gets the first failure any rank saw (the most negative status). */
static weft_status_t agree(weft_comm_t *comm, weft_status_t st) {
  int32_t mine = (int32_t)st, worst = mine;
  if (weft_comm_allreduce(comm, &mine, &worst, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MIN, WEFT_MEM_HOST) !=
      WEFT_OK) {
    return WEFT_ERR_COMM;
  }
  return (weft_status_t)worst;
}

/* ---- files and the commit ----------------------------------------------------------------- */

static weft_status_t fsync_path(const char *path, bool directory) {
  const int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0 || fsync(fd) != 0) {
    WEFT_ERROR("ckpt", "cannot fsync '%s': %s", path, strerror(errno));
    if (fd >= 0) {
      close(fd);
    }
    return WEFT_ERR_IO;
  }
  close(fd);
  return WEFT_OK;
}

static weft_status_t make_dir(const char *dir) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    WEFT_ERROR("ckpt", "cannot create checkpoint directory '%s': %s", dir, strerror(errno));
    return WEFT_ERR_IO;
  }
  struct stat sb;
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    WEFT_ERROR("ckpt", "checkpoint directory '%s' is not a directory", dir);
    return WEFT_ERR_IO;
  }
  return WEFT_OK;
}

/* Step number of "step-NNNNNNNN.h5" (tmp: with ".tmp"), or -1. */
static long long parse_step(const char *name, bool tmp) {
  long long step = -1;
  int used = 0;
  if (sscanf(name, "step-%lld.h5%n", &step, &used) != 1 || step < 0) {
    return -1;
  }
  const char *rest = name + used;
  return (tmp ? strcmp(rest, ".tmp") == 0 : *rest == '\0') ? step : -1;
}

static int cmp_ll_desc(const void *a, const void *b) {
  const long long x = *(const long long *)a, y = *(const long long *)b;
  return (x < y) - (x > y);
}

/* Deletes leftover .tmp files and all but the newest `keep` checkpoints (never `committed`). */
static void rotate(const char *dir, long long committed, int keep) {
  DIR *d = opendir(dir);
  if (!d) {
    return;
  }
  long long steps[4096];
  int n = 0;
  char path[4096];
  for (struct dirent *e; (e = readdir(d));) {
    const long long tmp_step = parse_step(e->d_name, true);
    if (tmp_step >= 0) { /* an interrupted save: never a checkpoint */
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
      continue;
    }
    const long long step = parse_step(e->d_name, false);
    if (step >= 0 && step != committed && n < 4096) {
      steps[n++] = step;
    }
  }
  closedir(d);
  qsort(steps, (size_t)n, sizeof steps[0], cmp_ll_desc);
  for (int i = keep - 1; i < n; i++) { /* the committed one is the keep-th */
    snprintf(path, sizeof path, "%s/step-%08lld.h5", dir, steps[i]);
    if (unlink(path) == 0) {
      WEFT_INFO("ckpt", "removed old checkpoint %s (--keep %d)", path, keep);
    }
  }
}

/* Rank 0's part of the commit: the file is complete and closed by every rank. */
static weft_status_t commit(const char *dir, const char *name, const char *tmp, const char *final,
                            long long step, int keep) {
  WEFT_CHECK(fsync_path(tmp, false));
  if (rename(tmp, final) != 0) {
    WEFT_ERROR("ckpt", "cannot rename '%s' to '%s': %s", tmp, final, strerror(errno));
    return WEFT_ERR_IO;
  }
  WEFT_CHECK(fsync_path(dir, true));
  char latest[4096], latest_tmp[4096];
  snprintf(latest, sizeof latest, "%s/" LATEST, dir);
  snprintf(latest_tmp, sizeof latest_tmp, "%s/" LATEST ".tmp", dir);
  FILE *f = fopen(latest_tmp, "w");
  if (!f || fprintf(f, "%s\n", name) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
    WEFT_ERROR("ckpt", "cannot write '%s': %s", latest_tmp, strerror(errno));
    if (f) {
      fclose(f);
    }
    return WEFT_ERR_IO;
  }
  fclose(f);
  if (rename(latest_tmp, latest) != 0) {
    WEFT_ERROR("ckpt", "cannot rename '%s' to '%s': %s", latest_tmp, latest, strerror(errno));
    return WEFT_ERR_IO;
  }
  WEFT_CHECK(fsync_path(dir, true));
  rotate(dir, step, keep);
  return WEFT_OK;
}

static weft_status_t write_contents(weft_tensor_file_t *file, weft_comm_t *comm,
                                    const weft_ckpt_meta_t *meta, const weft_ckpt_tensor_t *tensors,
                                    int count) {
  WEFT_CHECK(
      weft_tensor_file_attr_write_i64(file, NULL, "format_version", WEFT_CKPT_FORMAT_VERSION));
  WEFT_CHECK(weft_tensor_file_attr_write_str(file, NULL, "weft_version", WEFT_VERSION));
  WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, "step", meta->step));
  WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, "tokens_seen", meta->tokens_seen));
  WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, "optimizer_step", meta->optimizer_step));
  WEFT_CHECK(weft_tensor_file_attr_write_i64(file, NULL, "ranks", weft_comm_size(comm)));
  WEFT_CHECK(weft_tensor_file_attr_write_str(file, NULL, "config", meta->config_json));
  WEFT_CHECK(weft_tensor_file_attr_write_str(file, NULL, "model", meta->model_json));
  WEFT_CHECK(weft_tensor_file_attr_write_str(file, NULL, "mesh", meta->mesh_json));
  uint64_t *sums = calloc((size_t)(count > 0 ? count : 1), sizeof *sums);
  if (!sums) {
    return WEFT_ERR_NO_MEMORY;
  }
  weft_status_t st = WEFT_OK;
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    const weft_ckpt_tensor_t *t = &tensors[i];
    int64_t start[4] = {t->start, 0, 0, 0}, cnt[4];
    for (int d = 0; d < 4; d++) {
      cnt[d] = d == 0 ? (t->owner ? t->rows : 0) : t->shape[d];
    }
    st = weft_tensor_file_write_slab(file, t->name, WEFT_DTYPE_F32, t->ndim, t->shape, start, cnt,
                                     t->data);
    sums[i] = t->owner ? weft_ckpt_checksum_rows(t, t->start, t->rows, t->data) : 0;
  }
  if (st == WEFT_OK) {
    st = sum_partials(comm, sums, count);
  }
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    st = weft_tensor_file_attr_write_i64(file, tensors[i].name, "checksum", (int64_t)sums[i]);
  }
  free(sums);
  return st;
}

weft_status_t weft_ckpt_save(weft_comm_t *comm, const char *dir, const weft_ckpt_meta_t *meta,
                             const weft_ckpt_tensor_t *tensors, int count, int keep, char *path,
                             size_t path_size) {
  const bool root = weft_comm_rank(comm) == 0;
  weft_status_t st = root ? make_dir(dir) : WEFT_OK;
  WEFT_CHECK(agree(comm, st));
  if (strlen(dir) > 3500) {
    WEFT_ERROR("ckpt", "checkpoint directory path is too long (%zu characters)", strlen(dir));
    return WEFT_ERR_INVALID_ARG;
  }
  char name[64], final[4096], tmp[4096 + 8];
  snprintf(name, sizeof name, "step-%08lld.h5", (long long)meta->step);
  snprintf(final, sizeof final, "%s/%s", dir, name);
  snprintf(tmp, sizeof tmp, "%s.tmp", final);
  weft_tensor_file_t *file = NULL;
  WEFT_CHECK(weft_tensor_file_create(tmp, comm, &file));
  st = write_contents(file, comm, meta, tensors, count);
  if (meta->fault_kill_rank == weft_comm_rank(comm)) {
    WEFT_WARN("ckpt", "WEFT_FAULT_KILL_IN_SAVE: killing rank %d in the middle of saving %s",
              meta->fault_kill_rank, tmp);
    raise(SIGKILL);
  }
  const weft_status_t close_st = weft_tensor_file_close(file);
  st = agree(comm, st != WEFT_OK ? st : close_st);
  if (st != WEFT_OK) {
    WEFT_ERROR("ckpt", "saving '%s' failed; it stays a .tmp file, 'latest' is unchanged", tmp);
    return st;
  }
  st = root ? commit(dir, name, tmp, final, (long long)meta->step, keep > 0 ? keep : 1) : WEFT_OK;
  WEFT_CHECK(agree(comm, st));
  if (path) {
    snprintf(path, path_size, "%s", final);
  }
  return WEFT_OK;
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
  if (!ok || parse_step(name, false) < 0) {
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
  st = comm ? agree(comm, st) : st;
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

weft_status_t weft_ckpt_read(weft_tensor_file_t *file, weft_ckpt_tensor_t *tensors, int count) {
  weft_comm_t *comm = NULL;
  const bool collective = weft_tensor_file_is_collective(file);
  uint64_t *sums = calloc((size_t)(count > 0 ? count : 1), sizeof *sums);
  int64_t *stored = calloc((size_t)(count > 0 ? count : 1), sizeof *stored);
  weft_status_t st = sums && stored ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    st = check_dataset(file, &tensors[i]);
  }
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    weft_ckpt_tensor_t *t = &tensors[i];
    int64_t start[4] = {t->start, 0, 0, 0}, cnt[4];
    for (int d = 0; d < 4; d++) {
      cnt[d] = d == 0 ? t->rows : t->shape[d];
    }
    st = weft_tensor_file_read_slab(file, t->name, WEFT_DTYPE_F32, t->ndim, t->shape, start, cnt,
                                    t->data);
    if (st == WEFT_OK) {
      st = weft_tensor_file_attr_read_i64(file, t->name, "checksum", &stored[i]);
    }
    sums[i] = t->owner ? weft_ckpt_checksum_rows(t, t->start, t->rows, t->data) : 0;
  }
  comm = collective ? file->comm : NULL;
  if (st == WEFT_OK) {
    st = sum_partials(comm, sums, count);
  }
  for (int i = 0; i < count && st == WEFT_OK; i++) {
    if (sums[i] != (uint64_t)stored[i]) {
      WEFT_ERROR("ckpt",
                 "'%s': dataset %s fails its checksum (stored %016llx, computed %016llx): "
                 "the file is corrupt",
                 weft_tensor_file_path(file), tensors[i].name,
                 (unsigned long long)(uint64_t)stored[i], (unsigned long long)sums[i]);
      st = WEFT_ERR_CORRUPT;
    }
  }
  free(sums);
  free(stored);
  return comm ? agree(comm, st) : st;
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
