/* CUDA back ends of weft/adamw.h: the AdamW step and the sum of squares, both bitwise equal to
 * the CPU back ends (kernels/cpu/adamw_cpu.c) for the same inputs.
 *
 *   AdamW   one thread per element (grid-stride), the header's f32 operations in its order
 *           with __fmul_rn/__fadd_rn/__fsub_rn/__fdiv_rn/__fsqrt_rn: nvcc never contracts
 *           these into FMAs, and each is the correctly rounded IEEE operation the CPU does.
 *           The constants arrive precomputed from the host (weft_adamw_coef_t), by value.
 *   sumsq   the blocked order of train_ops_internal.h in three launches: (1) 8 lanes per chunk,
 *           4 chunks per warp, each lane summing its strided elements in double, the chunk's
 *           lane tree done with __shfl_xor 1, 2, 4 (the CPU's ((s0+s1)+(s2+s3))+(...) bit for
 *           bit); (2) one thread per round adding its chunk sums in order; (3) one thread adding
 *           the round sums; then an 8-byte copy to the host and a stream sync. Partial sums go
 *           to the context's workspace, so steady-state calls do not allocate.
 * Rejected: atomicAdd of block partials (order depends on scheduling: not reproducible) and a
 * CUB reduction (its order is an implementation detail that changes between versions). */
#include "cuda_common.cuh"
#include "train_ops_internal.h"

/* The kernel context has no workspace slot for these kernels yet; sumsq borrows the GEMM slot,
 * which no CUDA kernel uses (cuBLAS has its own workspace) and which sumsq releases before it
 * returns (it synchronises). A dedicated WEFT_KERNEL_WS_* value would be cleaner. */
#define SUMSQ_WS_SLOT WEFT_KERNEL_WS_GEMM

#define SUMSQ_WARP            32
#define SUMSQ_CHUNKS_PER_WARP (SUMSQ_WARP / WEFT_SUMSQ_LANES)

__global__ void adamw_kernel(int64_t n, weft_adamw_coef_t c, float *param, const float *grad,
                             float *m, float *v) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) {
    float g = __fmul_rn(c.grad_scale, grad[i]);
    float mi = __fadd_rn(__fmul_rn(c.beta1, m[i]), __fmul_rn(c.one_minus_beta1, g));
    float vi = __fadd_rn(__fmul_rn(c.beta2, v[i]), __fmul_rn(c.one_minus_beta2, __fmul_rn(g, g)));
    float mh = __fdiv_rn(mi, c.bias1), vh = __fdiv_rn(vi, c.bias2);
    float step = __fdiv_rn(mh, __fadd_rn(__fsqrt_rn(vh), c.eps));
    float p = param[i];
    param[i] = __fsub_rn(p, __fmul_rn(c.lr, __fadd_rn(step, __fmul_rn(c.weight_decay, p))));
    m[i] = mi;
    v[i] = vi;
  }
}

/* chunk_sum [chunks] from x [n]. The loop index w is uniform across a warp, so all lanes reach
 * the shuffles together; lanes of a chunk past the end contribute nothing and write nothing. */
__global__ void sumsq_chunk_kernel(int64_t n, int64_t chunks, const float *x, double *chunk_sum) {
  const int lane = threadIdx.x % SUMSQ_WARP, sub = lane % WEFT_SUMSQ_LANES;
  const int64_t warps = ((int64_t)gridDim.x * blockDim.x) / SUMSQ_WARP;
  for (int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / SUMSQ_WARP;
       w * SUMSQ_CHUNKS_PER_WARP < chunks; w += warps) {
    int64_t c = w * SUMSQ_CHUNKS_PER_WARP + lane / WEFT_SUMSQ_LANES;
    double s = 0.0;
    if (c < chunks) {
      int64_t begin = c * WEFT_SUMSQ_CHUNK;
      int64_t end = n - begin < WEFT_SUMSQ_CHUNK ? n : begin + WEFT_SUMSQ_CHUNK;
      for (int64_t i = begin + sub; i < end; i += WEFT_SUMSQ_LANES) {
        double xi = (double)x[i];
        s = __dadd_rn(s, __dmul_rn(xi, xi));
      }
    }
    for (int o = 1; o < WEFT_SUMSQ_LANES; o *= 2)
      s = __dadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
    if (sub == 0 && c < chunks) chunk_sum[c] = s;
  }
}

