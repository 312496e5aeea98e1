/* CPU training ops (weft/cross_entropy.h, weft/adamw.h) against plain reference loops in double.
 *
 * Tolerances, with u = 2^-24 (f32 unit roundoff); "ratio" is error / allowed, reported per
 * family at the end:
 *   CE loss, lse   |x - r| <= TOL_CE_FWD (|r| + 1) per element, TOL_CE_FWD = 4u: lse and loss
 *                  are rounded once from double; the +1 covers log(s), whose absolute error is
 *                  the relative error of s (~u from the f32 expf terms).
 *   CE dlogits     max |x - r| <= TOL_CE_BWD max |r| over the tensor, TOL_CE_BWD = 1e-6, the
 *                  reference evaluated from the kernel's own lse (the backward's input): f32
 *                  z - lse, expf, a subtraction and a product, each ~u relative.
 *   CE vs FD       the same form with TOL_CE_FD = 1e-5 against central differences (h = 1e-4)
 *                  of the double loss sum_t s loss_t: truncation ~h^2, cancellation ~1e-12,
 *                  and the f32 lse the kernel is given.
 *   AdamW          one step from the kernel's f32 state vs the same step in double, per element
 *                  |x - r| <= K u S: m with S = |b1 m| + |(1-b1) g|, K = 8; v with S = |b2 v| +
 *                  |(1-b2) g^2|, K = 8; p with S = |p'| + lr (A + wd |p|), A the update with
 *                  every term in absolute value, K = 16 (about a dozen roundings on the way).
 *   sumsq          bitwise equal to the documented blocked order written out here, and within
 *                  (chunk/lanes + 3 + round + rounds) 2^-53 relative of a long double sum (the
 *                  worst case of a sum of that depth of positive terms).
 * Exact where the answer is exact: unlabelled rows (loss 0, gradient 0), V = 1, in-place
 * backward (bitwise the out-of-place result), weight decay alone with a zero gradient, a
 * grad_scale of 0.5 vs a gradient halved beforehand, and 1 vs 4 CPU threads (bitwise). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test_common.h"
#include "test_util.h"
#include "weft/adamw.h"
#include "weft/cross_entropy.h"
#include "weft/device.h"
#include "weft/kernel_ctx.h"

#define U_F32      (1.0 / 16777216.0) /* 2^-24 */
#define TOL_CE_FWD (4 * U_F32)
#define TOL_CE_BWD 1e-6
#define TOL_CE_FD  1e-5
#define ULPS_M     8.0
#define ULPS_V     8.0
#define ULPS_P     16.0
/* The blocked order of train_ops_internal.h (a private header; repeated here on purpose, so a
 * change of the order shows up as a test failure rather than passing silently). */
#define SUMSQ_LANES 8
#define SUMSQ_CHUNK 8192
#define SUMSQ_ROUND 1024

static uint64_t g_rng = 2024;

enum { C_CE_FWD, C_CE_BWD, C_CE_FD, C_ADAMW, C_SUMSQ, C_COUNT };
static const char *const g_cat_name[C_COUNT] = {"ce-forward", "ce-backward", "ce-fd", "adamw",
                                                "sumsq"};
static double g_worst[C_COUNT];

static void *xalloc(size_t bytes) { return kt_xalloc(bytes); }
#define FALLOC(n) ((float *)xalloc((size_t)(n) * sizeof(float)))
#define DALLOC(n) ((double *)xalloc((size_t)(n) * sizeof(double)))

static float *rand_floats(size_t n, float scale) { return kt_rand_floats(&g_rng, n, scale); }

static void note(int cat, double ratio) {
  if (!(ratio <= g_worst[cat])) g_worst[cat] = isnan(ratio) ? INFINITY : ratio;
}

/* |x - r| <= tol * (|r| + plus) for every element */
static void check_elems(int cat, const char *label, const float *x, const double *r, size_t n,
                        double tol, double plus) {
  for (size_t i = 0; i < n; i++) {
    double ratio = fabs((double)x[i] - r[i]) / (tol * (fabs(r[i]) + plus));
    note(cat, ratio);
    if (!(ratio <= 1.0)) {
      WT_CHECK(false, "%s[%zu] = %.9g, reference %.9g: %.3g x the tolerance", label, i,
               (double)x[i], r[i], ratio);
      return;
    }
  }
}

