/* CPU block softmax attention (weft/attention.h) against a float64 reference.
 *
 * The reference is the header's definition evaluated naively in double: for every (b, h, i)
 * the allowed keys (kv_pos[j] >= 0, q_pos[i] >= 0 and, causal, kv_pos[j] <= q_pos[i]) give
 * s_ij = scale q_i . k_j, lse_i = log sum exp s_ij (-inf when none), out_i = sum p_ij v_j, and
 * the backward p_ij = exp(s_ij - lse_i), dp_ij = dout_i . v_j, delta_i = dout_i . out_i,
 * ds_ij = p_ij (dp_ij - delta_i), dq_i = scale sum ds_ij k_j, dk_j = scale sum ds_ij q_i,
 * dv_j = sum p_ij dout_i (GQA: into kv head h / (H / Hkv)).
 *
 * Tolerance, the same for every tensor: |x - ref| <= TOL * M with TOL = 2e-5, where M is the
 * tensor's largest magnitude: per entry, the sum of the absolute values of the terms that make
 * it up (out_i: sum p_ij |v_j|; lse_i: |lse_i| + max_j scale sum |q_i k_j|; delta_i:
 * sum |dout_i out_i|; dq_i: scale sum p_ij (|dp_ij| + |delta_i|) |k_j|, dk and dv alike), the
 * quantity f32 rounding errors scale with. max|ref| alone would not do: a query with one
 * allowed key has ds = p (dp - delta) = 0 exactly, and the kernel's dq there is rounding noise
 * of the size of dp. f32 tile products and the online softmax round each result a few hundred
 * times at most (d, 64-key tiles, a few tiles), i.e. ~1e-6 of M, so 2e-5 leaves a factor ~20,
 * while a wrong mask, a wrong head, a missing tile or a dropped rescale moves results by 1e-2
 * of M or more. Where the reference is -inf (lse of a row with no allowed key) the result must
 * be exactly -inf; NaN never passes.
 * Gradients accumulate: dq, dk, dv start as a known pattern `pre` and must end at pre + ref
 * (plus one f32 rounding of pre, 2^-23 |pre|).
 *
 * Every case runs: the forward on the whole KV block; the KV block split into 2-3 pieces,
 * attended one at a time and merged into a running (0, -inf) state; delta; the backward on the
 * whole block and on the pieces (dq accumulating across pieces). Cases cover causal and not,
 * zigzag positions (q [0..7] U [56..63] against kv [16..31]), rows and blocks with every key
 * masked, padded queries and keys (negative positions), GQA (8/2) and MQA (8/1), nq or nk = 0,
 * sizes around the 64-token tile (1, 63, 65, 130), d = 1, 17, 24, 64, 80, 128, and a case large
 * enough for several threads, whose results must be bitwise equal to a one-thread run (every output
 * is owned by one work item). Invalid arguments return the documented statuses. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_test_common.h"
#include "test_util.h"
#include "weft/attention.h"
#include "weft/device.h"
#include "weft/kernel_ctx.h"

#define TOL 2e-5

typedef enum {
  POS_CONTIG, /* q_pos = q_off + i, kv_pos = kv_off + j */
  POS_ZIGZAG, /* q: two ranges [0, nq/2) and [7 nq/2, 4 nq); kv: nq + j */
  POS_PADDED, /* contiguous, but every 5th query and every 3rd key is padding */
} pos_mode_t;

typedef struct attn_case {
  weft_attn_shape_t s;
  int64_t *q_pos, *kv_pos;
  float *q, *k, *v, *dout;
  size_t nqe, nke, nle; /* elements of [B,nq,H,d], [B,nk,Hkv,d], [B,H,nq] */
} attn_case_t;

typedef struct attn_ref {
  double *out, *lse, *delta, *dq, *dk, *dv;
  double mag[6]; /* M of out, lse, delta, dq, dk, dv (see the file note) */
} attn_ref_t;

enum { M_OUT, M_LSE, M_DELTA, M_DQ, M_DK, M_DV };

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

