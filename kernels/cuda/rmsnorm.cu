/* CUDA back end of RMSNorm (weft/rmsnorm.h), f32, following kernels/cpu/rmsnorm_cpu.c (its file
 * note states the arithmetic) so the two agree to the rounding of the row sums.
 *
 *   forward, dx   one warp per row, rows in a grid-stride loop over warps. Lanes stride over
 *       the d columns (coalesced), accumulate sum x^2 (resp. sum g xhat) in double like the CPU,
 *       and a butterfly reduction gives every lane the same sum. Element-wise products and
 *       differences use __fmul_rn / __fsub_rn so nvcc does not contract them into FMAs that
 *       the CPU does not do.
 *   dw            one block per 32 columns, 32 warps: warp g adds rows g, g + 32, ... of its
 *       column (lane = column, 128-byte loads) in double, then warp 0 adds the 32 partial sums
 *       in warp order and adds the total to dw, rounded once. The partition is fixed by the
 *       launch shape, not by the GPU, so dw is bitwise reproducible; no atomics anywhere.
 *       The dw kernel runs before the dx kernel on the stream because dx may overwrite dy.
 * Rejected: float atomics for dw (order, hence bits, vary run to run) and a two-pass dw over
 * row blocks with partial sums in scratch (more parallel for small d, but needs a workspace
 * slot; d >= 256 already gives 8+ blocks of 1024 threads). */
#include "cuda_common.cuh"
#include "layer_ops_internal.h"

#define RMS_WARP 32
/* dw kernel: 32 columns x 32 row groups = 1024 threads, the block-size maximum. */
#define RMS_DW_GROUPS  32
#define RMS_DW_THREADS (RMS_WARP * RMS_DW_GROUPS)

static cudaStream_t rms_stream(const weft_kernel_ctx_t *ctx) {
  return (cudaStream_t)ctx->cuda_stream;
}

#define RMS_WARP_ROW_LOOP(row, rows)                                                            \
  for (int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / RMS_WARP; row < (rows); \
       row += ((int64_t)gridDim.x * blockDim.x) / RMS_WARP)

__device__ __forceinline__ double rms_warp_sum(double v) {
  for (int o = RMS_WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* x, y [rows, d], w [d], rstd [rows] */
__global__ void rms_forward_kernel(int64_t rows, int64_t d, float eps, const float *x,
                                   const float *w, float *y, float *rstd) {
  const int lane = threadIdx.x % RMS_WARP;
  RMS_WARP_ROW_LOOP(r, rows) {
    const float *xr = x + r * d;
    double ss = 0.0;
    for (int64_t c = lane; c < d; c += RMS_WARP) ss += (double)xr[c] * (double)xr[c];
    ss = rms_warp_sum(ss);
    const float rs = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
    if (lane == 0) rstd[r] = rs;
    for (int64_t c = lane; c < d; c += RMS_WARP)
      y[r * d + c] = __fmul_rn(__fmul_rn(xr[c], rs), w[c]);
  }
}

/* dx [rows, d] (may be dy) */
__global__ void rms_dx_kernel(int64_t rows, int64_t d, const float *x, const float *w,
                              const float *rstd, const float *dy, float *dx) {
  const int lane = threadIdx.x % RMS_WARP;
  RMS_WARP_ROW_LOOP(r, rows) {
    const float *xr = x + r * d, *dyr = dy + r * d;
    const float rs = rstd[r];
    double s = 0.0;
    for (int64_t c = lane; c < d; c += RMS_WARP)
      s += (double)__fmul_rn(w[c], dyr[c]) * (double)__fmul_rn(xr[c], rs);
    s = rms_warp_sum(s); /* every lane has read its dy before any lane writes dx */
    const float m = (float)(s / (double)d);
    for (int64_t c = lane; c < d; c += RMS_WARP) {
      float g = __fmul_rn(w[c], dyr[c]), xhat = __fmul_rn(xr[c], rs);
      dx[r * d + c] = __fmul_rn(rs, __fsub_rn(g, __fmul_rn(xhat, m)));
    }
  }
}

/* dw [d] += sum over rows of dy * x * rstd; block b owns columns [32 b, 32 b + 32). */
__global__ void __launch_bounds__(RMS_DW_THREADS)
    rms_dw_kernel(int64_t rows, int64_t d, const float *x, const float *rstd, const float *dy,
                  float *dw) {
  __shared__ double part[RMS_DW_GROUPS][RMS_WARP];
  const int lane = threadIdx.x % RMS_WARP, group = threadIdx.x / RMS_WARP;
  const int64_t c = (int64_t)blockIdx.x * RMS_WARP + lane;
  double acc = 0.0;
  if (c < d)
    for (int64_t r = group; r < rows; r += RMS_DW_GROUPS)
      acc += (double)dy[r * d + c] * (double)__fmul_rn(x[r * d + c], rstd[r]);
  part[group][lane] = acc;
  __syncthreads();
  if (group == 0 && c < d) {
    double s = 0.0;
    for (int g = 0; g < RMS_DW_GROUPS; g++) s += part[g][lane];
    dw[c] = (float)((double)dw[c] + s);
  }
}

extern "C" weft_status_t weft_rmsnorm_forward_cuda(weft_kernel_ctx_t *ctx, int64_t rows,
                                                   int64_t dim, float eps, const float *x,
                                                   const float *w, float *y, float *rstd) {
  rms_forward_kernel<<<weft_cuda_grid(ctx, rows * RMS_WARP), WEFT_CUDA_BLOCK, 0, rms_stream(ctx)>>>(
      rows, dim, eps, x, w, y, rstd);
  return weft_cuda_launch_check("rmsnorm_forward", WEFT_DTYPE_F32, rows);
}

extern "C" weft_status_t weft_rmsnorm_backward_cuda(weft_kernel_ctx_t *ctx, int64_t rows,
                                                    int64_t dim, const float *x, const float *w,
                                                    const float *rstd, const float *dy, float *dx,
                                                    float *dw) {
  const unsigned dw_blocks = (unsigned)((dim + RMS_WARP - 1) / RMS_WARP);
  rms_dw_kernel<<<dw_blocks, RMS_DW_THREADS, 0, rms_stream(ctx)>>>(rows, dim, x, rstd, dy, dw);
  WEFT_CHECK(weft_cuda_launch_check("rmsnorm_backward_dw", WEFT_DTYPE_F32, dim));
  rms_dx_kernel<<<weft_cuda_grid(ctx, rows * RMS_WARP), WEFT_CUDA_BLOCK, 0, rms_stream(ctx)>>>(
      rows, dim, x, w, rstd, dy, dx);
  return weft_cuda_launch_check("rmsnorm_backward_dx", WEFT_DTYPE_F32, rows);
}