/* max |x - r| <= tol * max |r| (all zero: exactly zero) */
static void check_tensor(int cat, const char *label, const float *x, const double *r, size_t n,
                         double tol) {
  double rmax = 0.0, err = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) rmax = fmax(rmax, fabs(r[i]));
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)x[i] - r[i]);
    if (!(e <= err)) err = isnan(e) ? INFINITY : e, at = i;
  }
  double ratio = rmax > 0 ? err / (tol * rmax) : (err == 0 ? 0 : INFINITY);
  note(cat, ratio);
  WT_CHECK(ratio <= 1.0, "%s[%zu] = %.9g, reference %.9g: error %.3g > %.1g x max|ref| %.3g", label,
           at, n ? (double)x[at] : 0.0, n ? r[at] : 0.0, err, tol, rmax);
}

/* ---- cross-entropy ---- */

/* One row in double: lse and the loss for target y (0 when y < 0). */
static void ref_ce_row(const double *z, int64_t V, int32_t y, double *lse, double *loss) {
  double m = -INFINITY, s = 0.0;
  for (int64_t v = 0; v < V; v++) m = fmax(m, z[v]);
  for (int64_t v = 0; v < V; v++) s += exp(z[v] - m);
  *lse = m + log(s);
  *loss = y < 0 ? 0.0 : (m - z[y]) + log(s);
}

/* Runs forward and backward (scale 1 / labelled rows) on random logits [n, V] in +-range, a
 * fraction `unlabelled` of the rows without a target, and checks both. `offset` is added to
 * the logits of rows with t % 4 == 1 and subtracted for t % 4 == 2. */
static void test_ce(weft_kernel_ctx_t *ctx, int64_t n, int64_t V, float range, float offset,
                    double unlabelled) {
  char label[128];
  int len = snprintf(label, sizeof label, "ce n=%lld V=%lld range=%g offset=%g", (long long)n,
                     (long long)V, (double)range, (double)offset);
  size_t nv = (size_t)(n * V);
  float *z = rand_floats(nv, range), *loss = FALLOC(n), *lse = FALLOC(n);
  float *dz = FALLOC(nv), *inplace = FALLOC(nv);
  int32_t *y = xalloc((size_t)n * sizeof(int32_t));
  int labelled = 0;
  for (int64_t t = 0; t < n; t++) {
    float shift = t % 4 == 1 ? offset : t % 4 == 2 ? -offset : 0.0f;
    for (int64_t v = 0; v < V; v++) z[t * V + v] += shift;
    y[t] = (double)(kt_rand_u64(&g_rng) % 1000) < 1000 * unlabelled
               ? -1 - (int32_t)(kt_rand_u64(&g_rng) % 3) /* -1, -2 or -3 */
               : (int32_t)(kt_rand_u64(&g_rng) % (uint64_t)V);
    labelled += y[t] >= 0;
  }
  const float s = 1.0f / (float)(labelled ? labelled : 1);
  WT_CHECK_OK(weft_cross_entropy_forward(ctx, n, V, z, y, loss, lse));
  WT_CHECK_OK(weft_cross_entropy_backward(ctx, n, V, z, y, lse, s, dz));
  memcpy(inplace, z, nv * sizeof(float));
  WT_CHECK_OK(weft_cross_entropy_backward(ctx, n, V, inplace, y, lse, s, inplace));
  WT_CHECK(memcmp(inplace, dz, nv * sizeof(float)) == 0, "%s: in-place dlogits differ", label);

  double *rz = DALLOC(V), *rloss = DALLOC(n), *rlse = DALLOC(n), *rdz = DALLOC(nv);
  for (int64_t t = 0; t < n; t++) {
    for (int64_t v = 0; v < V; v++) rz[v] = z[t * V + v];
    ref_ce_row(rz, V, y[t], &rlse[t], &rloss[t]);
    if (y[t] < 0) {
      WT_CHECK(loss[t] == 0.0f, "%s: unlabelled row %lld has loss %g", label, (long long)t,
               (double)loss[t]);
      int64_t v = 0;
      while (v < V && dz[t * V + v] == 0.0f) v++;
      WT_CHECK(v == V, "%s: unlabelled row %lld has dlogits[%lld] = %g", label, (long long)t,
               (long long)v, v < V ? (double)dz[t * V + v] : 0.0);
    }
    for (int64_t v = 0; v < V; v++) /* closed form from the kernel's lse */
      rdz[t * V + v] =
          y[t] < 0
              ? 0.0
              : (double)s * (exp((double)z[t * V + v] - (double)lse[t]) - (v == y[t] ? 1.0 : 0.0));
  }
  for (size_t i = 0; i < nv; i++)
    WT_CHECK(isfinite(dz[i]), "%s: dlogits[%zu] = %g is not finite", label, i, (double)dz[i]);
  snprintf(label + len, sizeof label - (size_t)len, " loss");
  check_elems(C_CE_FWD, label, loss, rloss, (size_t)n, TOL_CE_FWD, 1.0);
  snprintf(label + len, sizeof label - (size_t)len, " lse");
  check_elems(C_CE_FWD, label, lse, rlse, (size_t)n, TOL_CE_FWD, 1.0);
  snprintf(label + len, sizeof label - (size_t)len, " dlogits");
  check_tensor(C_CE_BWD, label, dz, rdz, nv, TOL_CE_BWD);
  if (V == 1)
    for (int64_t t = 0; t < n; t++)
      WT_CHECK(loss[t] == 0.0f && dz[t] == 0.0f, "%s: V = 1 row %lld: loss %g dlogits %g", label,
               (long long)t, (double)loss[t], (double)dz[t]);
  free(z), free(loss), free(lse), free(dz), free(inplace), free(y);
  free(rz), free(rloss), free(rlse), free(rdz);
}

