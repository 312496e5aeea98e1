/* CPU RMSNorm, RoPE and embedding kernels (weft/rmsnorm.h, weft/rope.h, weft/embedding.h)
 * against plain reference loops in double.
 *
 * A float result x is compared with its double reference r over a whole tensor as
 *   max_e |x_e - r_e| <= TOL * max_e |r_e|
 * Tolerances follow from the f32 roundings on the path to each value, with a margin of ~5-10x:
 *   TOL_RMS_FWD  1e-6  rstd (one rounding of a double result), y (two more products)
 *   TOL_RMS_BWD  2e-6  dx: g, xhat, m, a product, a difference, a product (~6 roundings of
 *                      terms no larger than the result's scale); dw: xhat rounded, sums in
 *                      double, one final rounding (rows of random sign: cancellation ~sqrt(N))
 *   TOL_FD       1e-5  kernel dx, dw vs central differences of the double loss sum dy * y
 *   TOL_FD_REF   1e-8  the closed form in double vs those differences (h = 1e-4: truncation
 *                      ~h^2 = 1e-8 of a smooth O(1) function is the bound, cancellation 1e-12)
 *   TOL_ROPE     1e-6  cos, sin rounded to f32 once, then 2 products and a sum: ~4 roundings.
 *                      At p = 1e5 an f32 angle would be off by ~4e-3 rad, an error ~4e-3 here:
 *                      this tolerance is what catches it.
 *   TOL_ROUND    1e-6  forward then inverse vs the original x (two rotations; c^2 + s^2 of
 *                      rounded c, s is 1 within ~2^-23)
 *   TOL_EMB      1e-5  dtable vs a double sum (up to ~90 f32 adds per element)
 * Exact checks: rows with a negative position and p = 0 rows (cos 1, sin 0) are bitwise
 * unchanged; embedding forward rows are bitwise copies; dtable equals, bitwise, an f32 loop
 * adding dy rows in increasing t (the contract's order) and rows of unused ids are untouched;
 * dx == dy (allowed alias) gives the same bits as separate buffers; results at 1 and 4 CPU
 * threads are bitwise equal; a bad id leaves the outputs untouched. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test_common.h"
#include "test_util.h"
#include "weft/device.h"
#include "weft/embedding.h"
#include "weft/kernel_ctx.h"
#include "weft/rmsnorm.h"
#include "weft/rope.h"

#define TOL_RMS_FWD 1e-6
#define TOL_RMS_BWD 2e-6
#define TOL_FD      1e-5
#define TOL_FD_REF  1e-7
#define TOL_ROPE    1e-6
#define TOL_ROUND   1e-6
#define TOL_EMB     1e-5

static uint64_t g_rng = 4242;

/* Largest error / tolerance seen per check family, for the summary line. */
enum { C_RMS_FWD, C_RMS_BWD, C_FD, C_ROPE, C_ROUND, C_EMB, C_COUNT };
static const char *const g_cat_name[C_COUNT] = {"rmsnorm_fwd", "rmsnorm_bwd", "rmsnorm_fd",
                                                "rope",        "rope_round",  "embedding"};
static double g_worst[C_COUNT];

static void *xalloc(size_t bytes) { return kt_xalloc(bytes); }
#define FALLOC(n) ((float *)xalloc((size_t)(n) * sizeof(float)))
#define DALLOC(n) ((double *)xalloc((size_t)(n) * sizeof(double)))

static float *rand_floats(size_t n, float scale) { return kt_rand_floats(&g_rng, n, scale); }

static float *dup_floats(const float *src, size_t n) {
  float *p = FALLOC(n);
  memcpy(p, src, n * sizeof(float));
  return p;
}

static int rand_int(int lo, int hi) { /* in [lo, hi) */
  return lo + (int)(kt_rand_u64(&g_rng) % (uint64_t)(hi - lo));
}

