/* CUDA back ends of the MoE kernels (weft/moe.h), f32, following the CPU arithmetic of
 * kernels/cpu/moe_cpu.c step by step (its file note states it) so the two agree to rounding,
 * and exactly where it matters: router ids are identical, gather-sum is bitwise identical.
 *
 *   router topk / backward   one warp per token row, rows in a grid-stride loop over warps.
 *       Lanes stride over the E experts; max and sums are butterfly reductions (__shfl_xor:
 *       every lane ends with the same bits). Top-k runs k rounds of a warp arg-max over the
 *       experts that rank after the previous pick in the total order (larger logit first,
 *       equal logits by lower id, NaN as -inf): no per-row mask or shared memory, O(k E / 32)
 *       per lane, and the same ids as the CPU's insertion for any input. Lane 0 writes the k
 *       slots. Sums the CPU does in double (softmax denominator, sum p dp) are double here.
 *   gather_sum   one thread per destination element (row, column), looping j = 0..fan-1 in
 *       increasing order: the same operations as the CPU, products and sums kept apart with
 *       __fmul_rn / __fadd_rn (nvcc would otherwise contract them into FMAs), so the result is
 *       bitwise the CPU's. Neighbouring threads read neighbouring columns (coalesced); the
 *       index and weight of a row are broadcast loads.
 *   row_dot      one warp per row, lanes strided over columns, f32 partial sums, butterfly.
 *   SwiGLU       elementwise grid-stride loops; expf and the same operation order as the CPU.
 * No atomics anywhere: every call is bitwise reproducible on the same GPU.
 * Rejected: a block-per-row router with shared-memory sort (more code; E is at most a few
 * hundred, one warp covers it) and __expf (an ulp-level fast path that would widen the gap to
 * the CPU for no measurable gain in kernels that are memory-bound). */
#include <limits.h>
#include <math.h>

#include "cuda_common.cuh"
#include "moe_internal.h"

#define MOE_WARP 32

static cudaStream_t moe_stream(const weft_kernel_ctx_t *ctx) {
  return (cudaStream_t)ctx->cuda_stream;
}

/* Reports a failed launch, naming the kernel and the row count. */
static weft_status_t moe_launch_check(const char *kernel, int64_t rows) {
  return weft_cuda_launch_check(kernel, WEFT_DTYPE_F32, rows);
}

/* Grid-stride loop over rows with one warp per row. The row is uniform across a warp (blocks
 * are whole warps), so all 32 lanes stay together for the __shfl_xor_sync reductions. */
#define MOE_WARP_ROW_LOOP(row, rows)                                                            \
  for (int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / MOE_WARP; row < (rows); \
       row += ((int64_t)gridDim.x * blockDim.x) / MOE_WARP)

