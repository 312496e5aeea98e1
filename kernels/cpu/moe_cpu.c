/* CPU back ends of the MoE kernels (weft/moe.h): router softmax/top-k and its backward, weighted
 * row gather-sum, row dot products, SwiGLU forward and backward. f32 data; plain loops.
 *
 * Rows (or, for SwiGLU, elements) are independent, so a call is split into contiguous ranges,
 * one per thread (weft_cpu_parallel_for, cpu/parallel_for_cpu.c). Every output element is
 * computed by one thread in a fixed order, so results do not depend on the thread count.
 *
 * Arithmetic, which the CUDA back end (kernels/cuda/moe.cu) follows step by step:
 *   router    m = max logit; e_i = expf(l_i - m) (f32); s = sum_i e_i in double; p_i = e_i / s
 *             and lse = m + log(s) computed in double and rounded once. The top-k order is
 *             the total order "larger logit first, equal logits by lower id", with NaN ranked
 *             as -inf, so ids are well defined for any input and equal on both devices.
 *             w_j = p_{ids_j}; with normalize, Z = sum_j w_j in f32 in slot order, w_j /= Z.
 *   backward  dp_i = coef_i + g_j for the slot j with ids_j = i, g_j = (dw_j - sum dw w) / Z or
 *             dw_j; dot = sum_i p_i dp_i in double; dlogit_i = p_i (dp_i - dot) + c lse p_i.
 *   gather    dst = first valid term, then += w_j src_j in increasing j (a product and a sum,
 *             never fused: C11 mode turns contraction off).
 *   row dot   16 partial f32 sums (a fixed order the compiler can vectorise), then added.
 *   SwiGLU    s = 1 / (1 + e^-a); silu = a s; silu' = s (1 + a (1 - s)). e^-a is the
 *             polynomial vec_expf (vec_math_cpu.h, about 1 ulp from expf) on -a clamped to
 *             [-87, 88], so s is 1 or about 0 for |a| large and every result stays finite.
 *             The loops are compiled per instruction set (VEC_RANGE_VARIANTS): libm's expf
 *             was a scalar call per element, 10% of a training step. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernel_ctx_internal.h"
#include "moe_internal.h"
#include "vec_math_cpu.h"

/* ---- router ---- */

typedef struct moe_router_job {
  int64_t E;
  int k;
  bool normalize;
  const float *logits, *probs_in, *lse_in, *weights_in, *dweights, *coef;
  const int32_t *ids_in;
  float *probs, *lse, *weights, *dlogits;
  int32_t *ids;
  float z_scale;
} moe_router_job_t;

static float moe_rank_key(float logit) { return isnan(logit) ? -INFINITY : logit; }

/* The top-k order: (ka, ia) ranks before (kb, ib). */
static bool moe_ranks_before(float ka, int64_t ia, float kb, int64_t ib) {
  return ka > kb || (ka == kb && ia < ib);
}

static void moe_topk_rows(const void *arg, int64_t t0, int64_t t1) {
  const moe_router_job_t *j = arg;
  const int64_t E = j->E;
  const int k = j->k;
  for (int64_t t = t0; t < t1; t++) {
    const float *l = j->logits + t * E; /* [E] */
    float *p = j->probs + t * E;        /* [E] */
    int32_t *id = j->ids + t * k;       /* [k] */
    float *w = j->weights + t * k;      /* [k] */
    float m = -INFINITY;
    for (int64_t i = 0; i < E; i++) m = fmaxf(m, l[i]);
    double s = 0.0;
    for (int64_t i = 0; i < E; i++) {
      p[i] = expf(l[i] - m);
      s += p[i];
    }
    for (int64_t i = 0; i < E; i++) p[i] = (float)(p[i] / s);
    if (j->lse) j->lse[t] = (float)((double)m + log(s));
    /* Insertion into the sorted list id[0..n): i ascending, so an equal key never moves
     * ahead of a lower id. O(E k), fine for the k <= 8 of real routers. */
    int n = 0;
    for (int64_t i = 0; i < E; i++) {
      float key = moe_rank_key(l[i]);
      if (n == k && !moe_ranks_before(key, i, moe_rank_key(l[id[k - 1]]), id[k - 1])) continue;
      int pos = n < k ? n++ : k - 1; /* a full list drops its last entry */
      while (pos > 0 && moe_ranks_before(key, i, moe_rank_key(l[id[pos - 1]]), id[pos - 1])) {
        id[pos] = id[pos - 1];
        pos--;
      }
      id[pos] = (int32_t)i;
    }
    float z = 0.0f;
    for (int slot = 0; slot < k; slot++) {
      w[slot] = p[id[slot]];
      z += w[slot];
    }
    if (j->normalize)
      for (int slot = 0; slot < k; slot++) w[slot] = w[slot] / z;
  }
}