/* max |x - r| <= tol * scale over n elements; scale <= 0 means max |r| */
static void check_scaled(int cat, const char *label, const char *what, const float *x,
                         const double *r, size_t n, double tol, double scale) {
  double err = 0.0;
  size_t at = 0;
  if (scale <= 0.0)
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(r[i]));
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)x[i] - r[i]);
    if (!(e <= err)) err = isnan(e) ? INFINITY : e, at = i;
  }
  double ratio = scale > 0 ? err / (tol * scale) : (err == 0 ? 0 : INFINITY);
  if (ratio > g_worst[cat]) g_worst[cat] = ratio;
  WT_CHECK(ratio <= 1.0, "%s %s[%zu] = %.9g, reference %.9g: error %.3g > %.1g x scale %.3g", label,
           what, at, n ? (double)x[at] : 0.0, n ? r[at] : 0.0, err, tol, scale);
}

/* max |x - r| <= tol * max |r| over n elements of a tensor */
static void check_close(int cat, const char *label, const char *what, const float *x,
                        const double *r, size_t n, double tol) {
  check_scaled(cat, label, what, x, r, n, tol, 0.0);
}

/* ---- RMSNorm ---- */

static double ref_rstd(const double *x, int64_t d, double eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < d; i++) ss += x[i] * x[i];
  return 1.0 / sqrt(ss / (double)d + eps);
}

/* L = sum dy * y(x, w) in double, for the finite differences. */
static double ref_rms_loss(int64_t N, int64_t d, double eps, const double *x, const double *w,
                           const float *dy) {
  double loss = 0.0;
  for (int64_t r = 0; r < N; r++) {
    double rs = ref_rstd(x + r * d, d, eps);
    for (int64_t i = 0; i < d; i++) loss += dy[r * d + i] * x[r * d + i] * rs * w[i];
  }
  return loss;
}

/* Closed-form gradients in double (weft/rmsnorm.h); dw is overwritten with the row sum. */
static void ref_rms_backward(int64_t N, int64_t d, double eps, const double *x, const double *w,
                             const float *dy, double *dx, double *dw) {
  for (int64_t i = 0; i < d; i++) dw[i] = 0.0;
  for (int64_t r = 0; r < N; r++) {
    const double *xr = x + r * d;
    double rs = ref_rstd(xr, d, eps), m = 0.0;
    for (int64_t i = 0; i < d; i++) m += w[i] * dy[r * d + i] * xr[i] * rs;
    m /= (double)d;
    for (int64_t i = 0; i < d; i++) {
      dx[r * d + i] = rs * (w[i] * dy[r * d + i] - xr[i] * rs * m);
      dw[i] += dy[r * d + i] * xr[i] * rs;
    }
  }
}

