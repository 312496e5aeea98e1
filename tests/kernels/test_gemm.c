/* CPU GEMM tests: weft_gemm and weft_gemm_batched_strided against a naive triple loop in
 * double, for every transpose combination, odd sizes, alpha/beta, padded leading dimensions,
 * batches (including a shared A with stride 0), the three dtype combinations, and argument
 * validation.
 *
 * Tolerance (kernel_test_common.h): f32 accumulation error 2 (k + 3) 2^-24 sum|a b| (Higham's
 * bound for a length-k dot product, doubled for the alpha/beta roundings), plus 2^-8 |ref| for
 * a bf16 C. bf16 inputs add nothing: the reference is computed on the bf16-rounded inputs, and
 * the product of two bf16 values is exact in f32, so the only errors are the f32 sums and the
 * final rounding of C. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test_common.h"
#include "test_util.h"
#include "weft/device.h"
#include "weft/gemm.h"
#include "weft/kernel_ctx.h"

static const weft_dtype_t k_dtypes[3][2] = {
    {WEFT_DTYPE_F32, WEFT_DTYPE_F32},
    {WEFT_DTYPE_BF16, WEFT_DTYPE_F32},
    {WEFT_DTYPE_BF16, WEFT_DTYPE_BF16},
};

/* Runs one problem on the CPU context and checks it; returns the number of bad elements. */
static size_t run_case(weft_kernel_ctx_t *ctx, const kt_gemm_spec_t *s, uint64_t seed) {
  kt_gemm_data_t d;
  char desc[256];
  if (!kt_gemm_data_create(s, seed, &d)) {
    weft_test_fail(__FILE__, __LINE__, "out of memory for %s", kt_gemm_describe(s, desc, 256));
    kt_gemm_data_destroy(&d);
    return 1;
  }
  size_t esize = weft_dtype_size(s->c_dtype);
  void *c = malloc(d.c_elems * esize);
  size_t bad = 1;
  if (c) {
    memcpy(c, d.c, d.c_elems * esize);
    weft_status_t st;
    if (s->batch == 1 && s->stride_a == 0 && s->stride_b == 0 && s->stride_c == 0)
      st = weft_gemm(ctx, s->trans_a, s->trans_b, s->m, s->n, s->k, s->alpha, s->ab_dtype, d.a,
                     s->lda, s->ab_dtype, d.b, s->ldb, s->beta, s->c_dtype, c, s->ldc);
    else
      st = weft_gemm_batched_strided(ctx, s->trans_a, s->trans_b, s->m, s->n, s->k, s->alpha,
                                     s->ab_dtype, d.a, s->lda, s->stride_a, s->ab_dtype, d.b,
                                     s->ldb, s->stride_b, s->beta, s->c_dtype, c, s->ldc,
                                     s->stride_c, s->batch);
    if (st != WEFT_OK)
      weft_test_fail(__FILE__, __LINE__, "%s returned %s", kt_gemm_describe(s, desc, 256),
                     weft_status_str(st));
    else
      bad = kt_gemm_check(s, &d, c, 1.0, "cpu");
  }
  free(c);
  kt_gemm_data_destroy(&d);
  return bad;
}

/* Every transpose combination x sizes {1, 7, 33, 129}^3 x the three dtype combinations, with
 * alpha/beta and padding rotating through the cases so each combination meets several. */
static void test_gemm_sweep(weft_kernel_ctx_t *ctx) {
  static const int64_t sizes[] = {1, 7, 33, 129};
  static const float alpha_beta[][2] = {{1.0f, 0.0f}, {-0.75f, 0.5f}, {2.0f, 1.0f}, {0.5f, -1.0f}};
  uint64_t seed = 1;
  int cases = 0;
  for (int t = 0; t < 4; t++)
    for (int mi = 0; mi < 4; mi++)
      for (int ni = 0; ni < 4; ni++)
        for (int ki = 0; ki < 4; ki++)
          for (int dt = 0; dt < 3; dt++) {
            kt_gemm_spec_t s = kt_gemm_spec(t & 1, (t >> 1) & 1, sizes[mi], sizes[ni], sizes[ki],
                                            (seed % 3 == 0) ? 3 : 0, 1);
            s.alpha = alpha_beta[seed % 4][0];
            s.beta = alpha_beta[seed % 4][1];
            s.ab_dtype = k_dtypes[dt][0];
            s.c_dtype = k_dtypes[dt][1];
            run_case(ctx, &s, seed++);
            cases++;
          }
  printf("gemm sweep: %d cases\n", cases);
}

