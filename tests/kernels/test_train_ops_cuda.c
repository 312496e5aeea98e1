/* CUDA training ops (weft/cross_entropy.h, weft/adamw.h) against the CPU kernels on the same
 * inputs.
 *
 * AdamW must be bitwise equal to the CPU after every step (the header's promise: the same f32
 * operations in the same order, none fused), on mixed magnitudes including zeros, subnormal and
 * overflowing gradients (NaN matches NaN, whatever its payload). sumsq must be bitwise equal to
 * the CPU too (both follow the blocked order of kernels/train_ops_internal.h) and to itself on a
 * second call. Cross-entropy is compared as
 *   loss, lse:  |cuda - cpu| <= TOL_CE_FWD (|cpu| + 1) per element
 *   dlogits:    max |cuda - cpu| <= TOL_CE_BWD max |cpu|, both from the CPU's lse
 * with TOL_CE_FWD = 8 * 2^-24 and TOL_CE_BWD = 2e-6: each device is within half of that of the
 * double reference (test_train_ops.c); CUDA's expf is within 2 ulp of libm's and the sums run
 * in a different order. Unlabelled rows must be exactly 0 on the GPU as well, and a target
 * >= V (unchecked on the GPU) must give a NaN loss and a NaN gradient row.
 * Exits 77 (skipped) when the build has no CUDA backend or no GPU is visible. */
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

#define TOL_CE_FWD (8.0 / 16777216.0)
#define TOL_CE_BWD 2e-6

static weft_device_t *g_gpu;
static weft_kernel_ctx_t *g_gctx;
static uint64_t g_rng = 4242;

/* This file's views of the shared helpers (kernel_test_common.h). */
static void *xalloc(size_t bytes) { return kt_xalloc(bytes); }
static float *rand_floats(size_t n, float scale) { return kt_rand_floats(&g_rng, n, scale); }
static void *to_gpu(const void *host, size_t bytes) { return kt_to_gpu(g_gpu, host, bytes); }
static void *from_gpu(const void *dev, size_t bytes) { return kt_from_gpu(g_gpu, dev, bytes); }

/* Bitwise equal, except that any NaN matches any NaN (payloads differ between devices). */
static void compare_bits(const char *label, const float *cpu, const float *gpu, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (memcmp(cpu + i, gpu + i, sizeof(float)) == 0 || (isnan(cpu[i]) && isnan(gpu[i]))) continue;
    WT_CHECK(false, "%s: [%zu] cpu %.9g cuda %.9g (must be bitwise equal)", label, i,
             (double)cpu[i], (double)gpu[i]);
    return;
  }
}

