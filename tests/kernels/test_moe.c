/* CPU MoE kernels (weft/moe.h) against plain reference loops in double.
 *
 * Every float result x is compared with its double reference r over a whole tensor as
 *   max_e |x_e - r_e| <= TOL * max_e |r_e|
 * (a tensor whose reference is all zero must be exactly zero). The tolerances follow from the
 * number of f32 roundings on the path to each value, with a margin of ~5-10x:
 *   TOL_ROUTER   1e-6  probs, lse, weights (one expf, one division; sums in double) and
 *                      dlogits vs the closed form on the same f32 inputs
 *   TOL_FD       1e-5  kernel dlogits vs central differences of a double loss (the kernel
 *                      sees f32 probs, the difference quotient exact ones)
 *   TOL_FD_REF   1e-7  closed form in double vs those differences (h = 1e-5: truncation
 *                      ~h^2, cancellation ~1e-16/h)
 *   TOL_GATHER   1e-6  at most 3 products and 2 sums per element
 *   TOL_DOT      1e-5  f32 dots of up to 300 terms (16 partial sums)
 *   TOL_SWIGLU   5e-6  silu' = s (1 + a (1 - s)): 1 - s has an absolute error of ~eps, times
 *                      |a| <= 100
 *   TOL_EXPERTS  1e-5  GEMMs over h = 24 .. f = 40 .. M = 20 terms, two chained
 * Ids are compared exactly, and so is everything with a defined exact answer: ties (equal logits
 * go to the lower id), negative indices (0), plain gathers (bitwise copies), untouched padding,
 * gradients of experts with no rows, and results at 1 vs 4 CPU threads (bitwise equal). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test_common.h"
#include "test_util.h"
#include "weft/device.h"
#include "weft/kernel_ctx.h"
#include "weft/moe.h"

#define TOL_ROUTER  1e-6
#define TOL_FD      1e-5
#define TOL_FD_REF  1e-7
#define TOL_GATHER  1e-6
#define TOL_DOT     1e-5
#define TOL_SWIGLU  5e-6
#define TOL_EXPERTS 1e-5

static uint64_t g_rng = 12345;

/* Largest error / tolerance seen per check family, for the summary line. */
enum { C_ROUTER, C_FD, C_GATHER, C_DOT, C_SWIGLU, C_EXPERTS, C_COUNT };
static const char *const g_cat_name[C_COUNT] = {"router",  "router-fd", "gather",
                                                "row_dot", "swiglu",    "experts"};
static double g_worst[C_COUNT];

static void *xalloc(size_t bytes) { return kt_xalloc(bytes); }
#define FALLOC(n) ((float *)xalloc((size_t)(n) * sizeof(float)))
#define DALLOC(n) ((double *)xalloc((size_t)(n) * sizeof(double)))
#define IALLOC(n) ((int32_t *)xalloc((size_t)(n) * sizeof(int32_t)))

static float *rand_floats(size_t n, float scale) { return kt_rand_floats(&g_rng, n, scale); }

static void fill(float *p, size_t n, float v) {
  for (size_t i = 0; i < n; i++) p[i] = v;
}

static int rand_int(int lo, int hi) { /* in [lo, hi) */
  return lo + (int)(kt_rand_u64(&g_rng) % (uint64_t)(hi - lo));
}

/* max |x - r| <= tol * max |r| over n elements of a tensor */
static void check_close(int cat, const char *label, const char *what, const float *x,
                        const double *r, size_t n, double tol) {
  double rmax = 0.0, err = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) rmax = fmax(rmax, fabs(r[i]));
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)x[i] - r[i]);
    if (!(e <= err)) err = isnan(e) ? INFINITY : e, at = i;
  }
  double ratio = rmax > 0 ? err / (tol * rmax) : (err == 0 ? 0 : INFINITY);
  if (ratio > g_worst[cat]) g_worst[cat] = ratio;
  WT_CHECK(ratio <= 1.0, "%s %s[%zu] = %.9g, reference %.9g: error %.3g > %.1g x max|ref| %.3g",
           label, what, at, n ? (double)x[at] : 0.0, n ? r[at] : 0.0, err, tol, rmax);
}

/* ---- router ---- */

/* Softmax of one row in double. */
static void ref_softmax(const double *l, int64_t E, double *p, double *lse) {
  double m = -INFINITY, s = 0.0;
  for (int64_t i = 0; i < E; i++) m = fmax(m, l[i]);
  for (int64_t i = 0; i < E; i++) s += exp(l[i] - m);
  for (int64_t i = 0; i < E; i++) p[i] = exp(l[i] - m) / s;
  *lse = m + log(s);
}

/* Top-k by repeated selection: largest logit, equal logits -> lowest id. */
static void ref_topk(const float *l, int64_t E, int k, int32_t *ids) {
  for (int j = 0; j < k; j++) {
    int64_t best = -1;
    for (int64_t i = 0; i < E; i++) {
      bool taken = false;
      for (int q = 0; q < j; q++) taken |= ids[q] == i;
      if (!taken && (best < 0 || l[i] > l[best])) best = i;
    }
    ids[j] = (int32_t)best;
  }
}

