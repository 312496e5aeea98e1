/* CUDA elementwise kernels: add, scale, axpy, fill (weft/elementwise.h).
 *
 * One template per operation over the storage type (float or uint16_t for bf16); loads widen
 * to f32 and stores round to nearest even, as on the CPU. Arithmetic uses __fmul_rn and
 * __fadd_rn, which nvcc never contracts into FMA, so results are bitwise equal to the CPU
 * loops (kernels/cpu/elementwise_cpu.c) that keep the product and the sum separate.
 * Grid-stride loops sized by weft_cuda_grid, launched on the context's stream; a launch
 * failure is reported with cudaGetLastError right after the launch.
 * Rejected: vectorised 128-bit loads: these kernels are not on a hot path yet, and scalar
 * loads are already coalesced; revisit with a benchmark. */
#include "cuda_common.cuh"
#include "elementwise_internal.h"

template <typename T>
__global__ void ew_add_kernel(int64_t n, const T *a, const T *b, T *y) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) {
    weft_cuda_store(y, i, __fadd_rn(weft_cuda_load(a, i), weft_cuda_load(b, i)));
  }
}

template <typename T>
__global__ void ew_scale_kernel(int64_t n, float alpha, const T *x, T *y) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) {
    weft_cuda_store(y, i, __fmul_rn(alpha, weft_cuda_load(x, i)));
  }
}

template <typename T>
__global__ void ew_axpy_kernel(int64_t n, float alpha, const T *x, T *y) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) {
    float product = __fmul_rn(alpha, weft_cuda_load(x, i));
    weft_cuda_store(y, i, __fadd_rn(weft_cuda_load(y, i), product));
  }
}

template <typename T>
__global__ void ew_fill_kernel(int64_t n, float value, T *y) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) { weft_cuda_store(y, i, value); }
}

extern "C" weft_status_t weft_elementwise_add_cuda(weft_kernel_ctx_t *ctx, weft_dtype_t dtype,
                                                   int64_t n, const void *a, const void *b,
                                                   void *y) {
  unsigned grid = weft_cuda_grid(ctx, n);
  cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
  if (dtype == WEFT_DTYPE_F32)
    ew_add_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, (const float *)a, (const float *)b,
                                                        (float *)y);
  else
    ew_add_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, (const uint16_t *)a, (const uint16_t *)b,
                                                        (uint16_t *)y);
  return weft_cuda_launch_check("add", dtype, n);
}

extern "C" weft_status_t weft_elementwise_scale_cuda(weft_kernel_ctx_t *ctx, weft_dtype_t dtype,
                                                     int64_t n, float alpha, const void *x,
                                                     void *y) {
  unsigned grid = weft_cuda_grid(ctx, n);
  cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
  if (dtype == WEFT_DTYPE_F32)
    ew_scale_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, alpha, (const float *)x, (float *)y);
  else
    ew_scale_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, alpha, (const uint16_t *)x,
                                                          (uint16_t *)y);
  return weft_cuda_launch_check("scale", dtype, n);
}

extern "C" weft_status_t weft_elementwise_axpy_cuda(weft_kernel_ctx_t *ctx, weft_dtype_t dtype,
                                                    int64_t n, float alpha, const void *x,
                                                    void *y) {
  unsigned grid = weft_cuda_grid(ctx, n);
  cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
  if (dtype == WEFT_DTYPE_F32)
    ew_axpy_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, alpha, (const float *)x, (float *)y);
  else
    ew_axpy_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, alpha, (const uint16_t *)x,
                                                         (uint16_t *)y);
  return weft_cuda_launch_check("axpy", dtype, n);
}

extern "C" weft_status_t weft_elementwise_fill_cuda(weft_kernel_ctx_t *ctx, weft_dtype_t dtype,
                                                    int64_t n, float value, void *y) {
  unsigned grid = weft_cuda_grid(ctx, n);
  cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
  if (dtype == WEFT_DTYPE_F32)
    ew_fill_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, value, (float *)y);
  else
    ew_fill_kernel<<<grid, WEFT_CUDA_BLOCK, 0, stream>>>(n, value, (uint16_t *)y);
  return weft_cuda_launch_check("fill", dtype, n);
}