/* Larger and irregular shapes, k = 0 (C = beta C), alpha = 0, and lda > k on every matrix. */
static void test_gemm_edges(weft_kernel_ctx_t *ctx) {
  for (int dt = 0; dt < 3; dt++)
    for (int t = 0; t < 4; t++) {
      kt_gemm_spec_t s = kt_gemm_spec(t & 1, t >> 1, 200, 67, 300, 17, 1);
      s.ab_dtype = k_dtypes[dt][0];
      s.c_dtype = k_dtypes[dt][1];
      s.beta = 0.25f;
      run_case(ctx, &s, 100 + (uint64_t)t);
      s = kt_gemm_spec(t & 1, t >> 1, 9, 5, 0, 2, 1); /* k = 0 */
      s.ab_dtype = k_dtypes[dt][0];
      s.c_dtype = k_dtypes[dt][1];
      s.beta = 0.5f;
      run_case(ctx, &s, 200 + (uint64_t)t);
      s.beta = 0.0f; /* k = 0, beta = 0: C = 0 even though it held NaN */
      run_case(ctx, &s, 300 + (uint64_t)t);
      s = kt_gemm_spec(t & 1, t >> 1, 13, 11, 17, 1, 1); /* alpha = 0: C = beta C */
      s.ab_dtype = k_dtypes[dt][0];
      s.c_dtype = k_dtypes[dt][1];
      s.alpha = 0.0f;
      s.beta = -2.0f;
      run_case(ctx, &s, 400 + (uint64_t)t);
    }
}

static void test_gemm_batched(weft_kernel_ctx_t *ctx) {
  static const int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 5}, {33, 7, 129}, {64, 48, 40}};
  uint64_t seed = 1000;
  for (int dt = 0; dt < 3; dt++)
    for (int t = 0; t < 4; t++)
      for (int sh = 0; sh < 4; sh++) {
        kt_gemm_spec_t s = kt_gemm_spec(t & 1, t >> 1, shapes[sh][0], shapes[sh][1], shapes[sh][2],
                                        sh % 2 ? 2 : 0, 3 + sh);
        s.ab_dtype = k_dtypes[dt][0];
        s.c_dtype = k_dtypes[dt][1];
        s.alpha = 1.5f;
        s.beta = sh % 2 ? 0.0f : -0.5f;
        run_case(ctx, &s, seed++);
        s.stride_a = 0; /* one A shared by every batch entry (shared weights) */
        run_case(ctx, &s, seed++);
        s.stride_a = kt_gemm_spec(t & 1, t >> 1, s.m, s.n, s.k, 0, 2).stride_a;
        s.stride_b = 0;
        run_case(ctx, &s, seed++);
      }
  /* batch_count == 0 is a no-op, even with NULL pointers. */
  WT_CHECK_OK(weft_gemm_batched_strided(ctx, false, false, 4, 4, 4, 1.0f, WEFT_DTYPE_F32, NULL, 4,
                                        16, WEFT_DTYPE_F32, NULL, 4, 16, 0.0f, WEFT_DTYPE_F32, NULL,
                                        4, 16, 0));
}

