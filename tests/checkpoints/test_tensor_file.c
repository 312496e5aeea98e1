/* Serial tests of tensor files (comm == NULL): round trips of every stored dtype at every rank
 * 0..4 (and empty tensors), hyperslab writes and reads, overwrite rules, the dataset list and
 * queries, attributes, and the errors: missing and garbage files, missing datasets, dtype
 * and shape mismatches, read-only files, bad names and blocks. Error cases also check that
 * the logged message names the file, the dataset and both values. Files go to a scratch
 * directory under the ctest working directory, removed when the test passes. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "tf_test_common.h"
#include "weft/bf16.h"
#include "weft/tensor.h"
#include "weft/tensor_file.h"

static char g_dir[4096];

static const char *tf_path(const char *name) {
  static char path[8192];
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  return path;
}

/* Whether the captured log text contains every one of the NULL-terminated needles. */
static bool log_has(const char *text, const char *const *needles) {
  for (int i = 0; needles[i]; i++)
    if (!strstr(text, needles[i])) {
      weft_test_fail(__FILE__, __LINE__, "log lacks '%s' in: %s", needles[i], text);
      return false;
    }
  return true;
}

typedef struct shape_case {
  int ndim;
  int64_t shape[4];
} shape_case_t;

static const weft_dtype_t k_dtypes[] = {WEFT_DTYPE_F32, WEFT_DTYPE_BF16, WEFT_DTYPE_I32,
                                        WEFT_DTYPE_I64};
static const shape_case_t k_shapes[] = {{0, {0}},       {1, {7}},          {2, {2, 3}},
                                        {3, {2, 3, 4}}, {4, {2, 1, 3, 5}}, {2, {0, 3}}};

static void test_round_trip(void) {
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_create(tf_path("round.h5"), NULL, &file));
  if (!file) return;
  WT_CHECK(!weft_tensor_file_is_collective(file), "serial file");
  WT_CHECK(!weft_tensor_file_last_transfer_collective(file), "serial transfers are not");
  char name[64];
  for (size_t t = 0; t < sizeof k_dtypes / sizeof *k_dtypes; t++)
    for (size_t s = 0; s < sizeof k_shapes / sizeof *k_shapes; s++) {
      const shape_case_t *c = &k_shapes[s];
      weft_dtype_t dtype = k_dtypes[t];
      size_t bytes = (size_t)tf_test_numel(c->ndim, c->shape) * weft_dtype_size(dtype);
      void *buf = malloc(bytes + 8);
      tf_test_fill(dtype, (int)s, c->ndim, c->shape, NULL, NULL, buf);
      snprintf(name, sizeof name, "/round/%s/case%zu", weft_dtype_name(dtype), s);
      WT_CHECK_OK(weft_tensor_file_write(file, name, dtype, c->ndim, c->shape, buf));
      free(buf);
    }
  WT_CHECK_OK(weft_tensor_file_close(file));

  /* Read back from a fresh open, so nothing can come from HDF5's cache. */
  WT_CHECK_OK(weft_tensor_file_open(tf_path("round.h5"), WEFT_TENSOR_FILE_READ, NULL, &file));
  if (!file) return;
  for (size_t t = 0; t < sizeof k_dtypes / sizeof *k_dtypes; t++)
    for (size_t s = 0; s < sizeof k_shapes / sizeof *k_shapes; s++) {
      const shape_case_t *c = &k_shapes[s];
      weft_dtype_t dtype = k_dtypes[t];
      snprintf(name, sizeof name, "round/%s/case%zu", weft_dtype_name(dtype), s); /* no '/' */
      weft_tensor_file_info_t info;
      WT_CHECK_OK(weft_tensor_file_query(file, name, &info));
      WT_CHECK(info.dtype == dtype && info.ndim == c->ndim, "%s: query gave %s ndim %d", name,
               weft_dtype_name(info.dtype), info.ndim);
      for (int d = 0; d < c->ndim; d++)
        WT_CHECK(info.shape[d] == c->shape[d], "%s: dim %d is %lld", name, d,
                 (long long)info.shape[d]);
      size_t bytes = (size_t)tf_test_numel(c->ndim, c->shape) * weft_dtype_size(dtype);
      void *buf = calloc(1, bytes + 8);
      WT_CHECK_OK(weft_tensor_file_read(file, name, dtype, c->ndim, c->shape, buf));
      tf_test_check(dtype, (int)s, c->ndim, c->shape, NULL, NULL, buf, name);
      free(buf);
      char *text = NULL;
      WT_CHECK_OK(weft_tensor_file_attr_read_str(file, name, "dtype", &text));
      WT_CHECK(text && strcmp(text, weft_dtype_name(dtype)) == 0, "%s: dtype attribute '%s'", name,
               text ? text : "(null)");
      free(text);
    }
  WT_CHECK_OK(weft_tensor_file_close(file));
}

