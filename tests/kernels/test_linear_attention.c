/* CPU gated linear attention (weft/linear_attention.h) against a float64 token-by-token
 * reference.
 *
 * The reference runs the recurrence S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t,
 * o_t = scale q_t S_t in double and differentiates it by hand (reverse mode) for the loss
 *   L = sum_t do_t . o_t + sum dS_out * S_n
 * with H_t = dL/dS_t (total):  H_n = dS_out + scale q_n^T do_n,
 *   H_{t-1} = diag(exp(g_t)) H_t + scale q_{t-1}^T do_{t-1},  dS_in = diag(exp(g_1)) H_1,
 *   dq_t = scale S_t do_t^T,  dk_t = H_t v_t^T,  dv_t = k_t H_t,
 *   dg_t[i] = sum_j H_t[i,j] exp(g_t[i]) S_{t-1}[i,j]
 * (the direct form; the kernel uses the reverse-cumsum identity, so the two check each other).
 * The reference gradient itself is checked against central finite differences in double on a
 * tiny problem.
 *
 * Tolerances. Every kernel result x is compared elementwise with the reference r as
 *   |x - r| <= RTOL * m
 * where m is the same quantity computed by the reference from |q|, |k|, |v|, |do|, |S_in|,
 * |dS_out| (same g): the sum of the absolute values of the terms that make up r, which is
 * what f32 rounding errors scale with (as for GEMM, error <= k eps sum |a_i b_i|). For dg the
 * kernel sums q_u dq_u - k_u dk_u over the rest of a chunk, terms that cancel when the decay
 * is strong, so its m adds |q_t| m(dq_t) + |k_t| m(dk_t). Each f32 result is a chain of at most
 * a few hundred roundings (chunk length, dk, dv, and one state update per chunk; the cumsum of
 * dg runs in double), i.e. well below 1e-5 relative to m; RTOL = 1e-4 leaves a factor ~10.
 * A floor of FLOOR = 1e-6 (~16 f32 ulps) times the largest m in the element's row (its
 * token's head vector, or its [dk, dv] state) absorbs values far below
 * the rest of the tensor: the kernel's dg sums terms over the rest of a chunk that cancel
 * exactly in real arithmetic, and when g_t ~ -30 the true dg_t (~1e-20 here) is smaller than
 * one rounding of those terms (~1e-13 * 2^-24). The bound does not loosen with n: m is per
 * element, the floor is per row, and no term is scaled by the token count.
 * Cases: n = 0, 1, C-1, C, C+1, 3C+5 for C = 1, 16, 64, a chunk larger than n, the default
 * chunk; B = 2, H = 3, dk = 16, dv = 24 (and dk = dv = 64); g = 0, small decays, and mixed
 * decays with channels at -30 and -1000 per token (outputs must stay finite); random S_in
 * and dS_out. The CPU kernel evaluates each chunk and channel either by GEMMs of factorised
 * decays (when the chunk's decay is at most 60 and q, k, dA are not huge) or exactly, so two
 * more g modes aim at that choice: chunks alternating between mild, extreme and near-bound
 * (-59.5 and -60.5 per chunk) decays in one call, and decays at the bound with k of 1e28 or
 * dout of 1e28, which the factorised form would overflow (see case_create). Head subsets
 * (layout_heads > heads) are checked bitwise against whole-tensor calls, see
 * run_head_subsets, and 1 against 3 CPU threads, see run_thread_counts. */
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

#define RTOL  1e-4
#define FLOOR 1e-6

typedef enum { G_ZERO, G_SMALL, G_MIXED, G_CHUNKS, G_HUGE } g_mode_t;
static const char *const g_mode_name[] = {"g=0", "g small", "g mixed(-30,-1000)",
                                          "g per chunk (mild, extreme, at the fast bound)",
                                          "g at the fast bound, huge k (b=0) or dout (b=1)"};

/* Inputs in f32 (what the kernel sees) and their gradient seeds. */
typedef struct gla_case {
  weft_gla_shape_t shape;
  size_t nk, nv, ns; /* elements of [B,n,H,dk], [B,n,H,dv], [B,H,dk,dv] */
  float *q, *k, *v, *g, *dout, *s_in, *ds_out;
} gla_case_t;

/* Reference results in double, same layouts as the kernel's. */
typedef struct gla_ref {
  double *o, *s_n, *s_local, *ds_in, *dq, *dk, *dv, *dg;
} gla_ref_t;

static size_t tok_index(const weft_gla_shape_t *s, int64_t b, int64_t t, int64_t h, int64_t w) {
  return (size_t)(((b * s->tokens + t) * s->heads + h) * w);
}

/* The float64 reference for one (b, h), all tensors of the case; `absval` uses |x| for every
 * input except g (the error magnitude m, see the file note); `zero_sin` starts from S = 0. */