/* dlogits against central differences of L(z) = sum_t s loss_t(z) in double. */
static void test_ce_fd(weft_kernel_ctx_t *ctx) {
  enum { N = 6, V = 37 };
  const int32_t y[N] = {3, -1, 0, 36, 17, 5};
  const float s = 0.2f; /* 1 / the 5 labelled rows */
  const double h = 1e-4;
  float *z = rand_floats(N * V, 3.0f), loss[N], lse[N], dz[N * V];
  double rz[V], fd[N * V], lse_d, lp, lm;
  WT_CHECK_OK(weft_cross_entropy_forward(ctx, N, V, z, y, loss, lse));
  WT_CHECK_OK(weft_cross_entropy_backward(ctx, N, V, z, y, lse, s, dz));
  for (int t = 0; t < N; t++) {
    for (int v = 0; v < V; v++) {
      for (int w = 0; w < V; w++) rz[w] = z[t * V + w];
      rz[v] += h;
      ref_ce_row(rz, V, y[t], &lse_d, &lp);
      rz[v] -= 2 * h;
      ref_ce_row(rz, V, y[t], &lse_d, &lm);
      fd[t * V + v] = (double)s * (lp - lm) / (2 * h);
    }
  }
  check_tensor(C_CE_FD, "ce finite differences", dz, fd, N * V, TOL_CE_FD);
  free(z);
}

/* ---- AdamW ---- */

/* One step in double from the f32 state (p, m, v) and gradient g; writes the new state and the
 * magnitude sums S of the file note. */
static void ref_adamw(const weft_adamw_params_t *hp, size_t n, const float *p, const float *g,
                      const float *m, const float *v, double *rp, double *rm, double *rv,
                      double *sp, double *sm, double *sv) {
  const double b1 = hp->beta1, b2 = hp->beta2, lr = hp->lr, wd = hp->weight_decay;
  const double eps = hp->eps, gs = hp->grad_scale, t = (double)hp->step;
  const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
  for (size_t i = 0; i < n; i++) {
    double gi = gs * g[i];
    rm[i] = b1 * m[i] + (1.0 - b1) * gi;
    rv[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
    sm[i] = fabs(b1 * m[i]) + fabs((1.0 - b1) * gi);
    sv[i] = fabs(b2 * v[i]) + (1.0 - b2) * gi * gi;
    double denom = sqrt(rv[i] / bc2) + eps;
    rp[i] = p[i] - lr * (rm[i] / bc1 / denom + wd * p[i]);
    sp[i] = fabs(rp[i]) + lr * (sm[i] / bc1 / denom + wd * fabs(p[i]));
  }
}

/* |x - r| <= ulps * u * S per element (S = 0: exact) */
static void check_ulps(const char *label, const float *x, const double *r, const double *S,
                       size_t n, double ulps) {
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)x[i] - r[i]), ratio = err == 0 ? 0 : err / (ulps * U_F32 * S[i]);
    note(C_ADAMW, ratio);
    if (!(ratio <= 1.0)) {
      WT_CHECK(false, "%s[%zu] = %.9g, reference %.17g: %.3g x the tolerance (%g ulps of %.3g)",
               label, i, (double)x[i], r[i], ratio, ulps, S[i]);
      return;
    }
  }
}