static void test_router_topk(weft_kernel_ctx_t *ctx, int64_t T, int64_t E, int k, bool normalize) {
  char label[128];
  snprintf(label, sizeof label, "router_topk T=%lld E=%lld k=%d%s", (long long)T, (long long)E, k,
           normalize ? " normalize" : "");
  float *l = rand_floats((size_t)(T * E), 4.0f);
  /* deliberate ties: an all-equal row, a tied top three, a tie across the k boundary */
  if (T > 0) fill(l, (size_t)E, 0.5f);
  if (T > 1 && E >= 8) l[E + 7] = l[E + 2] = l[E + 5] = 9.0f;
  if (T > 2 && E >= 8) l[2 * E + 6] = 9.0f, l[2 * E + 4] = l[2 * E + 1] = l[2 * E + 3] = 8.0f;
  float *p = FALLOC(T * E), *lse = FALLOC(T), *w = FALLOC(T * k), *p2 = FALLOC(T * E);
  int32_t *ids = IALLOC(T * k), *ref_ids = IALLOC(k), *ids2 = IALLOC(T * k);
  double *rp = DALLOC(T * E), *rlse = DALLOC(T), *rw = DALLOC(T * k), *ld = DALLOC(E);
  WT_CHECK_OK(weft_moe_router_topk(ctx, T, E, k, normalize, l, p, lse, ids, w));
  for (int64_t t = 0; t < T; t++) {
    for (int64_t i = 0; i < E; i++) ld[i] = l[t * E + i];
    ref_softmax(ld, E, rp + t * E, rlse + t);
    ref_topk(l + t * E, E, k, ref_ids);
    double z = 0.0;
    for (int j = 0; j < k; j++) z += rp[t * E + ref_ids[j]];
    for (int j = 0; j < k; j++) {
      WT_CHECK(ids[t * k + j] == ref_ids[j], "%s: ids[%lld][%d] = %d, want %d", label, (long long)t,
               j, ids[t * k + j], ref_ids[j]);
      rw[t * k + j] = rp[t * E + ref_ids[j]] / (normalize ? z : 1.0);
      if (!normalize) /* the weight is the kernel's own probability, bit for bit */
        WT_CHECK(w[t * k + j] == p[t * E + ids[t * k + j]], "%s: weight %lld,%d != prob", label,
                 (long long)t, j);
    }
  }
  check_close(C_ROUTER, label, "probs", p, rp, (size_t)(T * E), TOL_ROUTER);
  check_close(C_ROUTER, label, "lse", lse, rlse, (size_t)T, TOL_ROUTER);
  check_close(C_ROUTER, label, "weights", w, rw, (size_t)(T * k), TOL_ROUTER);
  /* lse = NULL: same probs and ids */
  WT_CHECK_OK(weft_moe_router_topk(ctx, T, E, k, normalize, l, p2, NULL, ids2, w));
  WT_CHECK(memcmp(p, p2, (size_t)(T * E) * sizeof(float)) == 0 &&
               memcmp(ids, ids2, (size_t)(T * k) * sizeof(int32_t)) == 0,
           "%s: results differ with lse = NULL", label);
  free(l), free(p), free(lse), free(w), free(p2), free(ids), free(ref_ids), free(ids2);
  free(rp), free(rlse), free(rw), free(ld);
}

/* Closed-form router gradient of one row, in double (weft/moe.h). */
static void ref_router_grad(int64_t E, int k, bool normalize, const double *p, double lse,
                            const int32_t *ids, const double *w, const float *dw, const float *coef,
                            double c, double *dl) {
  double *dp = DALLOC(E), sdw = 0.0, z = 0.0, dot = 0.0;
  for (int j = 0; j < k; j++) sdw += dw[j] * w[j], z += p[ids[j]];
  for (int64_t i = 0; i < E; i++) dp[i] = coef ? coef[i] : 0.0;
  for (int j = 0; j < k; j++) dp[ids[j]] += normalize ? (dw[j] - sdw) / z : dw[j];
  for (int64_t i = 0; i < E; i++) dot += p[i] * dp[i];
  for (int64_t i = 0; i < E; i++) dl[i] = p[i] * (dp[i] - dot) + c * lse * p[i];
  free(dp);
}

/* The loss whose logit gradient the backward computes, ids held fixed:
 *   L = sum_t [ sum_j dw_tj w_tj + sum_i coef_i p_ti + (c/2) lse_t^2 ] */
static double ref_router_loss(const double *l, int64_t T, int64_t E, int k, bool normalize,
                              const int32_t *ids, const float *dw, const float *coef, double c) {
  double *p = DALLOC(E), loss = 0.0;
  for (int64_t t = 0; t < T; t++) {
    double lse, z = 0.0;
    ref_softmax(l + t * E, E, p, &lse);
    for (int j = 0; j < k; j++) z += p[ids[t * k + j]];
    for (int j = 0; j < k; j++) loss += dw[t * k + j] * p[ids[t * k + j]] / (normalize ? z : 1.0);
    for (int64_t i = 0; i < E; i++) loss += (coef ? coef[i] : 0.0) * p[i];
    loss += 0.5 * c * lse * lse;
  }
  free(p);
  return loss;
}

