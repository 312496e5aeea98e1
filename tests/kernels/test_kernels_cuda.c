/* CUDA kernels against the CPU kernels on the same inputs (style.md rule 9).
 *
 * Elementwise kernels and casts must match the CPU bit for bit (both do the same f32
 * operations without fused multiply-add, and round bf16 with the same integer code); the only
 * allowed difference is the payload of a NaN produced by arithmetic (x86 propagates an input
 * payload, CUDA returns its canonical NaN), so arithmetic results compare NaN == NaN. Casts do
 * no arithmetic and are compared on every bit, NaNs included. GEMM results differ by summation
 * order only, so CPU and CUDA must each lie within the f32 accumulation bound of the double
 * reference (kernel_test_common.h), hence within the sum of their bounds of each other; the
 * CUDA bound is doubled for bf16 inputs (tensor cores may truncate in accumulation).
 *
 * Exits 77 (skipped) when the build has no CUDA backend or no GPU is visible. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test_common.h"
#include "test_util.h"
#include "weft/bf16.h"
#include "weft/device.h"
#include "weft/elementwise.h"
#include "weft/gemm.h"
#include "weft/kernel_ctx.h"

static weft_device_t *g_gpu;

static void *to_gpu(const void *host, size_t bytes) {
  void *dev = NULL;
  WT_CHECK_OK(weft_device_alloc(g_gpu, bytes ? bytes : 1, &dev));
  if (dev && bytes)
    WT_CHECK_OK(weft_device_copy(g_gpu, dev, host, bytes, WEFT_COPY_HOST_TO_DEVICE));
  return dev;
}

static void from_gpu(weft_kernel_ctx_t *gctx, void *host, const void *dev, size_t bytes) {
  WT_CHECK_OK(weft_kernel_ctx_synchronize(gctx));
  WT_CHECK_OK(weft_device_copy(g_gpu, host, dev, bytes, WEFT_COPY_DEVICE_TO_HOST));
}

static uint32_t bits32(float v) {
  uint32_t b;
  memcpy(&b, &v, sizeof b);
  return b;
}

/* Elementwise inputs with the awkward values mixed in: NaN, +-inf, denormals, -0, ties. */
static void special_values(weft_dtype_t dtype, int64_t n, uint64_t seed, void *buf) {
  static const uint32_t specials[] = {0x7fc00000u, 0xff800000u, 0x7f800000u, 0x00000001u,
                                      0x80400000u, 0x80000000u, 0x3f808000u, 0x7f7fffffu};
  uint64_t state = seed;
  for (int64_t i = 0; i < n; i++) {
    float v = kt_rand_uniform(&state) * 4.0f;
    if (i % 13 == 3) memcpy(&v, &specials[(i / 13) % 8], sizeof v);
    kt_store(dtype, buf, (size_t)i, v);
  }
}

static void compare_values(weft_dtype_t dtype, int64_t n, const void *cpu, const void *gpu,
                           const char *op) {
  int bad = 0;
  for (int64_t i = 0; i < n; i++) {
    float c = kt_load(dtype, cpu, (size_t)i), g = kt_load(dtype, gpu, (size_t)i);
    bool same = bits32(c) == bits32(g) || (isnan(c) && isnan(g));
    if (!same && bad++ < 3)
      WT_CHECK(false, "%s %s n=%lld: [%lld] cpu %.9g (0x%08x) cuda %.9g (0x%08x)", op,
               weft_dtype_name(dtype), (long long)n, (long long)i, (double)c, bits32(c), (double)g,
               bits32(g));
  }
}

