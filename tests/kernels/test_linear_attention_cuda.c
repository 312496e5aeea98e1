/* CUDA gated linear attention (weft/linear_attention.h) against the CPU back end on the same
 * inputs (style.md rule 9).
 *
 * Every function runs on both devices from identical inputs (the CUDA copies are made with
 * weft_device_copy), so a difference in one function cannot hide or excuse another. Both back
 * ends compute in f32 with f32 accumulation but sum in different orders (and may use
 * different but equivalent forms of the log-decay gradient), so results agree to rounding:
 * each tensor must satisfy |cuda - cpu| <= tol * max(1, max|cpu|) + 1e-3 |cpu| elementwise,
 * with tol = 1e-4 for outputs and states (sums of at most a few hundred O(1) products, f32
 * error ~1e-6 relative per term) and 1e-3 for dg (a sum of differences q dq - k dk that
 * cancels, so its error is relative to the size of the terms, not of the result).
 * With very negative g the tolerance is 2e-3 for every tensor: |c| then reaches 10^3..10^4
 * inside a chunk, and a back end that keeps cumulative log decays in f32 evaluates
 * exp(c_t - c_s) with an exponent error of ulp(|c|) ~ 1e-3 (the CUDA back end keeps them in
 * double and is accurate to ~1e-6 there; checked against a double per-token recurrence).
 * Cases cover n not a multiple of the chunk, n < chunk, n = 0, chunk sizes 7 to 128, widths
 * that are not multiples of the 32-wide CUDA tiles, and very negative log decays (down to
 * -1e3 per token), for which every CUDA output must also be finite.
 * A self-consistency check needs no CPU: splitting a sequence in two, forward_local on the
 * second half plus forward_correct with the first half's state equals forward_local on the
 * whole, and S_n = S_local(2) + diag(exp(log_gamma(2))) S_local(1).
 *
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
#include "weft/linear_attention.h"

#define TOL_VALUES        1e-4
#define TOL_DG            1e-3
#define TOL_VERY_NEGATIVE 2e-3
#define RTOL              1e-3

static weft_device_t *g_gpu;

static void *to_gpu(const float *host, size_t count) {
  void *dev = NULL;
  size_t bytes = count * sizeof(float);
  WT_CHECK_OK(weft_device_alloc(g_gpu, bytes ? bytes : 1, &dev));
  if (dev && bytes)
    WT_CHECK_OK(weft_device_copy(g_gpu, dev, host, bytes, WEFT_COPY_HOST_TO_DEVICE));
  return dev;
}

static void *gpu_alloc(size_t count) {
  void *dev = NULL;
  WT_CHECK_OK(weft_device_alloc(g_gpu, count ? count * sizeof(float) : 1, &dev));
  return dev;
}

static void from_gpu(weft_kernel_ctx_t *gctx, float *host, const void *dev, size_t count) {
  WT_CHECK_OK(weft_kernel_ctx_synchronize(gctx));
  if (count)
    WT_CHECK_OK(
        weft_device_copy(g_gpu, host, dev, count * sizeof(float), WEFT_COPY_DEVICE_TO_HOST));
}

/* Compares one tensor; `label` names the case and the tensor. */
static void compare(const float *cpu, const float *gpu, size_t count, double tol, bool finite,
                    const char *label) {
  double max_abs = 1.0;
  for (size_t x = 0; x < count; x++)
    if (fabs(cpu[x]) > max_abs) max_abs = fabs(cpu[x]);
  double atol = tol * max_abs;
  int bad = 0;
  for (size_t x = 0; x < count; x++) {
    double diff = fabs((double)gpu[x] - (double)cpu[x]);
    bool ok = diff <= atol + RTOL * fabs(cpu[x]) && !(finite && !isfinite(gpu[x]));
    if (!ok && bad++ < 3)
      WT_CHECK(false, "%s: [%zu] cpu %.9g cuda %.9g (|diff| %.3g > %.3g)", label, x, (double)cpu[x],
               (double)gpu[x], diff, atol + RTOL * fabs(cpu[x]));
  }
  if (bad > 3) WT_CHECK(false, "%s: %d elements differ in all", label, bad);
}

typedef struct gla_case {
  int64_t batch, tokens, heads, dk, dv, chunk;
  bool very_negative; /* mix per-token log decays down to -1e3 into g */
} gla_case_t;

