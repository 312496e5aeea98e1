/* Writes and reads files for the h5py cross-check (check_tensor_file.py):
 *
 *   tensor_file_fixture write PATH    writes bf16, f32, i64 and i32 datasets with the
 *                                     tf_test_common pattern, plus root and dataset attributes
 *   tensor_file_fixture foreign PATH  reads a file that h5py wrote: a bf16 dataset in the
 *                                     custom type, an f32 dataset without a `dtype` attribute,
 *                                     variable- and fixed-length string attributes, and two
 *                                     datasets that must be refused (f64, and f32 whose
 *                                     `dtype` attribute says i32)
 *
 * The python script computes the same pattern, so the values are checked in both directions
 * without a second copy of the numbers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "tf_test_common.h"
#include "weft/bf16.h"
#include "weft/tensor_file.h"

static const int64_t k_bf16_shape[2] = {3, 5};
static const int64_t k_f32_shape[3] = {2, 3, 4};
static const int64_t k_i64_shape[1] = {6};

/* Writes one dataset of the pattern with salt 0. */
static void write_pattern(weft_tensor_file_t *file, const char *name, weft_dtype_t dtype, int ndim,
                          const int64_t *shape) {
  void *buf = malloc((size_t)tf_test_numel(ndim, shape) * weft_dtype_size(dtype) + 8);
  tf_test_fill(dtype, 0, ndim, shape, NULL, NULL, buf);
  WT_CHECK_OK(weft_tensor_file_write(file, name, dtype, ndim, shape, buf));
  free(buf);
}

static void write_fixture(const char *path) {
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_create(path, NULL, &file));
  if (!file) return;
  write_pattern(file, "/params/bf16", WEFT_DTYPE_BF16, 2, k_bf16_shape);
  write_pattern(file, "/params/f32", WEFT_DTYPE_F32, 3, k_f32_shape);
  write_pattern(file, "/optim/i64", WEFT_DTYPE_I64, 1, k_i64_shape);
  int32_t scalar = 42;
  WT_CHECK_OK(weft_tensor_file_write(file, "/state/i32", WEFT_DTYPE_I32, 0, NULL, &scalar));
  /* bf16 edge values: +-0, +-inf, NaN, the largest finite, the smallest subnormal, 1/3. */
  const float edge[8] = {0.0f, -0.0f,         INFINITY,    -INFINITY,
                         NAN,  3.3895314e38f, 9.1835e-41f, 1.0f / 3.0f};
  weft_bf16_t edge_bf16[8];
  for (int i = 0; i < 8; i++) edge_bf16[i] = weft_f32_to_bf16(edge[i]);
  const int64_t edge_shape[1] = {8};
  WT_CHECK_OK(
      weft_tensor_file_write(file, "/params/bf16_edge", WEFT_DTYPE_BF16, 1, edge_shape, edge_bf16));
  WT_CHECK_OK(weft_tensor_file_attr_write_str(file, NULL, "format", "weft-tensor-file"));
  WT_CHECK_OK(weft_tensor_file_attr_write_i64(file, NULL, "version", 1));
  WT_CHECK_OK(weft_tensor_file_attr_write_f64(file, NULL, "lr", 0.125));
  WT_CHECK_OK(weft_tensor_file_attr_write_i64(file, "/params/f32", "checksum", 1234567890123LL));
  WT_CHECK_OK(weft_tensor_file_close(file));
}

static void read_foreign(const char *path) {
  weft_tensor_file_t *file = NULL;
  WT_CHECK_OK(weft_tensor_file_open(path, WEFT_TENSOR_FILE_READ, NULL, &file));
  if (!file) return;
  weft_tensor_file_info_t info;
  /* bf16 in the custom type, with the dtype attribute. */
  weft_bf16_t bf16[15];
  WT_CHECK_OK(weft_tensor_file_query(file, "/py/bf16", &info));
  WT_CHECK(info.dtype == WEFT_DTYPE_BF16, "py bf16 queried as %s", weft_dtype_name(info.dtype));
  WT_CHECK_OK(weft_tensor_file_read(file, "/py/bf16", WEFT_DTYPE_BF16, 2, k_bf16_shape, bf16));
  tf_test_check(WEFT_DTYPE_BF16, 0, 2, k_bf16_shape, NULL, NULL, bf16, "h5py bf16");
  /* f32 without a dtype attribute: the type alone decides. */
  float f32[24];
  WT_CHECK_OK(weft_tensor_file_query(file, "/py/f32_plain", &info));
  WT_CHECK(info.dtype == WEFT_DTYPE_F32 && info.ndim == 3, "py f32 queried as %s ndim %d",
           weft_dtype_name(info.dtype), info.ndim);
  WT_CHECK_OK(weft_tensor_file_read(file, "/py/f32_plain", WEFT_DTYPE_F32, 3, k_f32_shape, f32));
  tf_test_check(WEFT_DTYPE_F32, 0, 3, k_f32_shape, NULL, NULL, f32, "h5py f32");
  int64_t i64[6];
  WT_CHECK_OK(weft_tensor_file_read(file, "/py/i64", WEFT_DTYPE_I64, 1, k_i64_shape, i64));
  tf_test_check(WEFT_DTYPE_I64, 0, 1, k_i64_shape, NULL, NULL, i64, "h5py i64");
  /* Types that are not ours, and a dtype attribute that lies. */
  WT_CHECK_STATUS(weft_tensor_file_query(file, "/py/f64", &info), WEFT_ERR_CORRUPT);
  WT_CHECK_STATUS(weft_tensor_file_query(file, "/py/f16", &info), WEFT_ERR_CORRUPT);
  WT_CHECK_STATUS(weft_tensor_file_query(file, "/py/lying", &info), WEFT_ERR_CORRUPT);
  WT_CHECK_STATUS(weft_tensor_file_read(file, "/py/lying", WEFT_DTYPE_F32, 1, k_i64_shape, f32),
                  WEFT_ERR_CORRUPT);
  /* Attributes as h5py writes them. */
  char *text = NULL;
  WT_CHECK_OK(weft_tensor_file_attr_read_str(file, NULL, "vlen", &text));
  WT_CHECK(text && strcmp(text, "variable \xe2\x9c\x93") == 0, "vlen '%s'", text ? text : "");
  free(text);
  WT_CHECK_OK(weft_tensor_file_attr_read_str(file, NULL, "fixed", &text));
  WT_CHECK(text && strcmp(text, "fixed-length") == 0, "fixed '%s'", text ? text : "");
  free(text);
  int64_t count = 0;
  WT_CHECK_OK(weft_tensor_file_attr_read_i64(file, NULL, "count32", &count));
  WT_CHECK(count == -17, "int32 attribute widened: %lld", (long long)count);
  double f64 = 0;
  WT_CHECK_OK(weft_tensor_file_attr_read_f64(file, "/py/f32_plain", "scale", &f64));
  WT_CHECK(f64 == 0.5, "float32 attribute widened: %g", f64);
  WT_CHECK_STATUS(weft_tensor_file_attr_read_i64(file, NULL, "array", &count),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_tensor_file_close(file));
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s write|foreign PATH\n", argv[0]);
    return 2;
  }
  if (strcmp(argv[1], "write") == 0)
    write_fixture(argv[2]);
  else if (strcmp(argv[1], "foreign") == 0)
    read_foreign(argv[2]);
  else {
    fprintf(stderr, "unknown mode '%s'\n", argv[1]);
    return 2;
  }
  return weft_test_exit_code(argv[1]);
}
