/* CUDA back end of the decay gate (weft/gate.h): the CPU formulas (kernels/cpu/gate_cpu.c)
 * element by element in a grid-stride loop on the context's stream. */
#include "cuda_common.cuh"
#include "gate_internal.h"

__global__ void gate_forward_kernel(int64_t n, float scale, const float *x, float *y) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) {
    const float v = x[i];
    y[i] = scale * (fminf(v, 0.0f) - log1pf(expf(-fabsf(v))));
  }
}

__global__ void gate_backward_kernel(int64_t n, float scale, const float *x, const float *dy,
                                     float *dx) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) {
    const float v = x[i], e = expf(-fabsf(v));
    const float sig_neg = v >= 0.0f ? e / (1.0f + e) : 1.0f / (1.0f + e);
    dx[i] = dy[i] * scale * sig_neg;
  }
}

extern "C" weft_status_t weft_gate_logsigmoid_forward_cuda(weft_kernel_ctx_t *ctx, int64_t n,
                                                           float scale, const float *x, float *y) {
  gate_forward_kernel<<<weft_cuda_grid(ctx, n), WEFT_CUDA_BLOCK, 0,
                        (cudaStream_t)ctx->cuda_stream>>>(n, scale, x, y);
  return weft_cuda_launch_check("gate_logsigmoid_forward", WEFT_DTYPE_F32, n);
}

extern "C" weft_status_t weft_gate_logsigmoid_backward_cuda(weft_kernel_ctx_t *ctx, int64_t n,
                                                            float scale, const float *x,
                                                            const float *dy, float *dx) {
  gate_backward_kernel<<<weft_cuda_grid(ctx, n), WEFT_CUDA_BLOCK, 0,
                         (cudaStream_t)ctx->cuda_stream>>>(n, scale, x, dy, dx);
  return weft_cuda_launch_check("gate_logsigmoid_backward", WEFT_DTYPE_F32, n);
}