static size_t qi(const weft_attn_shape_t *s, int64_t b, int64_t i, int64_t h) {
  return (size_t)(((b * s->q_len + i) * s->heads + h) * s->head_dim);
}
static size_t ki(const weft_attn_shape_t *s, int64_t b, int64_t j, int64_t g) {
  return (size_t)(((b * s->kv_len + j) * s->kv_heads + g) * s->head_dim);
}
static size_t li(const weft_attn_shape_t *s, int64_t b, int64_t h, int64_t i) {
  return (size_t)((b * s->heads + h) * s->q_len + i);
}

static float *rand_buf(size_t n, uint64_t *st, float amp) {
  float *p = xcalloc(n, sizeof(float));
  for (size_t e = 0; e < n; e++) p[e] = amp * kt_rand_uniform(st);
  return p;
}

static void case_create(attn_case_t *c, int64_t B, int64_t H, int64_t Hkv, int64_t d, int64_t nq,
                        int64_t nk, bool causal, pos_mode_t mode, int64_t q_off, int64_t kv_off,
                        uint64_t seed) {
  memset(c, 0, sizeof *c);
  c->s = (weft_attn_shape_t){.batch = B,
                             .heads = H,
                             .kv_heads = Hkv,
                             .head_dim = d,
                             .q_len = nq,
                             .kv_len = nk,
                             .scale = 1.0f / sqrtf((float)d),
                             .causal = causal,
                             .dtype = WEFT_DTYPE_F32};
  c->nqe = (size_t)(B * nq * H * d);
  c->nke = (size_t)(B * nk * Hkv * d);
  c->nle = (size_t)(B * H * nq);
  uint64_t st = seed;
  c->q = rand_buf(c->nqe, &st, 3.0f); /* |s| up to ~3: peaked but not one-hot softmax rows */
  c->k = rand_buf(c->nke, &st, 1.0f);
  c->v = rand_buf(c->nke, &st, 1.0f);
  c->dout = rand_buf(c->nqe, &st, 1.0f);
  c->q_pos = xcalloc((size_t)nq, sizeof(int64_t));
  c->kv_pos = xcalloc((size_t)nk, sizeof(int64_t));
  for (int64_t i = 0; i < nq; i++) {
    c->q_pos[i] = q_off + i;
    if (mode == POS_ZIGZAG) c->q_pos[i] = i < nq / 2 ? i : 7 * nq / 2 + (i - nq / 2);
    if (mode == POS_PADDED && i % 5 == 3) c->q_pos[i] = -1 - i;
  }
  for (int64_t j = 0; j < nk; j++) {
    c->kv_pos[j] = kv_off + j;
    if (mode == POS_ZIGZAG) c->kv_pos[j] = nq + j;
    if (mode == POS_PADDED && j % 3 == 1) c->kv_pos[j] = -2;
  }
}

static void case_destroy(attn_case_t *c) {
  free(c->q);
  free(c->k);
  free(c->v);
  free(c->dout);
  free(c->q_pos);
  free(c->kv_pos);
}

static bool allowed(const attn_case_t *c, int64_t i, int64_t j) {
  int64_t qp = c->q_pos[i], kp = c->kv_pos[j];
  return qp >= 0 && kp >= 0 && (!c->s.causal || kp <= qp);
}

static double dot(const float *a, const float *b, int64_t d) {
  double sum = 0.0;
  for (int64_t e = 0; e < d; e++) sum += (double)a[e] * (double)b[e];
  return sum;
}