static void test_gemm_invalid(weft_kernel_ctx_t *ctx) {
  float a[64] = {0}, b[64] = {0}, c[64] = {0};
  const weft_dtype_t F = WEFT_DTYPE_F32, H = WEFT_DTYPE_BF16, I = WEFT_DTYPE_I32;
  /* A valid baseline first, so the rejections below are about one argument each. */
  WT_CHECK_OK(weft_gemm(ctx, false, false, 4, 4, 4, 1.0f, F, a, 4, F, b, 4, 0.0f, F, c, 4));
  WT_CHECK_STATUS(weft_gemm(NULL, false, false, 4, 4, 4, 1.0f, F, a, 4, F, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, -1, 4, 4, 1.0f, F, a, 4, F, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, -2, 1.0f, F, a, 4, F, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_INVALID_ARG);
  /* lda < k (A not transposed), lda < m (A transposed: stored [k, m]). */
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, 5, 1.0f, F, a, 4, F, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm(ctx, true, false, 6, 4, 2, 1.0f, F, a, 5, F, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_gemm(ctx, true, false, 6, 4, 2, 1.0f, F, a, 6, F, b, 4, 0.0f, F, c, 4));
  /* ldb < n (not transposed), ldb < k (transposed: stored [n, k]); ldc < n. */
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 5, 4, 1.0f, F, a, 4, F, b, 4, 0.0f, F, c, 5),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm(ctx, false, true, 4, 2, 6, 1.0f, F, a, 6, F, b, 5, 0.0f, F, c, 2),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, 4, 1.0f, F, a, 4, F, b, 4, 0.0f, F, c, 3),
                  WEFT_ERR_INVALID_ARG);
  /* ld = 0 is invalid even for an empty dimension (BLAS requires >= 1). */
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, 0, 1.0f, F, a, 0, F, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_INVALID_ARG);
  /* dtypes: mixed inputs, f32 -> bf16, integer types. */
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, 4, 1.0f, F, a, 4, H, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, 4, 1.0f, F, a, 4, F, b, 4, 0.0f, H, c, 4),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, 4, 1.0f, I, a, 4, I, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, 4, 1.0f, F, a, 4, F, b, 4, 0.0f, I, c, 4),
                  WEFT_ERR_INVALID_ARG);
  /* NULL operands with work to do; NULL is fine when there is none. */
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, 4, 1.0f, F, NULL, 4, F, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, 4, 1.0f, F, a, 4, F, b, 4, 0.0f, F, NULL, 4),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(
      weft_gemm(ctx, false, false, 0, 4, 4, 1.0f, F, NULL, 4, F, NULL, 4, 0.0f, F, NULL, 4));
  /* Sizes beyond the 32-bit BLAS interface. */
  WT_CHECK_STATUS(weft_gemm(ctx, false, false, 4, 4, (int64_t)1 << 31, 1.0f, F, a, (int64_t)1 << 31,
                            F, b, 4, 0.0f, F, c, 4),
                  WEFT_ERR_UNSUPPORTED);
  WT_CHECK_STATUS(
      weft_gemm(ctx, false, false, 4, 4, 4, 1.0f, F, a, 4, F, b, 4, 0.0f, F, c, (int64_t)1 << 32),
      WEFT_ERR_UNSUPPORTED);
  /* Batched: negative count or stride, overlapping C matrices. */
  WT_CHECK_STATUS(weft_gemm_batched_strided(ctx, false, false, 2, 2, 2, 1.0f, F, a, 2, 4, F, b, 2,
                                            4, 0.0f, F, c, 2, 4, -1),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm_batched_strided(ctx, false, false, 2, 2, 2, 1.0f, F, a, 2, -4, F, b, 2,
                                            4, 0.0f, F, c, 2, 4, 2),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gemm_batched_strided(ctx, false, false, 2, 2, 2, 1.0f, F, a, 2, 4, F, b, 2,
                                            4, 0.0f, F, c, 3, 3, 2),
                  WEFT_ERR_INVALID_ARG); /* each C spans (2-1)*3+2 = 5 > 3 */
  WT_CHECK_OK(weft_gemm_batched_strided(ctx, false, false, 2, 2, 2, 1.0f, F, a, 2, 0, F, b, 2, 4,
                                        0.0f, F, c, 3, 5, 2));
}

/* The bf16 path converts through the context's workspace: it grows on the first call of a
 * size and stays the same for repeated and smaller calls. */
static void test_gemm_workspace(weft_kernel_ctx_t *ctx) {
  kt_gemm_spec_t s = kt_gemm_spec(false, true, 150, 150, 150, 0, 1);
  s.ab_dtype = WEFT_DTYPE_BF16;
  s.c_dtype = WEFT_DTYPE_BF16;
  run_case(ctx, &s, 7);
  size_t grown = weft_kernel_ctx_workspace_bytes(ctx);
  WT_CHECK(grown >= 3 * 150 * 150 * sizeof(float), "workspace %zu after a 150^3 bf16 GEMM", grown);
  run_case(ctx, &s, 8);
  s = kt_gemm_spec(true, false, 20, 30, 40, 1, 1);
  s.ab_dtype = WEFT_DTYPE_BF16;
  run_case(ctx, &s, 9);
  WT_CHECK(weft_kernel_ctx_workspace_bytes(ctx) == grown, "workspace grew from %zu to %zu", grown,
           weft_kernel_ctx_workspace_bytes(ctx));
}

int main(void) {
  weft_device_t *device = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &device));
  if (device) WT_CHECK_OK(weft_kernel_ctx_create(device, NULL, &ctx));
  if (ctx) {
    test_gemm_sweep(ctx);
    test_gemm_edges(ctx);
    test_gemm_batched(ctx);
    test_gemm_invalid(ctx);
    test_gemm_workspace(ctx);
    WT_CHECK(weft_kernel_ctx_device(ctx) == device, "context device");
    WT_CHECK(weft_kernel_ctx_stream(ctx) != NULL, "context owns a stream");
    WT_CHECK_OK(weft_kernel_ctx_synchronize(ctx));
  }
  weft_kernel_ctx_destroy(ctx);
  weft_kernel_ctx_destroy(NULL);
  weft_device_close(device);
  return weft_test_exit_code("test_gemm");
}