static void test_slabs(void) {
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_create(tf_path("slabs.h5"), NULL, &file));
  if (!file) return;
  /* [7, 5] i64 written as three row blocks (one empty) and read back as column blocks. */
  const int64_t global[2] = {7, 5};
  const int64_t rows[4][2] = {{0, 3}, {3, 0}, {3, 4}, {7, 0}}; /* start, count */
  int64_t buf[7 * 5];
  for (int b = 0; b < 4; b++) {
    int64_t start[2] = {rows[b][0], 0}, count[2] = {rows[b][1], 5};
    tf_test_fill(WEFT_DTYPE_I64, 1, 2, global, start, count, buf);
    WT_CHECK_OK(weft_tensor_file_write_slab(file, "/s/i64", WEFT_DTYPE_I64, 2, global, start, count,
                                            count[0] ? buf : NULL));
  }
  for (int64_t c0 = 0; c0 < 5; c0 += 2) {
    int64_t start[2] = {0, c0}, count[2] = {7, c0 + 2 <= 5 ? 2 : 1};
    memset(buf, 0, sizeof buf);
    WT_CHECK_OK(
        weft_tensor_file_read_slab(file, "/s/i64", WEFT_DTYPE_I64, 2, global, start, count, buf));
    tf_test_check(WEFT_DTYPE_I64, 1, 2, global, start, count, buf, "column block");
  }
  memset(buf, 0, sizeof buf);
  WT_CHECK_OK(weft_tensor_file_read(file, "/s/i64", WEFT_DTYPE_I64, 2, global, buf));
  tf_test_check(WEFT_DTYPE_I64, 1, 2, global, NULL, NULL, buf, "whole after slabs");
  /* An interior 2x2 block of a 4-d bf16 tensor. */
  const int64_t g4[4] = {3, 2, 4, 3}, s4[4] = {1, 1, 2, 1}, c4[4] = {2, 1, 2, 2};
  weft_bf16_t whole[3 * 2 * 4 * 3], part[8];
  tf_test_fill(WEFT_DTYPE_BF16, 2, 4, g4, NULL, NULL, whole);
  WT_CHECK_OK(weft_tensor_file_write(file, "/s/bf16", WEFT_DTYPE_BF16, 4, g4, whole));
  WT_CHECK_OK(weft_tensor_file_read_slab(file, "/s/bf16", WEFT_DTYPE_BF16, 4, g4, s4, c4, part));
  tf_test_check(WEFT_DTYPE_BF16, 2, 4, g4, s4, c4, part, "4-d block");
  /* A block outside the extent is refused, naming the numbers. */
  const int64_t bad_start[2] = {6, 0}, bad_count[2] = {2, 5};
  tf_test_capture_begin();
  weft_status_t st = weft_tensor_file_read_slab(file, "/s/i64", WEFT_DTYPE_I64, 2, global,
                                                bad_start, bad_count, buf);
  char *log = tf_test_capture_end();
  WT_CHECK(st == WEFT_ERR_INVALID_ARG, "block past the end: %s", weft_status_str(st));
  log_has(log, (const char *const[]){"slabs.h5", "/s/i64", "start 6 count 2", "extent 7", NULL});
  free(log);
  WT_CHECK_OK(weft_tensor_file_close(file));
}