static float *rand_buf(size_t count, uint64_t *state, float lo, float hi) {
  float *p = malloc(count ? count * sizeof(float) : 1);
  if (!p) return NULL;
  for (size_t x = 0; x < count; x++) p[x] = lo + (hi - lo) * 0.5f * (kt_rand_uniform(state) + 1.0f);
  return p;
}

static void fill_nan(float *p, size_t count) {
  for (size_t x = 0; x < count; x++) p[x] = NAN;
}

static void run_case(weft_kernel_ctx_t *cctx, weft_kernel_ctx_t *gctx, const gla_case_t *tc,
                     uint64_t seed) {
  weft_gla_shape_t shape = {.batch = tc->batch,
                            .tokens = tc->tokens,
                            .heads = tc->heads,
                            .dk = tc->dk,
                            .dv = tc->dv,
                            .chunk = tc->chunk,
                            .scale = 1.0f / sqrtf((float)tc->dk)};
  char label[160];
  int prefix = snprintf(label, sizeof label, "B=%lld n=%lld H=%lld dk=%lld dv=%lld C=%lld%s",
                        (long long)tc->batch, (long long)tc->tokens, (long long)tc->heads,
                        (long long)tc->dk, (long long)tc->dv, (long long)tc->chunk,
                        tc->very_negative ? " very-negative-g" : "");
  size_t nk = (size_t)(tc->batch * tc->tokens * tc->heads * tc->dk);
  size_t nv = (size_t)(tc->batch * tc->tokens * tc->heads * tc->dv);
  size_t ns = (size_t)(tc->batch * tc->heads * tc->dk * tc->dv);
  size_t ng = (size_t)(tc->batch * tc->heads * tc->dk);
  uint64_t state = seed;
  float *q = rand_buf(nk, &state, -1.0f, 1.0f), *k = rand_buf(nk, &state, -1.0f, 1.0f);
  float *v = rand_buf(nv, &state, -1.0f, 1.0f), *dout = rand_buf(nv, &state, -1.0f, 1.0f);
  float *g = rand_buf(nk, &state, -0.5f, 0.0f);
  float *s_in = rand_buf(ns, &state, -1.0f, 1.0f), *ds_out = rand_buf(ns, &state, -1.0f, 1.0f);
  /* results: [0] CPU, [1] CUDA copied back */
  float *out[2], *s_local[2], *log_gamma[2], *ds_local[2], *dq[2], *dk[2], *dv[2], *dg[2];
  for (int r = 0; r < 2; r++) {
    out[r] = malloc(nv * sizeof(float) + 1);
    s_local[r] = malloc(ns * sizeof(float) + 1);
    log_gamma[r] = malloc(ng * sizeof(float) + 1);
    ds_local[r] = malloc(ns * sizeof(float) + 1);
    dq[r] = malloc(nk * sizeof(float) + 1);
    dk[r] = malloc(nk * sizeof(float) + 1);
    dv[r] = malloc(nv * sizeof(float) + 1);
    dg[r] = malloc(nk * sizeof(float) + 1);
  }
  if (!q || !k || !v || !dout || !g || !s_in || !ds_out || !out[0] || !out[1] || !s_local[0] ||
      !s_local[1] || !log_gamma[0] || !log_gamma[1] || !ds_local[0] || !ds_local[1] || !dq[0] ||
      !dq[1] || !dk[0] || !dk[1] || !dv[0] || !dv[1] || !dg[0] || !dg[1]) {
    WT_CHECK(false, "out of memory");
    goto done;
  }
  if (tc->very_negative) /* every 5th value very negative: exp(c) underflows to exactly 0 */
    for (size_t x = 0; x < nk; x++)
      if (x % 5 == 2) g[x] = -30.0f - 970.0f * 0.5f * (kt_rand_uniform(&state) + 1.0f);
  bool finite = true; /* CUDA outputs must be finite for any g <= 0 */
  double tol = tc->very_negative ? TOL_VERY_NEGATIVE : TOL_VALUES;
  double tol_dg = tc->very_negative ? TOL_VERY_NEGATIVE : TOL_DG;

  float *d_q = to_gpu(q, nk), *d_k = to_gpu(k, nk), *d_v = to_gpu(v, nv), *d_g = to_gpu(g, nk);
  float *d_dout = to_gpu(dout, nv), *d_s_in = to_gpu(s_in, ns), *d_ds_out = to_gpu(ds_out, ns);
  /* outputs start as NaN on the GPU, so an element the kernels forget to write shows up */
  float *nan_k = malloc(nk * sizeof(float) + 1), *nan_v = malloc(nv * sizeof(float) + 1);
  float *nan_s = malloc(ns * sizeof(float) + 1), *nan_g = malloc(ng * sizeof(float) + 1);
  if (!nan_k || !nan_v || !nan_s || !nan_g) {
    WT_CHECK(false, "out of memory");
    free(nan_k), free(nan_v), free(nan_s), free(nan_g);
    goto free_gpu_inputs;
  }
  fill_nan(nan_k, nk), fill_nan(nan_v, nv), fill_nan(nan_s, ns), fill_nan(nan_g, ng);
  float *d_out = to_gpu(nan_v, nv), *d_s_local = to_gpu(nan_s, ns), *d_lg = to_gpu(nan_g, ng);
  float *d_ds_local = to_gpu(nan_s, ns), *d_dq = to_gpu(nan_k, nk), *d_dk = to_gpu(nan_k, nk);
  float *d_dv = to_gpu(nan_v, nv), *d_dg = to_gpu(nan_k, nk);
  free(nan_k), free(nan_v), free(nan_s), free(nan_g);

  /* forward_local */
  WT_CHECK_OK(weft_gla_forward_local(cctx, &shape, q, k, v, g, out[0], s_local[0], log_gamma[0]));
  WT_CHECK_OK(weft_gla_forward_local(gctx, &shape, d_q, d_k, d_v, d_g, d_out, d_s_local, d_lg));
  from_gpu(gctx, out[1], d_out, nv);
  from_gpu(gctx, s_local[1], d_s_local, ns);
  from_gpu(gctx, log_gamma[1], d_lg, ng);
  snprintf(label + prefix, sizeof label - (size_t)prefix, " forward_local out");
  compare(out[0], out[1], nv, tol, finite, label);
  snprintf(label + prefix, sizeof label - (size_t)prefix, " forward_local s_local");
  compare(s_local[0], s_local[1], ns, tol, finite, label);
  snprintf(label + prefix, sizeof label - (size_t)prefix, " forward_local log_gamma");
  compare(log_gamma[0], log_gamma[1], ng, tol, finite, label);
  if (tc->tokens == 0) { /* the contract: S_local = 0 and log_gamma = 0 exactly */
    for (size_t x = 0; x < ns; x++)
      WT_CHECK(s_local[1][x] == 0.0f, "%s: n = 0 s_local[%zu] = %g", label, x,
               (double)s_local[1][x]);
    for (size_t x = 0; x < ng; x++)
      WT_CHECK(log_gamma[1][x] == 0.0f, "%s: n = 0 log_gamma[%zu] = %g", label, x,
               (double)log_gamma[1][x]);
  }

  /* forward_correct, on the same out (the CPU's) on both devices */
  if (nv)
    WT_CHECK_OK(
        weft_device_copy(g_gpu, d_out, out[0], nv * sizeof(float), WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_gla_forward_correct(cctx, &shape, q, g, s_in, out[0]));
  WT_CHECK_OK(weft_gla_forward_correct(gctx, &shape, d_q, d_g, d_s_in, d_out));
  from_gpu(gctx, out[1], d_out, nv);
  snprintf(label + prefix, sizeof label - (size_t)prefix, " forward_correct out");
  compare(out[0], out[1], nv, tol, finite, label);

  /* backward_state_local */
  WT_CHECK_OK(weft_gla_backward_state_local(cctx, &shape, q, g, dout, ds_local[0]));
  WT_CHECK_OK(weft_gla_backward_state_local(gctx, &shape, d_q, d_g, d_dout, d_ds_local));
  from_gpu(gctx, ds_local[1], d_ds_local, ns);
  snprintf(label + prefix, sizeof label - (size_t)prefix, " backward_state_local ds_local");
  compare(ds_local[0], ds_local[1], ns, tol, finite, label);

  /* backward */
  WT_CHECK_OK(
      weft_gla_backward(cctx, &shape, q, k, v, g, dout, s_in, ds_out, dq[0], dk[0], dv[0], dg[0]));
  WT_CHECK_OK(weft_gla_backward(gctx, &shape, d_q, d_k, d_v, d_g, d_dout, d_s_in, d_ds_out, d_dq,
                                d_dk, d_dv, d_dg));
  from_gpu(gctx, dq[1], d_dq, nk);
  from_gpu(gctx, dk[1], d_dk, nk);
  from_gpu(gctx, dv[1], d_dv, nv);
  from_gpu(gctx, dg[1], d_dg, nk);
  snprintf(label + prefix, sizeof label - (size_t)prefix, " backward dq");
  compare(dq[0], dq[1], nk, tol, finite, label);
  snprintf(label + prefix, sizeof label - (size_t)prefix, " backward dk");
  compare(dk[0], dk[1], nk, tol, finite, label);
  snprintf(label + prefix, sizeof label - (size_t)prefix, " backward dv");
  compare(dv[0], dv[1], nv, tol, finite, label);
  snprintf(label + prefix, sizeof label - (size_t)prefix, " backward dg");
  compare(dg[0], dg[1], nk, tol_dg, finite, label);

  weft_device_free(g_gpu, d_out);
  weft_device_free(g_gpu, d_s_local);
  weft_device_free(g_gpu, d_lg);
  weft_device_free(g_gpu, d_ds_local);
  weft_device_free(g_gpu, d_dq);
  weft_device_free(g_gpu, d_dk);
  weft_device_free(g_gpu, d_dv);
  weft_device_free(g_gpu, d_dg);
free_gpu_inputs:
  weft_device_free(g_gpu, d_q);
  weft_device_free(g_gpu, d_k);
  weft_device_free(g_gpu, d_v);
  weft_device_free(g_gpu, d_g);
  weft_device_free(g_gpu, d_dout);
  weft_device_free(g_gpu, d_s_in);
  weft_device_free(g_gpu, d_ds_out);
done:
  free(q), free(k), free(v), free(dout), free(g), free(s_in), free(ds_out);
  for (int r = 0; r < 2; r++) {
    free(out[r]), free(s_local[r]), free(log_gamma[r]), free(ds_local[r]);
    free(dq[r]), free(dk[r]), free(dv[r]), free(dg[r]);
  }
}

/* Two "ranks" on the GPU alone (B = 1, so a token range is one contiguous block):
 * forward_local(all) == forward_local(second) + forward_correct(second, S_local(first)) on the
 * second half, and S_local(all) == S_local(second) + diag(exp(log_gamma(second))) S_local(first).
 */
static void split_case(weft_kernel_ctx_t *gctx, int64_t n, int64_t n1, int64_t chunk) {
  enum { H = 2, DK = 24, DV = 40 };
  size_t nk = (size_t)(n * H * DK), nv = (size_t)(n * H * DV), ns = H * DK * DV, ng = H * DK;
  size_t off_k = (size_t)(n1 * H * DK), off_v = (size_t)(n1 * H * DV);
  uint64_t state = 99 + (uint64_t)n1;
  float *q = rand_buf(nk, &state, -1.0f, 1.0f), *k = rand_buf(nk, &state, -1.0f, 1.0f);
  float *v = rand_buf(nv, &state, -1.0f, 1.0f), *g = rand_buf(nk, &state, -0.3f, 0.0f);
  float *o_all = malloc(nv * sizeof(float)), *o_split = malloc(nv * sizeof(float));
  float *s_all = malloc(ns * sizeof(float)), *s1 = malloc(ns * sizeof(float));
  float *s2 = malloc(ns * sizeof(float)), *lg2 = malloc(ng * sizeof(float));
  if (!q || !k || !v || !g || !o_all || !o_split || !s_all || !s1 || !s2 || !lg2) {
    WT_CHECK(false, "out of memory");
    goto done;
  }
  weft_gla_shape_t all = {
      .batch = 1, .tokens = n, .heads = H, .dk = DK, .dv = DV, .chunk = chunk, .scale = 0.2f};
  weft_gla_shape_t first = all, second = all;
  first.tokens = n1;
  second.tokens = n - n1;
  float *d_q = to_gpu(q, nk), *d_k = to_gpu(k, nk), *d_v = to_gpu(v, nv), *d_g = to_gpu(g, nk);
  float *d_o = gpu_alloc(nv), *d_s = gpu_alloc(ns), *d_s1 = gpu_alloc(ns);
  float *d_lg = gpu_alloc(ng);
  WT_CHECK_OK(weft_gla_forward_local(gctx, &all, d_q, d_k, d_v, d_g, d_o, d_s, d_lg));
  from_gpu(gctx, o_all, d_o, nv);
  from_gpu(gctx, s_all, d_s, ns);
  WT_CHECK_OK(weft_gla_forward_local(gctx, &first, d_q, d_k, d_v, d_g, d_o, d_s1, d_lg));
  WT_CHECK_OK(weft_gla_forward_local(gctx, &second, d_q + off_k, d_k + off_k, d_v + off_v,
                                     d_g + off_k, d_o + off_v, d_s, d_lg));
  WT_CHECK_OK(weft_gla_forward_correct(gctx, &second, d_q + off_k, d_g + off_k, d_s1, d_o + off_v));
  from_gpu(gctx, o_split, d_o, nv);
  from_gpu(gctx, s1, d_s1, ns);
  from_gpu(gctx, s2, d_s, ns);
  from_gpu(gctx, lg2, d_lg, ng);
  for (size_t x = 0; x < ns; x++) s2[x] += expf(lg2[x / DV]) * s1[x]; /* row i = x / DV */
  char label[96];
  snprintf(label, sizeof label, "split n=%lld at %lld C=%lld out", (long long)n, (long long)n1,
           (long long)chunk);
  compare(o_all, o_split, nv, TOL_VALUES, true, label);
  snprintf(label, sizeof label, "split n=%lld at %lld C=%lld state", (long long)n, (long long)n1,
           (long long)chunk);
  compare(s_all, s2, ns, TOL_VALUES, true, label);
  weft_device_free(g_gpu, d_q);
  weft_device_free(g_gpu, d_k);
  weft_device_free(g_gpu, d_v);
  weft_device_free(g_gpu, d_g);
  weft_device_free(g_gpu, d_o);
  weft_device_free(g_gpu, d_s);
  weft_device_free(g_gpu, d_s1);
  weft_device_free(g_gpu, d_lg);
done:
  free(q), free(k), free(v), free(g), free(o_all), free(o_split);
  free(s_all), free(s1), free(s2), free(lg2);
}

int main(void) {
  if (!WEFT_HAVE_CUDA || weft_device_cuda_count() == 0) {
    printf("test_linear_attention_cuda: skipped (%s)\n",
           WEFT_HAVE_CUDA ? "no CUDA GPU visible" : "built without CUDA");
    return WEFT_TEST_SKIP;
  }
  weft_device_t *cpu = NULL;
  weft_kernel_ctx_t *cctx = NULL, *gctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &cpu));
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CUDA, 0, &g_gpu));
  if (cpu) WT_CHECK_OK(weft_kernel_ctx_create(cpu, NULL, &cctx));
  if (g_gpu) WT_CHECK_OK(weft_kernel_ctx_create(g_gpu, NULL, &gctx));
  if (cctx && gctx) {
    static const gla_case_t cases[] = {
        /* B, n, H, dk, dv, chunk, very negative g */
        {2, 100, 3, 32, 48, 64, false},  /* n not a multiple of the chunk */
        {1, 0, 2, 16, 16, 64, false},    /* no tokens */
        {1, 1, 1, 8, 8, 0, false},       /* one token, default chunk */
        {2, 257, 2, 64, 64, 16, false},  /* many chunks, last one of 1 token */
        {1, 300, 2, 40, 24, 128, false}, /* chunk > 64, widths off the 32-tile */
        {1, 77, 1, 33, 65, 32, true},    {1, 50, 1, 16, 16, 7, false}, /* odd chunk */
        {1, 64, 2, 128, 128, 64, false}, {2, 200, 2, 32, 32, 64, true},
        {1, 130, 1, 20, 36, 16, true},   {1, 10, 1, 12, 20, 64, true}, /* n < chunk */
    };
    uint64_t seed = 1;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
      run_case(cctx, gctx, &cases[c], seed++);
    split_case(gctx, 150, 70, 32);
    split_case(gctx, 150, 64, 64);
    split_case(gctx, 150, 149, 0);
  }
  weft_kernel_ctx_destroy(gctx);
  weft_kernel_ctx_destroy(cctx);
  weft_device_close(g_gpu);
  weft_device_close(cpu);
  return weft_test_exit_code("test_linear_attention_cuda");
}
