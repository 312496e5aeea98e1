/* CUDA dtype casts: f32 -> bf16 (round to nearest even, NaN kept), bf16 -> f32, and
 * same-dtype copies (weft_elementwise_cast in weft/elementwise.h).
 *
 * The conversion is weft_cuda_f32_to_bf16 (cuda_common.cuh), the integer-exact twin of the
 * CPU's weft_f32_to_bf16, so CUDA and CPU casts agree on every one of the 2^32 inputs.
 * Same-dtype casts are a cudaMemcpyAsync on the context's stream (the front end has already
 * rejected overlapping buffers and skipped x == y). */
#include "cuda_common.cuh"
#include "elementwise_internal.h"

static __global__ void cast_f32_to_bf16_kernel(int64_t n, const float *x, uint16_t *y) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) { y[i] = weft_cuda_f32_to_bf16(x[i]); }
}

static __global__ void cast_bf16_to_f32_kernel(int64_t n, const uint16_t *x, float *y) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) { y[i] = weft_cuda_bf16_to_f32(x[i]); }
}

extern "C" weft_status_t weft_elementwise_cast_cuda(weft_kernel_ctx_t *ctx, int64_t n,
                                                    weft_dtype_t x_dtype, const void *x,
                                                    weft_dtype_t y_dtype, void *y) {
  cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
  if (x_dtype == y_dtype) {
    WEFT_CUDA_CHECK(cudaMemcpyAsync(y, x, (size_t)n * weft_dtype_size(x_dtype),
                                    cudaMemcpyDeviceToDevice, stream));
    return WEFT_OK;
  }
  unsigned grid = weft_cuda_grid(ctx, n);
  if (x_dtype == WEFT_DTYPE_F32)
    cast_f32_to_bf16_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, (const float *)x,
                                                                  (uint16_t *)y);
  else
    cast_bf16_to_f32_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, (const uint16_t *)x,
                                                                  (float *)y);
  return weft_cuda_launch_check(x_dtype == WEFT_DTYPE_F32 ? "cast f32->bf16" : "cast bf16->f32",
                                x_dtype, n);
}