static void test_overwrite_and_list(void) {
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_create(tf_path("list.h5"), NULL, &file));
  if (!file) return;
  const int64_t shape[1] = {4};
  float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, r[4] = {0};
  WT_CHECK_OK(weft_tensor_file_write(file, "/params/layer0/w", WEFT_DTYPE_F32, 1, shape, a));
  WT_CHECK_OK(weft_tensor_file_write(file, "/params/layer0/w", WEFT_DTYPE_F32, 1, shape, b));
  WT_CHECK_OK(weft_tensor_file_read(file, "/params/layer0/w", WEFT_DTYPE_F32, 1, shape, r));
  WT_CHECK(memcmp(r, b, sizeof b) == 0, "overwrite of the same shape took the new values");
  const int64_t other[1] = {5};
  WT_CHECK_STATUS(weft_tensor_file_write(file, "/params/layer0/w", WEFT_DTYPE_F32, 1, other, a),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_write(file, "/params/layer0/w", WEFT_DTYPE_I32, 1, shape, a),
                  WEFT_ERR_INVALID_ARG);
  int64_t step = 12;
  WT_CHECK_OK(weft_tensor_file_write(file, "/optim/step", WEFT_DTYPE_I64, 0, NULL, &step));
  WT_CHECK_OK(weft_tensor_file_write(file, "/params/emb", WEFT_DTYPE_F32, 1, shape, a));
  WT_CHECK_OK(weft_tensor_file_write(file, "top", WEFT_DTYPE_F32, 1, shape, a));

  weft_tensor_file_names_t names;
  WT_CHECK_OK(weft_tensor_file_list(file, &names));
  const char *want[] = {"/optim/step", "/params/emb", "/params/layer0/w", "/top"};
  WT_CHECK(names.count == 4, "listed %d datasets", names.count);
  for (int i = 0; i < names.count && i < 4; i++)
    WT_CHECK(strcmp(names.names[i], want[i]) == 0, "name %d is %s", i, names.names[i]);
  weft_tensor_file_names_cleanup(&names);
  weft_tensor_file_names_cleanup(&names); /* twice: harmless */

  bool exists = true;
  WT_CHECK_OK(weft_tensor_file_exists(file, "/params/layer0/w", &exists));
  WT_CHECK(exists, "dataset exists");
  WT_CHECK_OK(weft_tensor_file_exists(file, "/params/layer0", &exists));
  WT_CHECK(!exists, "a group is not a dataset");
  WT_CHECK_OK(weft_tensor_file_exists(file, "/nothing/here/at/all", &exists));
  WT_CHECK(!exists, "missing path");
  WT_CHECK_STATUS(weft_tensor_file_read(file, "/params", WEFT_DTYPE_F32, 1, shape, r),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_write(file, "/params/layer0/w/sub", WEFT_DTYPE_F32, 1, shape, a),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_tensor_file_close(file));

  /* Read-write reopen appends; read-only refuses writes. */
  WT_CHECK_OK(weft_tensor_file_open(tf_path("list.h5"), WEFT_TENSOR_FILE_READ_WRITE, NULL, &file));
  if (!file) return;
  WT_CHECK_OK(weft_tensor_file_write(file, "/later", WEFT_DTYPE_F32, 1, shape, a));
  WT_CHECK_OK(weft_tensor_file_close(file));
  WT_CHECK_OK(weft_tensor_file_open(tf_path("list.h5"), WEFT_TENSOR_FILE_READ, NULL, &file));
  if (!file) return;
  WT_CHECK_OK(weft_tensor_file_read(file, "/later", WEFT_DTYPE_F32, 1, shape, r));
  WT_CHECK(memcmp(r, a, sizeof a) == 0, "appended dataset");
  WT_CHECK_STATUS(weft_tensor_file_write(file, "/refused", WEFT_DTYPE_F32, 1, shape, a),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_attr_write_i64(file, NULL, "x", 1), WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_tensor_file_close(file));
  WT_CHECK_OK(weft_tensor_file_close(NULL));
}