static void test_rmsnorm(weft_kernel_ctx_t *ctx, int64_t N, int64_t d, float eps, bool fd) {
  char label[96];
  snprintf(label, sizeof label, "rmsnorm N=%lld d=%lld eps=%g", (long long)N, (long long)d,
           (double)eps);
  size_t n = (size_t)(N * d);
  float *x = rand_floats(n, 2.0f), *w = rand_floats((size_t)d, 1.5f), *dy = rand_floats(n, 1.0f);
  if (N > 1) /* row scales 1e3 and 1e-3: rstd must follow */
    for (int64_t i = 0; i < d; i++) x[i] *= 1e3f, x[d + i] *= 1e-3f;
  float *y = FALLOC(n), *rstd = FALLOC(N), *dx = FALLOC(n), *dw0 = rand_floats((size_t)d, 1.0f);
  double dx_scale[3] = {0}; /* per row group: rows 0, 1, 2.. */
  float *dw = dup_floats(dw0, (size_t)d);
  double *xd = DALLOC(n), *wd = DALLOC(d), *ry = DALLOC(n), *rr = DALLOC(N), *rdx = DALLOC(n);
  double *rdw = DALLOC(d);
  for (size_t e = 0; e < n; e++) xd[e] = x[e];
  for (int64_t i = 0; i < d; i++) wd[i] = w[i];
  WT_CHECK_OK(weft_rmsnorm_forward(ctx, N, d, eps, x, w, y, rstd));
  for (int64_t r = 0; r < N; r++) {
    rr[r] = ref_rstd(xd + r * d, d, eps);
    for (int64_t i = 0; i < d; i++) ry[r * d + i] = xd[r * d + i] * rr[r] * wd[i];
  }
  /* rstd relative per row (rows differ in scale by 1e6) */
  for (int64_t r = 0; r < N; r++) {
    double one = 1.0;
    float q = (float)((double)rstd[r] / rr[r]);
    check_close(C_RMS_FWD, label, "rstd / reference", &q, &one, 1, TOL_RMS_FWD);
  }
  check_close(C_RMS_FWD, label, "y", y, ry, n, TOL_RMS_FWD);

  WT_CHECK_OK(weft_rmsnorm_backward(ctx, N, d, x, w, rstd, dy, dx, dw));
  ref_rms_backward(N, d, eps, xd, wd, dy, rdx, rdw);
  double *rdw_acc = DALLOC(d);
  for (int64_t i = 0; i < d; i++) rdw_acc[i] = (double)dw0[i] + rdw[i];
  /* dx is a difference of terms of size rstd |w dy|: rows 0, 1 (scaled by 1e3, 1e-3) are
   * checked alone, the rest together, each against that scale (with d = 1 the difference
   * cancels to ~eps / x^2 of it, so max |ref| would be no measure) */
  for (int64_t r0 = 0; r0 < N;) {
    int64_t r1 = r0 < 2 ? r0 + 1 : N;
    double scale = 0.0;
    for (int64_t r = r0; r < r1; r++)
      for (int64_t i = 0; i < d; i++) scale = fmax(scale, rr[r] * fabs(wd[i] * dy[r * d + i]));
    char what[48];
    snprintf(what, sizeof what, "dx rows %lld..%lld", (long long)r0, (long long)r1 - 1);
    check_scaled(C_RMS_BWD, label, what, dx + r0 * d, rdx + r0 * d, (size_t)((r1 - r0) * d),
                 TOL_RMS_BWD, scale);
    dx_scale[r0 < 2 ? r0 : 2] = scale; /* reused by the finite differences */
    r0 = r1;
  }
  check_close(C_RMS_BWD, label, "dw (accumulated)", dw, rdw_acc, (size_t)d, TOL_RMS_BWD);

  /* dx aliasing dy: the same bits */
  float *alias = dup_floats(dy, n), *dw2 = dup_floats(dw0, (size_t)d);
  WT_CHECK_OK(weft_rmsnorm_backward(ctx, N, d, x, w, rstd, alias, alias, dw2));
  WT_CHECK(memcmp(alias, dx, n * sizeof(float)) == 0 && memcmp(dw2, dw, (size_t)d * 4) == 0,
           "%s: dx == dy gives different results", label);

  if (fd) { /* central differences of L = sum dy * y; dx from row r's own loss, step h scaled to
             * the row (rows 0, 1 differ in scale by 1e6), dw from zero */
    double *fdx = DALLOC(n), *fdw = DALLOC(d), worst = 0.0, fmax_ = 0.0;
    for (int64_t r = 0; r < N; r++) {
      double *xr = xd + r * d, h = 0.0;
      for (int64_t i = 0; i < d; i++) h = fmax(h, 1e-4 * fabs(xr[i]));
      for (int64_t i = 0; i < d; i++) {
        double x0 = xr[i];
        xr[i] = x0 + h;
        double up = ref_rms_loss(1, d, eps, xr, wd, dy + r * d);
        xr[i] = x0 - h;
        double down = ref_rms_loss(1, d, eps, xr, wd, dy + r * d);
        xr[i] = x0;
        fdx[r * d + i] = (up - down) / (2 * h);
      }
    }
    const double h = 1e-4; /* L is linear in w: no truncation error */
    for (int64_t i = 0; i < d; i++) {
      double w0 = wd[i];
      wd[i] = w0 + h;
      double up = ref_rms_loss(N, d, eps, xd, wd, dy);
      wd[i] = w0 - h;
      double down = ref_rms_loss(N, d, eps, xd, wd, dy);
      wd[i] = w0;
      fdw[i] = (up - down) / (2 * h);
    }
    memset(dw2, 0, (size_t)d * sizeof(float));
    WT_CHECK_OK(weft_rmsnorm_backward(ctx, N, d, x, w, rstd, dy, dx, dw2));
    for (int64_t r0 = 0; r0 < N; r0 = r0 < 2 ? r0 + 1 : N) {
      int64_t r1 = r0 < 2 ? r0 + 1 : N;
      check_scaled(C_FD, label, "dx vs finite differences", dx + r0 * d, fdx + r0 * d,
                   (size_t)((r1 - r0) * d), TOL_FD, dx_scale[r0 < 2 ? r0 : 2]);
    }
    check_close(C_FD, label, "dw vs finite differences", dw2, fdw, (size_t)d, TOL_FD);
    for (int64_t r = 0; r < N; r++) { /* each row against its own term scale */
      worst = 0.0, fmax_ = dx_scale[r < 2 ? r : 2];
      for (int64_t i = 0; i < d; i++) worst = fmax(worst, fabs(rdx[r * d + i] - fdx[r * d + i]));
      WT_CHECK(worst <= TOL_FD_REF * fmax_,
               "%s: closed-form dx row %lld vs finite differences %.3g > %.3g", label, (long long)r,
               worst, TOL_FD_REF * fmax_);
    }
    free(fdx), free(fdw);
  }
  free(x), free(w), free(dy), free(y), free(rstd), free(dx), free(dw0), free(dw), free(xd);
  free(wd), free(ry), free(rr), free(rdx), free(rdw), free(rdw_acc), free(alias);
  free(dw2);
}