static void test_router_backward(weft_kernel_ctx_t *ctx, int64_t T, int64_t E, int k,
                                 bool normalize, bool with_coef, float z_scale) {
  char label[160];
  snprintf(label, sizeof label, "router_backward T=%lld E=%lld k=%d%s%s z_scale=%g", (long long)T,
           (long long)E, k, normalize ? " normalize" : "", with_coef ? " prob_coef" : "",
           (double)z_scale);
  size_t te = (size_t)(T * E), tk = (size_t)(T * k);
  /* logits 0.25 apart plus noise < 0.1: no near-ties, so a step of h never changes the ids */
  float *l = FALLOC(te);
  for (int64_t t = 0; t < T; t++)
    for (int64_t i = 0; i < E; i++) {
      int64_t j = rand_int(0, (int)i + 1); /* Fisher-Yates on the positions */
      l[t * E + i] = l[t * E + j];
      l[t * E + j] = 0.25f * (float)i;
    }
  for (size_t e = 0; e < te; e++) l[e] += 0.05f * kt_rand_uniform(&g_rng);
  float *p = FALLOC(te), *lse = FALLOC(T), *w = FALLOC(tk), *dl = FALLOC(te);
  float *dw = rand_floats(tk, 1.0f), *coef = with_coef ? rand_floats((size_t)E, 0.5f) : NULL;
  int32_t *ids = IALLOC(tk);
  double *ref = DALLOC(te), *ref_exact = DALLOC(te), *fd = DALLOC(te), *ld = DALLOC(te);
  double *pd = DALLOC(E), *wd = DALLOC(k);
  WT_CHECK_OK(weft_moe_router_topk(ctx, T, E, k, normalize, l, p, lse, ids, w));
  fill(dl, te, NAN);
  WT_CHECK_OK(
      weft_moe_router_backward(ctx, T, E, k, normalize, p, lse, ids, w, dw, coef, z_scale, dl));
  for (size_t e = 0; e < te; e++) ld[e] = l[e];
  for (int64_t t = 0; t < T; t++) {
    /* closed form on the kernel's f32 inputs */
    for (int64_t i = 0; i < E; i++) pd[i] = p[t * E + i];
    for (int j = 0; j < k; j++) wd[j] = w[t * k + j];
    ref_router_grad(E, k, normalize, pd, lse[t], ids + t * k, wd, dw + t * k, coef, z_scale,
                    ref + t * E);
    /* closed form on exact probabilities, for the finite differences */
    double lse_d, z = 0.0;
    ref_softmax(ld + t * E, E, pd, &lse_d);
    for (int j = 0; j < k; j++) z += pd[ids[t * k + j]];
    for (int j = 0; j < k; j++) wd[j] = pd[ids[t * k + j]] / (normalize ? z : 1.0);
    ref_router_grad(E, k, normalize, pd, lse_d, ids + t * k, wd, dw + t * k, coef, z_scale,
                    ref_exact + t * E);
  }
  const double h = 1e-5;
  for (size_t e = 0; e < te; e++) {
    double x0 = ld[e];
    ld[e] = x0 + h;
    double up = ref_router_loss(ld, T, E, k, normalize, ids, dw, coef, z_scale);
    ld[e] = x0 - h;
    double down = ref_router_loss(ld, T, E, k, normalize, ids, dw, coef, z_scale);
    ld[e] = x0;
    fd[e] = (up - down) / (2 * h);
  }
  check_close(C_ROUTER, label, "dlogits vs closed form", dl, ref, te, TOL_ROUTER);
  check_close(C_FD, label, "dlogits vs finite differences", dl, fd, te, TOL_FD);
  /* the closed form in double against the differences */
  double worst = 0.0, fmax_ = 0.0;
  for (size_t e = 0; e < te; e++) fmax_ = fmax(fmax_, fabs(fd[e]));
  for (size_t e = 0; e < te; e++) worst = fmax(worst, fabs(ref_exact[e] - fd[e]));
  WT_CHECK(worst <= TOL_FD_REF * fmax_, "%s: closed form vs finite differences %.3g > %.3g", label,
           worst, TOL_FD_REF * fmax_);
  free(l), free(p), free(lse), free(w), free(dl), free(dw), free(coef), free(ids), free(ref);
  free(ref_exact), free(fd), free(ld), free(pd), free(wd);
}

/* ---- gather-sum and row dot ---- */