/* The whole reference, forward and backward, in double. */
static void ref_run(const attn_case_t *c, attn_ref_t *r) {
  const weft_attn_shape_t *s = &c->s;
  int64_t G = s->heads / s->kv_heads, d = s->head_dim;
  r->out = xcalloc(c->nqe, sizeof(double));
  r->dq = xcalloc(c->nqe, sizeof(double));
  r->dk = xcalloc(c->nke, sizeof(double));
  r->dv = xcalloc(c->nke, sizeof(double));
  r->lse = xcalloc(c->nle, sizeof(double));
  r->delta = xcalloc(c->nle, sizeof(double));
  double *sc = xcalloc((size_t)s->kv_len, sizeof(double));
  double *mq = xcalloc(c->nqe, sizeof(double)), *mo = xcalloc(c->nqe, sizeof(double));
  double *mk = xcalloc(c->nke, sizeof(double)), *mv = xcalloc(c->nke, sizeof(double));
  for (int i = 0; i < 6; i++) r->mag[i] = 0.0;
  for (int64_t b = 0; b < s->batch; b++)
    for (int64_t h = 0; h < s->heads; h++)
      for (int64_t i = 0; i < s->q_len; i++) {
        const float *qv = c->q + qi(s, b, i, h), *dov = c->dout + qi(s, b, i, h);
        double mx = -INFINITY, sum = 0.0, smag = 0.0;
        for (int64_t j = 0; j < s->kv_len; j++) {
          const float *kv = c->k + ki(s, b, j, h / G);
          sc[j] = allowed(c, i, j) ? s->scale * dot(qv, kv, d) : -INFINITY;
          mx = sc[j] > mx ? sc[j] : mx;
          double a = 0.0;
          for (int64_t e = 0; e < d && sc[j] != -INFINITY; e++) a += fabs(qv[e] * kv[e]);
          smag = s->scale * a > smag ? s->scale * a : smag;
        }
        double *lse = &r->lse[li(s, b, h, i)], *o = r->out + qi(s, b, i, h);
        *lse = -INFINITY;
        if (mx == -INFINITY) continue; /* no allowed key: out 0, lse -inf, no gradient */
        for (int64_t j = 0; j < s->kv_len; j++) sum += exp(sc[j] - mx);
        *lse = mx + log(sum);
        double *om = mo + qi(s, b, i, h), dmag = 0.0, delta = 0.0;
        for (int64_t j = 0; j < s->kv_len; j++) {
          double p = exp(sc[j] - *lse);
          for (int64_t e = 0; e < d; e++) {
            o[e] += p * c->v[ki(s, b, j, h / G) + (size_t)e];
            om[e] += p * fabs(c->v[ki(s, b, j, h / G) + (size_t)e]);
          }
        }
        for (int64_t e = 0; e < d; e++) {
          delta += (double)dov[e] * o[e];
          dmag += fabs(dov[e] * o[e]);
        }
        r->delta[li(s, b, h, i)] = delta;
        r->mag[M_LSE] = fmax(r->mag[M_LSE], fabs(*lse) + smag);
        r->mag[M_DELTA] = fmax(r->mag[M_DELTA], dmag);
        for (int64_t j = 0; j < s->kv_len; j++) {
          if (sc[j] == -INFINITY) continue;
          size_t kj = ki(s, b, j, h / G);
          double p = exp(sc[j] - *lse), dp = dot(dov, c->v + kj, d), ds = p * (dp - delta);
          double dsm = p * (fabs(dp) + fabs(delta));
          for (int64_t e = 0; e < d; e++) {
            size_t qe = qi(s, b, i, h) + (size_t)e, ke = kj + (size_t)e;
            r->dq[qe] += s->scale * ds * c->k[ke];
            r->dk[ke] += s->scale * ds * qv[e];
            r->dv[ke] += p * dov[e];
            mq[qe] += s->scale * dsm * fabs(c->k[ke]);
            mk[ke] += s->scale * dsm * fabs(qv[e]);
            mv[ke] += p * fabs(dov[e]);
          }
        }
      }
  for (size_t e = 0; e < c->nqe; e++) {
    r->mag[M_OUT] = fmax(r->mag[M_OUT], mo[e]);
    r->mag[M_DQ] = fmax(r->mag[M_DQ], mq[e]);
  }
  for (size_t e = 0; e < c->nke; e++) {
    r->mag[M_DK] = fmax(r->mag[M_DK], mk[e]);
    r->mag[M_DV] = fmax(r->mag[M_DV], mv[e]);
  }
  free(sc);
  free(mq);
  free(mo);
  free(mk);
  free(mv);
}

