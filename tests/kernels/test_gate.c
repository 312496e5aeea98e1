/* The decay gate (weft/gate.h) against double references: the forward over a range of x from
 * -100 to 100 (no overflow, the limits x and 0), the backward against the derivative and
 * against central differences of the double forward, in place, thread-count independence and
 * the error paths. When a GPU is visible, the CUDA kernels against the CPU ones as well.
 * Tolerance: 4 ulps of the f32 result relative to max(|ref|, 1e-30) plus 1e-7 |scale|
 * (log1pf/expf are not correctly rounded). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test_common.h"
#include "test_util.h"
#include "weft/device.h"
#include "weft/gate.h"
#include "weft/kernel_ctx.h"

static double ref_forward(double x, double scale) {
  return scale * (fmin(x, 0.0) - log1p(exp(-fabs(x))));
}
static double ref_backward(double x, double dy, double scale) { return dy * scale / (1 + exp(x)); }

static void check_close(const char *what, const float *got, const double *ref, size_t n,
                        double scale) {
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    double tol = 4 * 5.96e-8 * fmax(fabs(ref[i]), 1e-30) + 1e-7 * fabs(scale);
    double e = fabs(got[i] - ref[i]) / tol;
    if (!(e <= worst)) worst = e, at = i;
  }
  WT_CHECK(worst <= 1.0, "%s: element %zu got %.9g ref %.9g (%.2fx tolerance)", what, at,
           (double)got[at], ref[at], worst);
}

static void check_cpu(weft_kernel_ctx_t *ctx) {
  enum { N = 4001 };
  const float scale = 1.0f / 16.0f;
  float *x = kt_xalloc(N * sizeof(float)), *y = kt_xalloc(N * sizeof(float));
  float *dy = kt_xalloc(N * sizeof(float)), *dx = kt_xalloc(N * sizeof(float));
  double *ry = malloc(N * sizeof(double)), *rdx = malloc(N * sizeof(double));
  uint64_t rng = 5;
  for (int i = 0; i < N; i++) {
    x[i] = (float)(-100.0 + 0.05 * i); /* -100 .. 100 */
    dy[i] = kt_rand_uniform(&rng);
    ry[i] = ref_forward(x[i], scale);
    rdx[i] = ref_backward(x[i], dy[i], scale);
  }
  WT_CHECK_OK(weft_gate_logsigmoid_forward(ctx, N, scale, x, y));
  check_close("forward", y, ry, N, scale);
  for (int i = 0; i < N; i++) WT_CHECK(y[i] <= 0.0f && isfinite(y[i]), "y[%d] = %g", i, y[i]);
  WT_CHECK_OK(weft_gate_logsigmoid_backward(ctx, N, scale, x, dy, dx));
  check_close("backward", dx, rdx, N, scale);

  /* The derivative formula itself against central differences of the double forward. */
  for (int i = 0; i < N; i += 97) {
    double h = 1e-4, fd = (ref_forward(x[i] + h, scale) - ref_forward(x[i] - h, scale)) / (2 * h);
    WT_CHECK(fabs(fd * dy[i] - rdx[i]) <= 1e-7 + 1e-6 * fabs(rdx[i]), "x=%g: fd %.9g formula %.9g",
             (double)x[i], fd * dy[i], rdx[i]);
  }
  /* In place: y == x, dx == dy. */
  float *xi = kt_xalloc(N * sizeof(float)), *dyi = kt_xalloc(N * sizeof(float));
  memcpy(xi, x, N * sizeof(float));
  memcpy(dyi, dy, N * sizeof(float));
  WT_CHECK_OK(weft_gate_logsigmoid_backward(ctx, N, scale, x, dyi, dyi));
  WT_CHECK(memcmp(dyi, dx, N * sizeof(float)) == 0, "backward in place differs");
  WT_CHECK_OK(weft_gate_logsigmoid_forward(ctx, N, scale, xi, xi));
  WT_CHECK(memcmp(xi, y, N * sizeof(float)) == 0, "forward in place differs");

  /* Threads: a large n at 1 and 2 threads, bitwise. */
  const int64_t big = 1 << 20;
  float *bx = kt_rand_floats(&rng, (size_t)big, 30.0f), *b1 = kt_xalloc((size_t)big * 4),
        *b2 = kt_xalloc((size_t)big * 4);
  int threads = weft_kernels_cpu_threads();
  weft_kernels_set_cpu_threads(1);
  WT_CHECK_OK(weft_gate_logsigmoid_forward(ctx, big, scale, bx, b1));
  weft_kernels_set_cpu_threads(4);
  WT_CHECK_OK(weft_gate_logsigmoid_forward(ctx, big, scale, bx, b2));
  weft_kernels_set_cpu_threads(threads);
  WT_CHECK(memcmp(b1, b2, (size_t)big * 4) == 0, "forward differs between 1 and 4 threads");

  /* Errors. */
  WT_CHECK_STATUS(weft_gate_logsigmoid_forward(ctx, -1, scale, x, y), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gate_logsigmoid_forward(ctx, 4, NAN, x, y), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gate_logsigmoid_forward(ctx, 4, scale, NULL, y), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gate_logsigmoid_forward(ctx, 4, scale, x, x + 1), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gate_logsigmoid_backward(ctx, 4, scale, x, dy, (float *)x),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_gate_logsigmoid_forward(ctx, 0, scale, NULL, NULL));
  free(x), free(y), free(dy), free(dx), free(ry), free(rdx), free(xi), free(dyi);
  free(bx), free(b1), free(b2);
}