static void ref_run(const gla_case_t *c, bool absval, bool zero_sin, gla_ref_t *r) {
  const weft_gla_shape_t *s = &c->shape;
  int64_t n = s->tokens, dk = s->dk, dv = s->dv;
  size_t st = (size_t)(dk * dv);
  double *states = calloc((size_t)(n + 1) * st, sizeof(double));
  double *hgrad = calloc(st, sizeof(double));
  if (!states || !hgrad) abort();
#define IN(x, i) (absval ? fabs((double)(x)[i]) : (double)(x)[i])
  for (int64_t b = 0; b < s->batch; b++) {
    for (int64_t h = 0; h < s->heads; h++) {
      size_t so = (size_t)((b * s->heads + h) * dk * dv);
      for (size_t e = 0; e < st; e++) states[e] = zero_sin ? 0.0 : IN(c->s_in, so + e);
      for (int64_t t = 0; t < n; t++) {
        size_t ok = tok_index(s, b, t, h, dk), ov = tok_index(s, b, t, h, dv);
        double *sp = states + (size_t)t * st, *sn = sp + st;
        for (int64_t i = 0; i < dk; i++)
          for (int64_t j = 0; j < dv; j++)
            sn[i * dv + j] = exp((double)c->g[ok + i]) * sp[i * dv + j] +
                             IN(c->k, ok + (size_t)i) * IN(c->v, ov + (size_t)j);
        for (int64_t j = 0; j < dv; j++) {
          double acc = 0.0;
          for (int64_t i = 0; i < dk; i++) acc += IN(c->q, ok + (size_t)i) * sn[i * dv + j];
          if (!zero_sin) r->o[ov + (size_t)j] = s->scale * acc;
        }
      }
      memcpy(zero_sin ? r->s_local + so : r->s_n + so, states + (size_t)n * st,
             st * sizeof(double));
      if (zero_sin) continue;
      for (size_t e = 0; e < st; e++) hgrad[e] = IN(c->ds_out, so + e);
      for (int64_t t = n - 1; t >= 0; t--) {
        size_t ok = tok_index(s, b, t, h, dk), ov = tok_index(s, b, t, h, dv);
        const double *sp = states + (size_t)t * st, *sn = sp + st;
        for (int64_t i = 0; i < dk; i++) /* H_t += scale q_t^T do_t */
          for (int64_t j = 0; j < dv; j++)
            hgrad[i * dv + j] += s->scale * IN(c->q, ok + (size_t)i) * IN(c->dout, ov + (size_t)j);
        for (int64_t i = 0; i < dk; i++) {
          double dq = 0.0, dkk = 0.0, dg = 0.0, eg = exp((double)c->g[ok + i]);
          for (int64_t j = 0; j < dv; j++) {
            dq += sn[i * dv + j] * IN(c->dout, ov + (size_t)j);
            dkk += hgrad[i * dv + j] * IN(c->v, ov + (size_t)j);
            dg += hgrad[i * dv + j] * eg * sp[i * dv + j];
          }
          r->dq[ok + i] = s->scale * dq;
          r->dk[ok + i] = dkk;
          r->dg[ok + i] = dg;
        }
        for (int64_t j = 0; j < dv; j++) {
          double acc = 0.0;
          for (int64_t i = 0; i < dk; i++) acc += IN(c->k, ok + (size_t)i) * hgrad[i * dv + j];
          r->dv[ov + (size_t)j] = acc;
        }
        for (int64_t i = 0; i < dk; i++) /* H_{t-1} part: diag(exp(g_t)) H_t */
          for (int64_t j = 0; j < dv; j++) hgrad[i * dv + j] *= exp((double)c->g[ok + i]);
      }
      memcpy(r->ds_in + so, hgrad, st * sizeof(double));
    }
  }
#undef IN
  free(states);
  free(hgrad);
}

static bool ref_alloc(const gla_case_t *c, gla_ref_t *r) {
  size_t nk = c->nk ? c->nk : 1, nv = c->nv ? c->nv : 1;
  r->o = calloc(nv, sizeof(double));
  r->dv = calloc(nv, sizeof(double));
  r->dq = calloc(nk, sizeof(double));
  r->dk = calloc(nk, sizeof(double));
  r->dg = calloc(nk, sizeof(double));
  r->s_n = calloc(c->ns, sizeof(double));
  r->s_local = calloc(c->ns, sizeof(double));
  r->ds_in = calloc(c->ns, sizeof(double));
  return r->o && r->dv && r->dq && r->dk && r->dg && r->s_n && r->s_local && r->ds_in;
}

static void ref_free(gla_ref_t *r) {
  free(r->o);
  free(r->dv);
  free(r->dq);
  free(r->dk);
  free(r->dg);
  free(r->s_n);
  free(r->s_local);
  free(r->ds_in);
}

static float *rand_buf(size_t count, uint64_t *state, float lo, float hi) {
  float *p = malloc((count ? count : 1) * sizeof(float));
  if (!p) abort();
  for (size_t i = 0; i < count; i++) p[i] = lo + (hi - lo) * 0.5f * (kt_rand_uniform(state) + 1.0f);
  return p;
}

