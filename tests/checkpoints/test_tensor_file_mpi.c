/* Collective tests of tensor files (MPI-IO), run at 1..4 ranks.
 *
 * Each dataset is written as row blocks split unevenly over the ranks (rank 1 holding none,
 * or rank 0 holding all), then read back with other hyperslabs than were written: the row
 * split reversed, a split over columns, and a small interior block per rank, so every rank
 * reads data other ranks wrote (resharding). Every element is checked against a pattern
 * defined by its global index. Also: empty global datasets, replicated whole-tensor writes,
 * attributes, a bad block or mismatched shape on one rank only (every rank must get the
 * error, none may hang), and rank 0 re-reading the collective file serially to compare the
 * distributed result with a single-process view of the same file. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "tf_test_common.h"
#include "weft/bootstrap.h"
#include "weft/comm.h"
#include "weft/tensor_file.h"

#define PATH_WORDS 256 /* the scratch path travels as int32 words: 1 KiB */

static int g_rank, g_size;

typedef enum split_mode {
  SPLIT_UNEVEN_EMPTY = 0, /* rank 1 holds no rows; the first of the others hold one more */
  SPLIT_ALL_ON_ZERO = 1,  /* rank 0 holds every row */
  SPLIT_REVERSED = 2,     /* even split with the remainder at the end, ranks in reverse */
} split_mode_t;

/* Rows [*start, *start + *count) of `total` that `rank` holds under `mode`. */
static void split_rows(int64_t total, split_mode_t mode, int rank, int64_t *start, int64_t *count) {
  const int p = g_size;
  if (mode == SPLIT_ALL_ON_ZERO) {
    *start = rank == 0 ? 0 : total;
    *count = rank == 0 ? total : 0;
    return;
  }
  /* Blocks are laid out in row order by position; position `pos` belongs to rank
   * owner(pos): the identity, or reversed. */
  const int holders = mode == SPLIT_UNEVEN_EMPTY && p > 1 ? p - 1 : p;
  const int64_t base = total / holders, rem = total % holders;
  int64_t row = 0;
  int held = 0; /* blocks handed out so far to ranks that hold rows */
  for (int pos = 0; pos < p; pos++) {
    int owner = mode == SPLIT_REVERSED ? p - 1 - pos : pos;
    int64_t n;
    if (mode == SPLIT_UNEVEN_EMPTY) /* rank 1 empty; the first `rem` holders get one more */
      n = p > 1 && owner == 1 ? 0 : base + (held++ < rem ? 1 : 0);
    else /* reversed even split, the remainder on the last positions */
      n = base + (pos >= p - rem ? 1 : 0);
    if (owner == rank) {
      *start = row;
      *count = n;
      return;
    }
    row += n;
  }
  *start = total;
  *count = 0;
}

static void write_rows(weft_tensor_file_t *file, const char *name, weft_dtype_t dtype, int salt,
                       int ndim, const int64_t *global, split_mode_t mode) {
  int64_t start[4] = {0, 0, 0, 0}, count[4];
  for (int d = 0; d < ndim; d++) count[d] = global[d];
  split_rows(global[0], mode, g_rank, &start[0], &count[0]);
  int64_t n = tf_test_numel(ndim, count);
  void *buf = n ? malloc((size_t)n * weft_dtype_size(dtype)) : NULL;
  if (buf) tf_test_fill(dtype, salt, ndim, global, start, count, buf);
  WT_CHECK_OK(weft_tensor_file_write_slab(file, name, dtype, ndim, global, start, count, buf));
  WT_CHECK(weft_tensor_file_last_transfer_collective(file), "%s: write was not collective", name);
  free(buf);
}

static void read_block(weft_tensor_file_t *file, const char *name, weft_dtype_t dtype, int salt,
                       int ndim, const int64_t *global, const int64_t *start, const int64_t *count,
                       const char *what) {
  int64_t n = tf_test_numel(ndim, count);
  void *buf = n ? calloc((size_t)n, weft_dtype_size(dtype)) : NULL;
  char label[160];
  snprintf(label, sizeof label, "%s %s", name, what);
  WT_CHECK_OK(weft_tensor_file_read_slab(file, name, dtype, ndim, global, start, count, buf));
  WT_CHECK(weft_tensor_file_last_transfer_collective(file), "%s: read was not collective", label);
  if (buf) tf_test_check(dtype, salt, ndim, global, start, count, buf, label);
  free(buf);
}