weft_status_t weft_moe_router_topk_cpu(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t experts,
                                       int k, bool normalize, const float *logits, float *probs,
                                       float *lse, int32_t *ids, float *weights) {
  (void)ctx;
  moe_router_job_t j = {.E = experts,
                        .k = k,
                        .normalize = normalize,
                        .logits = logits,
                        .probs = probs,
                        .lse = lse,
                        .ids = ids,
                        .weights = weights};
  weft_cpu_parallel_for(&j, moe_topk_rows, tokens, 4 * experts + (int64_t)experts * k / 8);
  return WEFT_OK;
}

static void moe_router_backward_rows(const void *arg, int64_t t0, int64_t t1) {
  const moe_router_job_t *j = arg;
  const int64_t E = j->E;
  const int k = j->k;
  for (int64_t t = t0; t < t1; t++) {
    const float *p = j->probs_in + t * E;   /* [E] */
    const int32_t *id = j->ids_in + t * k;  /* [k] */
    const float *w = j->weights_in + t * k; /* [k] */
    const float *dw = j->dweights + t * k;  /* [k] */
    float *dp = j->dlogits + t * E;         /* [E]: dp first, then dlogits in place */
    for (int64_t i = 0; i < E; i++) dp[i] = j->coef ? j->coef[i] : 0.0f;
    float sdw = 0.0f, z = 0.0f;
    if (j->normalize) {
      for (int s = 0; s < k; s++) {
        if (id[s] < 0 || id[s] >= E) continue;
        sdw += dw[s] * w[s];
        z += p[id[s]];
      }
    }
    for (int s = 0; s < k; s++) {
      if (id[s] < 0 || id[s] >= E) continue;
      dp[id[s]] += j->normalize ? (dw[s] - sdw) / z : dw[s];
    }
    double dot = 0.0;
    for (int64_t i = 0; i < E; i++) dot += (double)p[i] * dp[i];
    float d = (float)dot, cl = j->z_scale != 0.0f ? j->z_scale * j->lse_in[t] : 0.0f;
    for (int64_t i = 0; i < E; i++) dp[i] = p[i] * (dp[i] - d) + cl * p[i];
  }
}

weft_status_t weft_moe_router_backward_cpu(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t experts,
                                           int k, bool normalize, const float *probs,
                                           const float *lse, const int32_t *ids,
                                           const float *weights, const float *dweights,
                                           const float *prob_coef, float z_scale, float *dlogits) {
  (void)ctx;
  moe_router_job_t j = {.E = experts,
                        .k = k,
                        .normalize = normalize,
                        .probs_in = probs,
                        .lse_in = lse,
                        .ids_in = ids,
                        .weights_in = weights,
                        .dweights = dweights,
                        .coef = prob_coef,
                        .z_scale = z_scale,
                        .dlogits = dlogits};
  weft_cpu_parallel_for(&j, moe_router_backward_rows, tokens, 3 * experts + k);
  return WEFT_OK;
}

/* ---- gather-sum and row dot ---- */