static void test_tensor_api(void) {
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_create(tf_path("tensor.h5"), NULL, &file));
  if (!file) return;
  const int64_t shape[3] = {2, 3, 2};
  int32_t data[12], back[12] = {0};
  tf_test_fill(WEFT_DTYPE_I32, 3, 3, shape, NULL, NULL, data);
  weft_tensor_t t, r;
  WT_CHECK_OK(weft_tensor_init(&t, "/state/cursor", WEFT_DTYPE_I32, 3, shape, NULL, data));
  WT_CHECK_OK(weft_tensor_file_write_tensor(file, NULL, &t));
  WT_CHECK_OK(weft_tensor_init(&r, "/state/cursor", WEFT_DTYPE_I32, 3, shape, NULL, back));
  WT_CHECK_OK(weft_tensor_file_read_tensor(file, NULL, &r));
  tf_test_check(WEFT_DTYPE_I32, 3, 3, shape, NULL, NULL, back, "tensor api");
  /* Expecting another shape through the tensor API is refused too. */
  const int64_t flat[1] = {12};
  WT_CHECK_OK(weft_tensor_init(&r, "/state/cursor", WEFT_DTYPE_I32, 1, flat, NULL, back));
  WT_CHECK_STATUS(weft_tensor_file_read_tensor(file, NULL, &r), WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_tensor_file_close(file));
}