/* Reads `name` back three ways, none of them the split it was written with. */
static void read_resharded(weft_tensor_file_t *file, const char *name, weft_dtype_t dtype, int salt,
                           int ndim, const int64_t *global) {
  int64_t start[4] = {0, 0, 0, 0}, count[4];
  for (int d = 0; d < ndim; d++) count[d] = global[d];
  split_rows(global[0], SPLIT_REVERSED, g_rank, &start[0], &count[0]);
  read_block(file, name, dtype, salt, ndim, global, start, count, "reversed rows");
  if (ndim >= 2) { /* split over dim 1: with 4 ranks and 3 columns one rank reads none */
    for (int d = 0; d < ndim; d++) start[d] = 0, count[d] = global[d];
    int64_t per = global[1] / g_size, rem = global[1] % g_size;
    count[1] = per + (g_rank < rem ? 1 : 0);
    start[1] = g_rank * per + (g_rank < rem ? g_rank : rem);
    read_block(file, name, dtype, salt, ndim, global, start, count, "column split");
    for (int d = 0; d < ndim; d++) start[d] = 0, count[d] = global[d];
    start[0] = g_rank % global[0]; /* an interior block, different on every rank */
    count[0] = global[0] - start[0] < 2 ? global[0] - start[0] : 2;
    start[1] = global[1] > 1 ? 1 : 0;
    count[1] = global[1] - start[1];
    read_block(file, name, dtype, salt, ndim, global, start, count, "interior block");
  }
}

static const int64_t k_f32[2] = {5, 3}, k_bf16[2] = {5, 4}, k_i64[3] = {6, 2, 2}, k_i32[1] = {9};
static const int64_t k_empty[2] = {0, 3}, k_bias[1] = {4};

static void write_all(const char *path, weft_comm_t *world) {
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_create(path, world, &file));
  if (!file) return;
  WT_CHECK(weft_tensor_file_is_collective(file), "collective file");
  write_rows(file, "/params/w_f32", WEFT_DTYPE_F32, 1, 2, k_f32, SPLIT_UNEVEN_EMPTY);
  write_rows(file, "/params/w_bf16", WEFT_DTYPE_BF16, 2, 2, k_bf16, SPLIT_UNEVEN_EMPTY);
  write_rows(file, "/optim/m_i64", WEFT_DTYPE_I64, 3, 3, k_i64, SPLIT_ALL_ON_ZERO);
  write_rows(file, "/state/i32", WEFT_DTYPE_I32, 4, 1, k_i32, SPLIT_UNEVEN_EMPTY);
  const int64_t zero[2] = {0, 0}, none[2] = {0, 3};
  WT_CHECK_OK(weft_tensor_file_write_slab(file, "/params/empty", WEFT_DTYPE_F32, 2, k_empty, zero,
                                          none, NULL));
  /* Replicated tensors: every rank passes the same values, rank 0's are written. */
  int64_t step = 1000 + 7;
  WT_CHECK_OK(weft_tensor_file_write(file, "/replicated/step", WEFT_DTYPE_I64, 0, NULL, &step));
  WT_CHECK(weft_tensor_file_last_transfer_collective(file), "scalar write was not collective");
  float bias[4];
  tf_test_fill(WEFT_DTYPE_F32, 5, 1, k_bias, NULL, NULL, bias);
  WT_CHECK_OK(weft_tensor_file_write(file, "/replicated/bias", WEFT_DTYPE_F32, 1, k_bias,
                                     g_rank == 0 ? bias : NULL));
  WT_CHECK_OK(weft_tensor_file_attr_write_str(file, NULL, "format", "weft-tensor-file"));
  WT_CHECK_OK(weft_tensor_file_attr_write_i64(file, NULL, "world_size", g_size));
  WT_CHECK_OK(weft_tensor_file_attr_write_f64(file, "/params/w_f32", "scale", 0.75));

  /* Read back in the same session, through another split. */
  read_resharded(file, "/params/w_f32", WEFT_DTYPE_F32, 1, 2, k_f32);

  /* Errors that only one rank sees must reach every rank, and nobody may hang. */
  int64_t start[2] = {0, 0}, count[2] = {1, 3};
  if (g_rank == g_size - 1) start[0] = 5; /* past the end, on the last rank only */
  float row[3] = {0}, row15[15];
  WT_CHECK_STATUS(weft_tensor_file_write_slab(file, "/params/w_f32", WEFT_DTYPE_F32, 2, k_f32,
                                              start, count, row),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_read_slab(file, "/params/w_f32", WEFT_DTYPE_F32, 2, k_f32, start,
                                             count, row),
                  WEFT_ERR_INVALID_ARG);
  if (g_size > 1) { /* ranks disagreeing on the global shape */
    const int64_t other[2] = {5 + (g_rank == 1), 3};
    int64_t zero_start[2] = {0, 0}, zero_count[2] = {0, 0};
    WT_CHECK_STATUS(weft_tensor_file_write_slab(file, "/params/disagree", WEFT_DTYPE_F32, 2, other,
                                                zero_start, zero_count, NULL),
                    WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(weft_tensor_file_attr_write_i64(file, NULL, "rank", g_rank),
                    WEFT_ERR_INVALID_ARG);
  }
  WT_CHECK_STATUS(weft_tensor_file_read(file, "/params/nope", WEFT_DTYPE_F32, 2, k_f32, row15),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_write(file, "/params/w_f32", WEFT_DTYPE_F32, 1, k_bias, bias),
                  WEFT_ERR_INVALID_ARG);
  bool exists = true;
  WT_CHECK_OK(weft_tensor_file_exists(file, "/params/disagree", &exists));
  WT_CHECK(!exists, "a refused dataset was not created");
  WT_CHECK_OK(weft_tensor_file_close(file));
}