/* Gradients of mixed magnitude: 1, 1e-3, 1e-8 and exact zeros. */
static void rand_grad(float *g, size_t n) {
  static const float mag[4] = {1.0f, 1e-3f, 1e-8f, 0.0f};
  for (size_t i = 0; i < n; i++) g[i] = mag[kt_rand_u64(&g_rng) % 4] * kt_rand_uniform(&g_rng);
}

static void test_adamw_chain(weft_kernel_ctx_t *ctx, size_t n, float beta1, float beta2,
                             float weight_decay) {
  float *p = rand_floats(n, 1.0f), *m = FALLOC(n), *v = FALLOC(n), *g = FALLOC(n);
  double *r[6];
  for (int k = 0; k < 6; k++) r[k] = DALLOC(n);
  const int64_t steps[] = {1, 2, 3, 4, 5, 1000};
  const float scales[] = {1.0f, 1.0f, 0.37f, 1.0f, 2.5f, 1.0f};
  for (int k = 0; k < 6; k++) {
    weft_adamw_params_t hp = {.lr = 1e-3f,
                              .beta1 = beta1,
                              .beta2 = beta2,
                              .eps = 1e-8f,
                              .weight_decay = weight_decay,
                              .step = steps[k],
                              .grad_scale = scales[k]};
    rand_grad(g, n);
    ref_adamw(&hp, n, p, g, m, v, r[0], r[1], r[2], r[3], r[4], r[5]);
    WT_CHECK_OK(weft_adamw_step(ctx, &hp, (int64_t)n, p, g, m, v));
    char label[128];
    int len = snprintf(label, sizeof label, "adamw n=%zu b1=%g b2=%g wd=%g t=%lld gs=%g", n,
                       (double)beta1, (double)beta2, (double)weight_decay, (long long)steps[k],
                       (double)scales[k]);
    snprintf(label + len, sizeof label - (size_t)len, " m");
    check_ulps(label, m, r[1], r[4], n, ULPS_M);
    snprintf(label + len, sizeof label - (size_t)len, " v");
    check_ulps(label, v, r[2], r[5], n, ULPS_V);
    snprintf(label + len, sizeof label - (size_t)len, " param");
    check_ulps(label, p, r[0], r[3], n, ULPS_P);
  }
  free(p), free(m), free(v), free(g);
  for (int k = 0; k < 6; k++) free(r[k]);
}

/* Step 1 from m = v = 0: mh = g and vh = g^2, so the step is lr * sign(g) (to eps / |g|). */
static void test_adamw_bias_correction(weft_kernel_ctx_t *ctx) {
  enum { N = 64 };
  float p[N], p0[N], m[N] = {0}, v[N] = {0}, g[N];
  for (int i = 0; i < N; i++) {
    p[i] = p0[i] = kt_rand_uniform(&g_rng);
    g[i] = (i % 2 ? 1.0f : -1.0f) * (0.01f + 0.99f * fabsf(kt_rand_uniform(&g_rng)));
  }
  weft_adamw_params_t hp = {
      .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .step = 1, .grad_scale = 1.0f};
  WT_CHECK_OK(weft_adamw_step(ctx, &hp, N, p, g, m, v));
  for (int i = 0; i < N; i++) {
    double moved = ((double)p0[i] - p[i]) / hp.lr, want = g[i] > 0 ? 1.0 : -1.0;
    WT_CHECK(fabs(moved - want) < 1e-4, "adamw step 1: element %d moved %.6g lr, expected %g", i,
             moved, want);
  }
}

