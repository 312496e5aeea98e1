/* CUDA RMSNorm, RoPE and embedding kernels against the CPU kernels on the same inputs.
 *
 * Embedding forward and backward must be bitwise equal (row copies; the same f32 adds in
 * increasing t on both devices, see kernels/cuda/embedding.cu). The rest is compared as
 *   max |cuda - cpu| <= TOL * max |cpu|   over each tensor
 * with TOL_RMS = 1e-6 (rstd, y, dx, dw: the devices sum in double in different orders, so the
 * f32 results differ by an ulp at most, and rarely) and TOL_ROPE = 1e-6 (CUDA's double pow and
 * sincos may round an f32 cos/sin differently from glibc's by an ulp, rarely). The number of
 * elements that are not bitwise equal is printed for information. RMSNorm dx is compared with
 * dx == dy too. Exits 77 (skipped) when the build has no CUDA backend or no GPU is visible. */
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

#define TOL_RMS  1e-6
#define TOL_ROPE 1e-6

static weft_device_t *g_gpu;
static weft_kernel_ctx_t *g_gctx;
static uint64_t g_rng = 99;

/* This file's views of the shared helpers (kernel_test_common.h). */
static void *xalloc(size_t bytes) { return kt_xalloc(bytes); }
static float *rand_floats(size_t n, float scale) { return kt_rand_floats(&g_rng, n, scale); }
static void *to_gpu(const void *host, size_t bytes) { return kt_to_gpu(g_gpu, host, bytes); }
static void *from_gpu(const void *dev, size_t bytes) { return kt_from_gpu(g_gpu, dev, bytes); }

/* max |gpu - cpu| <= tol * max |cpu|; tol = 0 demands equal bits. */
static void compare(const char *label, const char *what, const float *cpu, const float *gpu,
                    size_t n, double tol) {
  double cmax = 0.0, err = 0.0;
  size_t at = 0, differ = 0;
  for (size_t i = 0; i < n; i++) {
    cmax = fmax(cmax, fabs(cpu[i]));
    differ += memcmp(cpu + i, gpu + i, sizeof(float)) != 0;
  }
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)gpu[i] - cpu[i]);
    if (!(e <= err)) err = isnan(e) ? INFINITY : e, at = i;
  }
  if (tol == 0.0)
    WT_CHECK(differ == 0, "%s %s: %zu of %zu elements differ (must be bitwise equal)", label, what,
             differ, n);
  else
    WT_CHECK(err <= tol * cmax, "%s %s: [%zu] cpu %.9g cuda %.9g: |diff| %.3g > %.1g x max %.3g",
             label, what, at, n ? (double)cpu[at] : 0.0, n ? (double)gpu[at] : 0.0, err, tol, cmax);
  printf("%s %s: max |diff| / max |cpu| = %.3g, %zu of %zu not bitwise equal\n", label, what,
         cmax > 0 ? err / cmax : err, differ, n);
}