static void read_all(const char *path, weft_comm_t *world) {
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_open(path, WEFT_TENSOR_FILE_READ, world, &file));
  if (!file) return;
  weft_tensor_file_names_t names;
  WT_CHECK_OK(weft_tensor_file_list(file, &names));
  const char *want[] = {"/optim/m_i64",     "/params/empty",    "/params/w_bf16", "/params/w_f32",
                        "/replicated/bias", "/replicated/step", "/state/i32"};
  WT_CHECK(names.count == 7, "listed %d datasets", names.count);
  for (int i = 0; i < names.count && i < 7; i++)
    WT_CHECK(strcmp(names.names[i], want[i]) == 0, "dataset %d is %s", i, names.names[i]);
  weft_tensor_file_names_cleanup(&names);
  weft_tensor_file_info_t info;
  WT_CHECK_OK(weft_tensor_file_query(file, "/params/w_bf16", &info));
  WT_CHECK(
      info.dtype == WEFT_DTYPE_BF16 && info.ndim == 2 && info.shape[0] == 5 && info.shape[1] == 4,
      "bf16 query");
  read_resharded(file, "/params/w_f32", WEFT_DTYPE_F32, 1, 2, k_f32);
  read_resharded(file, "/params/w_bf16", WEFT_DTYPE_BF16, 2, 2, k_bf16);
  read_resharded(file, "/optim/m_i64", WEFT_DTYPE_I64, 3, 3, k_i64);
  read_resharded(file, "/state/i32", WEFT_DTYPE_I32, 4, 1, k_i32);
  const int64_t zero[2] = {0, 0}, none[2] = {0, 3};
  WT_CHECK_OK(weft_tensor_file_read_slab(file, "/params/empty", WEFT_DTYPE_F32, 2, k_empty, zero,
                                         none, NULL));
  WT_CHECK_OK(weft_tensor_file_read(file, "/params/empty", WEFT_DTYPE_F32, 2, k_empty, NULL));
  int64_t step = 0;
  WT_CHECK_OK(weft_tensor_file_read(file, "/replicated/step", WEFT_DTYPE_I64, 0, NULL, &step));
  WT_CHECK(step == 1007, "replicated scalar %lld", (long long)step);
  float bias[4] = {0};
  WT_CHECK_OK(weft_tensor_file_read(file, "/replicated/bias", WEFT_DTYPE_F32, 1, k_bias, bias));
  tf_test_check(WEFT_DTYPE_F32, 5, 1, k_bias, NULL, NULL, bias, "replicated bias");
  char *text = NULL;
  int64_t world_size = 0;
  uint16_t bf16_15[15];
  double scale = 0;
  WT_CHECK_OK(weft_tensor_file_attr_read_str(file, NULL, "format", &text));
  WT_CHECK(text && strcmp(text, "weft-tensor-file") == 0, "format attribute");
  free(text);
  WT_CHECK_OK(weft_tensor_file_attr_read_i64(file, NULL, "world_size", &world_size));
  WT_CHECK(world_size == g_size, "world_size %lld", (long long)world_size);
  WT_CHECK_OK(weft_tensor_file_attr_read_f64(file, "/params/w_f32", "scale", &scale));
  WT_CHECK(scale == 0.75, "scale %g", scale);
  WT_CHECK_STATUS(weft_tensor_file_read(file, "/params/w_f32", WEFT_DTYPE_BF16, 2, k_f32, bf16_15),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_tensor_file_close(file));
}

