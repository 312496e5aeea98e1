/* CPU elementwise loops: the readable specification that the CUDA kernels must match bit for
 * bit (kernels/cuda/elementwise.cu, cast.cu).
 *
 * Plain loops over int64 indices that the compiler vectorises at -O2/-O3; no OpenMP, because
 * these are memory-bound and the ranks already occupy the cores. Every operation is written
 * as separate f32 statements (product, then sum) so no compiler contracts them into a fused
 * multiply-add, which rounds differently from the CUDA kernels' explicit __fmul_rn/__fadd_rn.
 * Buffers are not `restrict`: an output may be the same buffer as an input (in place). */
#include <string.h>

#include "elementwise_internal.h"
#include "weft/bf16.h"

void weft_elementwise_add_cpu(weft_dtype_t dtype, int64_t n, const void *a, const void *b,
                              void *y) {
  if (dtype == WEFT_DTYPE_F32) {
    const float *a32 = a, *b32 = b;
    float *y32 = y;
    for (int64_t i = 0; i < n; i++) y32[i] = a32[i] + b32[i];
    return;
  }
  const weft_bf16_t *a16 = a, *b16 = b;
  weft_bf16_t *y16 = y;
  for (int64_t i = 0; i < n; i++) {
    float sum = weft_bf16_to_f32(a16[i]) + weft_bf16_to_f32(b16[i]);
    y16[i] = weft_f32_to_bf16(sum);
  }
}

void weft_elementwise_scale_cpu(weft_dtype_t dtype, int64_t n, float alpha, const void *x,
                                void *y) {
  if (dtype == WEFT_DTYPE_F32) {
    const float *x32 = x;
    float *y32 = y;
    for (int64_t i = 0; i < n; i++) y32[i] = alpha * x32[i];
    return;
  }
  const weft_bf16_t *x16 = x;
  weft_bf16_t *y16 = y;
  for (int64_t i = 0; i < n; i++) y16[i] = weft_f32_to_bf16(alpha * weft_bf16_to_f32(x16[i]));
}

void weft_elementwise_axpy_cpu(weft_dtype_t dtype, int64_t n, float alpha, const void *x, void *y) {
  if (dtype == WEFT_DTYPE_F32) {
    const float *x32 = x;
    float *y32 = y;
    for (int64_t i = 0; i < n; i++) {
      float product = alpha * x32[i]; /* rounded to f32 here: no fused multiply-add */
      y32[i] = y32[i] + product;
    }
    return;
  }
  const weft_bf16_t *x16 = x;
  weft_bf16_t *y16 = y;
  for (int64_t i = 0; i < n; i++) {
    float product = alpha * weft_bf16_to_f32(x16[i]);
    float sum = weft_bf16_to_f32(y16[i]) + product;
    y16[i] = weft_f32_to_bf16(sum);
  }
}

void weft_elementwise_fill_cpu(weft_dtype_t dtype, int64_t n, float value, void *y) {
  if (dtype == WEFT_DTYPE_F32) {
    float *y32 = y;
    for (int64_t i = 0; i < n; i++) y32[i] = value;
    return;
  }
  weft_bf16_t bits = weft_f32_to_bf16(value), *y16 = y;
  for (int64_t i = 0; i < n; i++) y16[i] = bits;
}

void weft_elementwise_cast_cpu(int64_t n, weft_dtype_t x_dtype, const void *x, weft_dtype_t y_dtype,
                               void *y) {
  if (x_dtype == y_dtype) { /* disjoint buffers (checked by the caller) */
    memcpy(y, x, (size_t)n * weft_dtype_size(x_dtype));
  } else if (x_dtype == WEFT_DTYPE_F32) { /* f32 -> bf16 */
    const float *x32 = x;
    weft_bf16_t *y16 = y;
    for (int64_t i = 0; i < n; i++) y16[i] = weft_f32_to_bf16(x32[i]);
  } else { /* bf16 -> f32 */
    const weft_bf16_t *x16 = x;
    float *y32 = y;
    for (int64_t i = 0; i < n; i++) y32[i] = weft_bf16_to_f32(x16[i]);
  }
}