static void ref_free(attn_ref_t *r) {
  free(r->out);
  free(r->lse);
  free(r->delta);
  free(r->dq);
  free(r->dk);
  free(r->dv);
}

static double g_worst; /* largest error / tolerance seen, for the summary line */

/* x[e] against pre[e] + ref[e] (pre NULL: 0) with the file's tolerance; mx is the tensor's
 * magnitude M. */
static void check(const char *label, const char *what, const float *x, const double *ref,
                  const float *pre, size_t n, double mx) {
  double worst = 0.0;
  size_t at = 0;
  for (size_t e = 0; e < n; e++) {
    double p = pre ? (double)pre[e] : 0.0, want = p + ref[e], err;
    if (ref[e] == -INFINITY)
      err = x[e] == -INFINITY ? 0.0 : INFINITY;
    else
      err = fabs((double)x[e] - want) / (TOL * mx + 0x1p-23 * fabs(p) + 1e-300);
    if (!(err <= worst)) { /* NaN counts as the worst */
      worst = isnan(err) ? INFINITY : err;
      at = e;
    }
  }
  if (worst > g_worst) g_worst = worst;
  WT_CHECK(worst <= 1.0, "%s %s: error %.3g x tolerance at element %zu of %zu: got %.9g, want %.9g",
           label, what, worst, at, n, n ? (double)x[at] : 0.0,
           n ? (pre ? pre[at] : 0.0) + ref[at] : 0.0);
}

/* A known, varied starting value for accumulated gradients (exact in f32). */
static float *prefill(size_t n) {
  float *p = xcalloc(n, sizeof(float));
  for (size_t e = 0; e < n; e++) p[e] = (float)((int)(e % 13) - 6) / 16.0f;
  return p;
}

/* Keys [j0, j1) of the case as a contiguous block (the layout a rank would receive). */
static attn_case_t kv_piece(const attn_case_t *c, int64_t j0, int64_t j1) {
  attn_case_t p = *c;
  p.s.kv_len = j1 - j0;
  p.nke = (size_t)(c->s.batch * p.s.kv_len * c->s.kv_heads * c->s.head_dim);
  p.k = xcalloc(p.nke, sizeof(float));
  p.v = xcalloc(p.nke, sizeof(float));
  size_t row = (size_t)(c->s.kv_heads * c->s.head_dim);
  for (int64_t b = 0; b < c->s.batch; b++)
    for (int64_t j = j0; j < j1; j++) {
      memcpy(p.k + ki(&p.s, b, j - j0, 0), c->k + ki(&c->s, b, j, 0), row * sizeof(float));
      memcpy(p.v + ki(&p.s, b, j - j0, 0), c->v + ki(&c->s, b, j, 0), row * sizeof(float));
    }
  p.kv_pos = c->kv_pos + j0;
  return p;
}

/* Gathers keys [j0, j1) of a full [B,nk,Hkv,d] double tensor into a piece's layout. */
static double *ref_piece(const attn_case_t *c, const double *full, int64_t j0, int64_t j1) {
  attn_case_t p = *c;
  p.s.kv_len = j1 - j0;
  size_t row = (size_t)(c->s.kv_heads * c->s.head_dim);
  double *out = xcalloc((size_t)(c->s.batch * p.s.kv_len) * row, sizeof(double));
  for (int64_t b = 0; b < c->s.batch; b++)
    for (int64_t j = j0; j < j1; j++)
      memcpy(out + ki(&p.s, b, j - j0, 0), full + ki(&c->s, b, j, 0), row * sizeof(double));
  return out;
}

/* Kernel outputs of one case, kept so a threaded run can be compared with a one-thread run. */
typedef struct attn_result {
  float *out, *lse, *delta, *dq, *dk, *dv;
} attn_result_t;