static void case_create(gla_case_t *c, int64_t B, int64_t n, int64_t H, int64_t dk, int64_t dv,
                        int64_t chunk, g_mode_t mode, uint64_t seed) {
  memset(c, 0, sizeof *c);
  c->shape = (weft_gla_shape_t){.batch = B,
                                .tokens = n,
                                .heads = H,
                                .dk = dk,
                                .dv = dv,
                                .chunk = chunk,
                                .scale = 1.0f / sqrtf((float)dk)};
  c->nk = (size_t)(B * n * H * dk);
  c->nv = (size_t)(B * n * H * dv);
  c->ns = (size_t)(B * H * dk * dv);
  uint64_t st = seed;
  c->q = rand_buf(c->nk, &st, -1, 1);
  c->k = rand_buf(c->nk, &st, -1, 1);
  c->v = rand_buf(c->nv, &st, -1, 1);
  c->dout = rand_buf(c->nv, &st, -1, 1);
  c->s_in = rand_buf(c->ns, &st, -1, 1);
  c->ds_out = rand_buf(c->ns, &st, -1, 1);
  c->g = rand_buf(c->nk, &st, 0, 1);
  /* The kernel's fast path takes a channel of a chunk when its decay over the chunk is at most
   * 60 (and q, k, dA are not huge); Ce is the chunk length the kernel uses. */
  const int64_t Ce = chunk > 0 ? chunk : 64;
  for (size_t e = 0; e < c->nk; e++) {
    int64_t i = (int64_t)(e % (size_t)dk), t = (int64_t)(e / (size_t)(H * dk)) % n;
    int64_t b = (int64_t)(e / (size_t)(n * H * dk)), ci = t / Ce;
    bool last = t == ci * Ce + Ce - 1; /* the last token of its chunk */
    float u = c->g[e];
    if (mode == G_ZERO) c->g[e] = 0.0f;
    if (mode == G_SMALL) c->g[e] = -0.05f * u;
    if (mode == G_MIXED) c->g[e] = i % 4 == 1 ? -30.0f : i % 5 == 2 ? -1000.0f : -2.0f * u;
    /* Chunks in turn: all mild; per channel -1000, just inside the bound (-59.5 over a chunk),
     * just outside (-60.5) or mild; one step of -50 in the last token (so the fast path's factors
     * span e^-25..e^25 within the chunk) or -2u. So fast and exact chunks, and fast and exact
     * channels within one chunk, meet in one call. (A step of -50 at a token t followed by mild
     * decays is avoided: the true dg_t is ~e^-50 while the terms that cancel in dg's identity
     * stay O(1), leaving an absolute error ~ the FLOOR, with either path.) */
    if (mode == G_CHUNKS && ci % 3 == 0) c->g[e] = -0.05f * u;
    if (mode == G_CHUNKS && ci % 3 == 1)
      c->g[e] = i % 4 == 0   ? -1000.0f
                : i % 4 == 1 ? -59.5f / (float)Ce
                : i % 4 == 2 ? -60.5f / (float)Ce
                             : -0.05f * u;
    if (mode == G_CHUNKS && ci % 3 == 2) c->g[e] = i % 2 == 0 ? (last ? -50.0f : 0.0f) : -2.0f * u;
    /* Huge values at the decay bound, where the fast path's factors reach e^30: k of 1e28
     * (b = 0) would make k e^30 overflow, and dout of 1e28 (b = 1) the partial sums of dA Ke
     * (~1e28 * e^30), although every true result is finite. The kernel must route those
     * channels to the exact path; k of 8 stays fast. */
    if (mode == G_HUGE) {
      c->g[e] = -59.5f / (float)Ce;
      if (b == 0) c->k[e] *= i % 3 == 0 ? 1e28f : i % 3 == 1 ? 8.0f : 1.0f;
    }
  }
  if (mode == G_HUGE && B > 1)
    for (size_t e = c->nv / (size_t)B; e < 2 * (c->nv / (size_t)B); e++) c->dout[e] *= 1e28f;
}

static void case_destroy(gla_case_t *c) {
  free(c->q);
  free(c->k);
  free(c->v);
  free(c->g);
  free(c->dout);
  free(c->s_in);
  free(c->ds_out);
}

static double g_worst[8]; /* largest error / tolerance seen per quantity, for the summary */

/* Max over elements of |x - r| / (RTOL * m + FLOOR * max m over the element's row), rows being
 * runs of `row` elements (one token's head vector, or one state); > 1 fails, NaN fails. */
static void check(int id, const char *what, const char *label, const float *x, const double *r,
                  const double *m, size_t count, size_t row) {
  double worst = 0.0;
  size_t at = 0;
  for (size_t r0 = 0; r0 < count; r0 += row) {
    double mmax = 0.0;
    for (size_t e = r0; e < r0 + row; e++) mmax = m[e] > mmax ? m[e] : mmax;
    for (size_t e = r0; e < r0 + row; e++) {
      double err = fabs((double)x[e] - r[e]) / (RTOL * m[e] + FLOOR * mmax + 1e-300);
      if (!(err <= worst)) {
        worst = isnan(err) ? INFINITY : err;
        at = e;
      }
    }
  }
  if (worst > g_worst[id]) g_worst[id] = worst;
  WT_CHECK(worst <= 1.0,
           "%s %s: error %.3g x tolerance at element %zu: got %.9g, want %.9g (m=%.3g)", label,
           what, worst, at, (double)x[at], r[at], m[at]);
}