static void test_ce(weft_kernel_ctx_t *cctx, int64_t n, int64_t V, float range) {
  char label[96];
  snprintf(label, sizeof label, "ce n=%lld V=%lld range=%g", (long long)n, (long long)V,
           (double)range);
  size_t nv = (size_t)(n * V), nb = (size_t)n * sizeof(float);
  float *z = rand_floats(nv, range), *loss = xalloc(nb), *lse = xalloc(nb);
  float *dz = xalloc(nv * sizeof(float));
  int32_t *y = xalloc((size_t)n * sizeof(int32_t));
  for (int64_t t = 0; t < n; t++)
    y[t] = t % 5 == 3 ? -1 : (int32_t)(kt_rand_u64(&g_rng) % (uint64_t)V);
  const float s = 1.0f / (float)n;
  WT_CHECK_OK(weft_cross_entropy_forward(cctx, n, V, z, y, loss, lse));
  WT_CHECK_OK(weft_cross_entropy_backward(cctx, n, V, z, y, lse, s, dz));
  float *d_z = to_gpu(z, nv * 4), *d_loss = to_gpu(NULL, nb), *d_lse = to_gpu(lse, nb);
  float *d_dz = to_gpu(NULL, nv * 4);
  int32_t *d_y = to_gpu(y, (size_t)n * sizeof(int32_t));
  /* backward first, from the CPU's lse; then the forward overwrites d_lse */
  WT_CHECK_OK(weft_cross_entropy_backward(g_gctx, n, V, d_z, d_y, d_lse, s, d_dz));
  float *g_dz = from_gpu(d_dz, nv * 4);
  WT_CHECK_OK(weft_cross_entropy_forward(g_gctx, n, V, d_z, d_y, d_loss, d_lse));
  float *g_loss = from_gpu(d_loss, nb), *g_lse = from_gpu(d_lse, nb);
  for (int64_t t = 0; t < n; t++) {
    WT_CHECK(fabs((double)g_loss[t] - loss[t]) <= TOL_CE_FWD * (fabs(loss[t]) + 1.0) &&
                 fabs((double)g_lse[t] - lse[t]) <= TOL_CE_FWD * (fabs(lse[t]) + 1.0),
             "%s: row %lld loss cpu %.9g cuda %.9g, lse cpu %.9g cuda %.9g", label, (long long)t,
             (double)loss[t], (double)g_loss[t], (double)lse[t], (double)g_lse[t]);
    if (y[t] < 0)
      for (int64_t v = 0; v < V; v++)
        WT_CHECK(g_dz[t * V + v] == 0.0f, "%s: unlabelled row %lld: dlogits[%lld] = %g", label,
                 (long long)t, (long long)v, (double)g_dz[t * V + v]);
  }
  double cmax = 0.0, err = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < nv; i++) cmax = fmax(cmax, fabs(dz[i]));
  for (size_t i = 0; i < nv; i++) {
    double e = fabs((double)g_dz[i] - dz[i]);
    if (!(e <= err)) err = isnan(e) ? INFINITY : e, at = i;
  }
  WT_CHECK(err <= TOL_CE_BWD * cmax,
           "%s dlogits: [%zu] cpu %.9g cuda %.9g: |diff| %.3g > %.1g x %.3g", label, at,
           (double)dz[at], (double)g_dz[at], err, TOL_CE_BWD, cmax);
  /* in place on the GPU: the same bits as out of place */
  WT_CHECK_OK(weft_device_copy(g_gpu, d_lse, lse, nb, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_cross_entropy_backward(g_gctx, n, V, d_z, d_y, d_lse, s, d_z));
  float *g_inplace = from_gpu(d_z, nv * 4);
  WT_CHECK(memcmp(g_inplace, g_dz, nv * 4) == 0, "%s: in-place dlogits differ on the GPU", label);
  /* a target == V: NaN loss and NaN gradient row 0, every other row untouched by it */
  if (n > 1) {
    int32_t bad = (int32_t)V;
    WT_CHECK_OK(weft_device_copy(g_gpu, d_z, z, nv * 4, WEFT_COPY_HOST_TO_DEVICE));
    WT_CHECK_OK(weft_device_copy(g_gpu, d_y, &bad, sizeof bad, WEFT_COPY_HOST_TO_DEVICE));
    WT_CHECK_OK(weft_cross_entropy_forward(g_gctx, n, V, d_z, d_y, d_loss, d_lse));
    WT_CHECK_OK(weft_cross_entropy_backward(g_gctx, n, V, d_z, d_y, d_lse, s, d_dz));
    float *b_loss = from_gpu(d_loss, nb), *b_dz = from_gpu(d_dz, nv * 4);
    WT_CHECK(isnan(b_loss[0]) && isnan(b_dz[0]) && isnan(b_dz[V - 1]),
             "%s: target == V on the GPU: loss %g dlogits %g (want NaN)", label, (double)b_loss[0],
             (double)b_dz[0]);
    WT_CHECK(memcmp(b_loss + 1, g_loss + 1, nb - 4) == 0, "%s: target == V in row 0 changed others",
             label);
    free(b_loss), free(b_dz);
  }
  void *dev[] = {d_z, d_loss, d_lse, d_dz, d_y};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) weft_device_free(g_gpu, dev[i]);
  free(z), free(loss), free(lse), free(dz), free(y), free(g_dz), free(g_loss), free(g_lse);
  free(g_inplace);
}