static void result_free(attn_result_t *r) {
  free(r->out);
  free(r->lse);
  free(r->delta);
  free(r->dq);
  free(r->dk);
  free(r->dv);
}

static void run_case(weft_kernel_ctx_t *ctx, const attn_case_t *c, const attn_ref_t *ref,
                     int pieces, const char *label, attn_result_t *res) {
  const weft_attn_shape_t *s = &c->s;
  float *out = xcalloc(c->nqe, sizeof(float)), *lse = xcalloc(c->nle, sizeof(float));
  float *delta = xcalloc(c->nle, sizeof(float));
  for (size_t e = 0; e < c->nqe; e++) out[e] = NAN; /* anything not written shows up */
  for (size_t e = 0; e < c->nle; e++) lse[e] = delta[e] = NAN;

  /* forward on the whole block */
  WT_CHECK_OK(weft_attn_block_forward(ctx, s, c->q, c->k, c->v, c->q_pos, c->kv_pos, out, lse));
  check(label, "out", out, ref->out, NULL, c->nqe, ref->mag[M_OUT]);
  check(label, "lse", lse, ref->lse, NULL, c->nle, ref->mag[M_LSE]);

  /* the same KV in pieces, merged into a running state that starts empty */
  float *run_o = xcalloc(c->nqe, sizeof(float)), *run_l = xcalloc(c->nle, sizeof(float));
  float *po = xcalloc(c->nqe, sizeof(float)), *pl = xcalloc(c->nle, sizeof(float));
  for (size_t e = 0; e < c->nle; e++) run_l[e] = -INFINITY;
  for (int p = 0; p < pieces; p++) {
    int64_t j0 = s->kv_len * p / pieces, j1 = s->kv_len * (p + 1) / pieces;
    attn_case_t pc = kv_piece(c, j0, j1);
    WT_CHECK_OK(weft_attn_block_forward(ctx, &pc.s, c->q, pc.k, pc.v, c->q_pos, pc.kv_pos, po, pl));
    WT_CHECK_OK(weft_attn_merge(ctx, s, run_o, run_l, po, pl));
    free(pc.k);
    free(pc.v);
  }
  check(label, "merged out", run_o, ref->out, NULL, c->nqe, ref->mag[M_OUT]);
  check(label, "merged lse", run_l, ref->lse, NULL, c->nle, ref->mag[M_LSE]);

  /* delta from the kernel's own out, then the backward on the whole block */
  WT_CHECK_OK(weft_attn_backward_delta(ctx, s, out, c->dout, delta));
  check(label, "delta", delta, ref->delta, NULL, c->nle, ref->mag[M_DELTA]);
  float *pre_q = prefill(c->nqe), *pre_k = prefill(c->nke);
  float *dq = prefill(c->nqe), *dk = prefill(c->nke), *dv = prefill(c->nke);
  WT_CHECK_OK(weft_attn_block_backward(ctx, s, c->q, c->k, c->v, c->q_pos, c->kv_pos, c->dout, lse,
                                       delta, dq, dk, dv));
  check(label, "dq", dq, ref->dq, pre_q, c->nqe, ref->mag[M_DQ]);
  check(label, "dk", dk, ref->dk, pre_k, c->nke, ref->mag[M_DK]);
  check(label, "dv", dv, ref->dv, pre_k, c->nke, ref->mag[M_DV]);

  /* backward in pieces: dq accumulates over them, each piece has its own dk, dv */
  float *dq2 = prefill(c->nqe);
  for (int p = 0; p < pieces; p++) {
    int64_t j0 = s->kv_len * p / pieces, j1 = s->kv_len * (p + 1) / pieces;
    attn_case_t pc = kv_piece(c, j0, j1);
    float *pdk = prefill(pc.nke), *pdv = prefill(pc.nke), *ppre = prefill(pc.nke);
    WT_CHECK_OK(weft_attn_block_backward(ctx, &pc.s, c->q, pc.k, pc.v, c->q_pos, pc.kv_pos, c->dout,
                                         lse, delta, dq2, pdk, pdv));
    double *rdk = ref_piece(c, ref->dk, j0, j1), *rdv = ref_piece(c, ref->dv, j0, j1);
    check(label, "piece dk", pdk, rdk, ppre, pc.nke, ref->mag[M_DK]);
    check(label, "piece dv", pdv, rdv, ppre, pc.nke, ref->mag[M_DV]);
    free(rdk);
    free(rdv);
    free(pdk);
    free(pdv);
    free(ppre);
    free(pc.k);
    free(pc.v);
  }
  check(label, "dq over pieces", dq2, ref->dq, pre_q, c->nqe, ref->mag[M_DQ]);

  free(run_o);
  free(run_l);
  free(po);
  free(pl);
  free(pre_q);
  free(pre_k);
  free(dq2);
  if (res) {
    *res = (attn_result_t){out, lse, delta, dq, dk, dv};
  } else {
    attn_result_t r = {out, lse, delta, dq, dk, dv};
    result_free(&r);
  }
}

