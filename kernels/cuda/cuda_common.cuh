/* Private helpers shared by the CUDA kernel files of kernels/cuda: launch sizing, the launch
 * error check, and device-side bf16 conversion.
 *
 * bf16 conversion is written out in integer operations, bit for bit the same as
 * weft_f32_to_bf16 in weft/bf16.h, instead of using cuda_bf16.h's __float2bfloat16: that one
 * returns a canonical NaN (payload and sign lost), so CUDA and CPU results would differ on NaN
 * inputs and the CUDA tests could not compare bitwise. bf16 values travel as uint16_t. */
#ifndef WEFT_KERNELS_CUDA_COMMON_CUH
#define WEFT_KERNELS_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "kernel_ctx_internal.h"

/* 256 threads: a multiple of the warp size that lets 8 blocks share an SM's 2048 threads. */
#define WEFT_CUDA_BLOCK 256
/* Grid-stride loops need no more blocks than fill every SM once: 8 x 256 = 2048 threads is
 * the per-SM maximum from Volta through Hopper. More blocks would only add scheduling. */
#define WEFT_CUDA_BLOCKS_PER_SM 8

/* Blocks for a grid-stride loop over n > 0 elements. */
static inline unsigned weft_cuda_grid(const weft_kernel_ctx_t *ctx, int64_t n) {
  int64_t blocks = (n + WEFT_CUDA_BLOCK - 1) / WEFT_CUDA_BLOCK;
  int64_t cap =
      (int64_t)(ctx->cuda_sm_count > 0 ? ctx->cuda_sm_count : 1) * WEFT_CUDA_BLOCKS_PER_SM;
  return (unsigned)(blocks < cap ? blocks : cap);
}

/* Reports a failed launch (bad configuration, no kernel image for this GPU, a sticky error
 * from earlier work) once, naming the kernel and the size. */
static inline weft_status_t weft_cuda_launch_check(const char *kernel, weft_dtype_t dtype,
                                                   int64_t n) {
  cudaError_t rc = cudaGetLastError();
  if (rc != cudaSuccess) {
    WEFT_ERROR("kernels", "CUDA kernel %s (%s, n=%lld) failed to launch: %s", kernel,
               weft_dtype_name(dtype), (long long)n, cudaGetErrorString(rc));
    return WEFT_ERR_DEVICE;
  }
  return WEFT_OK;
}

__device__ __forceinline__ uint16_t weft_cuda_f32_to_bf16(float value) {
  uint32_t bits = __float_as_uint(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) /* NaN: keep the sign, force a quiet mantissa */
    return (uint16_t)((bits >> 16) | 0x0040u);
  uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u); /* ties go to the even result */
  return (uint16_t)((bits + rounding_bias) >> 16);
}

__device__ __forceinline__ float weft_cuda_bf16_to_f32(uint16_t value) {
  return __uint_as_float((uint32_t)value << 16);
}

/* Element loads and stores that widen / round bf16, so each kernel is written once. */
__device__ __forceinline__ float weft_cuda_load(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float weft_cuda_load(const uint16_t *p, int64_t i) {
  return weft_cuda_bf16_to_f32(p[i]);
}
__device__ __forceinline__ void weft_cuda_store(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void weft_cuda_store(uint16_t *p, int64_t i, float v) {
  p[i] = weft_cuda_f32_to_bf16(v);
}

/* First index and stride of a grid-stride loop, in 64 bits (n may exceed 2^31). */
#define WEFT_CUDA_GRID_STRIDE_LOOP(i, n)                                    \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (int64_t)gridDim.x * blockDim.x)

#endif /* WEFT_KERNELS_CUDA_COMMON_CUH */
