/* CUDA back ends of weft/cross_entropy.h, f32, following the CPU arithmetic of
 * kernels/cpu/cross_entropy_cpu.c (its file note states it) so the two agree to rounding:
 *
 *   forward   one warp per row, rows in a grid-stride loop over warps. Lanes stride over the
 *             V logits; the max and the double sum of expf(z - m) are butterfly reductions
 *             (__shfl_xor: every lane ends with the same bits); lane 0 writes lse and loss
 *             from double, as the CPU does. The CPU sums in a different order, and CUDA's expf
 *             is within 2 ulp of libm's, so results differ from the CPU's by a few ulp.
 *   backward  one warp per row as well: target and lse are read once per row, no 64-bit
 *             division per element, lanes write neighbouring elements (coalesced). Each
 *             element is read by the lane that writes it, so dlogits may be logits.
 * Targets live in device memory and are not checked by the front end: a row whose target is
 * >= V gets a NaN loss and a NaN gradient row (never a read out of bounds), so the bug shows in
 * the reported loss. No atomics: every call is bitwise reproducible on the same GPU.
 * Rejected: a block per row with shared-memory reductions (only pays for V >> 10^4 with few
 * rows; training calls this with thousands of rows) and __expf (a fast path whose error grows
 * with |z - lse|, in kernels that are memory-bound anyway). */
#include <math.h>

#include "cuda_common.cuh"
#include "train_ops_internal.h"

#define CE_WARP 32

/* Grid-stride loop over rows with one warp per row; blocks are whole warps, so the row is
 * uniform across a warp and all 32 lanes take part in the shuffles. */
#define CE_WARP_ROW_LOOP(row, rows)                                                            \
  for (int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / CE_WARP; row < (rows); \
       row += ((int64_t)gridDim.x * blockDim.x) / CE_WARP)

__device__ __forceinline__ float ce_warp_max(float v) {
  for (int o = CE_WARP / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ double ce_warp_sum(double v) {
  for (int o = CE_WARP / 2; o > 0; o /= 2) v = __dadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* loss, lse [rows] from logits [rows, V] and targets [rows]. */
__global__ void ce_forward_kernel(int64_t rows, int64_t V, const float *logits,
                                  const int32_t *targets, float *loss, float *lse) {
  const int lane = threadIdx.x % CE_WARP;
  CE_WARP_ROW_LOOP(t, rows) {
    const float *z = logits + t * V;
    float m = -INFINITY;
    for (int64_t v = lane; v < V; v += CE_WARP) m = fmaxf(m, z[v]);
    m = ce_warp_max(m);
    double s = 0.0;
    for (int64_t v = lane; v < V; v += CE_WARP) s = __dadd_rn(s, (double)expf(__fsub_rn(z[v], m)));
    s = ce_warp_sum(s);
    if (lane == 0) {
      double log_s = log(s);
      int32_t y = targets[t];
      lse[t] = (float)__dadd_rn((double)m, log_s);
      loss[t] = y < 0    ? 0.0f
                : y >= V ? NAN
                         : (float)__dadd_rn(__dsub_rn((double)m, (double)z[y]), log_s);
    }
  }
}

/* dlogits [rows, V] (may be logits) from logits, targets and lse. */
__global__ void ce_backward_kernel(int64_t rows, int64_t V, const float *logits,
                                   const int32_t *targets, const float *lse, float scale,
                                   float *dlogits) {
  const int lane = threadIdx.x % CE_WARP;
  CE_WARP_ROW_LOOP(t, rows) {
    const float *z = logits + t * V;
    float *dz = dlogits + t * V;
    const int32_t y = targets[t];
    if (y < 0 || y >= V) {
      const float fill = y < 0 ? 0.0f : NAN;
      for (int64_t v = lane; v < V; v += CE_WARP) dz[v] = fill;
      continue;
    }
    const float l = lse[t];
    for (int64_t v = lane; v < V; v += CE_WARP) {
      float p = expf(__fsub_rn(z[v], l));
      dz[v] = __fmul_rn(scale, __fsub_rn(p, v == y ? 1.0f : 0.0f));
    }
  }
}

extern "C" weft_status_t weft_cross_entropy_forward_cuda(weft_kernel_ctx_t *ctx, int64_t rows,
                                                         int64_t vocab, const float *logits,
                                                         const int32_t *targets, float *loss,
                                                         float *lse) {
  ce_forward_kernel<<<weft_cuda_grid(ctx, rows * CE_WARP), WEFT_CUDA_BLOCK, 0,
                      (cudaStream_t)ctx->cuda_stream>>>(rows, vocab, logits, targets, loss, lse);
  return weft_cuda_launch_check("cross_entropy_forward", WEFT_DTYPE_F32, rows);
}

extern "C" weft_status_t weft_cross_entropy_backward_cuda(weft_kernel_ctx_t *ctx, int64_t rows,
                                                          int64_t vocab, const float *logits,
                                                          const int32_t *targets, const float *lse,
                                                          float scale, float *dlogits) {
  ce_backward_kernel<<<weft_cuda_grid(ctx, rows * CE_WARP), WEFT_CUDA_BLOCK, 0,
                       (cudaStream_t)ctx->cuda_stream>>>(rows, vocab, logits, targets, lse, scale,
                                                         dlogits);
  return weft_cuda_launch_check("cross_entropy_backward", WEFT_DTYPE_F32, rows);
}