static void run_case(weft_kernel_ctx_t *ctx, int64_t B, int64_t n, int64_t H, int64_t dk,
                     int64_t dv, int64_t chunk, g_mode_t mode, uint64_t seed) {
  char label[160];
  snprintf(label, sizeof label, "B=%lld n=%lld H=%lld dk=%lld dv=%lld chunk=%lld %s", (long long)B,
           (long long)n, (long long)H, (long long)dk, (long long)dv, (long long)chunk,
           g_mode_name[mode]);
  gla_case_t c;
  case_create(&c, B, n, H, dk, dv, chunk, mode, seed);
  gla_ref_t ref, mag;
  if (!ref_alloc(&c, &ref) || !ref_alloc(&c, &mag)) abort();
  ref_run(&c, false, false, &ref);
  ref_run(&c, false, true, &ref); /* s_local */
  ref_run(&c, true, false, &mag);
  ref_run(&c, true, true, &mag);
  size_t nk1 = c.nk ? c.nk : 1, nv1 = c.nv ? c.nv : 1;
  float *out = malloc(nv1 * sizeof(float)), *s_local = malloc(c.ns * sizeof(float));
  float *lg = malloc((size_t)(B * H * dk) * sizeof(float)), *ds = malloc(c.ns * sizeof(float));
  float *dq = malloc(nk1 * sizeof(float)), *dkk = malloc(nk1 * sizeof(float));
  float *dvv = malloc(nv1 * sizeof(float)), *dg = malloc(nk1 * sizeof(float));
  double *sn = malloc(c.ns * sizeof(double)), *dgm = malloc(nk1 * sizeof(double));
  if (!out || !s_local || !lg || !ds || !dq || !dkk || !dvv || !dg || !sn || !dgm) abort();
  /* Outputs start as NaN so anything not written shows up. */
  for (size_t e = 0; e < c.ns; e++) s_local[e] = ds[e] = NAN;
  for (int64_t e = 0; e < B * H * dk; e++) lg[e] = NAN;

  size_t st = (size_t)(dk * dv);
  WT_CHECK_OK(weft_gla_forward_local(ctx, &c.shape, c.q, c.k, c.v, c.g, out, s_local, lg));
  check(0, "s_local", label, s_local, ref.s_local, mag.s_local, c.ns, st);
  /* log_gamma = sum of g: one rounding of a double sum, so 1e-6 of sum |g| */
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < dk; i++) {
        double sum = 0.0, asum = 0.0;
        for (int64_t t = 0; t < n; t++) {
          sum += c.g[tok_index(&c.shape, b, t, h, dk) + (size_t)i];
          asum += fabs((double)c.g[tok_index(&c.shape, b, t, h, dk) + (size_t)i]);
        }
        size_t e = (size_t)((b * H + h) * dk + i);
        WT_CHECK(fabs(lg[e] - sum) <= 1e-6 * asum, "%s log_gamma[%zu] = %.9g, want %.9g", label, e,
                 (double)lg[e], sum);
      }
  /* S_n = S_local + diag(exp(log_gamma)) S_in, composed in double from the kernel's outputs */
  for (size_t e = 0; e < c.ns; e++) {
    size_t row = e / (size_t)dv;
    sn[e] = s_local[e] + exp((double)lg[row]) * c.s_in[e];
  }
  float *snf = malloc(c.ns * sizeof(float));
  if (!snf) abort();
  for (size_t e = 0; e < c.ns; e++) snf[e] = (float)sn[e];
  check(1, "S_n composed", label, snf, ref.s_n, mag.s_n, c.ns, st);

  WT_CHECK_OK(weft_gla_forward_correct(ctx, &c.shape, c.q, c.g, c.s_in, out));
  check(2, "out", label, out, ref.o, mag.o, c.nv, (size_t)dv);

  WT_CHECK_OK(weft_gla_backward_state_local(ctx, &c.shape, c.q, c.g, c.dout, ds));
  for (size_t e = 0; e < c.ns; e++) {
    size_t row = e / (size_t)dv;
    snf[e] = (float)(ds[e] + exp((double)lg[row]) * c.ds_out[e]);
  }
  check(3, "dS_in = dS_local + Gamma dS_out", label, snf, ref.ds_in, mag.ds_in, c.ns, st);

  WT_CHECK_OK(weft_gla_backward(ctx, &c.shape, c.q, c.k, c.v, c.g, c.dout, c.s_in, c.ds_out, dq,
                                dkk, dvv, dg));
  check(4, "dq", label, dq, ref.dq, mag.dq, c.nk, (size_t)dk);
  check(5, "dk", label, dkk, ref.dk, mag.dk, c.nk, (size_t)dk);
  check(6, "dv", label, dvv, ref.dv, mag.dv, c.nv, (size_t)dv);
  for (size_t e = 0; e < c.nk; e++) dgm[e] = mag.dg[e];
  /* With k of 1e28 the terms k_u dk_u that cancel in the kernel's dg identity are ~1e28 times
   * dg itself; f32 keeps dg to eps of them (either path), so m includes them there. */
  if (mode == G_HUGE)
    for (size_t e = 0; e < c.nk; e++)
      dgm[e] += fabs((double)c.q[e]) * mag.dq[e] + fabs((double)c.k[e]) * mag.dk[e];
  check(7, "dg", label, dg, ref.dg, dgm, c.nk, (size_t)dk);

  free(snf);
  free(out);
  free(s_local);
  free(lg);
  free(ds);
  free(dq);
  free(dkk);
  free(dvv);
  free(dg);
  free(sn);
  free(dgm);
  ref_free(&ref);
  ref_free(&mag);
  case_destroy(&c);
}