static void run(weft_kernel_ctx_t *ctx, int64_t B, int64_t H, int64_t Hkv, int64_t d, int64_t nq,
                int64_t nk, bool causal, pos_mode_t mode, int64_t q_off, int64_t kv_off,
                int pieces) {
  static uint64_t seed = 1;
  static const char *const mode_name[] = {"contig", "zigzag", "padded"};
  char label[200];
  snprintf(label, sizeof label,
           "B=%lld H=%lld Hkv=%lld d=%lld nq=%lld nk=%lld %s %s q_off=%lld kv_off=%lld",
           (long long)B, (long long)H, (long long)Hkv, (long long)d, (long long)nq, (long long)nk,
           causal ? "causal" : "full", mode_name[mode], (long long)q_off, (long long)kv_off);
  attn_case_t c;
  case_create(&c, B, H, Hkv, d, nq, nk, causal, mode, q_off, kv_off, seed++);
  attn_ref_t ref;
  ref_run(&c, &ref);
  run_case(ctx, &c, &ref, pieces, label, NULL);
  ref_free(&ref);
  case_destroy(&c);
}

static bool same_bits(const float *a, const float *b, size_t n) {
  return n == 0 || memcmp(a, b, n * sizeof(float)) == 0;
}

/* Large enough for the threaded path; then the same on one thread must agree bit for bit. */
static void run_threaded(weft_kernel_ctx_t *ctx, bool causal) {
  const char *label = causal ? "threaded causal" : "threaded full";
  attn_case_t c;
  case_create(&c, 2, 4, 2, 64, 300, 257, causal, POS_CONTIG, 40, 0, 99);
  attn_ref_t ref;
  ref_run(&c, &ref);
  attn_result_t many, one;
  weft_kernels_set_cpu_threads(3);
  run_case(ctx, &c, &ref, 2, label, &many);
  weft_kernels_set_cpu_threads(1);
  run_case(ctx, &c, &ref, 2, label, &one);
  WT_CHECK(same_bits(many.out, one.out, c.nqe) && same_bits(many.lse, one.lse, c.nle) &&
               same_bits(many.dq, one.dq, c.nqe) && same_bits(many.dk, one.dk, c.nke) &&
               same_bits(many.dv, one.dv, c.nke),
           "%s: 3 threads and 1 thread differ", label);
  result_free(&many);
  result_free(&one);
  ref_free(&ref);
  case_destroy(&c);
}