/* Rank 0 alone reads the collective file serially: the distributed writes must add up to the
 * same tensors a single process sees. */
static void read_serial_on_root(const char *path) {
  if (g_rank != 0) return;
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_open(path, WEFT_TENSOR_FILE_READ, NULL, &file));
  if (!file) return;
  float f32[15];
  uint16_t bf16[20];
  int64_t i64[24];
  int32_t i32[9];
  WT_CHECK_OK(weft_tensor_file_read(file, "/params/w_f32", WEFT_DTYPE_F32, 2, k_f32, f32));
  tf_test_check(WEFT_DTYPE_F32, 1, 2, k_f32, NULL, NULL, f32, "serial f32");
  WT_CHECK_OK(weft_tensor_file_read(file, "/params/w_bf16", WEFT_DTYPE_BF16, 2, k_bf16, bf16));
  tf_test_check(WEFT_DTYPE_BF16, 2, 2, k_bf16, NULL, NULL, bf16, "serial bf16");
  WT_CHECK_OK(weft_tensor_file_read(file, "/optim/m_i64", WEFT_DTYPE_I64, 3, k_i64, i64));
  tf_test_check(WEFT_DTYPE_I64, 3, 3, k_i64, NULL, NULL, i64, "serial i64");
  WT_CHECK_OK(weft_tensor_file_read(file, "/state/i32", WEFT_DTYPE_I32, 1, k_i32, i32));
  tf_test_check(WEFT_DTYPE_I32, 4, 1, k_i32, NULL, NULL, i32, "serial i32");
  WT_CHECK_OK(weft_tensor_file_close(file));
}

static void test_split_table(void) {
  /* The splits this test relies on: rows of 5 over the ranks. */
  int64_t covered = 0, empty = 0;
  for (int r = 0; r < g_size; r++) {
    int64_t s, c;
    split_rows(5, SPLIT_UNEVEN_EMPTY, r, &s, &c);
    covered += c;
    empty += c == 0;
  }
  WT_CHECK(covered == 5, "uneven split covers %lld rows", (long long)covered);
  WT_CHECK(g_size == 1 || empty >= 1, "some rank holds no rows");
}

/* weft_tensor_file_allocate + pwrite (the checkpoint writer's path): every rank pwrites its
 * uneven row block at the offset the collective allocation returned, after the file is
 * closed; the file then reads back through HDF5 (collective, resharded) and reports the same
 * offsets through weft_tensor_file_data_offset. An empty dataset has no offset. */
