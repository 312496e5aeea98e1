/* CUDA MoE kernels (weft/moe.h) against the CPU kernels on the same inputs.
 *
 * Router ids must be bitwise equal (ties included, and a row of NaN logits, which both rank as
 * -inf); gather_sum must be bitwise equal (both devices do the same unfused f32 operations in
 * the same order, see kernels/cuda/moe.cu). Other results are compared as
 *   max |cuda - cpu| <= TOL * max |cpu|   over each tensor
 * with TOL_ELEMENTWISE = 1e-6 (router, SwiGLU: the devices' expf differ by an ulp or two, sums
 * run in double on both), TOL_DOT = 1e-5 (row dots: f32 sums in different orders) and
 * TOL_GEMM = 1e-5 (grouped experts: OpenBLAS vs cuBLAS, sums of up to 130 terms, two chained).
 * Exits 77 (skipped) when the build has no CUDA backend or no GPU is visible. */
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

#define TOL_ELEMENTWISE 1e-6
#define TOL_DOT         1e-5
#define TOL_GEMM        1e-5

static weft_device_t *g_gpu;
static weft_kernel_ctx_t *g_gctx;
static uint64_t g_rng = 777;

/* This file's views of the shared helpers (kernel_test_common.h). */
static void *xalloc(size_t bytes) { return kt_xalloc(bytes); }
static float *rand_floats(size_t n, float scale) { return kt_rand_floats(&g_rng, n, scale); }
static void *to_gpu(const void *host, size_t bytes) { return kt_to_gpu(g_gpu, host, bytes); }
static void *from_gpu(const void *dev, size_t bytes) { return kt_from_gpu(g_gpu, dev, bytes); }

/* max |gpu - cpu| <= tol * max |cpu|; tol = 0 demands equal bits. */
static void compare(const char *label, const float *cpu, const float *gpu, size_t n, double tol) {
  if (tol == 0.0) {
    size_t i = 0;
    while (i < n && memcmp(cpu + i, gpu + i, sizeof(float)) == 0) i++;
    WT_CHECK(i == n, "%s: [%zu] cpu %.9g cuda %.9g (must be bitwise equal)", label, i,
             i < n ? (double)cpu[i] : 0.0, i < n ? (double)gpu[i] : 0.0);
    return;
  }
  double cmax = 0.0, err = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) cmax = fmax(cmax, fabs(cpu[i]));
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)gpu[i] - cpu[i]);
    if (!(e <= err)) err = isnan(e) ? INFINITY : e, at = i;
  }
  WT_CHECK(err <= tol * cmax, "%s: [%zu] cpu %.9g cuda %.9g: |diff| %.3g > %.1g x max %.3g", label,
           at, n ? (double)cpu[at] : 0.0, n ? (double)gpu[at] : 0.0, err, tol, cmax);
}