/* L of the reference for the finite-difference check. */
static double ref_loss(const gla_case_t *c) {
  gla_ref_t r;
  if (!ref_alloc(c, &r)) abort();
  ref_run(c, false, false, &r);
  double loss = 0.0;
  for (size_t e = 0; e < c->nv; e++) loss += r.o[e] * c->dout[e];
  for (size_t e = 0; e < c->ns; e++) loss += r.s_n[e] * c->ds_out[e];
  ref_free(&r);
  return loss;
}

/* Central differences of ref_loss w.r.t. every input element, against the reference
 * gradient. Inputs are f32, so the step is a power of two (exact) and the loss is evaluated
 * in double around it; the truncation error O(h^2) and the cancellation O(eps/h) both stay
 * below 1e-6 relative to the gradient scale for h = 2^-10. */
static void test_reference_gradient(void) {
  gla_case_t c;
  case_create(&c, 1, 5, 1, 3, 2, 0, G_SMALL, 7);
  for (size_t e = 0; e < c.nk; e++) c.g[e] = -0.3f * (float)(e % 3) - 0.1f;
  gla_ref_t r;
  if (!ref_alloc(&c, &r)) abort();
  ref_run(&c, false, false, &r);
  struct {
    const char *name;
    float *x;
    const double *grad;
    size_t count;
  } ins[] = {{"q", c.q, r.dq, c.nk},
             {"k", c.k, r.dk, c.nk},
             {"v", c.v, r.dv, c.nv},
             {"g", c.g, r.dg, c.nk},
             {"s_in", c.s_in, r.ds_in, c.ns}};
  const float h = 1.0f / 1024.0f;
  for (size_t a = 0; a < sizeof ins / sizeof ins[0]; a++) {
    for (size_t e = 0; e < ins[a].count; e++) {
      float x0 = ins[a].x[e];
      ins[a].x[e] = x0 + h;
      double lp = ref_loss(&c);
      ins[a].x[e] = x0 - h;
      double lm = ref_loss(&c);
      ins[a].x[e] = x0;
      double fd = (lp - lm) / (2.0 * (double)h);
      WT_CHECK(fabs(fd - ins[a].grad[e]) <= 1e-5 * (1.0 + fabs(fd)),
               "reference d%s[%zu] = %.12g, finite difference %.12g", ins[a].name, e,
               ins[a].grad[e], fd);
    }
  }
  ref_free(&r);
  case_destroy(&c);
}

/* Head subsets (shape.layout_heads > heads): the four kernels run on heads [h0, h1) of the
 * whole tensors, with every pointer at the subset's first head, must give bitwise the results
 * of the whole-tensor call for those heads (heads are independent and the CPU kernels do the
 * same arithmetic in the same order with the same strides) and must not write any element of
 * another head. Outputs start as a NaN with a recognisable payload so both show. */

/* Sentinel bits: a quiet NaN no kernel produces from arithmetic. */
#define SUBSET_SENTINEL 0x7fc0beefu

static float *sentinel_buf(size_t count) {
  float *p = malloc((count ? count : 1) * sizeof(float));
  if (!p) abort();
  uint32_t bits = SUBSET_SENTINEL;
  for (size_t e = 0; e < count; e++) memcpy(&p[e], &bits, sizeof bits);
  return p;
}

/* Compares x against the whole-tensor result `full` element by element: elements whose head
 * ((e / row) % H, row = elements per head in one token or one batch element) is in [h0, h1)
 * must be bitwise equal, all others must still hold the sentinel. */