/* grad = 0, m = v = 0: m and v stay 0 and p = p - lr (wd p), exactly as written in f32. */
static void test_adamw_weight_decay(weft_kernel_ctx_t *ctx) {
  enum { N = 100 };
  float p[N], p0[N], m[N] = {0}, v[N] = {0}, g[N] = {0};
  for (int i = 0; i < N; i++) p[i] = p0[i] = 3.0f * kt_rand_uniform(&g_rng);
  weft_adamw_params_t hp = {.lr = 0.01f,
                            .beta1 = 0.9f,
                            .beta2 = 0.95f,
                            .eps = 1e-8f,
                            .weight_decay = 0.1f,
                            .step = 7,
                            .grad_scale = 1.0f};
  WT_CHECK_OK(weft_adamw_step(ctx, &hp, N, p, g, m, v));
  for (int i = 0; i < N; i++) {
    float want = p0[i] - hp.lr * (0.0f + hp.weight_decay * p0[i]);
    WT_CHECK(m[i] == 0.0f && v[i] == 0.0f, "adamw decay only: m[%d] %g v[%d] %g", i, (double)m[i],
             i, (double)v[i]);
    WT_CHECK(memcmp(&p[i], &want, sizeof(float)) == 0, "adamw decay only: p[%d] %.9g, want %.9g", i,
             (double)p[i], (double)want);
    WT_CHECK(fabs(p[i] - p0[i] * (1.0 - 0.01 * 0.1)) <= 3 * U_F32 * fabs(p0[i]),
             "adamw decay only: p[%d] %.9g vs (1 - lr wd) p", i, (double)p[i]);
  }
}

/* grad_scale 0.5 on g is bitwise the same step as scale 1 on g / 2 (halving is exact). */
static void test_adamw_grad_scale(weft_kernel_ctx_t *ctx) {
  enum { N = 1000 };
  float *g = rand_floats(N, 4.0f), *half = FALLOC(N), *p[2], *m[2], *v[2];
  for (int i = 0; i < N; i++) half[i] = 0.5f * g[i];
  float *p0 = rand_floats(N, 1.0f), *m0 = rand_floats(N, 0.1f), *v0 = rand_floats(N, 0.01f);
  for (int i = 0; i < N; i++) v0[i] = fabsf(v0[i]);
  for (int r = 0; r < 2; r++) {
    p[r] = FALLOC(N), m[r] = FALLOC(N), v[r] = FALLOC(N);
    memcpy(p[r], p0, N * sizeof(float)), memcpy(m[r], m0, N * sizeof(float));
    memcpy(v[r], v0, N * sizeof(float));
    weft_adamw_params_t hp = {.lr = 3e-4f,
                              .beta1 = 0.9f,
                              .beta2 = 0.95f,
                              .eps = 1e-8f,
                              .weight_decay = 0.01f,
                              .step = 12,
                              .grad_scale = r ? 1.0f : 0.5f};
    WT_CHECK_OK(weft_adamw_step(ctx, &hp, N, p[r], r ? half : g, m[r], v[r]));
  }
  WT_CHECK(memcmp(p[0], p[1], N * sizeof(float)) == 0 &&
               memcmp(m[0], m[1], N * sizeof(float)) == 0 &&
               memcmp(v[0], v[1], N * sizeof(float)) == 0,
           "adamw: grad_scale 0.5 differs from a halved gradient");
  for (int r = 0; r < 2; r++) free(p[r]), free(m[r]), free(v[r]);
  free(g), free(half), free(p0), free(m0), free(v0);
}

/* ---- sum of squares ---- */