static void test_adamw(weft_kernel_ctx_t *cctx, size_t n) {
  static const float special[] = {0.0f, -0.0f, 1e-40f, -3e-39f, 1e30f, -1e25f, 1e-20f, 65504.0f};
  const size_t nspecial = sizeof special / sizeof special[0];
  float *p = rand_floats(n, 1.0f), *m = xalloc(n * 4), *v = xalloc(n * 4), *g = xalloc(n * 4);
  float *d_p = to_gpu(p, n * 4), *d_m = to_gpu(m, n * 4), *d_v = to_gpu(v, n * 4);
  float *d_g = to_gpu(NULL, n * 4);
  const struct {
    int64_t step;
    float beta1, beta2, wd, scale;
  } steps[] = {{1, 0.9f, 0.999f, 0.1f, 1.0f}, {2, 0.9f, 0.999f, 0.1f, 0.37f},
               {3, 0.9f, 0.999f, 0.0f, 1.0f}, {4, 0.5f, 0.95f, 0.01f, 2.5f},
               {5, 0.0f, 0.3f, 0.1f, 1.0f},   {1000, 0.9f, 0.95f, 0.1f, 1.0f}};
  for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
    for (size_t i = 0; i < n; i++)
      g[i] = i % 97 < nspecial ? special[i % 97] : kt_rand_uniform(&g_rng) * (i % 3 ? 1.0f : 1e-3f);
    WT_CHECK_OK(weft_device_copy(g_gpu, d_g, g, n * 4, WEFT_COPY_HOST_TO_DEVICE));
    weft_adamw_params_t hp = {.lr = 1e-3f,
                              .beta1 = steps[k].beta1,
                              .beta2 = steps[k].beta2,
                              .eps = 1e-8f,
                              .weight_decay = steps[k].wd,
                              .step = steps[k].step,
                              .grad_scale = steps[k].scale};
    WT_CHECK_OK(weft_adamw_step(cctx, &hp, (int64_t)n, p, g, m, v));
    WT_CHECK_OK(weft_adamw_step(g_gctx, &hp, (int64_t)n, d_p, d_g, d_m, d_v));
    float *gp = from_gpu(d_p, n * 4), *gm = from_gpu(d_m, n * 4), *gv = from_gpu(d_v, n * 4);
    char label[96];
    int len = snprintf(label, sizeof label, "adamw n=%zu step=%lld", n, (long long)steps[k].step);
    snprintf(label + len, sizeof label - (size_t)len, " param");
    compare_bits(label, p, gp, n);
    snprintf(label + len, sizeof label - (size_t)len, " m");
    compare_bits(label, m, gm, n);
    snprintf(label + len, sizeof label - (size_t)len, " v");
    compare_bits(label, v, gv, n);
    free(gp), free(gm), free(gv);
  }
  weft_device_free(g_gpu, d_p), weft_device_free(g_gpu, d_m), weft_device_free(g_gpu, d_v);
  weft_device_free(g_gpu, d_g);
  free(p), free(m), free(v), free(g);
}

static void test_sumsq(weft_kernel_ctx_t *cctx, int64_t n) {
  float *x = rand_floats((size_t)n, 2.0f);
  float *d_x = to_gpu(x, (size_t)n * 4);
  double cpu = -1.0, gpu[2] = {-1.0, -2.0};
  WT_CHECK_OK(weft_sumsq(cctx, n, x, &cpu));
  for (int r = 0; r < 2; r++) WT_CHECK_OK(weft_sumsq(g_gctx, n, d_x, &gpu[r]));
  WT_CHECK(memcmp(&cpu, &gpu[0], sizeof cpu) == 0, "sumsq n=%lld: cpu %.17g cuda %.17g",
           (long long)n, cpu, gpu[0]);
  WT_CHECK(memcmp(&gpu[0], &gpu[1], sizeof cpu) == 0, "sumsq n=%lld: cuda %.17g then %.17g",
           (long long)n, gpu[0], gpu[1]);
  weft_device_free(g_gpu, d_x);
  free(x);
}

int main(void) {
  if (!WEFT_HAVE_CUDA || weft_device_cuda_count() == 0) {
    printf("test_train_ops_cuda: skipped (%s)\n",
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
    test_ce(cctx, 1000, 256, 5.0f);
    test_ce(cctx, 333, 37, 20.0f);
    test_ce(cctx, 64, 32000, 8.0f);
    test_ce(cctx, 5, 1, 3.0f);
    test_ce(cctx, 40, 101, 1e30f);
    test_adamw(cctx, 1000);
    test_adamw(cctx, (3u << 20) + 5); /* more elements than one grid-stride pass */
    const int64_t sizes[] = {1, 9, 8192, 8193, 100003, 8192 * 1024 * 2 + 12345};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) test_sumsq(cctx, sizes[i]);
  }
  weft_kernel_ctx_destroy(g_gctx);
  weft_kernel_ctx_destroy(cctx);
  weft_device_close(g_gpu);
  weft_device_close(cpu);
  return weft_test_exit_code("test_train_ops_cuda");
}