static void check_subset(const char *label, const char *what, const float *x, const float *full,
                         size_t count, size_t row, int64_t H, int64_t h0, int64_t h1) {
  size_t bad = 0, first = 0;
  for (size_t e = 0; e < count; e++) {
    int64_t h = (int64_t)((e / row) % (size_t)H);
    uint32_t got, want = SUBSET_SENTINEL;
    memcpy(&got, &x[e], sizeof got);
    if (h >= h0 && h < h1) memcpy(&want, &full[e], sizeof want);
    if (got != want && bad++ == 0) first = e;
  }
  WT_CHECK(bad == 0, "%s heads [%lld, %lld) %s: %zu elements differ, first %zu (head %lld)", label,
           (long long)h0, (long long)h1, what, bad, first, (long long)((first / row) % (size_t)H));
}

static void run_head_subsets(weft_kernel_ctx_t *ctx, int64_t B, int64_t n, int64_t H, int64_t dk,
                             int64_t dv, int64_t chunk, uint64_t seed) {
  char label[160];
  snprintf(label, sizeof label, "subset B=%lld n=%lld H=%lld dk=%lld dv=%lld chunk=%lld",
           (long long)B, (long long)n, (long long)H, (long long)dk, (long long)dv,
           (long long)chunk);
  gla_case_t c;
  case_create(&c, B, n, H, dk, dv, chunk, G_MIXED, seed);
  size_t nlg = (size_t)(B * H * dk);
  /* [0] whole tensors, [1] one head group; out_local keeps o^local before the correction */
  float *out_local[2], *out[2], *s_local[2], *lg[2], *ds[2], *dq[2], *dkk[2], *dvv[2], *dg[2];
  for (int r = 0; r < 2; r++) {
    out_local[r] = sentinel_buf(c.nv);
    out[r] = sentinel_buf(c.nv);
    s_local[r] = sentinel_buf(c.ns);
    lg[r] = sentinel_buf(nlg);
    ds[r] = sentinel_buf(c.ns);
    dq[r] = sentinel_buf(c.nk);
    dkk[r] = sentinel_buf(c.nk);
    dvv[r] = sentinel_buf(c.nv);
    dg[r] = sentinel_buf(c.nk);
  }
  const weft_gla_shape_t *fs = &c.shape;
  WT_CHECK_OK(weft_gla_forward_local(ctx, fs, c.q, c.k, c.v, c.g, out[0], s_local[0], lg[0]));
  memcpy(out_local[0], out[0], c.nv * sizeof(float));
  WT_CHECK_OK(weft_gla_forward_correct(ctx, fs, c.q, c.g, c.s_in, out[0]));
  WT_CHECK_OK(weft_gla_backward_state_local(ctx, fs, c.q, c.g, c.dout, ds[0]));
  WT_CHECK_OK(weft_gla_backward(ctx, fs, c.q, c.k, c.v, c.g, c.dout, c.s_in, c.ds_out, dq[0],
                                dkk[0], dvv[0], dg[0]));

  /* Groups of 2, 1 and H - 3 heads (H >= 4): a first, a middle and a last group. */
  const int64_t bounds[] = {0, 2, 3, H};
  size_t st = (size_t)(dk * dv);
  for (int gi = 0; gi < 3; gi++) {
    int64_t h0 = bounds[gi], h1 = bounds[gi + 1];
    weft_gla_shape_t s = c.shape;
    s.heads = h1 - h0;
    s.layout_heads = H;
    size_t ok = (size_t)(h0 * dk), ov = (size_t)(h0 * dv), os = (size_t)h0 * st;
    float *o1 = out[1], *ol1 = out_local[1];
    WT_CHECK_OK(weft_gla_forward_local(ctx, &s, c.q + ok, c.k + ok, c.v + ov, c.g + ok, o1 + ov,
                                       s_local[1] + os, lg[1] + ok));
    memcpy(ol1, o1, c.nv * sizeof(float));
    WT_CHECK_OK(weft_gla_forward_correct(ctx, &s, c.q + ok, c.g + ok, c.s_in + os, o1 + ov));
    WT_CHECK_OK(
        weft_gla_backward_state_local(ctx, &s, c.q + ok, c.g + ok, c.dout + ov, ds[1] + os));
    WT_CHECK_OK(weft_gla_backward(ctx, &s, c.q + ok, c.k + ok, c.v + ov, c.g + ok, c.dout + ov,
                                  c.s_in + os, c.ds_out + os, dq[1] + ok, dkk[1] + ok, dvv[1] + ov,
                                  dg[1] + ok));
    check_subset(label, "out (local)", ol1, out_local[0], c.nv, (size_t)dv, H, h0, h1);
    check_subset(label, "out", o1, out[0], c.nv, (size_t)dv, H, h0, h1);
    check_subset(label, "s_local", s_local[1], s_local[0], c.ns, st, H, h0, h1);
    check_subset(label, "log_gamma", lg[1], lg[0], nlg, (size_t)dk, H, h0, h1);
    check_subset(label, "ds_local", ds[1], ds[0], c.ns, st, H, h0, h1);
    check_subset(label, "dq", dq[1], dq[0], c.nk, (size_t)dk, H, h0, h1);
    check_subset(label, "dk", dkk[1], dkk[0], c.nk, (size_t)dk, H, h0, h1);
    check_subset(label, "dv", dvv[1], dvv[0], c.nv, (size_t)dv, H, h0, h1);
    check_subset(label, "dg", dg[1], dg[0], c.nk, (size_t)dk, H, h0, h1);
    /* fresh sentinels for the next group */
    float *bufs[] = {out[1], out_local[1], s_local[1], lg[1], ds[1], dq[1], dkk[1], dvv[1], dg[1]};
    size_t counts[] = {c.nv, c.nv, c.ns, nlg, c.ns, c.nk, c.nk, c.nv, c.nk};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
      free(bufs[i]);
      bufs[i] = sentinel_buf(counts[i]);
    }
    out[1] = bufs[0];
    out_local[1] = bufs[1];
    s_local[1] = bufs[2];
    lg[1] = bufs[3];
    ds[1] = bufs[4];
    dq[1] = bufs[5];
    dkk[1] = bufs[6];
    dvv[1] = bufs[7];
    dg[1] = bufs[8];
  }
  for (int r = 0; r < 2; r++) {
    free(out_local[r]);
    free(out[r]);
    free(s_local[r]);
    free(lg[r]);
    free(ds[r]);
    free(dq[r]);
    free(dkk[r]);
    free(dvv[r]);
    free(dg[r]);
  }
  case_destroy(&c);
}