static double blocked_sumsq(const float *x, int64_t n) {
  int64_t chunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
  double total = 0.0;
  for (int64_t first = 0; first < chunks; first += SUMSQ_ROUND) {
    double round_sum = 0.0;
    for (int64_t c = first; c < chunks && c < first + SUMSQ_ROUND; c++) {
      double s[SUMSQ_LANES] = {0};
      for (int64_t i = c * SUMSQ_CHUNK; i < n && i < (c + 1) * SUMSQ_CHUNK; i++)
        s[i % SUMSQ_LANES] += (double)x[i] * (double)x[i];
      round_sum += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
    total += round_sum;
  }
  return total;
}

static void test_sumsq(weft_kernel_ctx_t *ctx, int64_t n) {
  float *x = rand_floats((size_t)n, 3.0f);
  double got = -1.0;
  WT_CHECK_OK(weft_sumsq(ctx, n, x, &got));
  long double exact = 0.0L;
  for (int64_t i = 0; i < n; i++) exact += (long double)x[i] * x[i];
  double want = blocked_sumsq(x, n), rounds = (double)((n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK) / 1024;
  double bound = (SUMSQ_CHUNK / SUMSQ_LANES + 3 + SUMSQ_ROUND + ceil(rounds)) * 0x1p-53;
  WT_CHECK(memcmp(&got, &want, sizeof got) == 0, "sumsq n=%lld: %.17g, blocked order %.17g",
           (long long)n, got, want);
  double ratio = n ? fabs(got - (double)exact) / (bound * (double)exact) : (got == 0 ? 0 : 1e9);
  note(C_SUMSQ, ratio);
  WT_CHECK(ratio <= 1.0, "sumsq n=%lld: %.17g vs %.17Lg: %.3g x the bound", (long long)n, got,
           exact, ratio);
  free(x);
}

/* ---- thread count ---- */

static void test_threads(weft_kernel_ctx_t *ctx) {
  enum {
    T = 2048,
    V = 256,
    N = (1 << 20) + 3,
    NS = SUMSQ_CHUNK * SUMSQ_ROUND + 3 * SUMSQ_CHUNK + 77
  };
  int saved = weft_kernels_cpu_threads();
  float *z = rand_floats(T * V, 5.0f), *g = rand_floats(N, 1.0f), *x = rand_floats(NS, 1.0f);
  int32_t *y = xalloc(T * sizeof(int32_t));
  for (int t = 0; t < T; t++) y[t] = t % 7 == 0 ? -1 : (int32_t)(kt_rand_u64(&g_rng) % V);
  float *out[2][5];
  double sum[2];
  for (int r = 0; r < 2; r++) {
    weft_kernels_set_cpu_threads(r == 0 ? 1 : 4);
    float *loss = out[r][0] = FALLOC(T), *lse = out[r][1] = FALLOC(T);
    float *dz = out[r][2] = FALLOC(T * V), *p = out[r][3] = FALLOC(N);
    float *mv = out[r][4] = FALLOC(2 * N);
    WT_CHECK_OK(weft_cross_entropy_forward(ctx, T, V, z, y, loss, lse));
    WT_CHECK_OK(weft_cross_entropy_backward(ctx, T, V, z, y, lse, 1.0f / T, dz));
    weft_adamw_params_t hp = {.lr = 1e-3f,
                              .beta1 = 0.9f,
                              .beta2 = 0.95f,
                              .eps = 1e-8f,
                              .weight_decay = 0.1f,
                              .step = 1,
                              .grad_scale = 0.8f};
    for (hp.step = 1; hp.step <= 3; hp.step++)
      WT_CHECK_OK(weft_adamw_step(ctx, &hp, N, p, g, mv, mv + N));
    WT_CHECK_OK(weft_sumsq(ctx, NS, x, &sum[r]));
  }
  const size_t sizes[5] = {T, T, (size_t)T * V, N, 2 * (size_t)N};
  static const char *const names[5] = {"loss", "lse", "dlogits", "adamw param", "adamw m/v"};
  for (int i = 0; i < 5; i++)
    WT_CHECK(memcmp(out[0][i], out[1][i], sizes[i] * sizeof(float)) == 0,
             "threads: %s differs between 1 and 4 threads", names[i]);
  WT_CHECK(memcmp(&sum[0], &sum[1], sizeof(double)) == 0,
           "threads: sumsq %.17g (1 thread) vs %.17g (4)", sum[0], sum[1]);
  weft_kernels_set_cpu_threads(saved);
  for (int r = 0; r < 2; r++)
    for (int i = 0; i < 5; i++) free(out[r][i]);
  free(z), free(g), free(x), free(y);
}

/* ---- invalid arguments ---- */

static void test_invalid(weft_kernel_ctx_t *ctx) {
  static float f[256];
  int32_t y[4] = {0, 1, -1, 2};
  const weft_status_t bad = WEFT_ERR_INVALID_ARG;
  /* cross-entropy: 4 rows of 8 logits in f[0..32), loss f[64..68), lse f[72..76) */
  WT_CHECK_OK(weft_cross_entropy_forward(ctx, 4, 8, f, y, f + 64, f + 72));
  WT_CHECK_OK(weft_cross_entropy_forward(ctx, 0, 8, NULL, NULL, NULL, NULL));
  WT_CHECK_STATUS(weft_cross_entropy_forward(NULL, 4, 8, f, y, f + 64, f + 72), bad);
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, -1, 8, f, y, f + 64, f + 72), bad);
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, 4, 0, f, y, f + 64, f + 72), bad);
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, 4, 8, NULL, y, f + 64, f + 72), bad);
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, 4, 8, f, NULL, f + 64, f + 72), bad);
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, 4, 8, f, y, NULL, f + 72), bad);
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, 4, 8, f, y, f + 64, NULL), bad);
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, 4, 8, f, y, f + 64, f + 66), bad); /* overlap */
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, 4, 8, f, y, f + 30, f + 72), bad); /* on z */
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, INT64_MAX / 2, 8, f, y, f + 64, f + 72), bad);
  y[3] = 8; /* target == V */
  WT_CHECK_STATUS(weft_cross_entropy_forward(ctx, 4, 8, f, y, f + 64, f + 72), bad);
  WT_CHECK_STATUS(weft_cross_entropy_backward(ctx, 4, 8, f, y, f + 72, 1.0f, f + 128), bad);
  y[3] = 2;
  WT_CHECK_OK(weft_cross_entropy_backward(ctx, 4, 8, f, y, f + 72, 1.0f, f + 128));
  WT_CHECK_OK(weft_cross_entropy_backward(ctx, 4, 8, f, y, f + 72, 1.0f, f)); /* in place */
  WT_CHECK_STATUS(weft_cross_entropy_backward(ctx, 4, 8, f, y, f + 72, NAN, f + 128), bad);
  WT_CHECK_STATUS(weft_cross_entropy_backward(ctx, 4, 8, f, y, f + 72, INFINITY, f + 128), bad);
  WT_CHECK_STATUS(weft_cross_entropy_backward(ctx, 4, 8, f, y, f + 72, 1.0f, f + 1), bad);
  WT_CHECK_STATUS(weft_cross_entropy_backward(ctx, 4, 8, f, y, f + 140, 1.0f, f + 128), bad);
  WT_CHECK_STATUS(weft_cross_entropy_backward(ctx, 4, 8, f, y, NULL, 1.0f, f + 128), bad);
  WT_CHECK_STATUS(weft_cross_entropy_backward(ctx, 4, 8, f, y, f + 72, 1.0f, NULL), bad);
  /* AdamW: param f[0..8), grad f[8..16), m f[16..24), v f[24..32) */
  for (int i = 0; i < 32; i++) f[i] = 0.5f;
  const weft_adamw_params_t ok = {.lr = 1e-3f,
                                  .beta1 = 0.9f,
                                  .beta2 = 0.999f,
                                  .eps = 1e-8f,
                                  .weight_decay = 0.1f,
                                  .step = 1,
                                  .grad_scale = 1.0f};
  WT_CHECK_OK(weft_adamw_step(ctx, &ok, 8, f, f + 8, f + 16, f + 24));
  WT_CHECK_OK(weft_adamw_step(ctx, &ok, 0, NULL, NULL, NULL, NULL));
  weft_adamw_params_t hp[12];
  for (int i = 0; i < 12; i++) hp[i] = ok;
  hp[0].step = 0, hp[1].beta1 = 1.0f, hp[2].beta2 = -0.1f, hp[3].beta1 = NAN, hp[4].eps = 0.0f;
  hp[5].eps = INFINITY, hp[6].lr = -1e-3f, hp[7].lr = INFINITY, hp[8].weight_decay = NAN;
  hp[9].weight_decay = -0.1f, hp[10].grad_scale = INFINITY, hp[11].grad_scale = -1.0f;
  for (int i = 0; i < 12; i++)
    WT_CHECK_STATUS(weft_adamw_step(ctx, &hp[i], 8, f, f + 8, f + 16, f + 24), bad);
  WT_CHECK_STATUS(weft_adamw_step(ctx, NULL, 8, f, f + 8, f + 16, f + 24), bad);
  WT_CHECK_STATUS(weft_adamw_step(NULL, &ok, 8, f, f + 8, f + 16, f + 24), bad);
  WT_CHECK_STATUS(weft_adamw_step(ctx, &ok, -1, f, f + 8, f + 16, f + 24), bad);
  WT_CHECK_STATUS(weft_adamw_step(ctx, &ok, 8, f, NULL, f + 16, f + 24), bad);
  WT_CHECK_STATUS(weft_adamw_step(ctx, &ok, 8, f, f + 8, f + 16, NULL), bad);
  WT_CHECK_STATUS(weft_adamw_step(ctx, &ok, 8, f, f + 8, f + 16, f + 20), bad); /* m over v */
  WT_CHECK_STATUS(weft_adamw_step(ctx, &ok, 8, f, f, f + 16, f + 24), bad);     /* p is grad */
  /* sumsq */
  double sum = -1.0;
  WT_CHECK_OK(weft_sumsq(ctx, 0, NULL, &sum));
  WT_CHECK(sum == 0.0, "sumsq of nothing is %g", sum);
  WT_CHECK_STATUS(weft_sumsq(ctx, 8, NULL, &sum), bad);
  WT_CHECK_STATUS(weft_sumsq(ctx, 8, f, NULL), bad);
  WT_CHECK_STATUS(weft_sumsq(ctx, -8, f, &sum), bad);
  WT_CHECK_STATUS(weft_sumsq(NULL, 8, f, &sum), bad);
}