__device__ __forceinline__ float moe_warp_max(float v) {
  for (int o = MOE_WARP / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ double moe_warp_sum(double v) {
  for (int o = MOE_WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float moe_warp_sum(float v) {
  for (int o = MOE_WARP / 2; o > 0; o /= 2) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float moe_rank_key(float logit) {
  return isnan(logit) ? -INFINITY : logit;
}

/* The top-k order: (ka, ia) ranks before (kb, ib). */
__device__ __forceinline__ bool moe_ranks_before(float ka, int ia, float kb, int ib) {
  return ka > kb || (ka == kb && ia < ib);
}

/* probs [T, E], lse [T] or NULL, ids / weights [T, k]. */
__global__ void moe_router_topk_kernel(int64_t T, int E, int k, bool normalize, const float *logits,
                                       float *probs, float *lse, int32_t *ids, float *weights) {
  const int lane = threadIdx.x % MOE_WARP;
  MOE_WARP_ROW_LOOP(t, T) {
    const float *l = logits + t * E;
    float *p = probs + t * E;
    float m = -INFINITY;
    for (int i = lane; i < E; i += MOE_WARP) m = fmaxf(m, l[i]);
    m = moe_warp_max(m);
    double s = 0.0;
    for (int i = lane; i < E; i += MOE_WARP) s += (double)expf(__fsub_rn(l[i], m));
    s = moe_warp_sum(s);
    for (int i = lane; i < E; i += MOE_WARP) p[i] = (float)((double)expf(__fsub_rn(l[i], m)) / s);
    if (lse && lane == 0) lse[t] = (float)((double)m + log(s));
    /* k rounds; round j picks the best expert ranking after pick j-1 (initially everything) */
    float prev_key = INFINITY, z = 0.0f;
    int prev_id = -1;
    for (int j = 0; j < k; j++) {
      float best_key = -INFINITY;
      int best_id = INT_MAX; /* ranks after every real expert */
      for (int i = lane; i < E; i += MOE_WARP) {
        float key = moe_rank_key(l[i]);
        if (moe_ranks_before(prev_key, prev_id, key, i) &&
            moe_ranks_before(key, i, best_key, best_id)) {
          best_key = key;
          best_id = i;
        }
      }
      for (int o = MOE_WARP / 2; o > 0; o /= 2) {
        float other_key = __shfl_xor_sync(0xffffffffu, best_key, o);
        int other_id = __shfl_xor_sync(0xffffffffu, best_id, o);
        if (moe_ranks_before(other_key, other_id, best_key, best_id)) {
          best_key = other_key;
          best_id = other_id;
        }
      }
      prev_key = best_key;
      prev_id = best_id;
      if (lane == 0) {
        /* the same expression as probs[best_id] above, so w_j == probs[ids_j] bitwise */
        float pj = (float)((double)expf(__fsub_rn(l[best_id], m)) / s);
        ids[t * k + j] = best_id;
        weights[t * k + j] = pj;
        z = __fadd_rn(z, pj);
      }
    }
    if (normalize && lane == 0)
      for (int j = 0; j < k; j++) weights[t * k + j] = __fdiv_rn(weights[t * k + j], z);
  }
}

/* dlogits [T, E] from probs [T, E], lse [T] (read when z_scale != 0), ids, weights, dweights
 * [T, k], prob_coef [E] or NULL. */
__global__ void moe_router_backward_kernel(int64_t T, int E, int k, bool normalize,
                                           const float *probs, const float *lse, const int32_t *ids,
                                           const float *weights, const float *dweights,
                                           const float *prob_coef, float z_scale, float *dlogits) {
  const int lane = threadIdx.x % MOE_WARP;
  MOE_WARP_ROW_LOOP(t, T) {
    const float *p = probs + t * E;
    const int32_t *id = ids + t * k;
    const float *w = weights + t * k, *dw = dweights + t * k;
    float *dl = dlogits + t * E;
    float sdw = 0.0f, z = 0.0f; /* every lane, slot order: the CPU's f32 sums */
    if (normalize) {
      for (int j = 0; j < k; j++) {
        if (id[j] < 0 || id[j] >= E) continue;
        sdw = __fadd_rn(sdw, __fmul_rn(dw[j], w[j]));
        z = __fadd_rn(z, p[id[j]]);
      }
    }
    double dot = 0.0;
    for (int i = lane; i < E; i += MOE_WARP) {
      float dp = prob_coef ? prob_coef[i] : 0.0f;
      for (int j = 0; j < k; j++)
        if (id[j] == i) dp = __fadd_rn(dp, normalize ? __fdiv_rn(__fsub_rn(dw[j], sdw), z) : dw[j]);
      dl[i] = dp; /* this lane reads it back below */
      dot += (double)p[i] * (double)dp;
    }
    float d = (float)moe_warp_sum(dot);
    float cl = z_scale != 0.0f ? __fmul_rn(z_scale, lse[t]) : 0.0f;
    for (int i = lane; i < E; i += MOE_WARP)
      dl[i] = __fadd_rn(__fmul_rn(p[i], __fsub_rn(dl[i], d)), __fmul_rn(cl, p[i]));
  }
}

/* dst [rows, width] (row stride dst_ld) = sum_j w[r, j] src[idx[r, j], :]. */
__global__ void moe_gather_sum_kernel(int64_t rows, int64_t width, int fan, const float *src,
                                      int64_t src_ld, const int32_t *idx, const float *w,
                                      float *dst, int64_t dst_ld) {
  WEFT_CUDA_GRID_STRIDE_LOOP(e, rows * width) {
    int64_t r = e / width, c = e - r * width;
    const int32_t *ix = idx + r * fan;
    float acc = 0.0f;
    bool first = true;
    for (int j = 0; j < fan; j++) {
      int32_t s = ix[j];
      if (s < 0) continue;
      float v = src[(int64_t)s * src_ld + c];
      if (w) v = __fmul_rn(w[r * fan + j], v);
      acc = first ? v : __fadd_rn(acc, v);
      first = false;
    }
    dst[r * dst_ld + c] = acc;
  }
}

/* out [rows] = a[ia(r)] . b[ib(r)]. */
__global__ void moe_row_dot_kernel(int64_t rows, int64_t width, const float *a, int64_t lda,
                                   const int32_t *a_idx, const float *b, int64_t ldb,
                                   const int32_t *b_idx, float *out) {
  const int lane = threadIdx.x % MOE_WARP;
  MOE_WARP_ROW_LOOP(r, rows) {
    int64_t ia = a_idx ? a_idx[r] : r, ib = b_idx ? b_idx[r] : r;
    float acc = 0.0f;
    if (ia >= 0 && ib >= 0 && width > 0) {
      const float *ar = a + ia * lda, *br = b + ib * ldb;
      for (int64_t c = lane; c < width; c += MOE_WARP) acc = fmaf(ar[c], br[c], acc);
    }
    acc = moe_warp_sum(acc);
    if (lane == 0) out[r] = acc;
  }
}

__device__ __forceinline__ float moe_sigmoid(float a) {
  return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-a)));
}

__global__ void moe_swiglu_forward_kernel(int64_t n, const float *a, const float *b, float *act) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) {
    float x = a[i];
    act[i] = __fmul_rn(__fmul_rn(x, moe_sigmoid(x)), b[i]);
  }
}