/* The four kernels with 1 and 3 CPU threads (pairs (b, h) split unevenly over threads, each
 * with its own scratch) must give bitwise the same results. */
static void run_thread_counts(weft_kernel_ctx_t *ctx, int64_t B, int64_t n, int64_t H, int64_t dk,
                              int64_t dv, int64_t chunk, uint64_t seed) {
  char label[160];
  snprintf(label, sizeof label, "threads B=%lld n=%lld H=%lld dk=%lld dv=%lld chunk=%lld",
           (long long)B, (long long)n, (long long)H, (long long)dk, (long long)dv,
           (long long)chunk);
  gla_case_t c;
  case_create(&c, B, n, H, dk, dv, chunk, G_CHUNKS, seed);
  size_t nlg = (size_t)(B * H * dk);
  const int before = weft_kernels_cpu_threads(), threads[2] = {1, 3};
  float *res[2][8];
  const size_t counts[8] = {c.nv, c.ns, nlg, c.ns, c.nk, c.nk, c.nv, c.nk};
  static const char *const names[8] = {"out", "s_local", "log_gamma", "ds_local",
                                       "dq",  "dk",      "dv",        "dg"};
  for (int r = 0; r < 2; r++) {
    for (int q = 0; q < 8; q++) res[r][q] = sentinel_buf(counts[q]);
    weft_kernels_set_cpu_threads(threads[r]);
    WT_CHECK_OK(
        weft_gla_forward_local(ctx, &c.shape, c.q, c.k, c.v, c.g, res[r][0], res[r][1], res[r][2]));
    WT_CHECK_OK(weft_gla_forward_correct(ctx, &c.shape, c.q, c.g, c.s_in, res[r][0]));
    WT_CHECK_OK(weft_gla_backward_state_local(ctx, &c.shape, c.q, c.g, c.dout, res[r][3]));
    WT_CHECK_OK(weft_gla_backward(ctx, &c.shape, c.q, c.k, c.v, c.g, c.dout, c.s_in, c.ds_out,
                                  res[r][4], res[r][5], res[r][6], res[r][7]));
  }
  weft_kernels_set_cpu_threads(before);
  for (int q = 0; q < 8; q++) {
    WT_CHECK(memcmp(res[0][q], res[1][q], counts[q] * sizeof(float)) == 0,
             "%s: %s differs between 1 and 3 threads", label, names[q]);
    free(res[0][q]);
    free(res[1][q]);
  }
  case_destroy(&c);
}