static void test_rmsnorm(weft_kernel_ctx_t *cctx, int64_t N, int64_t d) {
  char label[64];
  snprintf(label, sizeof label, "rmsnorm N=%lld d=%lld", (long long)N, (long long)d);
  size_t n = (size_t)(N * d), nb = n * 4, db = (size_t)d * 4, rb = (size_t)N * 4;
  float *x = rand_floats(n, 2.0f), *w = rand_floats((size_t)d, 1.0f), *dy = rand_floats(n, 1.0f);
  float *dw0 = rand_floats((size_t)d, 1.0f), *dw = xalloc(db), *y = xalloc(nb), *rs = xalloc(rb);
  float *dx = xalloc(nb);
  memcpy(dw, dw0, db);
  WT_CHECK_OK(weft_rmsnorm_forward(cctx, N, d, 1e-5f, x, w, y, rs));
  WT_CHECK_OK(weft_rmsnorm_backward(cctx, N, d, x, w, rs, dy, dx, dw));
  float *d_x = to_gpu(x, nb), *d_w = to_gpu(w, db), *d_y = to_gpu(NULL, nb);
  float *d_rs = to_gpu(NULL, rb), *d_dy = to_gpu(dy, nb), *d_dx = to_gpu(NULL, nb);
  float *d_dw = to_gpu(dw0, db);
  WT_CHECK_OK(weft_rmsnorm_forward(g_gctx, N, d, 1e-5f, d_x, d_w, d_y, d_rs));
  float *g_y = from_gpu(d_y, nb), *g_rs = from_gpu(d_rs, rb);
  compare(label, "y", y, g_y, n, TOL_RMS);
  compare(label, "rstd", rs, g_rs, (size_t)N, TOL_RMS);
  /* backward on the CPU's rstd, so both see the same inputs */
  WT_CHECK_OK(weft_device_copy(g_gpu, d_rs, rs, rb, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_rmsnorm_backward(g_gctx, N, d, d_x, d_w, d_rs, d_dy, d_dx, d_dw));
  float *g_dx = from_gpu(d_dx, nb), *g_dw = from_gpu(d_dw, db);
  compare(label, "dx", dx, g_dx, n, TOL_RMS);
  compare(label, "dw (accumulated)", dw, g_dw, (size_t)d, TOL_RMS);
  /* dx == dy: same as separate buffers, and dw accumulates a second time */
  WT_CHECK_OK(weft_rmsnorm_backward(g_gctx, N, d, d_x, d_w, d_rs, d_dy, d_dy, d_dw));
  float *g_dx2 = from_gpu(d_dy, nb);
  WT_CHECK(memcmp(g_dx, g_dx2, nb) == 0, "%s: dx == dy differs from separate buffers", label);
  void *dev[] = {d_x, d_w, d_y, d_rs, d_dy, d_dx, d_dw};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) weft_device_free(g_gpu, dev[i]);
  free(x), free(w), free(dy), free(dw0), free(dw), free(y), free(rs), free(dx);
  free(g_y), free(g_rs), free(g_dx), free(g_dw), free(g_dx2);
}

static void test_rope(weft_kernel_ctx_t *cctx, int64_t T, int64_t H, int64_t d, double base) {
  char label[80];
  snprintf(label, sizeof label, "rope T=%lld H=%lld d=%lld base=%g", (long long)T, (long long)H,
           (long long)d, base);
  size_t n = (size_t)(T * H * d);
  int64_t *pos = xalloc((size_t)T * sizeof(int64_t));
  for (int64_t t = 0; t < T; t++) /* zigzag-like chunks far out, and padding */
    pos[t] = t % 11 == 5 ? -1 : (t % 2 ? 100000 + t : 1000000 - 3 * t);
  float *x = rand_floats(n, 2.0f), *cpu = xalloc(n * 4);
  float *d_x = to_gpu(x, n * 4);
  int64_t *d_pos = to_gpu(pos, (size_t)T * sizeof(int64_t));
  for (int inv = 0; inv < 2; inv++) {
    memcpy(cpu, x, n * 4);
    WT_CHECK_OK(weft_rope_apply(cctx, T, H, d, base, pos, inv, cpu));
    WT_CHECK_OK(weft_device_copy(g_gpu, d_x, x, n * 4, WEFT_COPY_HOST_TO_DEVICE));
    WT_CHECK_OK(weft_rope_apply(g_gctx, T, H, d, base, d_pos, inv, d_x));
    float *gpu = from_gpu(d_x, n * 4);
    compare(label, inv ? "inverse" : "forward", cpu, gpu, n, TOL_ROPE);
    for (int64_t t = 5; t < T; t += 11) /* padding rows: untouched */
      WT_CHECK(memcmp(gpu + t * H * d, x + t * H * d, (size_t)(H * d) * 4) == 0,
               "%s: padding row %lld changed", label, (long long)t);
    free(gpu);
  }
  weft_device_free(g_gpu, d_x), weft_device_free(g_gpu, d_pos);
  free(pos), free(x), free(cpu);
}