__global__ void moe_swiglu_backward_kernel(int64_t n, const float *a, const float *b,
                                           const float *dact, float *da, float *db) {
  WEFT_CUDA_GRID_STRIDE_LOOP(i, n) {
    float x = a[i], g = dact[i]; /* read before da (which may be dact) is written */
    float s = moe_sigmoid(x);
    float dsilu = __fmul_rn(s, __fadd_rn(1.0f, __fmul_rn(x, __fsub_rn(1.0f, s))));
    db[i] = __fmul_rn(g, __fmul_rn(x, s));
    da[i] = __fmul_rn(__fmul_rn(g, b[i]), dsilu);
  }
}

/* ---- launchers ---- */

extern "C" weft_status_t weft_moe_router_topk_cuda(weft_kernel_ctx_t *ctx, int64_t tokens,
                                                   int64_t experts, int k, bool normalize,
                                                   const float *logits, float *probs, float *lse,
                                                   int32_t *ids, float *weights) {
  moe_router_topk_kernel<<<weft_cuda_grid(ctx, tokens * MOE_WARP), WEFT_CUDA_BLOCK, 0,
                           moe_stream(ctx)>>>(tokens, (int)experts, k, normalize, logits, probs,
                                              lse, ids, weights);
  return moe_launch_check("moe_router_topk", tokens);
}

extern "C" weft_status_t weft_moe_router_backward_cuda(
    weft_kernel_ctx_t *ctx, int64_t tokens, int64_t experts, int k, bool normalize,
    const float *probs, const float *lse, const int32_t *ids, const float *weights,
    const float *dweights, const float *prob_coef, float z_scale, float *dlogits) {
  moe_router_backward_kernel<<<weft_cuda_grid(ctx, tokens * MOE_WARP), WEFT_CUDA_BLOCK, 0,
                               moe_stream(ctx)>>>(tokens, (int)experts, k, normalize, probs, lse,
                                                  ids, weights, dweights, prob_coef, z_scale,
                                                  dlogits);
  return moe_launch_check("moe_router_backward", tokens);
}

extern "C" weft_status_t weft_moe_gather_sum_cuda(weft_kernel_ctx_t *ctx, int64_t rows,
                                                  int64_t width, int fan, const float *src,
                                                  int64_t src_ld, const int32_t *idx,
                                                  const float *w, float *dst, int64_t dst_ld) {
  moe_gather_sum_kernel<<<weft_cuda_grid(ctx, rows * width), WEFT_CUDA_BLOCK, 0, moe_stream(ctx)>>>(
      rows, width, fan, src, src_ld, idx, w, dst, dst_ld);
  return moe_launch_check("moe_gather_sum", rows);
}

extern "C" weft_status_t weft_moe_row_dot_cuda(weft_kernel_ctx_t *ctx, int64_t rows, int64_t width,
                                               const float *a, int64_t lda, const int32_t *a_idx,
                                               const float *b, int64_t ldb, const int32_t *b_idx,
                                               float *out) {
  moe_row_dot_kernel<<<weft_cuda_grid(ctx, rows * MOE_WARP), WEFT_CUDA_BLOCK, 0, moe_stream(ctx)>>>(
      rows, width, a, lda, a_idx, b, ldb, b_idx, out);
  return moe_launch_check("moe_row_dot", rows);
}

extern "C" weft_status_t weft_moe_swiglu_forward_cuda(weft_kernel_ctx_t *ctx, int64_t n,
                                                      const float *a, const float *b, float *act) {
  moe_swiglu_forward_kernel<<<weft_cuda_grid(ctx, n), WEFT_CUDA_BLOCK, 0, moe_stream(ctx)>>>(
      n, a, b, act);
  return moe_launch_check("moe_swiglu_forward", n);
}

extern "C" weft_status_t weft_moe_swiglu_backward_cuda(weft_kernel_ctx_t *ctx, int64_t n,
                                                       const float *a, const float *b,
                                                       const float *dact, float *da, float *db) {
  moe_swiglu_backward_kernel<<<weft_cuda_grid(ctx, n), WEFT_CUDA_BLOCK, 0, moe_stream(ctx)>>>(
      n, a, b, dact, da, db);
  return moe_launch_check("moe_swiglu_backward", n);
}