/* ---- RoPE ---- */

/* x [n, H, d] rotated in double by sign * p * theta_i, from the f32 input. */
static void ref_rope(int64_t n, int64_t H, int64_t d, double base, const int64_t *pos, bool inverse,
                     const float *x, double *out) {
  for (int64_t t = 0; t < n; t++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < d / 2; i++) {
        int64_t o = (t * H + h) * d + 2 * i;
        double x0 = x[o], x1 = x[o + 1];
        if (pos[t] < 0) {
          out[o] = x0, out[o + 1] = x1;
          continue;
        }
        double a = (double)pos[t] * pow(base, -2.0 * (double)i / (double)d);
        double c = cos(a), s = inverse ? -sin(a) : sin(a);
        out[o] = x0 * c - x1 * s;
        out[o + 1] = x0 * s + x1 * c;
      }
}

static void test_rope(weft_kernel_ctx_t *ctx, int64_t n, int64_t H, int64_t d, double base) {
  char label[96];
  snprintf(label, sizeof label, "rope n=%lld H=%lld d=%lld base=%g", (long long)n, (long long)H,
           (long long)d, base);
  size_t ne = (size_t)(n * H * d), row = (size_t)(H * d);
  int64_t *pos = xalloc((size_t)n * sizeof(int64_t));
  /* global positions: zigzag-like chunks, large ones, 0 and padding (-1, INT64_MIN) */
  static const int64_t special[] = {100000, 0, -1, 99999, 524287, 123457, INT64_MIN, 1000003};
  for (int64_t t = 0; t < n; t++)
    pos[t] = t < 8 ? special[t] : (t % 3 == 0 ? 65536 + 7 * t : rand_int(0, 200000));
  float *x0 = rand_floats(ne, 3.0f), *x = dup_floats(x0, ne);
  double *ref = DALLOC(ne), *x0d = DALLOC(ne);
  for (size_t e = 0; e < ne; e++) x0d[e] = x0[e];
  for (int inv = 0; inv < 2; inv++) {
    memcpy(x, x0, ne * sizeof(float));
    WT_CHECK_OK(weft_rope_apply(ctx, n, H, d, base, pos, inv, x));
    ref_rope(n, H, d, base, pos, inv, x0, ref);
    check_close(C_ROPE, label, inv ? "inverse" : "forward", x, ref, ne, TOL_ROPE);
    for (int64_t t = 0; t < n; t++)
      if (pos[t] <= 0) /* padding untouched; p = 0 is cos 1, sin 0: exact */
        WT_CHECK(memcmp(x + t * row, x0 + t * row, row * sizeof(float)) == 0,
                 "%s: row %lld (pos %lld) changed", label, (long long)t, (long long)pos[t]);
    /* then the other direction restores x */
    WT_CHECK_OK(weft_rope_apply(ctx, n, H, d, base, pos, !inv, x));
    check_close(C_ROUND, label, inv ? "inverse then forward" : "forward then inverse", x, x0d, ne,
                TOL_ROUND);
  }
  free(pos), free(x0), free(x), free(ref), free(x0d);
}