static void test_allocate_and_pwrite(const char *path, weft_comm_t *world) {
  static const int64_t global[2] = {7, 6};
  weft_tensor_file_t *file = NULL;
  int64_t offset = -2, empty_offset = -2;
  WT_CHECK_OK(weft_tensor_file_create(path, world, &file));
  if (!file) return;
  WT_CHECK_OK(weft_tensor_file_allocate(file, "/raw/f32", WEFT_DTYPE_F32, 2, global, &offset));
  WT_CHECK_OK(
      weft_tensor_file_allocate(file, "/raw/empty", WEFT_DTYPE_F32, 2, k_empty, &empty_offset));
  WT_CHECK_OK(weft_tensor_file_close(file));
  WT_CHECK(offset > 0 && empty_offset == -1, "offsets %lld and %lld", (long long)offset,
           (long long)empty_offset);
  int64_t start[2] = {0, 0}, count[2] = {0, global[1]};
  split_rows(global[0], SPLIT_UNEVEN_EMPTY, g_rank, &start[0], &count[0]);
  float rows[7 * 6];
  tf_test_fill(WEFT_DTYPE_F32, 9, 2, global, start, count, rows);
  const size_t bytes = (size_t)(count[0] * count[1]) * sizeof(float);
  const int fd = open(path, O_WRONLY);
  WT_CHECK(fd >= 0, "open %s for pwrite", path);
  if (fd >= 0) {
    const off_t at = (off_t)(offset + start[0] * global[1] * (int64_t)sizeof(float));
    WT_CHECK(pwrite(fd, rows, bytes, at) == (ssize_t)bytes, "pwrite of %zu bytes", bytes);
    close(fd);
  }
  WT_CHECK_OK(weft_comm_barrier(world));
  WT_CHECK_OK(weft_tensor_file_open(path, WEFT_TENSOR_FILE_READ, world, &file));
  if (!file) return;
  int64_t again = -2;
  WT_CHECK_OK(weft_tensor_file_data_offset(file, "/raw/f32", &again));
  WT_CHECK(again == offset, "data_offset %lld, allocate said %lld", (long long)again,
           (long long)offset);
  read_resharded(file, "/raw/f32", WEFT_DTYPE_F32, 9, 2, global);
  WT_CHECK_OK(weft_tensor_file_close(file));
}

int main(int argc, char **argv) {
  weft_bootstrap_t boot;
  weft_status_t st = weft_comm_bootstrap(&argc, &argv, WEFT_DEVICE_REQUEST_CPU, &boot);
  if (st != WEFT_OK) {
    fprintf(stderr, "bootstrap failed: %s\n", weft_status_str(st));
    weft_comm_abort(1);
  }
  weft_comm_t *world = NULL;
  st = weft_comm_create_world(&boot, &world);
  if (st != WEFT_OK) {
    fprintf(stderr, "create_world failed: %s\n", weft_status_str(st));
    weft_comm_abort(1);
  }
  g_rank = weft_comm_rank(world);
  g_size = weft_comm_size(world);
  weft_test_set_rank(g_rank);

  /* Rank 0 makes the scratch directory; the others learn its name. */
  int32_t words[PATH_WORDS] = {0};
  char *dir = g_rank == 0 ? tf_test_mkdtemp() : NULL;
  if (g_rank == 0 && dir && strlen(dir) < sizeof words) memcpy(words, dir, strlen(dir) + 1);
  WT_CHECK_OK(weft_comm_bcast(world, words, PATH_WORDS, WEFT_DTYPE_I32, 0, WEFT_MEM_HOST));
  char path[sizeof words + 32];
  snprintf(path, sizeof path, "%s/collective.h5", (const char *)words);

  test_split_table();
  weft_tensor_file_t *file = NULL;
  WT_CHECK_STATUS(
      weft_tensor_file_open("/nonexistent/weft.h5", WEFT_TENSOR_FILE_READ, world, &file),
      WEFT_ERR_IO);
  if (g_size > 1) { /* ranks naming different files: refused everywhere, nothing created */
    char own[sizeof words + 32];
    snprintf(own, sizeof own, "%s/rank%d.h5", (const char *)words, g_rank);
    WT_CHECK_STATUS(weft_tensor_file_create(own, world, &file), WEFT_ERR_INVALID_ARG);
    WT_CHECK(file == NULL, "no handle after a refused create");
  }
  write_all(path, world);
  read_all(path, world);
  read_serial_on_root(path);
  snprintf(path, sizeof path, "%s/allocated.h5", (const char *)words);
  test_allocate_and_pwrite(path, world);

  int32_t failures = weft_test_failures();
  WT_CHECK_OK(weft_comm_allreduce(world, &failures, &failures, 1, WEFT_DTYPE_I32, WEFT_REDUCE_SUM,
                                  WEFT_MEM_HOST));
  if (g_rank == 0 && failures == 0) tf_test_rmtree((const char *)words);
  free(dir);
  weft_comm_destroy(world);
  weft_comm_finalize(&boot);
  return weft_test_exit_code("test_tensor_file_mpi");
}