static void test_errors(void) {
  weft_tensor_file_t *file = NULL;
  /* Missing file: WEFT_ERR_IO with the path. */
  tf_test_capture_begin();
  weft_status_t st =
      weft_tensor_file_open(tf_path("missing.h5"), WEFT_TENSOR_FILE_READ, NULL, &file);
  char *log = tf_test_capture_end();
  WT_CHECK(st == WEFT_ERR_IO && file == NULL, "missing file: %s", weft_status_str(st));
  log_has(log, (const char *const[]){"missing.h5", "No such file", NULL});
  free(log);
  /* A file that is not HDF5. */
  FILE *garbage = fopen(tf_path("garbage.h5"), "wb");
  if (garbage) {
    for (int i = 0; i < 4096; i++) fputc((i * 37) & 0xff, garbage);
    fclose(garbage);
  }
  tf_test_capture_begin();
  st = weft_tensor_file_open(tf_path("garbage.h5"), WEFT_TENSOR_FILE_READ, NULL, &file);
  log = tf_test_capture_end();
  WT_CHECK(st == WEFT_ERR_IO && file == NULL, "garbage file: %s", weft_status_str(st));
  log_has(log, (const char *const[]){"garbage.h5", "HDF5", NULL});
  free(log);
  /* An empty file and a directory. */
  fclose(fopen(tf_path("empty.h5"), "wb"));
  WT_CHECK_STATUS(weft_tensor_file_open(tf_path("empty.h5"), WEFT_TENSOR_FILE_READ, NULL, &file),
                  WEFT_ERR_IO);
  WT_CHECK_STATUS(weft_tensor_file_open(g_dir, WEFT_TENSOR_FILE_READ, NULL, &file), WEFT_ERR_IO);
  WT_CHECK_STATUS(weft_tensor_file_create(tf_path("no/such/dir.h5"), NULL, &file), WEFT_ERR_IO);

  WT_CHECK_OK(weft_tensor_file_create(tf_path("errors.h5"), NULL, &file));
  if (!file) return;
  const int64_t shape[2] = {2, 3};
  float data[6] = {0};
  WT_CHECK_OK(weft_tensor_file_write(file, "/w", WEFT_DTYPE_F32, 2, shape, data));
  /* Missing dataset. */
  tf_test_capture_begin();
  st = weft_tensor_file_read(file, "/params/nope", WEFT_DTYPE_F32, 2, shape, data);
  log = tf_test_capture_end();
  WT_CHECK(st == WEFT_ERR_INVALID_ARG, "missing dataset: %s", weft_status_str(st));
  log_has(log, (const char *const[]){"errors.h5", "/params/nope", "no such dataset", NULL});
  free(log);
  weft_tensor_file_info_t info;
  WT_CHECK_STATUS(weft_tensor_file_query(file, "/params/nope", &info), WEFT_ERR_INVALID_ARG);
  /* Wrong dtype: both values named. */
  tf_test_capture_begin();
  st = weft_tensor_file_read(file, "/w", WEFT_DTYPE_BF16, 2, shape, data);
  log = tf_test_capture_end();
  WT_CHECK(st == WEFT_ERR_INVALID_ARG, "wrong dtype: %s", weft_status_str(st));
  log_has(log, (const char *const[]){"errors.h5", "'/w'", "bf16[2,3]", "f32[2,3]", NULL});
  free(log);
  /* Wrong shape, and wrong rank. */
  const int64_t wrong[2] = {3, 2}, flat[1] = {6};
  tf_test_capture_begin();
  st = weft_tensor_file_read(file, "/w", WEFT_DTYPE_F32, 2, wrong, data);
  log = tf_test_capture_end();
  WT_CHECK(st == WEFT_ERR_INVALID_ARG, "wrong shape: %s", weft_status_str(st));
  log_has(log, (const char *const[]){"errors.h5", "'/w'", "f32[3,2]", "f32[2,3]", NULL});
  free(log);
  WT_CHECK_STATUS(weft_tensor_file_read(file, "/w", WEFT_DTYPE_F32, 1, flat, data),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(
      weft_tensor_file_read_slab(file, "/w", WEFT_DTYPE_F32, 2, wrong, (const int64_t[]){0, 0},
                                 (const int64_t[]){1, 1}, data),
      WEFT_ERR_INVALID_ARG);
  /* Bad arguments. */
  const int64_t five[5] = {1, 1, 1, 1, 1}, negative[1] = {-1};
  WT_CHECK_STATUS(weft_tensor_file_write(file, "/x", WEFT_DTYPE_F32, 5, five, data),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_write(file, "/x", WEFT_DTYPE_F32, 1, negative, data),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_write(file, "/x", WEFT_DTYPE_F16, 2, shape, data),
                  WEFT_ERR_UNSUPPORTED);
  WT_CHECK_STATUS(weft_tensor_file_write(file, "/x", WEFT_DTYPE_F32, 2, shape, NULL),
                  WEFT_ERR_INVALID_ARG);
  const char *bad_names[] = {"", "/", "/a//b", "/a/", "/a/../b", "/a/.", "..", NULL};
  for (int i = 0; bad_names[i]; i++)
    WT_CHECK_STATUS(weft_tensor_file_write(file, bad_names[i], WEFT_DTYPE_F32, 2, shape, data),
                    WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_write(file, NULL, WEFT_DTYPE_F32, 2, shape, data),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_tensor_file_close(file));
}

static void test_attributes(void) {
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_create(tf_path("attrs.h5"), NULL, &file));
  if (!file) return;
  const int64_t shape[1] = {3};
  float data[3] = {1, 2, 3};
  WT_CHECK_OK(weft_tensor_file_write(file, "/params/w", WEFT_DTYPE_F32, 1, shape, data));
  WT_CHECK_OK(weft_tensor_file_attr_write_str(file, NULL, "format", "weft-tensor-file"));
  WT_CHECK_OK(weft_tensor_file_attr_write_str(file, "/", "unicode", "d\xc3\xa9j\xc3\xa0 vu"));
  WT_CHECK_OK(weft_tensor_file_attr_write_str(file, "/", "empty", ""));
  WT_CHECK_OK(weft_tensor_file_attr_write_i64(file, NULL, "version", 3));
  WT_CHECK_OK(weft_tensor_file_attr_write_i64(file, NULL, "big", INT64_MIN + 5));
  WT_CHECK_OK(weft_tensor_file_attr_write_f64(file, NULL, "lr", 3e-4));
  WT_CHECK_OK(weft_tensor_file_attr_write_i64(file, "/params/w", "checksum", 0x7eadbeefcafeLL));
  WT_CHECK_OK(weft_tensor_file_attr_write_str(file, "/params", "note", "a group attribute"));
  /* A JSON configuration larger than the 64 KiB compact attribute limit. */
  size_t big_len = 200000;
  char *big = malloc(big_len + 1);
  for (size_t i = 0; i < big_len; i++) big[i] = (char)('a' + i % 26);
  big[big_len] = '\0';
  WT_CHECK_OK(weft_tensor_file_attr_write_str(file, NULL, "config", big));
  /* Replacing an attribute with another type. */
  WT_CHECK_OK(weft_tensor_file_attr_write_str(file, NULL, "lr", "changed to a string"));
  WT_CHECK_OK(weft_tensor_file_attr_write_f64(file, NULL, "lr", 1.5e-4));
  WT_CHECK_STATUS(weft_tensor_file_attr_write_str(file, "/params/w", "dtype", "i32"),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_attr_write_i64(file, "/missing", "x", 1), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_attr_write_i64(file, NULL, "", 1), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_attr_write_str(file, NULL, "null", NULL), WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_tensor_file_close(file));

  WT_CHECK_OK(weft_tensor_file_open(tf_path("attrs.h5"), WEFT_TENSOR_FILE_READ, NULL, &file));
  if (!file) {
    free(big);
    return;
  }
  char *text = NULL;
  int64_t i64 = 0;
  double f64 = 0;
  WT_CHECK_OK(weft_tensor_file_attr_read_str(file, NULL, "format", &text));
  WT_CHECK(text && strcmp(text, "weft-tensor-file") == 0, "format '%s'", text ? text : "");
  free(text);
  WT_CHECK_OK(weft_tensor_file_attr_read_str(file, "/", "unicode", &text));
  WT_CHECK(text && strcmp(text, "d\xc3\xa9j\xc3\xa0 vu") == 0, "utf-8 round trip");
  free(text);
  WT_CHECK_OK(weft_tensor_file_attr_read_str(file, "/", "empty", &text));
  WT_CHECK(text && text[0] == '\0', "empty string");
  free(text);
  WT_CHECK_OK(weft_tensor_file_attr_read_str(file, NULL, "config", &text));
  WT_CHECK(text && strcmp(text, big) == 0, "200 kB string round trip");
  free(text);
  free(big);
  WT_CHECK_OK(weft_tensor_file_attr_read_i64(file, NULL, "version", &i64));
  WT_CHECK(i64 == 3, "version %lld", (long long)i64);
  WT_CHECK_OK(weft_tensor_file_attr_read_i64(file, NULL, "big", &i64));
  WT_CHECK(i64 == INT64_MIN + 5, "big %lld", (long long)i64);
  WT_CHECK_OK(weft_tensor_file_attr_read_f64(file, NULL, "lr", &f64));
  WT_CHECK(f64 == 1.5e-4, "lr %g", f64);
  WT_CHECK_OK(weft_tensor_file_attr_read_i64(file, "params/w", "checksum", &i64));
  WT_CHECK(i64 == 0x7eadbeefcafeLL, "checksum %llx", (unsigned long long)i64);
  WT_CHECK_OK(weft_tensor_file_attr_read_str(file, "/params", "note", &text));
  WT_CHECK(text && strcmp(text, "a group attribute") == 0, "group attribute");
  free(text);
  bool exists = false;
  WT_CHECK_OK(weft_tensor_file_attr_exists(file, NULL, "version", &exists));
  WT_CHECK(exists, "version exists");
  WT_CHECK_OK(weft_tensor_file_attr_exists(file, NULL, "nope", &exists));
  WT_CHECK(!exists, "nope does not exist");
  WT_CHECK_OK(weft_tensor_file_attr_exists(file, "/no/such/object", "x", &exists));
  WT_CHECK(!exists, "attribute of a missing object");
  /* Wrong kinds and missing attributes. */
  tf_test_capture_begin();
  weft_status_t st = weft_tensor_file_attr_read_i64(file, NULL, "format", &i64);
  char *log = tf_test_capture_end();
  WT_CHECK(st == WEFT_ERR_INVALID_ARG, "string read as int64: %s", weft_status_str(st));
  log_has(log, (const char *const[]){"attrs.h5", "'format'", "a string", "an integer", NULL});
  free(log);
  WT_CHECK_STATUS(weft_tensor_file_attr_read_i64(file, NULL, "lr", &i64), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_attr_read_f64(file, NULL, "version", &f64),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_attr_read_str(file, NULL, "version", &text),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK(text == NULL, "no string on failure");
  WT_CHECK_STATUS(weft_tensor_file_attr_read_str(file, NULL, "missing", &text),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_file_attr_read_i64(file, "/no/such", "x", &i64),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_tensor_file_close(file));
}

int main(void) {
  char *dir = tf_test_mkdtemp();
  if (!dir) {
    fprintf(stderr, "cannot create a scratch directory\n");
    return 1;
  }
  snprintf(g_dir, sizeof g_dir, "%s", dir);
  test_round_trip();
  test_slabs();
  test_overwrite_and_list();
  test_tensor_api();
  test_errors();
  test_attributes();
  if (weft_test_failures() == 0) tf_test_rmtree(dir);
  free(dir);
  return weft_test_exit_code("test_tensor_file");
}