/* ---- embedding ---- */

static void test_embedding(weft_kernel_ctx_t *ctx, int64_t n, int64_t V, int64_t d, int skew) {
  char label[96];
  snprintf(label, sizeof label, "embedding n=%lld V=%lld d=%lld skew=%d", (long long)n,
           (long long)V, (long long)d, skew);
  size_t nd = (size_t)(n * d), vd = (size_t)(V * d);
  float *table = rand_floats(vd, 1.0f), *dy = rand_floats(nd, 1.0f), *y = FALLOC(nd);
  float *dt0 = rand_floats(vd, 0.5f), *dt = dup_floats(dt0, vd), *order = dup_floats(dt0, vd);
  int32_t *ids = xalloc((size_t)n * sizeof(int32_t));
  /* skew 0: uniform; 1: most tokens on id 1, id 0 and the last id never used */
  for (int64_t t = 0; t < n; t++)
    ids[t] = skew ? (t % 5 ? 1 : (int32_t)(1 + rand_int(0, (int)(V > 2 ? V - 2 : 1))))
                  : (int32_t)rand_int(0, (int)V);
  WT_CHECK_OK(weft_embedding_forward(ctx, n, V, d, table, ids, y));
  for (int64_t t = 0; t < n; t++)
    WT_CHECK(memcmp(y + t * d, table + (int64_t)ids[t] * d, (size_t)d * 4) == 0,
             "%s: y row %lld is not table row %d", label, (long long)t, ids[t]);
  WT_CHECK_OK(weft_embedding_backward(ctx, n, V, d, ids, dy, dt));
  double *ref = DALLOC(vd);
  for (size_t e = 0; e < vd; e++) ref[e] = dt0[e];
  for (int64_t t = 0; t < n; t++)
    for (int64_t c = 0; c < d; c++) {
      ref[(int64_t)ids[t] * d + c] += dy[t * d + c];
      order[(int64_t)ids[t] * d + c] += dy[t * d + c]; /* f32, increasing t */
    }
  check_close(C_EMB, label, "dtable", dt, ref, vd, TOL_EMB);
  WT_CHECK(memcmp(dt, order, vd * sizeof(float)) == 0,
           "%s: dtable differs from f32 adds in increasing t", label);
  if (skew && V > 2)
    WT_CHECK(memcmp(dt, dt0, (size_t)d * 4) == 0 &&
                 memcmp(dt + (V - 1) * d, dt0 + (V - 1) * d, (size_t)d * 4) == 0,
             "%s: rows of unused ids changed", label);
  /* out of range: error, outputs untouched */
  if (n > 0) {
    float *dt_bad = dup_floats(dt0, vd), *y_bad = dup_floats(dy, nd);
    const int32_t bad[] = {(int32_t)V, -1};
    for (int b = 0; b < 2; b++) {
      int32_t keep = ids[n - 1];
      ids[n - 1] = bad[b];
      WT_CHECK_STATUS(weft_embedding_forward(ctx, n, V, d, table, ids, y_bad),
                      WEFT_ERR_INVALID_ARG);
      WT_CHECK_STATUS(weft_embedding_backward(ctx, n, V, d, ids, dy, dt_bad), WEFT_ERR_INVALID_ARG);
      ids[n - 1] = keep;
    }
    WT_CHECK(memcmp(dt_bad, dt0, vd * 4) == 0 && memcmp(y_bad, dy, nd * 4) == 0,
             "%s: a call with a bad id wrote its output", label);
    free(dt_bad), free(y_bad);
  }
  free(table), free(dy), free(y), free(dt0), free(dt), free(order), free(ids), free(ref);
}