/* round_sum [rounds]: chunk sums added in order, WEFT_SUMSQ_ROUND per round. */
__global__ void sumsq_round_kernel(int64_t chunks, int64_t rounds, const double *chunk_sum,
                                   double *round_sum) {
  WEFT_CUDA_GRID_STRIDE_LOOP(r, rounds) {
    int64_t first = r * WEFT_SUMSQ_ROUND;
    int64_t end = chunks - first < WEFT_SUMSQ_ROUND ? chunks : first + WEFT_SUMSQ_ROUND;
    double s = 0.0;
    for (int64_t c = first; c < end; c++) s = __dadd_rn(s, chunk_sum[c]);
    round_sum[r] = s;
  }
}

/* total [1]: round sums added in order (one thread; there are n / 2^23 of them). */
__global__ void sumsq_total_kernel(int64_t rounds, const double *round_sum, double *total) {
  double s = 0.0;
  for (int64_t r = 0; r < rounds; r++) s = __dadd_rn(s, round_sum[r]);
  *total = s;
}

extern "C" weft_status_t weft_adamw_step_cuda(weft_kernel_ctx_t *ctx, const weft_adamw_coef_t *coef,
                                              int64_t n, float *param, const float *grad, float *m,
                                              float *v) {
  adamw_kernel<<<weft_cuda_grid(ctx, n), WEFT_CUDA_BLOCK, 0, (cudaStream_t)ctx->cuda_stream>>>(
      n, *coef, param, grad, m, v);
  return weft_cuda_launch_check("adamw_step", WEFT_DTYPE_F32, n);
}

extern "C" weft_status_t weft_sumsq_cuda(weft_kernel_ctx_t *ctx, int64_t n, const float *x,
                                         double *sum_p) {
  cudaStream_t stream = (cudaStream_t)ctx->cuda_stream;
  const int64_t chunks = (n + WEFT_SUMSQ_CHUNK - 1) / WEFT_SUMSQ_CHUNK;
  const int64_t rounds = (chunks + WEFT_SUMSQ_ROUND - 1) / WEFT_SUMSQ_ROUND;
  void *ws = NULL;
  WEFT_CHECK(weft_kernel_ctx_workspace(ctx, SUMSQ_WS_SLOT,
                                       (size_t)(chunks + rounds + 1) * sizeof(double), &ws));
  double *chunk_sum = (double *)ws, *round_sum = chunk_sum + chunks, *total = round_sum + rounds;
  sumsq_chunk_kernel<<<weft_cuda_grid(ctx, chunks * WEFT_SUMSQ_LANES), WEFT_CUDA_BLOCK, 0,
                       stream>>>(n, chunks, x, chunk_sum);
  WEFT_CHECK(weft_cuda_launch_check("sumsq_chunk", WEFT_DTYPE_F32, n));
  sumsq_round_kernel<<<weft_cuda_grid(ctx, rounds), WEFT_CUDA_BLOCK, 0, stream>>>(
      chunks, rounds, chunk_sum, round_sum);
  WEFT_CHECK(weft_cuda_launch_check("sumsq_round", WEFT_DTYPE_F32, n));
  sumsq_total_kernel<<<1, 1, 0, stream>>>(rounds, round_sum, total);
  WEFT_CHECK(weft_cuda_launch_check("sumsq_total", WEFT_DTYPE_F32, n));
  WEFT_CUDA_CHECK(cudaMemcpyAsync(sum_p, total, sizeof(double), cudaMemcpyDeviceToHost, stream));
  WEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return WEFT_OK;
}