static void test_invalid(weft_kernel_ctx_t *ctx) {
  float x[4096] = {0};
  weft_gla_shape_t ok = {
      .batch = 1, .tokens = 2, .heads = 1, .dk = 4, .dv = 4, .chunk = 0, .scale = 0.5f};
  WT_CHECK_OK(weft_gla_forward_local(ctx, &ok, x, x, x, x, x + 64, x + 128, x + 192));
  weft_gla_shape_t bad[] = {ok, ok, ok, ok, ok, ok, ok};
  bad[0].batch = 0;
  bad[1].heads = 0;
  bad[2].dk = 0;
  bad[3].dv = -1;
  bad[4].tokens = -1;
  bad[5].chunk = -1;
  bad[6].scale = NAN;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    WT_CHECK_STATUS(weft_gla_forward_local(ctx, &bad[i], x, x, x, x, x + 64, x + 128, x + 192),
                    WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(weft_gla_forward_correct(ctx, &bad[i], x, x, x, x + 64), WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(weft_gla_backward_state_local(ctx, &bad[i], x, x, x, x + 64),
                    WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(
        weft_gla_backward(ctx, &bad[i], x, x, x, x, x, x, x, x + 64, x + 128, x + 192, x + 256),
        WEFT_ERR_INVALID_ARG);
  }
  WT_CHECK_STATUS(weft_gla_forward_local(NULL, &ok, x, x, x, x, x + 64, x + 128, x + 192),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gla_forward_local(ctx, NULL, x, x, x, x, x + 64, x + 128, x + 192),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gla_forward_local(ctx, &ok, NULL, x, x, x, x + 64, x + 128, x + 192),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gla_forward_correct(ctx, &ok, x, x, NULL, x + 64), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_gla_backward(ctx, &ok, x, x, x, x, x, x, x, x + 64, x + 128, NULL, x + 256),
                  WEFT_ERR_INVALID_ARG);
  /* n = 0: token tensors may be NULL; states must not be */
  weft_gla_shape_t empty = ok;
  empty.tokens = 0;
  WT_CHECK_OK(weft_gla_forward_local(ctx, &empty, NULL, NULL, NULL, NULL, NULL, x + 128, x + 192));
  WT_CHECK_OK(
      weft_gla_backward(ctx, &empty, NULL, NULL, NULL, NULL, NULL, x, x, NULL, NULL, NULL, NULL));
  WT_CHECK_STATUS(weft_gla_forward_local(ctx, &empty, NULL, NULL, NULL, NULL, NULL, NULL, x + 192),
                  WEFT_ERR_INVALID_ARG);
  /* layout_heads: 0 and >= heads are valid, negative or below heads are not */
  weft_gla_shape_t sub = ok;
  sub.heads = 3;
  sub.layout_heads = 3;
  WT_CHECK_OK(weft_gla_forward_local(ctx, &sub, x, x, x, x, x + 64, x + 128, x + 192));
  sub.layout_heads = 4;
  WT_CHECK_OK(weft_gla_forward_local(ctx, &sub, x, x, x, x, x + 64, x + 128, x + 192));
  const int64_t bad_layout[] = {-1, sub.heads - 1};
  for (size_t i = 0; i < sizeof bad_layout / sizeof bad_layout[0]; i++) {
    sub.layout_heads = bad_layout[i];
    WT_CHECK_STATUS(weft_gla_forward_local(ctx, &sub, x, x, x, x, x + 64, x + 128, x + 192),
                    WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(weft_gla_forward_correct(ctx, &sub, x, x, x, x + 64), WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(weft_gla_backward_state_local(ctx, &sub, x, x, x, x + 64),
                    WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(
        weft_gla_backward(ctx, &sub, x, x, x, x, x, x, x, x + 64, x + 128, x + 192, x + 256),
        WEFT_ERR_INVALID_ARG);
  }
}

int main(void) {
  weft_device_t *cpu = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &cpu));
  WT_CHECK_OK(weft_kernel_ctx_create(cpu, NULL, &ctx));
  if (!ctx) return weft_test_exit_code("test_linear_attention");

  test_reference_gradient();
  test_invalid(ctx);
  uint64_t seed = 1;
  const int64_t chunks[] = {1, 16, 64};
  for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
    int64_t C = chunks[ci];
    const int64_t ns[] = {0, 1, C - 1, C, C + 1, 3 * C + 5};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
      for (int mode = G_ZERO; mode <= G_HUGE; mode++)
        run_case(ctx, 2, ns[ni], 3, 16, 24, C, (g_mode_t)mode, seed++);
  }
  run_case(ctx, 2, 37, 3, 16, 24, 100, G_MIXED, seed++); /* chunk > n */
  run_case(ctx, 1, 150, 2, 64, 64, 0, G_SMALL, seed++);  /* default chunk, dk = dv = 64 */
  run_case(ctx, 1, 150, 2, 64, 64, 0, G_MIXED, seed++);
  run_case(ctx, 2, 200, 2, 64, 64, 0, G_CHUNKS, seed++);
  run_case(ctx, 2, 150, 2, 64, 64, 0, G_HUGE, seed++);
  run_case(ctx, 1, 70, 1, 8, 40, 7, G_ZERO, seed++); /* dv > dk, odd chunk */
  run_head_subsets(ctx, 2, 70, 5, 16, 24, 16, seed++);
  run_head_subsets(ctx, 2, 0, 5, 16, 24, 16, seed++); /* n = 0: states zeroed per subset */
  run_head_subsets(ctx, 1, 9, 4, 8, 40, 0, seed++);   /* default chunk > n, dv > dk */
  run_thread_counts(ctx, 3, 3 * 16 + 5, 3, 16, 24, 16, seed++);
  run_thread_counts(ctx, 2, 200, 3, 32, 32, 0, seed++);

  static const char *const names[] = {"s_local", "S_n", "out", "dS_in", "dq", "dk", "dv", "dg"};
  printf("largest error / tolerance:");
  for (int i = 0; i < 8; i++) printf(" %s %.3g", names[i], g_worst[i]);
  printf("\n");
  weft_kernel_ctx_destroy(ctx);
  weft_device_close(cpu);
  return weft_test_exit_code("test_linear_attention");
}