/* ---- thread-count independence ---- */

/* Every kernel at 1 and at 4 threads on sizes large enough to split; bitwise equal. */
static void test_threads(weft_kernel_ctx_t *ctx) {
  enum { N = 3000, D = 512, T = 4096, H = 8, HD = 64, NE = 20000, V = 256, DE = 256 };
  int saved = weft_kernels_cpu_threads();
  float *x = rand_floats(N * D, 1.0f), *w = rand_floats(D, 1.0f), *dy = rand_floats(N * D, 1.0f);
  float *q = rand_floats((size_t)T * H * HD, 1.0f), *table = rand_floats(V * DE, 1.0f);
  float *gy = rand_floats((size_t)NE * DE, 1.0f);
  int64_t *pos = xalloc(T * sizeof(int64_t));
  int32_t *ids = xalloc(NE * sizeof(int32_t));
  for (int t = 0; t < T; t++) pos[t] = t % 17 == 0 ? -1 : 3 * t + 100000;
  for (int t = 0; t < NE; t++) ids[t] = t % 3 ? rand_int(0, V) : 32; /* a frequent id */
  float *out[2][6];
  const size_t sizes[6] = {N * D, N, N * D, D, (size_t)T * H * HD, (size_t)V * DE};
  for (int r = 0; r < 2; r++) {
    weft_kernels_set_cpu_threads(r == 0 ? 1 : 4);
    float *y = out[r][0] = FALLOC(N * D), *rs = out[r][1] = FALLOC(N);
    float *dx = out[r][2] = FALLOC(N * D), *dw = out[r][3] = FALLOC(D);
    float *rq = out[r][4] = dup_floats(q, sizes[4]), *dt = out[r][5] = FALLOC(V * DE);
    WT_CHECK_OK(weft_rmsnorm_forward(ctx, N, D, 1e-6f, x, w, y, rs));
    WT_CHECK_OK(weft_rmsnorm_backward(ctx, N, D, x, w, rs, dy, dx, dw));
    WT_CHECK_OK(weft_rope_apply(ctx, T, H, HD, 10000.0, pos, false, rq));
    WT_CHECK_OK(weft_embedding_backward(ctx, NE, V, DE, ids, gy, dt));
  }
  static const char *const names[6] = {"rmsnorm y", "rstd", "dx", "dw", "rope", "dtable"};
  for (int i = 0; i < 6; i++)
    WT_CHECK(memcmp(out[0][i], out[1][i], sizes[i] * sizeof(float)) == 0,
             "threads: %s differs between 1 and 4 threads", names[i]);
  weft_kernels_set_cpu_threads(saved);
  for (int r = 0; r < 2; r++)
    for (int i = 0; i < 6; i++) free(out[r][i]);
  free(x), free(w), free(dy), free(q), free(table), free(gy), free(pos), free(ids);
}

/* ---- invalid arguments ---- */