int main(void) {
  weft_device_t *cpu = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &cpu));
  if (cpu) WT_CHECK_OK(weft_kernel_ctx_create(cpu, NULL, &ctx));
  if (!ctx) return weft_test_exit_code("test_train_ops");

  test_ce(ctx, 64, 256, 4.0f, 0.0f, 0.2);  /* the byte-level vocabulary */
  test_ce(ctx, 9, 1001, 8.0f, 0.0f, 0.2);  /* odd V */
  test_ce(ctx, 3, 1, 4.0f, 0.0f, 0.0);     /* V = 1: loss and gradient 0 */
  test_ce(ctx, 8, 37, 5.0f, 1e4f, 0.0);    /* large offsets: lse ~ +-1e4 */
  test_ce(ctx, 8, 37, 1e30f, 0.0f, 0.0);   /* logits up to 1e30: exp of any would overflow */
  test_ce(ctx, 8, 37, 30.0f, 90.0f, 0.0);  /* expf(90) overflows f32 without the max shift */
  test_ce(ctx, 5, 256, 4.0f, 0.0f, 1.0);   /* every row unlabelled */
  test_ce(ctx, 300, 256, 4.0f, 0.0f, 0.3); /* rows split across threads (when there are any) */
  test_ce_fd(ctx);
  test_adamw_chain(ctx, 1000, 0.9f, 0.999f, 0.1f);
  test_adamw_chain(ctx, 333, 0.5f, 0.95f, 0.0f);
  test_adamw_chain(ctx, 100, 0.0f, 0.3f, 0.01f); /* beta1 = 0; 1 - 0.3f rounds */
  test_adamw_bias_correction(ctx);
  test_adamw_weight_decay(ctx);
  test_adamw_grad_scale(ctx);
  const int64_t sizes[] = {1, 7, 8, 8193, 3 * 8192 + 5, 100000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) test_sumsq(ctx, sizes[i]);
  test_sumsq(ctx, (int64_t)SUMSQ_CHUNK * SUMSQ_ROUND + 12345); /* two rounds */
  test_threads(ctx);
  test_invalid(ctx);

  printf("largest error / tolerance:");
  for (int c = 0; c < C_COUNT; c++) printf(" %s %.3g", g_cat_name[c], g_worst[c]);
  printf("\n");
  weft_kernel_ctx_destroy(ctx);
  weft_device_close(cpu);
  return weft_test_exit_code("test_train_ops");
}