/* CUDA against the CPU on the same inputs, when a GPU is visible. */
static void check_cuda(weft_kernel_ctx_t *cpu) {
  if (weft_device_cuda_count() == 0) {
    printf("test_gate: no CUDA GPU visible, CUDA comparison skipped\n");
    return;
  }
  weft_device_t *gpu = NULL;
  weft_kernel_ctx_t *gctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CUDA, 0, &gpu));
  if (gpu) WT_CHECK_OK(weft_kernel_ctx_create(gpu, NULL, &gctx));
  if (!gctx) return;
  const size_t n = 100003;
  uint64_t rng = 11;
  float *x = kt_rand_floats(&rng, n, 40.0f), *dy = kt_rand_floats(&rng, n, 1.0f);
  float *y = kt_xalloc(n * 4), *dx = kt_xalloc(n * 4);
  WT_CHECK_OK(weft_gate_logsigmoid_forward(cpu, (int64_t)n, 0.0625f, x, y));
  WT_CHECK_OK(weft_gate_logsigmoid_backward(cpu, (int64_t)n, 0.0625f, x, dy, dx));
  float *d_x = kt_to_gpu(gpu, x, n * 4), *d_dy = kt_to_gpu(gpu, dy, n * 4);
  float *d_y = kt_to_gpu(gpu, NULL, n * 4), *d_dx = kt_to_gpu(gpu, NULL, n * 4);
  WT_CHECK_OK(weft_gate_logsigmoid_forward(gctx, (int64_t)n, 0.0625f, d_x, d_y));
  WT_CHECK_OK(weft_gate_logsigmoid_backward(gctx, (int64_t)n, 0.0625f, d_x, d_dy, d_dx));
  float *gy = kt_from_gpu(gpu, d_y, n * 4), *gdx = kt_from_gpu(gpu, d_dx, n * 4);
  double *ry = malloc(n * sizeof(double)), *rdx = malloc(n * sizeof(double));
  for (size_t i = 0; i < n; i++) ry[i] = y[i], rdx[i] = dx[i];
  check_close("cuda forward vs cpu", gy, ry, n, 0.0625);
  check_close("cuda backward vs cpu", gdx, rdx, n, 0.0625);
  weft_device_free(gpu, d_x), weft_device_free(gpu, d_dy), weft_device_free(gpu, d_y);
  weft_device_free(gpu, d_dx);
  free(x), free(dy), free(y), free(dx), free(gy), free(gdx), free(ry), free(rdx);
  weft_kernel_ctx_destroy(gctx);
  weft_device_close(gpu);
}

int main(void) {
  weft_device_t *dev = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  if (weft_device_open(WEFT_DEVICE_CPU, 0, &dev) != WEFT_OK ||
      weft_kernel_ctx_create(dev, NULL, &ctx) != WEFT_OK)
    return 1;
  check_cpu(ctx);
  check_cuda(ctx);
  weft_kernel_ctx_destroy(ctx);
  weft_device_close(dev);
  return weft_test_exit_code("test_gate");
}