static void test_gather_sum(weft_kernel_ctx_t *ctx, int fan, bool weighted) {
  char label[96];
  snprintf(label, sizeof label, "gather_sum fan=%d%s", fan, weighted ? " weighted" : "");
  enum { S = 23, ROWS = 17, WIDTH = 19, SRC_LD = 21, DST_LD = 22 };
  const float pad = 12345.0f;
  float *src = rand_floats(S * SRC_LD, 1.0f), *w = weighted ? rand_floats(ROWS * fan, 1.0f) : NULL;
  int32_t *idx = IALLOC(ROWS * fan);
  for (int i = 0; i < ROWS * fan; i++)
    idx[i] = rand_int(0, 4) == 0 ? -1 - rand_int(0, 3) : rand_int(0, S);
  for (int j = 0; j < fan; j++) idx[3 * fan + j] = -1; /* row 3: nothing to gather */
  float *dst = FALLOC(ROWS * DST_LD), *got = FALLOC(ROWS * WIDTH);
  double *ref = DALLOC(ROWS * WIDTH);
  for (int i = 0; i < ROWS * DST_LD; i++) dst[i] = i % DST_LD < WIDTH ? NAN : pad;
  WT_CHECK_OK(weft_moe_gather_sum(ctx, ROWS, WIDTH, fan, src, SRC_LD, idx, w, dst, DST_LD));
  for (int r = 0; r < ROWS; r++) {
    for (int c = 0; c < WIDTH; c++) {
      double acc = 0.0;
      for (int j = 0; j < fan; j++) {
        int s = idx[r * fan + j];
        if (s >= 0) acc += (w ? w[r * fan + j] : 1.0) * src[s * SRC_LD + c];
      }
      ref[r * WIDTH + c] = acc;
      got[r * WIDTH + c] = dst[r * DST_LD + c];
    }
    for (int c = WIDTH; c < DST_LD; c++)
      WT_CHECK(dst[r * DST_LD + c] == pad, "%s: padding of row %d written", label, r);
    if (fan == 1 && !w) /* a plain gather copies rows bit for bit */
      WT_CHECK(idx[r] < 0 ? dst[r * DST_LD] == 0.0f
                          : memcmp(dst + r * DST_LD, src + idx[r] * SRC_LD, WIDTH * 4) == 0,
               "%s: row %d is not an exact copy", label, r);
  }
  for (int c = 0; c < WIDTH; c++)
    WT_CHECK(got[3 * WIDTH + c] == 0.0f, "%s: all-negative row is not 0", label);
  check_close(C_GATHER, label, "dst", got, ref, ROWS * WIDTH, TOL_GATHER);
  free(src), free(w), free(idx), free(dst), free(got), free(ref);
}

static void test_row_dot(weft_kernel_ctx_t *ctx, int width, bool with_a_idx, bool with_b_idx) {
  char label[96];
  snprintf(label, sizeof label, "row_dot width=%d%s%s", width, with_a_idx ? " a_idx" : "",
           with_b_idx ? " b_idx" : "");
  enum { ROWS = 29, NA = 13, NB = 11 };
  int64_t lda = width + 2, ldb = width + 5;
  int na = with_a_idx ? NA : ROWS, nb = with_b_idx ? NB : ROWS;
  float *a = rand_floats((size_t)(na * lda), 1.0f), *b = rand_floats((size_t)(nb * ldb), 1.0f);
  int32_t *ia = with_a_idx ? IALLOC(ROWS) : NULL, *ib = with_b_idx ? IALLOC(ROWS) : NULL;
  for (int r = 0; r < ROWS; r++) {
    if (ia) ia[r] = r % 7 == 3 ? -1 : rand_int(0, NA);
    if (ib) ib[r] = r % 5 == 1 ? -1 : rand_int(0, NB);
  }
  float *out = FALLOC(ROWS);
  double *ref = DALLOC(ROWS);
  fill(out, ROWS, NAN);
  WT_CHECK_OK(weft_moe_row_dot(ctx, ROWS, width, a, lda, ia, b, ldb, ib, out));
  for (int r = 0; r < ROWS; r++) {
    int64_t ra = ia ? ia[r] : r, rb = ib ? ib[r] : r;
    double acc = 0.0;
    for (int c = 0; ra >= 0 && rb >= 0 && c < width; c++)
      acc += (double)a[ra * lda + c] * b[rb * ldb + c];
    ref[r] = acc;
    if (ra < 0 || rb < 0)
      WT_CHECK(out[r] == 0.0f, "%s: row %d with a negative index != 0", label, r);
  }
  check_close(C_DOT, label, "out", out, ref, ROWS, TOL_DOT);
  free(a), free(b), free(ia), free(ib), free(out), free(ref);
}

/* ---- SwiGLU ---- */

static double ref_sigmoid(double a) { return 1.0 / (1.0 + exp(-a)); }