static void test_invalid(weft_kernel_ctx_t *ctx) {
  static float x[4096];
  static int64_t pos[16];
  const weft_attn_shape_t ok = {.batch = 1,
                                .heads = 4,
                                .kv_heads = 2,
                                .head_dim = 8,
                                .q_len = 3,
                                .kv_len = 5,
                                .scale = 0.5f,
                                .causal = true,
                                .dtype = WEFT_DTYPE_F32};
  float *o = x + 1024, *l = x + 2048, *g = x + 3072;
  WT_CHECK_OK(weft_attn_block_forward(ctx, &ok, x, x, x, pos, pos, o, l));
  weft_attn_shape_t bad[8];
  for (int i = 0; i < 8; i++) bad[i] = ok;
  bad[0].heads = 3; /* not a multiple of kv_heads */
  bad[1].kv_heads = 0;
  bad[2].q_len = -1;
  bad[3].kv_len = -1;
  bad[4].batch = 0;
  bad[5].head_dim = 0;
  bad[6].scale = INFINITY;
  bad[7].batch = INT64_MAX / 2; /* element count overflows */
  for (int i = 0; i < 8; i++) {
    WT_CHECK_STATUS(weft_attn_block_forward(ctx, &bad[i], x, x, x, pos, pos, o, l),
                    WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(weft_attn_block_backward(ctx, &bad[i], x, x, x, pos, pos, x, l, l, g, g, g),
                    WEFT_ERR_INVALID_ARG);
  }
  /* merge and delta read only B, H, nq, d (and delta the dtype) */
  WT_CHECK_OK(weft_attn_merge(ctx, &bad[0], o, l, x, x));
  WT_CHECK_OK(weft_attn_backward_delta(ctx, &bad[3], o, x, l));
  WT_CHECK_STATUS(weft_attn_merge(ctx, &bad[2], o, l, x, x), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_attn_backward_delta(ctx, &bad[5], o, x, l), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_attn_merge(ctx, &bad[7], o, l, x, x), WEFT_ERR_INVALID_ARG);
  /* NULL context, shape, and NULL tensors that have elements */
  WT_CHECK_STATUS(weft_attn_block_forward(NULL, &ok, x, x, x, pos, pos, o, l),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_attn_block_forward(ctx, NULL, x, x, x, pos, pos, o, l),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_attn_block_forward(ctx, &ok, x, NULL, x, pos, pos, o, l),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_attn_block_forward(ctx, &ok, x, x, x, NULL, pos, o, l),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_attn_block_backward(ctx, &ok, x, x, x, pos, pos, x, l, l, g, g, NULL),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_attn_merge(ctx, &ok, o, l, NULL, x), WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_attn_backward_delta(ctx, &ok, o, x, NULL), WEFT_ERR_INVALID_ARG);
  /* empty blocks: their tensors may be NULL */
  weft_attn_shape_t nokv = ok, noq = ok;
  nokv.kv_len = 0;
  noq.q_len = 0;
  WT_CHECK_OK(weft_attn_block_forward(ctx, &nokv, x, NULL, NULL, pos, NULL, o, l));
  WT_CHECK_OK(
      weft_attn_block_backward(ctx, &nokv, x, NULL, NULL, pos, NULL, x, l, l, g, NULL, NULL));
  WT_CHECK_OK(weft_attn_block_forward(ctx, &noq, NULL, x, x, NULL, pos, NULL, NULL));
  WT_CHECK_OK(
      weft_attn_block_backward(ctx, &noq, NULL, x, x, NULL, pos, NULL, NULL, NULL, NULL, g, g));
  WT_CHECK_OK(weft_attn_merge(ctx, &noq, NULL, NULL, NULL, NULL));
  /* bf16 is CUDA-only; other dtypes are not supported anywhere */
  weft_attn_shape_t bf = ok, f16 = ok;
  bf.dtype = WEFT_DTYPE_BF16;
  f16.dtype = WEFT_DTYPE_F16;
  WT_CHECK_STATUS(weft_attn_block_forward(ctx, &bf, x, x, x, pos, pos, o, l), WEFT_ERR_UNSUPPORTED);
  WT_CHECK_STATUS(weft_attn_block_backward(ctx, &bf, x, x, x, pos, pos, x, l, l, g, g, g),
                  WEFT_ERR_UNSUPPORTED);
  WT_CHECK_STATUS(weft_attn_backward_delta(ctx, &bf, o, x, l), WEFT_ERR_UNSUPPORTED);
  WT_CHECK_STATUS(weft_attn_block_forward(ctx, &f16, x, x, x, pos, pos, o, l),
                  WEFT_ERR_UNSUPPORTED);
  WT_CHECK_OK(weft_attn_merge(ctx, &bf, o, l, x, x)); /* merge is f32 whatever the dtype */
}

int main(void) {
  weft_device_t *cpu = NULL;
  weft_kernel_ctx_t *ctx = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &cpu));
  WT_CHECK_OK(weft_kernel_ctx_create(cpu, NULL, &ctx));
  if (!ctx) return weft_test_exit_code("test_attention");
  int threads = weft_kernels_cpu_threads();

  test_invalid(ctx);
  /* sizes around the tile, both head dims, causal and not, a diagonal block */
  const int64_t sizes[] = {1, 63, 65, 130};
  for (size_t a = 0; a < 4; a++)
    for (int causal = 0; causal < 2; causal++) {
      run(ctx, 2, 4, 2, 24, sizes[a], sizes[a], causal, POS_CONTIG, 0, 0, 3);
      run(ctx, 1, 2, 1, 64, sizes[a], sizes[(a + 1) % 4], causal, POS_CONTIG, 0, 0, 2);
    }
  /* off-diagonal causal blocks: keys all earlier, partly later, all later (every row masked) */
  run(ctx, 1, 2, 2, 24, 70, 65, true, POS_CONTIG, 200, 0, 2);
  run(ctx, 1, 2, 2, 24, 70, 130, true, POS_CONTIG, 100, 40, 3);
  run(ctx, 2, 2, 1, 24, 65, 70, true, POS_CONTIG, 0, 500, 2);
  /* zigzag: q [0..7] U [56..63] against kv [16..31]; and a larger one over several tiles */
  run(ctx, 1, 2, 1, 24, 16, 16, true, POS_ZIGZAG, 0, 0, 2);
  run(ctx, 1, 2, 1, 24, 16, 16, false, POS_ZIGZAG, 0, 0, 2);
  run(ctx, 1, 4, 2, 64, 130, 70, true, POS_ZIGZAG, 0, 0, 3);
  /* padding in q and kv */
  run(ctx, 2, 4, 2, 24, 130, 65, true, POS_PADDED, 0, 0, 3);
  run(ctx, 1, 2, 2, 64, 65, 130, false, POS_PADDED, 0, 0, 2);
  /* GQA 8/2 and MQA 8/1 */
  run(ctx, 1, 8, 2, 24, 65, 65, true, POS_CONTIG, 0, 0, 2);
  run(ctx, 1, 8, 1, 24, 63, 130, false, POS_CONTIG, 0, 0, 3);
  run(ctx, 2, 8, 1, 64, 65, 63, true, POS_CONTIG, 10, 0, 2);
  /* head dims: odd, one element, past one 64-column block */
  run(ctx, 1, 2, 1, 17, 65, 70, true, POS_PADDED, 0, 0, 2);
  run(ctx, 2, 2, 1, 1, 63, 65, true, POS_CONTIG, 0, 0, 3);
  run(ctx, 1, 2, 2, 80, 70, 65, false, POS_CONTIG, 0, 0, 2);
  run(ctx, 1, 2, 2, 128, 65, 130, true, POS_CONTIG, 0, 0, 2);
  /* empty blocks */
  run(ctx, 2, 4, 2, 24, 0, 65, true, POS_CONTIG, 0, 0, 2);
  run(ctx, 2, 4, 2, 24, 65, 0, true, POS_CONTIG, 0, 0, 1);
  /* several threads, compared bitwise with one */
  run_threaded(ctx, true);
  run_threaded(ctx, false);
  weft_kernels_set_cpu_threads(threads);

  printf("largest error / tolerance: %.3g\n", g_worst);
  weft_kernel_ctx_destroy(ctx);
  weft_device_close(cpu);
  return weft_test_exit_code("test_attention");
}