static void test_router(weft_kernel_ctx_t *cctx, int64_t T, int64_t E, int k, bool normalize) {
  char label[128];
  int n = snprintf(label, sizeof label, "router T=%lld E=%lld k=%d%s", (long long)T, (long long)E,
                   k, normalize ? " normalize" : "");
  size_t te = (size_t)(T * E), tk = (size_t)(T * k);
  float *l = rand_floats(te, 4.0f), *dw = rand_floats(tk, 1.0f), *coef = rand_floats(E, 0.3f);
  for (int64_t i = 0; i < E; i++) l[i] = 1.0f;                /* row 0: all tied */
  if (T > 2 && E >= 8) l[E + 3] = l[E + 6] = l[E + 1] = 9.0f; /* row 1: a tied top three */
  if (T > 3) /* last row: NaN logits rank as -inf, and one -inf */
    for (int64_t i = 0; i < E; i++) l[(T - 1) * E + i] = i == E / 2 ? -INFINITY : NAN;
  int64_t Tf = T > 3 ? T - 1 : T; /* rows with finite probabilities */
  float *p = xalloc(te * 4), *lse = xalloc((size_t)T * 4), *w = xalloc(tk * 4),
        *dl = xalloc(te * 4);
  int32_t *ids = xalloc(tk * 4);
  WT_CHECK_OK(weft_moe_router_topk(cctx, T, E, k, normalize, l, p, lse, ids, w));
  WT_CHECK_OK(
      weft_moe_router_backward(cctx, T, E, k, normalize, p, lse, ids, w, dw, coef, 0.25f, dl));
  float *d_l = to_gpu(l, te * 4), *d_p = to_gpu(NULL, te * 4), *d_lse = to_gpu(NULL, (size_t)T * 4);
  float *d_w = to_gpu(NULL, tk * 4), *d_dl = to_gpu(NULL, te * 4);
  int32_t *d_ids = to_gpu(NULL, tk * 4);
  WT_CHECK_OK(weft_moe_router_topk(g_gctx, T, E, k, normalize, d_l, d_p, d_lse, d_ids, d_w));
  int32_t *g_ids = from_gpu(d_ids, tk * 4);
  float *g_p = from_gpu(d_p, te * 4), *g_lse = from_gpu(d_lse, (size_t)T * 4);
  float *g_w = from_gpu(d_w, tk * 4);
  for (size_t i = 0; i < tk; i++)
    WT_CHECK(ids[i] == g_ids[i], "%s: ids[%zu] cpu %d cuda %d", label, i, ids[i], g_ids[i]);
  snprintf(label + n, sizeof label - (size_t)n, " probs");
  compare(label, p, g_p, (size_t)(Tf * E), TOL_ELEMENTWISE);
  snprintf(label + n, sizeof label - (size_t)n, " lse");
  compare(label, lse, g_lse, (size_t)Tf, TOL_ELEMENTWISE);
  snprintf(label + n, sizeof label - (size_t)n, " weights");
  compare(label, w, g_w, (size_t)(Tf * k), TOL_ELEMENTWISE);
  /* backward on the CPU's forward results, so both see the same inputs */
  float *d_dw = to_gpu(dw, tk * 4), *d_coef = to_gpu(coef, (size_t)E * 4);
  WT_CHECK_OK(weft_device_copy(g_gpu, d_p, p, te * 4, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_device_copy(g_gpu, d_lse, lse, (size_t)T * 4, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_device_copy(g_gpu, d_w, w, tk * 4, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_device_copy(g_gpu, d_ids, ids, tk * 4, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_moe_router_backward(g_gctx, T, E, k, normalize, d_p, d_lse, d_ids, d_w, d_dw,
                                       d_coef, 0.25f, d_dl));
  float *g_dl = from_gpu(d_dl, te * 4);
  snprintf(label + n, sizeof label - (size_t)n, " dlogits");
  compare(label, dl, g_dl, (size_t)(Tf * E), TOL_ELEMENTWISE);
  void *dev[] = {d_l, d_p, d_lse, d_w, d_dl, d_ids, d_dw, d_coef};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) weft_device_free(g_gpu, dev[i]);
  free(l), free(dw), free(coef), free(p), free(lse), free(w), free(dl), free(ids);
  free(g_ids), free(g_p), free(g_lse), free(g_w), free(g_dl);
}

static void test_rows(weft_kernel_ctx_t *cctx, int64_t rows, int64_t width, int fan,
                      bool weighted) {
  char label[128];
  snprintf(label, sizeof label, "gather_sum rows=%lld width=%lld fan=%d%s", (long long)rows,
           (long long)width, fan, weighted ? " weighted" : "");
  int64_t S = rows / 2 + 3, src_ld = width + 3, dst_ld = width + 1;
  size_t ns = (size_t)(S * src_ld), nd = (size_t)(rows * dst_ld), nl = (size_t)(rows * fan);
  float *src = rand_floats(ns, 1.0f), *w = rand_floats(nl, 1.0f), *dst = rand_floats(nd, 1.0f);
  int32_t *idx = xalloc(nl * 4);
  for (size_t i = 0; i < nl; i++) idx[i] = (int32_t)(kt_rand_u64(&g_rng) % (uint64_t)(S + 2)) - 2;
  float *d_src = to_gpu(src, ns * 4), *d_w = to_gpu(w, nl * 4), *d_dst = to_gpu(dst, nd * 4);
  int32_t *d_idx = to_gpu(idx, nl * 4);
  const float *wp = weighted ? w : NULL, *d_wp = weighted ? d_w : NULL;
  WT_CHECK_OK(weft_moe_gather_sum(cctx, rows, width, fan, src, src_ld, idx, wp, dst, dst_ld));
  WT_CHECK_OK(
      weft_moe_gather_sum(g_gctx, rows, width, fan, d_src, src_ld, d_idx, d_wp, d_dst, dst_ld));
  float *g_dst = from_gpu(d_dst, nd * 4);
  compare(label, dst, g_dst, nd, 0.0); /* padding included: untouched on both */
  /* row dots of the gathered rows with source rows picked by idx (negative: 0) */
  float *out = xalloc((size_t)rows * 4), *d_out = to_gpu(NULL, (size_t)rows * 4);
  for (int m = 0; m < 2; m++) {
    const int32_t *ia = m ? idx : NULL, *d_ia = m ? d_idx : NULL;
    snprintf(label, sizeof label, "row_dot rows=%lld width=%lld%s", (long long)rows,
             (long long)width, m ? " a_idx" : "");
    WT_CHECK_OK(weft_moe_row_dot(cctx, rows, width, m ? src : dst, m ? src_ld : dst_ld, ia, dst,
                                 dst_ld, NULL, out));
    WT_CHECK_OK(weft_moe_row_dot(g_gctx, rows, width, m ? d_src : d_dst, m ? src_ld : dst_ld, d_ia,
                                 d_dst, dst_ld, NULL, d_out));
    float *g_out = from_gpu(d_out, (size_t)rows * 4);
    compare(label, out, g_out, (size_t)rows, TOL_DOT);
    free(g_out);
  }
  weft_device_free(g_gpu, d_src), weft_device_free(g_gpu, d_w), weft_device_free(g_gpu, d_dst);
  weft_device_free(g_gpu, d_idx), weft_device_free(g_gpu, d_out);
  free(src), free(w), free(dst), free(idx), free(g_dst), free(out);
}

static void test_swiglu(weft_kernel_ctx_t *cctx, int64_t n) {
  size_t bytes = (size_t)n * 4;
  float *a = rand_floats((size_t)n, 12.0f), *b = rand_floats((size_t)n, 1.0f);
  float *g = rand_floats((size_t)n, 1.0f);
  const float special[] = {30, -30, 88, -88, 89, -89, 100, -100, 0};
  if (n >= 9) memcpy(a, special, sizeof special);
  float *act = xalloc(bytes), *da = xalloc(bytes), *db = xalloc(bytes);
  float *d_a = to_gpu(a, bytes), *d_b = to_gpu(b, bytes), *d_g = to_gpu(g, bytes);
  float *d_act = to_gpu(NULL, bytes), *d_db = to_gpu(NULL, bytes);
  WT_CHECK_OK(weft_moe_swiglu_forward(cctx, n, a, b, act));
  WT_CHECK_OK(weft_moe_swiglu_backward(cctx, n, a, b, g, da, db));
  WT_CHECK_OK(weft_moe_swiglu_forward(g_gctx, n, d_a, d_b, d_act));
  WT_CHECK_OK(weft_moe_swiglu_backward(g_gctx, n, d_a, d_b, d_g, d_g, d_db)); /* da over dact */
  float *g_act = from_gpu(d_act, bytes), *g_da = from_gpu(d_g, bytes),
        *g_db = from_gpu(d_db, bytes);
  char label[64];
  snprintf(label, sizeof label, "swiglu n=%lld act", (long long)n);
  compare(label, act, g_act, (size_t)n, TOL_ELEMENTWISE);
  snprintf(label, sizeof label, "swiglu n=%lld da", (long long)n);
  compare(label, da, g_da, (size_t)n, TOL_ELEMENTWISE);
  snprintf(label, sizeof label, "swiglu n=%lld db", (long long)n);
  compare(label, db, g_db, (size_t)n, TOL_ELEMENTWISE);
  weft_device_free(g_gpu, d_a), weft_device_free(g_gpu, d_b), weft_device_free(g_gpu, d_g);
  weft_device_free(g_gpu, d_act), weft_device_free(g_gpu, d_db);
  free(a), free(b), free(g), free(act), free(da), free(db), free(g_act), free(g_da), free(g_db);
}

static void test_experts(weft_kernel_ctx_t *cctx, int64_t E, const int64_t *off, int64_t h,
                         int64_t f) {
  weft_moe_experts_shape_t s = {.experts = E, .hidden = h, .ffn = f};
  int64_t M = off[E];
  size_t mh = (size_t)(M * h) * 4, mf = (size_t)(M * f) * 4, wn = (size_t)(E * h * f) * 4;
  float *in[5] = {rand_floats(mh / 4, 1.0f), rand_floats(wn / 4, 0.2f), rand_floats(wn / 4, 0.2f),
                  rand_floats(wn / 4, 0.2f), rand_floats(mh / 4, 1.0f)}; /* x w1 w3 w2 dy */
  float *d_in[5];
  for (int i = 0; i < 5; i++) d_in[i] = to_gpu(in[i], i == 0 || i == 4 ? mh : wn);
  /* outputs: a b act y dx dw1 dw3 dw2, then work; dw start from the same random values */
  static const char *const names[8] = {"a", "b", "act", "y", "dx", "dw1", "dw3", "dw2"};
  size_t sizes[9] = {mf, mf, mf, mh, mh, wn, wn, wn, 2 * mf};
  float *c[9], *d[9];
  for (int i = 0; i < 9; i++) {
    c[i] = i >= 5 && i < 8 ? rand_floats(sizes[i] / 4, 1.0f) : xalloc(sizes[i]);
    d[i] = to_gpu(i >= 5 && i < 8 ? c[i] : NULL, sizes[i]);
  }
  for (int r = 0; r < 2; r++) {
    weft_kernel_ctx_t *ctx = r ? g_gctx : cctx;
    float **x = r ? d_in : in, **o = r ? d : c;
    WT_CHECK_OK(
        weft_moe_experts_forward(ctx, &s, off, x[0], x[1], x[2], x[3], o[0], o[1], o[2], o[3]));
    WT_CHECK_OK(weft_moe_experts_backward(ctx, &s, off, x[0], x[1], x[2], x[3], o[0], o[1], o[2],
                                          x[4], o[4], o[5], o[6], o[7], o[8]));
  }
  for (int i = 0; i < 8; i++) {
    float *g = from_gpu(d[i], sizes[i]);
    char label[128];
    snprintf(label, sizeof label, "experts E=%lld M=%lld h=%lld f=%lld %s", (long long)E,
             (long long)M, (long long)h, (long long)f, names[i]);
    compare(label, c[i], g, sizes[i] / 4, TOL_GEMM);
    free(g);
  }
  for (int i = 0; i < 5; i++) weft_device_free(g_gpu, d_in[i]), free(in[i]);
  for (int i = 0; i < 9; i++) weft_device_free(g_gpu, d[i]), free(c[i]);
}

int main(void) {
  if (!WEFT_HAVE_CUDA || weft_device_cuda_count() == 0) {
    printf("test_moe_cuda: skipped (%s)\n",
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
    const struct {
      int64_t T, E;
      int k;
    } routers[] = {{1000, 64, 2}, {1000, 64, 8}, {37, 8, 8}, {50, 256, 1}, {33, 1, 1}, {5, 160, 6}};
    for (size_t i = 0; i < sizeof routers / sizeof routers[0]; i++)
      for (int norm = 0; norm < 2; norm++)
        test_router(cctx, routers[i].T, routers[i].E, routers[i].k, norm);
    test_rows(cctx, 17, 19, 1, false);
    test_rows(cctx, 200, 64, 2, true);
    test_rows(cctx, 5000, 512, 3, true); /* more elements than one grid-stride pass */
    test_rows(cctx, 300, 1000, 1, true);
    test_swiglu(cctx, 1000);
    test_swiglu(cctx, 3 << 20);
    const int64_t off4[] = {0, 37, 37, 100, 130}, off2[] = {0, 0, 64};
    test_experts(cctx, 4, off4, 64, 96);
    test_experts(cctx, 2, off2, 128, 256);
  }
  weft_kernel_ctx_destroy(g_gctx);
  weft_kernel_ctx_destroy(cctx);
  weft_device_close(g_gpu);
  weft_device_close(cpu);
  return weft_test_exit_code("test_moe_cuda");
}