typedef struct moe_rows_job {
  int64_t width;
  int fan;
  const float *src, *w, *b;
  int64_t src_ld, ldb;
  const int32_t *idx, *b_idx;
  float *dst;
  int64_t dst_ld;
} moe_rows_job_t;

static void moe_gather_rows(const void *arg, int64_t r0, int64_t r1) {
  const moe_rows_job_t *j = arg;
  const int64_t width = j->width;
  for (int64_t r = r0; r < r1; r++) {
    const int32_t *ix = j->idx + r * j->fan; /* [fan] */
    const float *wr = j->w ? j->w + r * j->fan : NULL;
    float *restrict d = j->dst + r * j->dst_ld; /* [width] */
    bool first = true;
    for (int s = 0; s < j->fan; s++) {
      if (ix[s] < 0) continue;
      const float *restrict x = j->src + (int64_t)ix[s] * j->src_ld;
      const float ws = wr ? wr[s] : 1.0f; /* a local: no reload per element */
      if (!wr && first)
        memcpy(d, x, (size_t)width * sizeof(float));
      else if (!wr)
        for (int64_t c = 0; c < width; c++) d[c] += x[c];
      else if (first)
        for (int64_t c = 0; c < width; c++) d[c] = ws * x[c];
      else
        for (int64_t c = 0; c < width; c++) d[c] += ws * x[c];
      first = false;
    }
    if (first) memset(d, 0, (size_t)width * sizeof(float));
  }
}

weft_status_t weft_moe_gather_sum_cpu(weft_kernel_ctx_t *ctx, int64_t rows, int64_t width, int fan,
                                      const float *src, int64_t src_ld, const int32_t *idx,
                                      const float *w, float *dst, int64_t dst_ld) {
  (void)ctx;
  moe_rows_job_t j = {.width = width,
                      .fan = fan,
                      .src = src,
                      .w = w,
                      .src_ld = src_ld,
                      .idx = idx,
                      .dst = dst,
                      .dst_ld = dst_ld};
  weft_cpu_parallel_for(&j, moe_gather_rows, rows, (int64_t)(fan + 1) * width);
  return WEFT_OK;
}

/* a . b with 16 partial sums: a float reduction may not be reordered by the compiler, and one
 * running sum would serialise on the add latency; 16 lanes vectorise (as gla_dot). */
static float moe_dot(const float *restrict a, const float *restrict b, int64_t n) {
  float part[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; l++) part[l] += a[i + l] * b[i + l];
  for (; i < n; i++) part[0] += a[i] * b[i];
  float sum = 0.0f;
  for (int l = 0; l < 16; l++) sum += part[l];
  return sum;
}

static void moe_dot_rows(const void *arg, int64_t r0, int64_t r1) {
  const moe_rows_job_t *j = arg; /* a is src, a_idx is idx, out is dst */
  for (int64_t r = r0; r < r1; r++) {
    int64_t ia = j->idx ? j->idx[r] : r, ib = j->b_idx ? j->b_idx[r] : r;
    j->dst[r] = ia < 0 || ib < 0 || j->width == 0
                    ? 0.0f
                    : moe_dot(j->src + ia * j->src_ld, j->b + ib * j->ldb, j->width);
  }
}

weft_status_t weft_moe_row_dot_cpu(weft_kernel_ctx_t *ctx, int64_t rows, int64_t width,
                                   const float *a, int64_t lda, const int32_t *a_idx,
                                   const float *b, int64_t ldb, const int32_t *b_idx, float *out) {
  (void)ctx;
  moe_rows_job_t j = {.width = width,
                      .src = a,
                      .src_ld = lda,
                      .idx = a_idx,
                      .b = b,
                      .ldb = ldb,
                      .b_idx = b_idx,
                      .dst = out};
  weft_cpu_parallel_for(&j, moe_dot_rows, rows, 2 * width + 1);
  return WEFT_OK;
}

/* ---- SwiGLU ---- */