static void test_embedding(weft_kernel_ctx_t *cctx, int64_t n, int64_t V, int64_t d) {
  char label[64];
  snprintf(label, sizeof label, "embedding n=%lld V=%lld d=%lld", (long long)n, (long long)V,
           (long long)d);
  size_t nd = (size_t)(n * d) * 4, vd = (size_t)(V * d) * 4;
  float *table = rand_floats((size_t)(V * d), 1.0f), *dy = rand_floats((size_t)(n * d), 1.0f);
  float *dt = rand_floats((size_t)(V * d), 0.5f), *dt0 = xalloc(vd), *y = xalloc(nd);
  int32_t *ids = xalloc((size_t)n * 4);
  memcpy(dt0, dt, vd);
  for (int64_t t = 0; t < n; t++) /* one frequent id, the rest uniform */
    ids[t] = t % 4 == 0 ? (int32_t)(V / 2) : (int32_t)(kt_rand_u64(&g_rng) % (uint64_t)V);
  WT_CHECK_OK(weft_embedding_forward(cctx, n, V, d, table, ids, y));
  WT_CHECK_OK(weft_embedding_backward(cctx, n, V, d, ids, dy, dt));
  float *d_table = to_gpu(table, vd), *d_dy = to_gpu(dy, nd), *d_dt = to_gpu(dt0, vd);
  float *d_y = to_gpu(NULL, nd);
  int32_t *d_ids = to_gpu(ids, (size_t)n * 4);
  WT_CHECK_OK(weft_embedding_forward(g_gctx, n, V, d, d_table, d_ids, d_y));
  WT_CHECK_OK(weft_embedding_backward(g_gctx, n, V, d, d_ids, d_dy, d_dt));
  float *g_y = from_gpu(d_y, nd), *g_dt = from_gpu(d_dt, vd);
  compare(label, "y", y, g_y, (size_t)(n * d), 0.0);
  compare(label, "dtable", dt, g_dt, (size_t)(V * d), 0.0);
  /* ids out of range (the caller's bug on CUDA): a zero row, no gradient, no stray access */
  ids[0] = -1, ids[n - 1] = (int32_t)V;
  WT_CHECK_OK(weft_device_copy(g_gpu, d_ids, ids, (size_t)n * 4, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_device_copy(g_gpu, d_dt, dt0, vd, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_embedding_forward(g_gctx, n, V, d, d_table, d_ids, d_y));
  WT_CHECK_OK(weft_embedding_backward(g_gctx, n, V, d, d_ids, d_dy, d_dt));
  float *g_y2 = from_gpu(d_y, nd), *g_dt2 = from_gpu(d_dt, vd);
  bool zero = true;
  for (int64_t c = 0; c < d; c++) zero &= g_y2[c] == 0.0f && g_y2[(n - 1) * d + c] == 0.0f;
  WT_CHECK(zero, "%s: rows of out-of-range ids are not zero", label);
  memcpy(dt, dt0, vd); /* the CPU reference of the remaining tokens, in increasing t */
  for (int64_t t = 1; t < n - 1; t++)
    for (int64_t c = 0; c < d; c++) dt[(int64_t)ids[t] * d + c] += dy[t * d + c];
  compare(label, "dtable, bad ids skipped", dt, g_dt2, (size_t)(V * d), 0.0);
  void *dev[] = {d_table, d_dy, d_dt, d_y, d_ids};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) weft_device_free(g_gpu, dev[i]);
  free(table), free(dy), free(dt), free(dt0), free(y), free(ids), free(g_y), free(g_dt);
  free(g_y2), free(g_dt2);
}

int main(void) {
  if (!WEFT_HAVE_CUDA || weft_device_cuda_count() == 0) {
    printf("test_layer_ops_cuda: skipped (%s)\n",
           WEFT_HAVE_CUDA ? "no CUDA GPU visible" : "built without CUDA");
    return WEFT_TEST_SKIP;
  }
  weft_device_t *cpu = NULL;
  weft_kernel_ctx_t *cctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &cpu));
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CUDA, 0, &g_gpu));
  if (cpu) WT_CHECK_OK(weft_kernel_ctx_create(cpu, NULL, &cctx));
  if (g_gpu) WT_CHECK_OK(weft_kernel_ctx_create(g_gpu, NULL, &g_gctx));
  if (cctx && g_gctx) {
    test_rmsnorm(cctx, 4096, 1024);
    test_rmsnorm(cctx, 33, 5);
    test_rmsnorm(cctx, 7, 4096);
    test_rmsnorm(cctx, 1000, 1);
    test_rmsnorm(cctx, 20000, 64); /* more rows than one grid-stride pass of warps */
    test_rope(cctx, 4096, 8, 128, 10000.0);
    test_rope(cctx, 100, 1, 2, 10000.0);
    test_rope(cctx, 333, 3, 6, 500000.0);
    test_embedding(cctx, 20000, 256, 512);
    test_embedding(cctx, 100, 3, 130); /* a partial 128-column chunk */
    test_embedding(cctx, 5000, 256, 64);
  }
  weft_kernel_ctx_destroy(g_gctx);
  weft_kernel_ctx_destroy(cctx);
  weft_device_close(g_gpu);
  weft_device_close(cpu);
  return weft_test_exit_code("test_layer_ops_cuda");
}