static void test_elementwise(weft_kernel_ctx_t *cctx, weft_kernel_ctx_t *gctx, weft_dtype_t dt,
                             int64_t n) {
  size_t bytes = (size_t)n * weft_dtype_size(dt);
  void *a = malloc(bytes), *b = malloc(bytes), *y = malloc(bytes), *got = malloc(bytes);
  if (!a || !b || !y || !got) {
    WT_CHECK(false, "out of memory");
    goto done;
  }
  special_values(dt, n, 11, a);
  special_values(dt, n, 12, b);
  void *da = to_gpu(a, bytes), *db = to_gpu(b, bytes), *dy = to_gpu(b, bytes);
  WT_CHECK_OK(weft_elementwise_add(cctx, dt, n, a, b, y));
  WT_CHECK_OK(weft_elementwise_add(gctx, dt, n, da, db, dy));
  from_gpu(gctx, got, dy, bytes);
  compare_values(dt, n, y, got, "add");
  WT_CHECK_OK(weft_elementwise_scale(cctx, dt, n, 0.3f, a, y));
  WT_CHECK_OK(weft_elementwise_scale(gctx, dt, n, 0.3f, da, dy));
  from_gpu(gctx, got, dy, bytes);
  compare_values(dt, n, y, got, "scale");
  memcpy(y, b, bytes); /* axpy accumulates into b's values, then scale that in place */
  WT_CHECK_OK(weft_device_copy(g_gpu, dy, b, bytes, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_elementwise_axpy(cctx, dt, n, -1.7f, a, y));
  WT_CHECK_OK(weft_elementwise_axpy(gctx, dt, n, -1.7f, da, dy));
  WT_CHECK_OK(weft_elementwise_scale(cctx, dt, n, 1e-3f, y, y));
  WT_CHECK_OK(weft_elementwise_scale(gctx, dt, n, 1e-3f, dy, dy));
  from_gpu(gctx, got, dy, bytes);
  compare_values(dt, n, y, got, "axpy + scale in place");
  WT_CHECK_OK(weft_elementwise_fill(cctx, dt, n, 0.1f, y));
  WT_CHECK_OK(weft_elementwise_fill(gctx, dt, n, 0.1f, dy));
  from_gpu(gctx, got, dy, bytes);
  compare_values(dt, n, y, got, "fill");
  weft_device_free(g_gpu, da);
  weft_device_free(g_gpu, db);
  weft_device_free(g_gpu, dy);
done:
  free(a);
  free(b);
  free(y);
  free(got);
}

/* Casts on every bf16 value and 2^20 random f32 bit patterns: every bit must match. */
static void test_cast(weft_kernel_ctx_t *cctx, weft_kernel_ctx_t *gctx) {
  enum { N = 1 << 20 };
  float *x = malloc(N * sizeof(float)), *wide = malloc(65536 * sizeof(float));
  float *wide_gpu = malloc(65536 * sizeof(float));
  weft_bf16_t *y = malloc(N * sizeof(weft_bf16_t)), *y_gpu = malloc(N * sizeof(weft_bf16_t));
  weft_bf16_t *all = malloc(65536 * sizeof(weft_bf16_t));
  if (!x || !wide || !wide_gpu || !y || !y_gpu || !all) {
    WT_CHECK(false, "out of memory");
    goto done;
  }
  uint64_t state = 7;
  for (int i = 0; i < N; i++) {
    uint32_t bits = (uint32_t)kt_rand_u64(&state);
    if (i % 4 == 0) bits = (bits & 0xffff0000u) | 0x8000u; /* exact ties */
    memcpy(&x[i], &bits, sizeof bits);
  }
  for (uint32_t v = 0; v < 65536; v++) all[v] = (weft_bf16_t)v;
  void *dx = to_gpu(x, N * sizeof(float)), *dy = NULL; /* dy: output of every cast below */
  WT_CHECK_OK(weft_device_alloc(g_gpu, N * sizeof(float), &dy));
  WT_CHECK_OK(weft_elementwise_cast(cctx, N, WEFT_DTYPE_F32, x, WEFT_DTYPE_BF16, y));
  WT_CHECK_OK(weft_elementwise_cast(gctx, N, WEFT_DTYPE_F32, dx, WEFT_DTYPE_BF16, dy));
  from_gpu(gctx, y_gpu, dy, N * sizeof(weft_bf16_t));
  int bad = 0;
  for (int i = 0; i < N; i++)
    if (y[i] != y_gpu[i] && bad++ < 3)
      WT_CHECK(false, "cast f32 0x%08x -> bf16: cpu 0x%04x cuda 0x%04x", bits32(x[i]), y[i],
               y_gpu[i]);
  void *dall = to_gpu(all, 65536 * sizeof(weft_bf16_t));
  WT_CHECK_OK(weft_elementwise_cast(cctx, 65536, WEFT_DTYPE_BF16, all, WEFT_DTYPE_F32, wide));
  WT_CHECK_OK(weft_elementwise_cast(gctx, 65536, WEFT_DTYPE_BF16, dall, WEFT_DTYPE_F32, dy));
  from_gpu(gctx, wide_gpu, dy, 65536 * sizeof(float));
  WT_CHECK(memcmp(wide, wide_gpu, 65536 * sizeof(float)) == 0, "cast bf16 -> f32 differs");
  WT_CHECK_OK(weft_elementwise_cast(gctx, 65536, WEFT_DTYPE_F32, dx, WEFT_DTYPE_F32, dy));
  from_gpu(gctx, wide_gpu, dy, 65536 * sizeof(float));
  WT_CHECK(memcmp(x, wide_gpu, 65536 * sizeof(float)) == 0, "cast f32 -> f32 copy differs");
  weft_device_free(g_gpu, dx);
  weft_device_free(g_gpu, dy);
  weft_device_free(g_gpu, dall);
done:
  free(x);
  free(wide);
  free(wide_gpu);
  free(y);
  free(y_gpu);
  free(all);
}

static void gemm_case(weft_kernel_ctx_t *cctx, weft_kernel_ctx_t *gctx, const kt_gemm_spec_t *s,
                      uint64_t seed) {
  kt_gemm_data_t d;
  if (!kt_gemm_data_create(s, seed, &d)) {
    WT_CHECK(false, "out of memory");
    kt_gemm_data_destroy(&d);
    return;
  }
  size_t ab = weft_dtype_size(s->ab_dtype), cb = weft_dtype_size(s->c_dtype);
  void *c_cpu = malloc(d.c_elems * cb), *c_gpu = malloc(d.c_elems * cb);
  void *da = to_gpu(d.a, d.a_elems * ab), *db = to_gpu(d.b, d.b_elems * ab);
  void *dc = to_gpu(d.c, d.c_elems * cb);
  if (c_cpu && c_gpu && da && db && dc) {
    memcpy(c_cpu, d.c, d.c_elems * cb);
    WT_CHECK_OK(weft_gemm_batched_strided(cctx, s->trans_a, s->trans_b, s->m, s->n, s->k, s->alpha,
                                          s->ab_dtype, d.a, s->lda, s->stride_a, s->ab_dtype, d.b,
                                          s->ldb, s->stride_b, s->beta, s->c_dtype, c_cpu, s->ldc,
                                          s->stride_c, s->batch));
    if (s->batch == 1)
      WT_CHECK_OK(weft_gemm(gctx, s->trans_a, s->trans_b, s->m, s->n, s->k, s->alpha, s->ab_dtype,
                            da, s->lda, s->ab_dtype, db, s->ldb, s->beta, s->c_dtype, dc, s->ldc));
    else
      WT_CHECK_OK(weft_gemm_batched_strided(gctx, s->trans_a, s->trans_b, s->m, s->n, s->k,
                                            s->alpha, s->ab_dtype, da, s->lda, s->stride_a,
                                            s->ab_dtype, db, s->ldb, s->stride_b, s->beta,
                                            s->c_dtype, dc, s->ldc, s->stride_c, s->batch));
    from_gpu(gctx, c_gpu, dc, d.c_elems * cb);
    /* Tensor-core MMA on bf16 may accumulate by truncation instead of round-to-nearest: up
     * to 2^-23 instead of 2^-24 per addition, so its bound doubles. */
    double gpu_scale = s->ab_dtype == WEFT_DTYPE_BF16 ? 2.0 : 1.0;
    kt_gemm_check(s, &d, c_gpu, gpu_scale, "cuda");
    kt_gemm_compare(s, &d, c_cpu, c_gpu, 1.0 + gpu_scale, "cpu vs cuda");
  } else {
    WT_CHECK(false, "out of memory");
  }
  weft_device_free(g_gpu, da);
  weft_device_free(g_gpu, db);
  weft_device_free(g_gpu, dc);
  free(c_cpu);
  free(c_gpu);
  kt_gemm_data_destroy(&d);
}

static void test_gemm(weft_kernel_ctx_t *cctx, weft_kernel_ctx_t *gctx) {
  static const weft_dtype_t dtypes[3][2] = {{WEFT_DTYPE_F32, WEFT_DTYPE_F32},
                                            {WEFT_DTYPE_BF16, WEFT_DTYPE_F32},
                                            {WEFT_DTYPE_BF16, WEFT_DTYPE_BF16}};
  static const int64_t shapes[][3] = {{1, 1, 1},    {7, 33, 129},    {129, 7, 33},
                                      {33, 129, 7}, {256, 256, 256}, {1000, 64, 333}};
  uint64_t seed = 1;
  for (int dt = 0; dt < 3; dt++)
    for (int t = 0; t < 4; t++)
      for (int sh = 0; sh < 6; sh++)
        for (int batch = 1; batch <= 3; batch += 2) {
          kt_gemm_spec_t s = kt_gemm_spec(t & 1, t >> 1, shapes[sh][0], shapes[sh][1],
                                          shapes[sh][2], sh % 2 ? 3 : 0, batch);
          s.ab_dtype = dtypes[dt][0];
          s.c_dtype = dtypes[dt][1];
          s.alpha = sh % 3 ? 0.75f : 1.0f;
          s.beta = (float)(sh % 3) * 0.5f;         /* 0 (C holds NaN), 0.5, 1 */
          if (batch > 1 && sh % 2) s.stride_a = 0; /* shared A */
          gemm_case(cctx, gctx, &s, seed++);
        }
  /* k = 0: C = beta C on both devices */
  kt_gemm_spec_t s = kt_gemm_spec(false, true, 17, 9, 0, 1, 1);
  s.beta = -0.5f;
  gemm_case(cctx, gctx, &s, seed++);
  /* validation runs before dispatch on CUDA too */
  WT_CHECK_STATUS(weft_gemm(gctx, false, false, 4, 4, 4, 1.0f, WEFT_DTYPE_F32, NULL, 3,
                            WEFT_DTYPE_F32, NULL, 4, 0.0f, WEFT_DTYPE_F32, NULL, 4),
                  WEFT_ERR_INVALID_ARG);
}

int main(void) {
  if (!WEFT_HAVE_CUDA || weft_device_cuda_count() == 0) {
    printf("test_kernels_cuda: skipped (%s)\n",
           WEFT_HAVE_CUDA ? "no CUDA GPU visible" : "built without CUDA");
    return WEFT_TEST_SKIP;
  }
  weft_device_t *cpu = NULL;
  weft_stream_t *stream = NULL;
  weft_kernel_ctx_t *cctx = NULL, *gctx = NULL, *gctx_own = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &cpu));
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CUDA, 0, &g_gpu));
  if (cpu && g_gpu) {
    WT_CHECK_OK(weft_kernel_ctx_create(cpu, NULL, &cctx));
    WT_CHECK_OK(weft_stream_create(g_gpu, &stream));
    if (stream) WT_CHECK_OK(weft_kernel_ctx_create(g_gpu, stream, &gctx));
    WT_CHECK_OK(weft_kernel_ctx_create(g_gpu, NULL, &gctx_own));
  }
  if (cctx && gctx && gctx_own) {
    WT_CHECK(weft_kernel_ctx_stream(gctx) == stream, "context uses the caller's stream");
    static const int64_t sizes[] = {1, 7, 33, 1000, 4099, (1 << 20) + 3};
    for (int d = 0; d < 2; d++)
      for (int i = 0; i < 6; i++) {
        weft_dtype_t dt = d ? WEFT_DTYPE_BF16 : WEFT_DTYPE_F32;
        test_elementwise(cctx, i % 2 ? gctx : gctx_own, dt, sizes[i]);
      }
    test_cast(cctx, gctx);
    test_gemm(cctx, gctx);
    test_gemm(cctx, gctx_own);
  }
  weft_kernel_ctx_destroy(gctx_own);
  weft_kernel_ctx_destroy(gctx);
  weft_kernel_ctx_destroy(cctx);
  weft_stream_destroy(stream);
  weft_device_close(g_gpu);
  weft_device_close(cpu);
  return weft_test_exit_code("test_kernels_cuda");
}