typedef struct moe_swiglu_job {
  const float *a, *b, *dact;
  float *act, *da, *db;
} moe_swiglu_job_t;

/* s[i] = 1 / (1 + e^-a[i]) for one block, with the polynomial exponential. -a is clamped to
 * its range first, which only moves s for a < -87, where s < 1.7e-38 either way (and every
 * result stays finite). The clamp is a loop of its own: GCC if-converts it there, but not
 * inside the loop with the polynomial. */
VEC_INLINE void moe_sigmoid_block(int64_t n, const float *restrict a, float *restrict s) {
  float z[VEC_BLOCK];
  VEC_LOOP(i, n, z[i] = vec_clampf(-a[i], VEC_EXPF_MIN, VEC_EXPF_MAX););
  VEC_LOOP(i, n, s[i] = 1.0f / (1.0f + vec_expf(z[i])););
}

VEC_INLINE void moe_swiglu_forward_body(const void *arg, int64_t i0, int64_t i1) {
  const moe_swiglu_job_t *j = arg;
  for (int64_t base = i0; base < i1; base += VEC_BLOCK) {
    const int64_t n = i1 - base < VEC_BLOCK ? i1 - base : VEC_BLOCK;
    const float *restrict a = j->a + base, *restrict b = j->b + base;
    float *restrict act = j->act + base;
    float s[VEC_BLOCK];
    moe_sigmoid_block(n, a, s);
    VEC_LOOP(i, n, act[i] = a[i] * s[i] * b[i];);
  }
}

/* da may be dact (in place), so those two are not restrict; each block of dact is copied into a
 * local first, after which the block's stores cannot feed its loads and the loop vectorises. */
VEC_INLINE void moe_swiglu_backward_body(const void *arg, int64_t i0, int64_t i1) {
  const moe_swiglu_job_t *j = arg;
  for (int64_t base = i0; base < i1; base += VEC_BLOCK) {
    const int64_t n = i1 - base < VEC_BLOCK ? i1 - base : VEC_BLOCK;
    const float *restrict a = j->a + base, *restrict b = j->b + base;
    float *restrict db = j->db + base;
    float g[VEC_BLOCK], s[VEC_BLOCK], da[VEC_BLOCK];
    memcpy(g, j->dact + base, (size_t)n * sizeof(float));
    moe_sigmoid_block(n, a, s);
    VEC_LOOP(i, n, float dsilu = s[i] * (1.0f + a[i] * (1.0f - s[i])); db[i] = g[i] * (a[i] * s[i]);
             da[i] = g[i] * b[i] * dsilu;);
    memcpy(j->da + base, da, (size_t)n * sizeof(float));
  }
}

VEC_RANGE_VARIANTS(moe_swiglu_forward_range, moe_swiglu_forward_body)
VEC_RANGE_VARIANTS(moe_swiglu_backward_range, moe_swiglu_backward_body)

/* A SwiGLU element costs one expf (~10-20 flops) and 3-5 floats of traffic: weight 8. */
#define MOE_SWIGLU_WORK 8

weft_status_t weft_moe_swiglu_forward_cpu(weft_kernel_ctx_t *ctx, int64_t n, const float *a,
                                          const float *b, float *act) {
  (void)ctx;
  moe_swiglu_job_t j = {.a = a, .b = b, .act = act};
  weft_cpu_parallel_for(&j, moe_swiglu_forward_range_pick(), n, MOE_SWIGLU_WORK);
  return WEFT_OK;
}

weft_status_t weft_moe_swiglu_backward_cpu(weft_kernel_ctx_t *ctx, int64_t n, const float *a,
                                           const float *b, const float *dact, float *da,
                                           float *db) {
  (void)ctx;
  moe_swiglu_job_t j = {.a = a, .b = b, .dact = dact, .da = da, .db = db};
  weft_cpu_parallel_for(&j, moe_swiglu_backward_range_pick(), n, MOE_SWIGLU_WORK);
  return WEFT_OK;
}