static void test_invalid(weft_kernel_ctx_t *ctx) {
  static float b[4096];
  static int64_t pos[8];
  static int32_t ids[8];
  const weft_status_t bad = WEFT_ERR_INVALID_ARG;
  float *x = b, *w = b + 100, *y = b + 200, *rs = b + 300, *dy = b + 400, *dx = b + 500;
  float *dw = b + 600;
  for (int i = 0; i < 700; i++) b[i] = 0.5f;
  /* RMSNorm: 2 rows of 8 */
  WT_CHECK_OK(weft_rmsnorm_forward(ctx, 2, 8, 1e-5f, x, w, y, rs));
  WT_CHECK_OK(weft_rmsnorm_forward(ctx, 2, 8, 0.0f, x, w, y, rs));
  WT_CHECK_STATUS(weft_rmsnorm_forward(NULL, 2, 8, 1e-5f, x, w, y, rs), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, -1, 8, 1e-5f, x, w, y, rs), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 2, 0, 1e-5f, x, w, y, rs), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 2, 8, -1e-5f, x, w, y, rs), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 2, 8, NAN, x, w, y, rs), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 2, 8, INFINITY, x, w, y, rs), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 2, 8, 1e-5f, NULL, w, y, rs), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 2, 8, 1e-5f, x, NULL, y, rs), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 2, 8, 1e-5f, x, w, y, NULL), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 2, 8, 1e-5f, x, w, x + 4, rs), bad); /* y over x */
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 2, 8, 1e-5f, x, w, x, rs), bad);
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, INT64_MAX / 2, 8, 1e-5f, x, w, y, rs), bad);
  WT_CHECK_OK(weft_rmsnorm_forward(ctx, 0, 8, 1e-5f, NULL, w, NULL, NULL));
  WT_CHECK_STATUS(weft_rmsnorm_forward(ctx, 0, 8, 1e-5f, NULL, NULL, NULL, NULL), bad); /* w */
  WT_CHECK_OK(weft_rmsnorm_backward(ctx, 2, 8, x, w, rs, dy, dx, dw));
  WT_CHECK_OK(weft_rmsnorm_backward(ctx, 2, 8, x, w, rs, dy, dy, dw)); /* dx == dy allowed */
  WT_CHECK_STATUS(weft_rmsnorm_backward(ctx, 2, 8, x, w, rs, dy, dy + 1, dw), bad);
  WT_CHECK_STATUS(weft_rmsnorm_backward(ctx, 2, 8, x, w, rs, dy, x, dw), bad);
  WT_CHECK_STATUS(weft_rmsnorm_backward(ctx, 2, 8, x, w, rs, dy, dx, w), bad);
  WT_CHECK_STATUS(weft_rmsnorm_backward(ctx, 2, 8, x, w, rs, dy, dx, dx + 8), bad);
  WT_CHECK_STATUS(weft_rmsnorm_backward(ctx, 2, 8, x, w, NULL, dy, dx, dw), bad);
  WT_CHECK_STATUS(weft_rmsnorm_backward(ctx, 2, 8, x, w, rs, dy, dx, NULL), bad);
  WT_CHECK_STATUS(weft_rmsnorm_backward(ctx, 2, -8, x, w, rs, dy, dx, dw), bad);
  WT_CHECK_OK(weft_rmsnorm_backward(ctx, 0, 8, NULL, w, NULL, NULL, NULL, dw));
  /* RoPE: 2 tokens, 2 heads of 4 */
  WT_CHECK_OK(weft_rope_apply(ctx, 2, 2, 4, 10000.0, pos, false, x));
  WT_CHECK_STATUS(weft_rope_apply(NULL, 2, 2, 4, 10000.0, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 2, 3, 10000.0, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 2, 0, 10000.0, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 2, -2, 10000.0, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 0, 4, 10000.0, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, -1, 2, 4, 10000.0, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 2, 4, 1.0, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 2, 4, 0.5, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 2, 4, NAN, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 2, 4, INFINITY, pos, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 2, 4, 10000.0, NULL, false, x), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, 2, 4, 10000.0, pos, true, NULL), bad);
  WT_CHECK_STATUS(weft_rope_apply(ctx, 2, INT64_MAX / 2, 4, 10000.0, pos, false, x), bad);
  WT_CHECK_OK(weft_rope_apply(ctx, 0, 2, 4, 10000.0, NULL, false, NULL));
  /* embedding: 3 tokens, V = 4, d = 5 */
  float *table = b + 1000, *ey = b + 1100, *edy = b + 1200, *dt = b + 1300;
  WT_CHECK_OK(weft_embedding_forward(ctx, 3, 4, 5, table, ids, ey));
  WT_CHECK_STATUS(weft_embedding_forward(NULL, 3, 4, 5, table, ids, ey), bad);
  WT_CHECK_STATUS(weft_embedding_forward(ctx, -1, 4, 5, table, ids, ey), bad);
  WT_CHECK_STATUS(weft_embedding_forward(ctx, 3, 0, 5, table, ids, ey), bad);
  WT_CHECK_STATUS(weft_embedding_forward(ctx, 3, 4, 0, table, ids, ey), bad);
  WT_CHECK_STATUS(weft_embedding_forward(ctx, 3, 4, 5, NULL, ids, ey), bad);
  WT_CHECK_STATUS(weft_embedding_forward(ctx, 3, 4, 5, table, NULL, ey), bad);
  WT_CHECK_STATUS(weft_embedding_forward(ctx, 3, 4, 5, table, ids, NULL), bad);
  WT_CHECK_STATUS(weft_embedding_forward(ctx, 3, 4, 5, table, ids, table + 19), bad);
  WT_CHECK_OK(weft_embedding_forward(ctx, 0, 4, 5, table, NULL, NULL));
  WT_CHECK_STATUS(weft_embedding_forward(ctx, 0, 4, 5, NULL, NULL, NULL), bad);
  WT_CHECK_OK(weft_embedding_backward(ctx, 3, 4, 5, ids, edy, dt));
  WT_CHECK_STATUS(weft_embedding_backward(ctx, 3, 4, 5, ids, edy, NULL), bad);
  WT_CHECK_STATUS(weft_embedding_backward(ctx, 3, 4, 5, NULL, edy, dt), bad);
  WT_CHECK_STATUS(weft_embedding_backward(ctx, 3, 4, 5, ids, edy, edy + 3), bad);
  WT_CHECK_STATUS(weft_embedding_backward(ctx, 3, 4, -5, ids, edy, dt), bad);
  WT_CHECK_OK(weft_embedding_backward(ctx, 0, 4, 5, NULL, NULL, dt));
}