static void test_swiglu(weft_kernel_ctx_t *ctx) {
  enum { N = 1000 };
  float *a = rand_floats(N, 8.0f), *b = rand_floats(N, 1.0f), *g = rand_floats(N, 1.0f);
  const float special[] = {30, -30, 50, -50, 88, -88, 89, -89, 100, -100, 0, -1.2785f, 16, -16};
  memcpy(a, special, sizeof special);
  float *act = FALLOC(N), *da = FALLOC(N), *db = FALLOC(N), *inplace = FALLOC(N), *db2 = FALLOC(N);
  double *ract = DALLOC(N), *rda = DALLOC(N), *rdb = DALLOC(N);
  WT_CHECK_OK(weft_moe_swiglu_forward(ctx, N, a, b, act));
  WT_CHECK_OK(weft_moe_swiglu_backward(ctx, N, a, b, g, da, db));
  for (int i = 0; i < N; i++) {
    double s = ref_sigmoid(a[i]), silu = a[i] * s;
    ract[i] = silu * b[i];
    rdb[i] = (double)g[i] * silu;
    rda[i] = (double)g[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
    WT_CHECK(isfinite(act[i]) && isfinite(da[i]) && isfinite(db[i]),
             "swiglu: a=%g gives act=%g da=%g db=%g", (double)a[i], (double)act[i], (double)da[i],
             (double)db[i]);
  }
  check_close(C_SWIGLU, "swiglu_forward", "act", act, ract, N, TOL_SWIGLU);
  check_close(C_SWIGLU, "swiglu_backward", "da", da, rda, N, TOL_SWIGLU);
  check_close(C_SWIGLU, "swiglu_backward", "db", db, rdb, N, TOL_SWIGLU);
  memcpy(inplace, g, N * sizeof(float)); /* da over dact: the same bits as out of place */
  WT_CHECK_OK(weft_moe_swiglu_backward(ctx, N, a, b, inplace, inplace, db2));
  WT_CHECK(memcmp(inplace, da, N * sizeof(float)) == 0 && memcmp(db2, db, N * sizeof(float)) == 0,
           "swiglu_backward: in-place da differs from out-of-place");
  free(a), free(b), free(g), free(act), free(da), free(db), free(inplace), free(db2);
  free(ract), free(rda), free(rdb);
}

/* ---- grouped experts ---- */

/* Forward and backward of every expert in double; dw* are ADDED to. */
static void ref_experts(const weft_moe_experts_shape_t *s, const int64_t *off, const float *x,
                        const float *w1, const float *w3, const float *w2, const float *dy,
                        double *a, double *b, double *act, double *y, double *dx, double *dw1,
                        double *dw3, double *dw2) {
  int64_t h = s->hidden, f = s->ffn;
  double *da = DALLOC(f), *db = DALLOC(f);
  for (int64_t e = 0; e < s->experts; e++) {
    const float *W1 = w1 + e * h * f, *W3 = w3 + e * h * f, *W2 = w2 + e * f * h;
    for (int64_t r = off[e]; r < off[e + 1]; r++) {
      const float *xr = x + r * h, *dyr = dy + r * h;
      for (int64_t j = 0; j < f; j++) {
        double sa = 0, sb = 0, sd = 0;
        for (int64_t i = 0; i < h; i++) sa += (double)xr[i] * W1[i * f + j];
        for (int64_t i = 0; i < h; i++) sb += (double)xr[i] * W3[i * f + j];
        for (int64_t i = 0; i < h; i++) sd += (double)dyr[i] * W2[j * h + i];
        double sg = ref_sigmoid(sa);
        a[r * f + j] = sa, b[r * f + j] = sb, act[r * f + j] = sa * sg * sb;
        da[j] = sd * sb * sg * (1.0 + sa * (1.0 - sg));
        db[j] = sd * sa * sg;
      }
      for (int64_t i = 0; i < h; i++) {
        double sy = 0, sx = 0;
        for (int64_t j = 0; j < f; j++) sy += act[r * f + j] * W2[j * h + i];
        for (int64_t j = 0; j < f; j++) sx += da[j] * W1[i * f + j] + db[j] * W3[i * f + j];
        y[r * h + i] = sy, dx[r * h + i] = sx;
        for (int64_t j = 0; j < f; j++) {
          dw2[e * f * h + j * h + i] += act[r * f + j] * dyr[i];
          dw1[e * h * f + i * f + j] += xr[i] * da[j];
          dw3[e * h * f + i * f + j] += xr[i] * db[j];
        }
      }
    }
  }
  free(da), free(db);
}

/* Runs forward, then backward twice (dw accumulates: 1x then 2x the gradient, on top of dw0,
 * which is zero or random). */
static void test_experts(weft_kernel_ctx_t *ctx, int64_t E, const int64_t *off, int64_t h,
                         int64_t f, bool random_dw0) {
  weft_moe_experts_shape_t s = {.experts = E, .hidden = h, .ffn = f};
  int64_t M = off[E];
  char label[128];
  int n = snprintf(label, sizeof label, "experts E=%lld M=%lld h=%lld f=%lld%s", (long long)E,
                   (long long)M, (long long)h, (long long)f, random_dw0 ? " dw0" : "");
  size_t mh = (size_t)(M * h), mf = (size_t)(M * f), wn = (size_t)(E * h * f);
  float *x = rand_floats(mh, 1.0f), *dy = rand_floats(mh, 1.0f);
  float *w1 = rand_floats(wn, 0.3f), *w3 = rand_floats(wn, 0.3f), *w2 = rand_floats(wn, 0.3f);
  float *a = FALLOC(mf), *b = FALLOC(mf), *act = FALLOC(mf), *y = FALLOC(mh), *dx = FALLOC(mh);
  float *work = FALLOC(2 * mf), *dw[3], *dw0[3];
  double *ra = DALLOC(mf), *rb = DALLOC(mf), *ract = DALLOC(mf), *ry = DALLOC(mh);
  double *rdx = DALLOC(mh), *rdw[3], *rsum = DALLOC(wn);
  for (int i = 0; i < 3; i++) {
    dw0[i] = random_dw0 ? rand_floats(wn, 1.0f) : FALLOC(wn);
    dw[i] = FALLOC(wn);
    memcpy(dw[i], dw0[i], wn * sizeof(float));
    rdw[i] = DALLOC(wn);
  }
  fill(a, mf, NAN), fill(b, mf, NAN), fill(act, mf, NAN), fill(y, mh, NAN), fill(dx, mh, NAN);
  fill(work, 2 * mf, NAN);
  ref_experts(&s, off, x, w1, w3, w2, dy, ra, rb, ract, ry, rdx, rdw[0], rdw[1], rdw[2]);
  WT_CHECK_OK(weft_moe_experts_forward(ctx, &s, off, x, w1, w3, w2, a, b, act, y));
  const char *const fwd_names[] = {"a", "b", "act", "y"};
  const float *fwd[] = {a, b, act, y};
  const double *fwd_ref[] = {ra, rb, ract, ry};
  for (int i = 0; i < 4; i++)
    check_close(C_EXPERTS, label, fwd_names[i], fwd[i], fwd_ref[i], i < 3 ? mf : mh, TOL_EXPERTS);
  static const char *const dw_names[] = {"dw1", "dw3", "dw2"};
  for (int pass = 1; pass <= 2; pass++) {
    WT_CHECK_OK(weft_moe_experts_backward(ctx, &s, off, x, w1, w3, w2, a, b, act, dy, dx, dw[0],
                                          dw[1], dw[2], work));
    snprintf(label + n, sizeof label - (size_t)n, " pass %d", pass);
    check_close(C_EXPERTS, label, "dx", dx, rdx, mh, TOL_EXPERTS);
    for (int i = 0; i < 3; i++) {
      for (size_t e = 0; e < wn; e++) rsum[e] = dw0[i][e] + pass * rdw[i][e];
      check_close(C_EXPERTS, label, dw_names[i], dw[i], rsum, wn, TOL_EXPERTS);
      for (int64_t e = 0; e < E; e++) /* experts without rows: untouched, bit for bit */
        if (off[e + 1] == off[e])
          WT_CHECK(memcmp(dw[i] + e * h * f, dw0[i] + e * h * f, (size_t)(h * f) * 4) == 0,
                   "%s: expert %lld has no rows but its gradient changed", label, (long long)e);
    }
  }
  free(x), free(dy), free(w1), free(w3), free(w2), free(a), free(b), free(act), free(y);
  free(dx), free(work), free(ra), free(rb), free(ract), free(ry), free(rdx), free(rsum);
  for (int i = 0; i < 3; i++) free(dw[i]), free(dw0[i]), free(rdw[i]);
}

/* ---- thread-count independence ---- */

/* Runs every kernel at 1 and at 4 threads on sizes large enough to split; bitwise equal. */
static void test_threads(weft_kernel_ctx_t *ctx) {
  enum { T = 4096, E = 64, K = 4, ROWS = 3000, WIDTH = 256, FAN = 3, N = 1 << 20 };
  int saved = weft_kernels_cpu_threads();
  float *l = rand_floats(T * E, 3.0f), *dwt = rand_floats(T * K, 1.0f);
  float *src = rand_floats(ROWS * WIDTH, 1.0f), *gw = rand_floats(ROWS * FAN, 1.0f);
  float *sa = rand_floats(N, 8.0f), *sb = rand_floats(N, 1.0f);
  int32_t *idx = IALLOC(ROWS * FAN);
  for (int i = 0; i < ROWS * FAN; i++) idx[i] = rand_int(-1, ROWS);
  float *out[2][8];
  int32_t *ids[2];
  for (int r = 0; r < 2; r++) {
    weft_kernels_set_cpu_threads(r == 0 ? 1 : 4);
    float *p = out[r][0] = FALLOC(T * E), *lse = out[r][1] = FALLOC(T);
    float *w = out[r][2] = FALLOC(T * K), *dl = out[r][3] = FALLOC(T * E);
    float *dst = out[r][4] = FALLOC(ROWS * WIDTH), *dot = out[r][5] = FALLOC(ROWS);
    float *act = out[r][6] = FALLOC(N), *da = out[r][7] = FALLOC(2 * N);
    ids[r] = IALLOC(T * K);
    WT_CHECK_OK(weft_moe_router_topk(ctx, T, E, K, true, l, p, lse, ids[r], w));
    WT_CHECK_OK(weft_moe_router_backward(ctx, T, E, K, true, p, lse, ids[r], w, dwt, l, 0.01f, dl));
    WT_CHECK_OK(weft_moe_gather_sum(ctx, ROWS, WIDTH, FAN, src, WIDTH, idx, gw, dst, WIDTH));
    WT_CHECK_OK(weft_moe_row_dot(ctx, ROWS, WIDTH, src, WIDTH, idx, dst, WIDTH, NULL, dot));
    WT_CHECK_OK(weft_moe_swiglu_forward(ctx, N, sa, sb, act));
    WT_CHECK_OK(weft_moe_swiglu_backward(ctx, N, sa, sb, act, da, da + N));
  }
  const size_t sizes[8] = {T * E, T, T * K, T * E, ROWS * WIDTH, ROWS, N, 2 * N};
  static const char *const names[8] = {"probs",  "lse", "weights", "dlogits",
                                       "gather", "dot", "act",     "da/db"};
  WT_CHECK(memcmp(ids[0], ids[1], T * K * sizeof(int32_t)) == 0, "threads: ids differ");
  for (int i = 0; i < 8; i++)
    WT_CHECK(memcmp(out[0][i], out[1][i], sizes[i] * sizeof(float)) == 0,
             "threads: %s differs between 1 and 4 threads", names[i]);
  weft_kernels_set_cpu_threads(saved);
  for (int r = 0; r < 2; r++) {
    for (int i = 0; i < 8; i++) free(out[r][i]);
    free(ids[r]);
  }
  free(l), free(dwt), free(src), free(gw), free(sa), free(sb), free(idx);
}

/* ---- invalid arguments ---- */

static void test_invalid(weft_kernel_ctx_t *ctx) {
  static float x[4096];
  static int32_t ix[64];
  const weft_status_t bad = WEFT_ERR_INVALID_ARG;
  /* router */
  WT_CHECK_OK(weft_moe_router_topk(ctx, 2, 4, 2, true, x, x + 8, NULL, ix, x + 16));
  WT_CHECK_STATUS(weft_moe_router_topk(ctx, 2, 4, 0, true, x, x + 8, NULL, ix, x + 16), bad);
  WT_CHECK_STATUS(weft_moe_router_topk(ctx, 2, 4, 5, true, x, x + 8, NULL, ix, x + 16), bad);
  WT_CHECK_STATUS(weft_moe_router_topk(ctx, -1, 4, 2, true, x, x + 8, NULL, ix, x + 16), bad);
  WT_CHECK_STATUS(weft_moe_router_topk(ctx, 2, 0, 1, true, x, x + 8, NULL, ix, x + 16), bad);
  WT_CHECK_STATUS(weft_moe_router_topk(NULL, 2, 4, 2, true, x, x + 8, NULL, ix, x + 16), bad);
  WT_CHECK_STATUS(weft_moe_router_topk(ctx, 2, 4, 2, true, NULL, x + 8, NULL, ix, x + 16), bad);
  WT_CHECK_STATUS(weft_moe_router_topk(ctx, 2, 4, 2, true, x, x + 8, NULL, NULL, x + 16), bad);
  WT_CHECK_STATUS(weft_moe_router_topk(ctx, 2, 4, 2, true, x, x + 4, NULL, ix, x + 16), bad);
  WT_CHECK_OK(weft_moe_router_topk(ctx, 0, 4, 2, true, NULL, NULL, NULL, NULL, NULL));
  WT_CHECK_OK(
      weft_moe_router_backward(ctx, 2, 4, 2, true, x + 8, x, ix, x + 16, x, NULL, 0.5f, x + 32));
  WT_CHECK_STATUS(
      weft_moe_router_backward(ctx, 2, 4, 2, true, x + 8, NULL, ix, x + 16, x, NULL, 0.5f, x + 32),
      bad); /* z_scale != 0 needs lse */
  WT_CHECK_OK(
      weft_moe_router_backward(ctx, 2, 4, 2, true, x + 8, NULL, ix, x + 16, x, NULL, 0.0f, x + 32));
  WT_CHECK_STATUS(
      weft_moe_router_backward(ctx, 2, 4, 2, true, x + 8, x, ix, x + 16, x, NULL, NAN, x + 32),
      bad);
  WT_CHECK_STATUS(
      weft_moe_router_backward(ctx, 2, 4, 9, true, x + 8, x, ix, x + 16, x, NULL, 0.0f, x + 32),
      bad);
  WT_CHECK_STATUS(
      weft_moe_router_backward(ctx, 2, 4, 2, true, x + 8, x, ix, x + 16, NULL, NULL, 0.0f, x + 32),
      bad);
  /* gather-sum and row dot */
  WT_CHECK_OK(weft_moe_gather_sum(ctx, 2, 4, 2, x, 4, ix, NULL, x + 100, 4));
  WT_CHECK_STATUS(weft_moe_gather_sum(ctx, 2, 4, 0, x, 4, ix, NULL, x + 100, 4), bad);
  WT_CHECK_STATUS(weft_moe_gather_sum(ctx, 2, 4, 2, x, 3, ix, NULL, x + 100, 4), bad);
  WT_CHECK_STATUS(weft_moe_gather_sum(ctx, 2, 4, 2, x, 4, ix, NULL, x + 100, 3), bad);
  WT_CHECK_STATUS(weft_moe_gather_sum(ctx, 2, 4, 2, x, 4, NULL, NULL, x + 100, 4), bad);
  WT_CHECK_STATUS(weft_moe_gather_sum(ctx, 2, 4, 2, NULL, 4, ix, NULL, x + 100, 4), bad);
  WT_CHECK_STATUS(weft_moe_gather_sum(ctx, -2, 4, 2, x, 4, ix, NULL, x + 100, 4), bad);
  WT_CHECK_OK(weft_moe_gather_sum(ctx, 0, 4, 2, NULL, 4, NULL, NULL, NULL, 4));
  WT_CHECK_OK(weft_moe_row_dot(ctx, 2, 4, x, 4, NULL, x, 4, NULL, x + 100));
  WT_CHECK_STATUS(weft_moe_row_dot(ctx, 2, 4, x, 3, NULL, x, 4, NULL, x + 100), bad);
  WT_CHECK_STATUS(weft_moe_row_dot(ctx, 2, 4, x, 4, NULL, x, 2, NULL, x + 100), bad);
  WT_CHECK_STATUS(weft_moe_row_dot(ctx, 2, 4, x, 4, NULL, x, 4, NULL, NULL), bad);
  /* SwiGLU: NULL, act over an input, db over dact; da over dact is allowed */
  WT_CHECK_STATUS(weft_moe_swiglu_forward(ctx, 8, NULL, x, x + 100), bad);
  WT_CHECK_STATUS(weft_moe_swiglu_forward(ctx, 8, x, x + 8, x + 4), bad);
  WT_CHECK_STATUS(weft_moe_swiglu_forward(ctx, -1, x, x + 8, x + 100), bad);
  WT_CHECK_STATUS(weft_moe_swiglu_backward(ctx, 8, x, x + 8, x + 16, x + 100, x + 16), bad);
  WT_CHECK_STATUS(weft_moe_swiglu_backward(ctx, 8, x, x + 8, x + 16, x + 20, x + 100), bad);
  WT_CHECK_OK(weft_moe_swiglu_backward(ctx, 8, x, x + 8, x + 100, x + 100, x + 200));
  /* experts */
  weft_moe_experts_shape_t s = {.experts = 2, .hidden = 4, .ffn = 4};
  const int64_t off_ok[] = {0, 1, 2}, off_dec[] = {0, 2, 1}, off_start[] = {1, 1, 2};
  float *w = x + 1000, *o = x + 2000; /* weights [2, 4, 4] each at w, outputs from o */
  WT_CHECK_OK(weft_moe_experts_forward(ctx, &s, off_ok, x, w, w, w, o, o + 8, o + 16, o + 24));
  WT_CHECK_STATUS(weft_moe_experts_forward(ctx, &s, off_dec, x, w, w, w, o, o + 8, o + 16, o + 24),
                  bad);
  WT_CHECK_STATUS(
      weft_moe_experts_forward(ctx, &s, off_start, x, w, w, w, o, o + 8, o + 16, o + 24), bad);
  WT_CHECK_STATUS(weft_moe_experts_forward(ctx, &s, NULL, x, w, w, w, o, o + 8, o + 16, o + 24),
                  bad);
  WT_CHECK_STATUS(weft_moe_experts_forward(ctx, NULL, off_ok, x, w, w, w, o, o + 8, o + 16, o + 24),
                  bad);
  WT_CHECK_STATUS(
      weft_moe_experts_forward(ctx, &s, off_ok, NULL, w, w, w, o, o + 8, o + 16, o + 24), bad);
  WT_CHECK_STATUS(weft_moe_experts_backward(ctx, &s, off_ok, x, w, w, w, o, o, o, o, o + 100,
                                            o + 200, o + 300, NULL, o + 500),
                  bad);
  WT_CHECK_STATUS(weft_moe_experts_backward(ctx, &s, off_dec, x, w, w, w, o, o, o, o, o + 100,
                                            o + 200, o + 300, o + 400, o + 500),
                  bad);
  weft_moe_experts_shape_t bad_shape[] = {s, s, s};
  bad_shape[0].experts = -1;
  bad_shape[1].hidden = 0;
  bad_shape[2].ffn = -3;
  for (int i = 0; i < 3; i++)
    WT_CHECK_STATUS(
        weft_moe_experts_forward(ctx, &bad_shape[i], off_ok, x, w, w, w, o, o + 8, o + 16, o + 24),
        bad);
  const int64_t off_empty[] = {0, 0, 0}; /* M = 0: row tensors may be NULL, weights may not */
  WT_CHECK_OK(weft_moe_experts_forward(ctx, &s, off_empty, NULL, w, w, w, NULL, NULL, NULL, NULL));
  WT_CHECK_STATUS(
      weft_moe_experts_forward(ctx, &s, off_empty, NULL, NULL, w, w, NULL, NULL, NULL, NULL), bad);
}

int main(void) {
  weft_device_t *cpu = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &cpu));
  if (cpu) WT_CHECK_OK(weft_kernel_ctx_create(cpu, NULL, &ctx));
  if (!ctx) return weft_test_exit_code("test_moe");

  const struct {
    int64_t T, E;
    int k;
  } topk[] = {{6, 8, 1}, {6, 8, 2}, {6, 8, 8}, {5, 64, 2}, {3, 1, 1}, {40, 128, 6}, {0, 4, 2}};
  for (size_t i = 0; i < sizeof topk / sizeof topk[0]; i++)
    for (int norm = 0; norm < 2; norm++)
      test_router_topk(ctx, topk[i].T, topk[i].E, topk[i].k, norm);
  test_router_backward(ctx, 7, 8, 2, true, true, 0.37f);
  test_router_backward(ctx, 7, 8, 2, false, true, 0.0f);
  test_router_backward(ctx, 5, 6, 6, true, false, 0.2f); /* k = E */
  test_router_backward(ctx, 4, 16, 1, true, true, 0.0f);
  test_router_backward(ctx, 4, 16, 1, false, false, 0.05f);
  test_router_backward(ctx, 3, 32, 4, false, true, 0.1f);
  for (int fan = 1; fan <= 3; fan++)
    for (int weighted = 0; weighted < 2; weighted++) test_gather_sum(ctx, fan, weighted);
  const int widths[] = {0, 37, 300};
  for (int wi = 0; wi < 3; wi++)
    for (int m = 0; m < 4; m++) test_row_dot(ctx, widths[wi], m & 1, m & 2);
  test_swiglu(ctx);
  const int64_t off4[] = {0, 5, 5, 17, 20}, off1[] = {0, 9}, off3[] = {0, 0, 0, 0};
  test_experts(ctx, 4, off4, 24, 40, false); /* uneven, expert 1 empty */
  test_experts(ctx, 4, off4, 24, 40, true);  /* dw accumulates onto random values */
  test_experts(ctx, 1, off1, 16, 8, false);
  test_experts(ctx, 3, off3, 8, 12, true); /* M = 0: nothing changes */
  test_threads(ctx);
  test_invalid(ctx);

  printf("largest error / tolerance:");
  for (int c = 0; c < C_COUNT; c++) printf(" %s %.3g", g_cat_name[c], g_worst[c]);
  printf("\n");
  weft_kernel_ctx_destroy(ctx);
  weft_device_close(cpu);
  return weft_test_exit_code("test_moe");
}