int main(void) {
  weft_device_t *cpu = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &cpu));
  if (cpu) WT_CHECK_OK(weft_kernel_ctx_create(cpu, NULL, &ctx));
  if (!ctx) return weft_test_exit_code("test_layer_ops");

  test_rmsnorm(ctx, 4, 8, 1e-5f, true);
  test_rmsnorm(ctx, 3, 33, 0.0f, true);
  test_rmsnorm(ctx, 1, 1, 1e-6f, true);
  test_rmsnorm(ctx, 37, 1000, 1e-5f, false);
  test_rmsnorm(ctx, 9, 4096, 1e-6f, false);
  test_rmsnorm(ctx, 0, 16, 1e-5f, false);
  const struct {
    int64_t n, H, d;
    double base;
  } ropes[] = {{8, 1, 2, 10000.0},     {20, 3, 2, 10000.0}, {16, 4, 128, 10000.0},
               {40, 2, 128, 500000.0}, {9, 5, 6, 10.0},     {13, 2, 200, 10000.0},
               {0, 2, 8, 10000.0}};
  for (size_t i = 0; i < sizeof ropes / sizeof ropes[0]; i++)
    test_rope(ctx, ropes[i].n, ropes[i].H, ropes[i].d, ropes[i].base);
  test_embedding(ctx, 600, 7, 33, 0);
  test_embedding(ctx, 1000, 256, 64, 1);
  test_embedding(ctx, 50, 1, 3, 0); /* every token the same id */
  test_embedding(ctx, 0, 5, 4, 0);
  test_threads(ctx);
  test_invalid(ctx);

  printf("largest error / tolerance:");
  for (int c = 0; c < C_COUNT; c++) printf(" %s %.3g", g_cat_name[c], g_worst[c]);
  printf("\n");
  weft_kernel_ctx_destroy(ctx);
  weft_device_close(cpu);
  return weft_test_exit_code("test_layer_ops");
}
