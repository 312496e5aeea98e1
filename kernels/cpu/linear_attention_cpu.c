/* CPU gated linear attention (weft/linear_attention.h): chunked forward and backward in f32,
 * dense products through OpenBLAS, one (batch, head) at a time.
 *
 * Notation, per (b, h), for one chunk of L <= C tokens t = 0..L-1 entering with state S0
 * (the state after the previous chunk; S_in for the first) and leaving with Se:
 *   c_t   = g_0 + ... + g_t         cumulative log decay inside the chunk ([dk], <= 0, double)
 *   W_ts  = exp(c_t - c_s), s <= t  (per channel; = prod_{u=s+1..t} exp(g_u))
 *   A[t,s] = sum_i q_t[i] k_s[i] W_ts[i]  for s <= t, 0 above the diagonal
 *   Qh_t = q_t * exp(c_t)           Kh_s = k_s * exp(c_{L-1} - c_s)     gamma = exp(c_{L-1})
 *   O  = scale * (A V + Qh S0)      Se = diag(gamma) S0 + Kh^T V
 * Every exponent is <= 0, so nothing overflows; very negative g underflows to 0, which is the
 * correct limit. c is summed in double and each exponent difference is rounded to float once
 * before expf (so a long run of decays does not leave an absolute error of eps * |c|). A is built
 * per row with the decay applied multiplicatively (w *= exp(g_u) while walking s down from t),
 * which needs no exp in the O(C^2 dk) loop and is exact to ~C ulps; the per-channel decay rules out
 * a single GEMM for A (a factorisation q exp(c) . k exp(-c) would overflow), and the sub-chunk
 * trick was rejected as more code for a part that is already vectorisable.
 *
 * Backward of one chunk, given dSe = dL/dSe (the carried state gradient; ds_out for the last
 * chunk) and dO:
 *   dA[t,s] = scale * do_t . v_s  (s <= t)
 *   dV  = scale * A^T dO + Kh dSe
 *   dq_t = sum_{s<=t} dA[t,s] (k_s * W_ts) + scale * exp(c_t) * (S0 do_t^T)
 *   dk_s = sum_{t>=s} dA[t,s] (q_t * W_ts) + exp(c_{L-1} - c_s) * (dSe v_s^T)
 *   dS0 = diag(gamma) dSe + scale * Qh^T dO        (carried to the previous chunk)
 * The two sums are Horner recurrences over the multiplicative decays (see gla_dq_offdiag and
 * gla_dk_offdiag).
 *
 * Derivation of dg. Write the rank's loss as a function of (q, k, v, c, S_in), where c_t is
 * now the cumulative log decay from the rank's first token (c_t = g_1 + ... + g_t). In closed
 * form, per channel i (row i of every state):
 *   S_t[i,:] = exp(c_t[i]) S_in[i,:] + sum_{s<=t} exp(c_t[i] - c_s[i]) k_s[i] v_s
 *   o_t = scale * sum_i q_t[i] S_t[i,:]
 *   L = sum_t do_t . o_t + sum_{i,j} dS_out[i,j] S_n[i,j]
 * c_u[i] appears in exactly three places: with a + sign in every term of o_u (through
 * exp(c_u[i] - .) and exp(c_u[i])), with a - sign in every term that contains k_u (through
 * exp(. - c_u[i])), and, for u = n, with a + sign in every term of S_n. Since
 * d exp(+-x)/dx = +-exp(+-x), the derivative collects each group's own value:
 *   dL/dc_u[i] = q_u[i] dq_u[i] - k_u[i] dk_u[i] + [u = n] sum_j dS_out[i,j] S_n[i,j]
 * where dq_u[i] = scale * S_u[i,:] . do_u is the gradient w.r.t. q_u and dk_u the gradient
 * w.r.t. k_u (both the true input gradients: q_u[i] multiplies exactly the + group of o_u,
 * k_u[i] exactly the - group). As c_u = sum_{t<=u} g_t, dL/dg_t = sum_{u>=t} dL/dc_u:
 *   dg_t[i] = sum_{u>=t} (q_u[i] dq_u[i] - k_u[i] dk_u[i]) + sum_j dS_out[i,j] S_n[i,j]
 * a reverse cumulative sum. The same identity holds for any contiguous piece of the sequence
 * (a piece is a "rank" whose S_in is its start state, which does not depend on the piece's
 * g, and whose dS_out is the gradient carried into its end state). Applied per chunk:
 *   dg_t[i] = sum_{u>=t in chunk} (q_u[i] dq_u[i] - k_u[i] dk_u[i]) + sum_j dSe[i,j] Se[i,j]
 * so the cumulative sum never runs over more than C tokens and its rounding error does not
 * grow with n (it is accumulated in double). The kernel evaluates this with the exactly
 * cancelling pairs removed analytically (see gla_chunk_backward), so a very negative g_t
 * gives a dg_t accurate relative to its own (tiny) size. Cross-check (derived the other way):
 * directly from S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, dg_t[i] = sum_j H_t[i,j] exp(g_t[i])
 * S_{t-1}[i,j] with H_t the total gradient of S_t; the test's float64 reference uses that form,
 * so the kernel and the reference check each other.
 *
 * The backward first runs the chunks forward from s_in and keeps only the chunk-start states
 * (n/C * dk * dv floats per head), then walks the chunks backwards. Single-threaded over
 * (b, h): the products are small (C x dk x dv), so OpenBLAS runs them on one thread anyway;
 * parallelising over heads would need a workspace per thread and is left for later. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "kernel_ctx_internal.h"
#include "linear_attention_internal.h"

/* Sizes and strides of one call; the per-(b, h) base offsets are computed by the callers. */
typedef struct gla_dims {
  int n, dk, dv, C; /* tokens, widths, chunk length (C <= n unless n == 0) */
  int ldk, ldv;     /* row strides between tokens: H*dk, H*dv */
  int64_t H;
  float scale;
} gla_dims_t;

/* Scratch for one chunk (sizes in elements). */
typedef struct gla_scratch {
  double *c;      /* [C, dk] cumulative log decay inside the chunk */
  double *run;    /* [dk] running cumulative decay (global) or dg accumulator */
  float *eg;      /* [C, dk] exp(g_t) */
  float *ec;      /* [C, dk] exp(c_t) */
  float *kd;      /* [C, dk] exp(c_{L-1} - c_s) */
  float *qh, *kh; /* [C, dk] Qh, Kh */
  float *w;       /* [dk] row work vector */
  float *a, *da;  /* [C, C] scores and their gradient */
  float *s, *ds;  /* [dk, dv] carried state and state gradient */
  float *states;  /* [nchunks, dk, dv] chunk-start states (backward only) */
} gla_scratch_t;

static gla_dims_t gla_dims(const weft_gla_shape_t *shape) {
  gla_dims_t d;
  d.n = (int)shape->tokens;
  d.dk = (int)shape->dk;
  d.dv = (int)shape->dv;
  /* Memory is laid out by layout_heads (resolved by the front end); loops run over heads. */
  d.H = shape->layout_heads;
  d.ldk = (int)(shape->layout_heads * shape->dk);
  d.ldv = (int)(shape->layout_heads * shape->dv);
  int64_t c = shape->chunk < shape->tokens ? shape->chunk : shape->tokens;
  d.C = c > 0 ? (int)c : 1;
  d.scale = shape->scale;
  return d;
}

static int gla_nchunks(const gla_dims_t *d) { return (d->n + d->C - 1) / d->C; }

/* Carves the scratch from the GLA workspace slot; `with_states` adds the chunk-start states. */
static weft_status_t gla_scratch_get(weft_kernel_ctx_t *ctx, const gla_dims_t *d, bool with_states,
                                     gla_scratch_t *sc) {
  size_t C = (size_t)d->C, dk = (size_t)d->dk, dv = (size_t)d->dv;
  size_t nstates = with_states ? (size_t)gla_nchunks(d) : 0;
  size_t doubles = C * dk + dk;
  size_t floats = 6 * C * dk + dk + 2 * C * C + (2 + nstates) * dk * dv;
  void *ws = NULL;
  WEFT_CHECK(weft_kernel_ctx_workspace(ctx, WEFT_KERNEL_WS_GLA,
                                       doubles * sizeof(double) + floats * sizeof(float), &ws));
  sc->c = ws;
  sc->run = sc->c + C * dk;
  sc->eg = (float *)(sc->run + dk);
  sc->ec = sc->eg + C * dk;
  sc->kd = sc->ec + C * dk;
  sc->qh = sc->kd + C * dk;
  sc->kh = sc->qh + C * dk;
  sc->w = sc->kh + C * dk;
  sc->a = sc->w + dk;
  sc->da = sc->a + C * C;
  sc->s = sc->da + C * C;
  sc->ds = sc->s + dk * dv;
  sc->states = with_states ? sc->ds + dk * dv : NULL;
  return WEFT_OK;
}

/* Decay factors of one chunk: g [L, dk] with row stride ldk. Fills c, eg, ec, kd. */
static void gla_chunk_decays(const gla_dims_t *d, int L, const float *g, gla_scratch_t *sc) {
  int dk = d->dk;
  for (int t = 0; t < L; t++) {
    const float *gt = g + (size_t)t * d->ldk;
    double *ct = sc->c + (size_t)t * dk;
    const double *cp = t > 0 ? ct - dk : NULL;
    for (int i = 0; i < dk; i++) {
      ct[i] = (cp ? cp[i] : 0.0) + gt[i];
      sc->eg[(size_t)t * dk + i] = expf(gt[i]);
      sc->ec[(size_t)t * dk + i] = expf((float)ct[i]);
    }
  }
  const double *cl = sc->c + (size_t)(L - 1) * dk;
  for (int t = 0; t < L; t++)
    for (int i = 0; i < dk; i++)
      sc->kd[(size_t)t * dk + i] = expf((float)(cl[i] - sc->c[(size_t)t * dk + i]));
}

/* dst [L, dk] dense = src [L, dk] (row stride ld) * f [L, dk] elementwise. */
static void gla_scale_rows(int L, int dk, const float *src, int ld, const float *f, float *dst) {
  for (int t = 0; t < L; t++)
    for (int i = 0; i < dk; i++)
      dst[(size_t)t * dk + i] = src[(size_t)t * ld + i] * f[(size_t)t * dk + i];
}

/* a . b with 16 partial sums: the compiler may not reorder a float reduction, and one running
 * sum would serialise on the add latency; independent lanes let it vectorise. */
static float gla_dot(const float *restrict a, const float *restrict b, int n) {
  float part[16] = {0};
  int i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) part[j] += a[i + j] * b[i + j];
  for (; i < n; i++) part[0] += a[i] * b[i];
  float sum = 0.0f;
  for (int j = 0; j < 16; j++) sum += part[j];
  return sum;
}

/* w[i] = w[i] * f[i] + alpha * x[i]  (alpha = 0: w *= f) */
static void gla_decay_axpy(float *restrict w, const float *restrict f, float alpha,
                           const float *restrict x, int n) {
  for (int i = 0; i < n; i++) w[i] = w[i] * f[i] + alpha * x[i];
}

/* Masked scores A [L, L] (row stride C) of q, k [L, dk] (row stride ldk), unscaled. */
static void gla_scores(const gla_dims_t *d, int L, const float *q, const float *k,
                       gla_scratch_t *sc) {
  int dk = d->dk;
  float *restrict w = sc->w;
  for (int t = 0; t < L; t++) {
    float *at = sc->a + (size_t)t * d->C;
    memcpy(w, q + (size_t)t * d->ldk, (size_t)dk * sizeof(float));
    for (int s = t;; s--) { /* w = q_t * W_ts */
      at[s] = gla_dot(w, k + (size_t)s * d->ldk, dk);
      if (s == 0) break;
      const float *restrict eg = sc->eg + (size_t)s * dk;
      for (int i = 0; i < dk; i++) w[i] *= eg[i];
    }
    for (int s = t + 1; s < L; s++) at[s] = 0.0f;
  }
}

/* S [dk, dv] = diag(f) S + alpha * X^T Y, X [L, dk] (row stride ldx), Y [L, dv] (ldy). */
static void gla_state_update(const gla_dims_t *d, int L, const float *f, float alpha,
                             const float *x, int ldx, const float *y, int ldy, float *s) {
  for (int i = 0; i < d->dk; i++)
    for (int j = 0; j < d->dv; j++) s[(size_t)i * d->dv + j] *= f[i];
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d->dk, d->dv, L, alpha, x, ldx, y, ldy, 1.0f,
              s, d->dv);
}

/* Offsets of (b, h) in token-major tensors and in state tensors. */
static size_t gla_tok_off(const gla_dims_t *d, int64_t b, int64_t h, int width) {
  return ((size_t)b * (size_t)d->n * (size_t)d->H + (size_t)h) * (size_t)width;
}
static size_t gla_state_off(const gla_dims_t *d, int64_t b, int64_t h) {
  return ((size_t)b * (size_t)d->H + (size_t)h) * (size_t)d->dk * (size_t)d->dv;
}

weft_status_t weft_gla_forward_local_cpu(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                         const float *q, const float *k, const float *v,
                                         const float *g, float *out, float *s_local,
                                         float *log_gamma) {
  gla_dims_t d = gla_dims(shape);
  gla_scratch_t sc;
  WEFT_CHECK(gla_scratch_get(ctx, &d, false, &sc));
  size_t state = (size_t)d.dk * (size_t)d.dv;
  for (int64_t b = 0; b < shape->batch; b++) {
    for (int64_t h = 0; h < shape->heads; h++) {
      size_t ok = gla_tok_off(&d, b, h, d.dk), ov = gla_tok_off(&d, b, h, d.dv);
      memset(sc.s, 0, state * sizeof(float));
      for (int i = 0; i < d.dk; i++) sc.run[i] = 0.0;
      for (int t0 = 0; t0 < d.n; t0 += d.C) {
        int L = d.n - t0 < d.C ? d.n - t0 : d.C;
        const float *qc = q + ok + (size_t)t0 * d.ldk, *kc = k + ok + (size_t)t0 * d.ldk;
        const float *vc = v + ov + (size_t)t0 * d.ldv;
        float *oc = out + ov + (size_t)t0 * d.ldv;
        gla_chunk_decays(&d, L, g + ok + (size_t)t0 * d.ldk, &sc);
        gla_scores(&d, L, qc, kc, &sc);
        /* O = scale * (A V + Qh S0) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, d.dv, L, d.scale, sc.a, d.C, vc,
                    d.ldv, 0.0f, oc, d.ldv);
        if (t0 > 0) { /* S0 = 0 for the first chunk */
          gla_scale_rows(L, d.dk, qc, d.ldk, sc.ec, sc.qh);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, d.dv, d.dk, d.scale, sc.qh,
                      d.dk, sc.s, d.dv, 1.0f, oc, d.ldv);
        }
        /* Se = diag(gamma) S0 + Kh^T V */
        gla_scale_rows(L, d.dk, kc, d.ldk, sc.kd, sc.kh);
        gla_state_update(&d, L, sc.ec + (size_t)(L - 1) * d.dk, 1.0f, sc.kh, d.dk, vc, d.ldv, sc.s);
        for (int i = 0; i < d.dk; i++) sc.run[i] += sc.c[(size_t)(L - 1) * d.dk + i];
      }
      memcpy(s_local + gla_state_off(&d, b, h), sc.s, state * sizeof(float));
      float *lg = log_gamma + ((size_t)b * (size_t)d.H + (size_t)h) * (size_t)d.dk;
      for (int i = 0; i < d.dk; i++) lg[i] = (float)sc.run[i];
    }
  }
  return WEFT_OK;
}

/* qh [L, dk] = q * exp(c_t) with c_t cumulative from the rank's first token: sc->run holds the
 * cumulative decay before this chunk and is advanced past it. */
static void gla_global_qh(const gla_dims_t *d, int L, const float *q, const float *g,
                          gla_scratch_t *sc) {
  for (int t = 0; t < L; t++) {
    const float *qt = q + (size_t)t * d->ldk, *gt = g + (size_t)t * d->ldk;
    float *qh = sc->qh + (size_t)t * d->dk;
    for (int i = 0; i < d->dk; i++) {
      sc->run[i] += gt[i];
      qh[i] = qt[i] * (float)exp(sc->run[i]);
    }
  }
}

weft_status_t weft_gla_forward_correct_cpu(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                           const float *q, const float *g, const float *s_in,
                                           float *out) {
  gla_dims_t d = gla_dims(shape);
  if (d.n == 0) return WEFT_OK;
  gla_scratch_t sc;
  WEFT_CHECK(gla_scratch_get(ctx, &d, false, &sc));
  for (int64_t b = 0; b < shape->batch; b++) {
    for (int64_t h = 0; h < shape->heads; h++) {
      size_t ok = gla_tok_off(&d, b, h, d.dk), ov = gla_tok_off(&d, b, h, d.dv);
      const float *s_in_bh = s_in + gla_state_off(&d, b, h);
      for (int i = 0; i < d.dk; i++) sc.run[i] = 0.0;
      for (int t0 = 0; t0 < d.n; t0 += d.C) {
        int L = d.n - t0 < d.C ? d.n - t0 : d.C;
        gla_global_qh(&d, L, q + ok + (size_t)t0 * d.ldk, g + ok + (size_t)t0 * d.ldk, &sc);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, d.dv, d.dk, d.scale, sc.qh, d.dk,
                    s_in_bh, d.dv, 1.0f, out + ov + (size_t)t0 * d.ldv, d.ldv);
      }
    }
  }
  return WEFT_OK;
}

weft_status_t weft_gla_backward_state_local_cpu(weft_kernel_ctx_t *ctx,
                                                const weft_gla_shape_t *shape, const float *q,
                                                const float *g, const float *dout,
                                                float *ds_local) {
  gla_dims_t d = gla_dims(shape);
  gla_scratch_t sc;
  WEFT_CHECK(gla_scratch_get(ctx, &d, false, &sc));
  size_t state = (size_t)d.dk * (size_t)d.dv;
  for (int64_t b = 0; b < shape->batch; b++) {
    for (int64_t h = 0; h < shape->heads; h++) {
      size_t ok = gla_tok_off(&d, b, h, d.dk), ov = gla_tok_off(&d, b, h, d.dv);
      float *ds = ds_local + gla_state_off(&d, b, h);
      memset(ds, 0, state * sizeof(float));
      for (int i = 0; i < d.dk; i++) sc.run[i] = 0.0;
      for (int t0 = 0; t0 < d.n; t0 += d.C) {
        int L = d.n - t0 < d.C ? d.n - t0 : d.C;
        gla_global_qh(&d, L, q + ok + (size_t)t0 * d.ldk, g + ok + (size_t)t0 * d.ldk, &sc);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.dk, d.dv, L, d.scale, sc.qh, d.dk,
                    dout + ov + (size_t)t0 * d.ldv, d.ldv, 1.0f, ds, d.dv);
      }
    }
  }
  return WEFT_OK;
}

/* dq [L, dk] (row stride ldk) += sum_{s<t} dA[t,s] k_s * W_ts (the diagonal s = t is added
 * later, see gla_chunk_backward), by Horner over s: acc = dA[t,0] k_0,
 * acc = acc * exp(g_s) + dA[t,s] k_s for s = 1..t-1, then one more decay exp(g_t). */
static void gla_dq_offdiag(const gla_dims_t *d, int L, const float *k, gla_scratch_t *sc,
                           float *dq) {
  int dk = d->dk;
  float *acc = sc->w;
  for (int t = 1; t < L; t++) {
    const float *dat = sc->da + (size_t)t * d->C;
    for (int i = 0; i < dk; i++) acc[i] = dat[0] * k[i];
    for (int s = 1; s < t; s++) {
      gla_decay_axpy(acc, sc->eg + (size_t)s * dk, dat[s], k + (size_t)s * d->ldk, dk);
    }
    const float *eg = sc->eg + (size_t)t * dk;
    float *dqt = dq + (size_t)t * d->ldk;
    for (int i = 0; i < dk; i++) dqt[i] += acc[i] * eg[i];
  }
}

/* dk [L, dk] (row stride ldk) = sum_{t>s} dA[t,s] q_t * W_ts (diagonal excluded), by Horner
 * over t from L-1 down: acc = dA[L-1,s] q_{L-1}, acc = acc * exp(g_{t+1}) + dA[t,s] q_t for
 * t = L-2..s+1, then one more decay exp(g_{s+1}). */
static void gla_dk_offdiag(const gla_dims_t *d, int L, const float *q, gla_scratch_t *sc,
                           float *dkp) {
  int dk = d->dk;
  float *acc = sc->w;
  for (int s = 0; s < L; s++) {
    float *dks = dkp + (size_t)s * d->ldk;
    if (s == L - 1) {
      for (int i = 0; i < dk; i++) dks[i] = 0.0f;
      continue;
    }
    const float *ql = q + (size_t)(L - 1) * d->ldk;
    float a0 = sc->da[(size_t)(L - 1) * d->C + s];
    for (int i = 0; i < dk; i++) acc[i] = a0 * ql[i];
    for (int t = L - 2; t > s; t--) {
      gla_decay_axpy(acc, sc->eg + (size_t)(t + 1) * dk, sc->da[(size_t)t * d->C + s],
                     q + (size_t)t * d->ldk, dk);
    }
    const float *eg = sc->eg + (size_t)(s + 1) * dk;
    for (int i = 0; i < dk; i++) dks[i] = acc[i] * eg[i];
  }
}

/* Backward of one chunk (see the file note). s0: the state at the chunk's start; sc->ds holds
 * dSe on entry and dS0 on return.
 *
 * dg without cancellation. The identity of the file note sums q_u dq_u - k_u dk_u, whose
 * undecayed parts cancel exactly: the diagonal score term q_u[i] dA[u,u] k_u[i] appears in
 * both, and the chunk-end term sum_j dSe Se contains k_u kd_u (dSe v_u) for every u, which
 * k_u dk_u subtracts again (undecayed for u = L-1). Summed in f32 they would leave an error of
 * eps * |q dq| on a dg that is ~exp(g_t) times smaller when g_t is very negative. Removing
 * both pairs analytically, with dq^o, dk^o the off-diagonal intra parts plus (for dq) the S0
 * part, and dks_s = kd_s * (dSe v_s^T):
 *   dg_t = sum_{u>=t} (q_u dq^o_u - k_u dk^o_u) + gamma <dSe, S0>_row + sum_{s<t} k_s dks_s
 * where every term carries the factor exp(g_t) (derivation: expand Se = diag(gamma) S0 +
 * sum_s kd_s k_s^T v_s; the pairs with t <= s < u that remain in the first sum cancel only
 * when decays inside the chunk are mild, and then their size is that of dg). */
static void gla_chunk_backward(const gla_dims_t *d, int L, const float *q, const float *k,
                               const float *v, const float *dout, const float *s0,
                               gla_scratch_t *sc, float *dq, float *dk, float *dv, float *dg) {
  int n_dk = d->dk, n_dv = d->dv;
  gla_scores(d, L, q, k, sc);
  gla_scale_rows(L, n_dk, q, d->ldk, sc->ec, sc->qh);
  gla_scale_rows(L, n_dk, k, d->ldk, sc->kd, sc->kh);
  /* dA = scale * dO V^T, masked to s <= t */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, n_dv, d->scale, dout, d->ldv, v,
              d->ldv, 0.0f, sc->da, d->C);
  for (int t = 0; t < L; t++)
    for (int s = t + 1; s < L; s++) sc->da[(size_t)t * d->C + s] = 0.0f;
  /* dV = scale * A^T dO + Kh dSe */
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, n_dv, L, d->scale, sc->a, d->C, dout,
              d->ldv, 0.0f, dv, d->ldv);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, n_dv, n_dk, 1.0f, sc->kh, n_dk, sc->ds,
              n_dv, 1.0f, dv, d->ldv);
  /* dq^o = scale * exp(c_t) * (dO S0^T) + off-diagonal intra */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, n_dk, n_dv, d->scale, dout, d->ldv, s0,
              n_dv, 0.0f, dq, d->ldk);
  for (int t = 0; t < L; t++)
    for (int i = 0; i < n_dk; i++) dq[(size_t)t * d->ldk + i] *= sc->ec[(size_t)t * n_dk + i];
  gla_dq_offdiag(d, L, k, sc, dq);
  /* dks = kd * (V dSe^T), into kh (no longer needed); dk^o = off-diagonal intra */
  float *dks = sc->kh;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, n_dk, n_dv, 1.0f, v, d->ldv, sc->ds, n_dv,
              0.0f, dks, n_dk);
  for (size_t e = 0; e < (size_t)L * (size_t)n_dk; e++) dks[e] *= sc->kd[e];
  gla_dk_offdiag(d, L, q, sc, dk);
  /* dg: forward exclusive sum into dg, then the reverse sum added (both in double) */
  const float *gamma = sc->ec + (size_t)(L - 1) * n_dk;
  for (int i = 0; i < n_dk; i++) {
    double acc = 0.0;
    for (int j = 0; j < n_dv; j++)
      acc += (double)sc->ds[(size_t)i * n_dv + j] * s0[(size_t)i * n_dv + j];
    sc->run[i] = gamma[i] * acc;
  }
  for (int t = 0; t < L; t++) {
    size_t o = (size_t)t * d->ldk;
    for (int i = 0; i < n_dk; i++) {
      dg[o + i] = (float)sc->run[i];
      sc->run[i] += (double)k[o + i] * dks[(size_t)t * n_dk + i];
    }
  }
  for (int i = 0; i < n_dk; i++) sc->run[i] = 0.0;
  for (int t = L - 1; t >= 0; t--) {
    size_t o = (size_t)t * d->ldk;
    for (int i = 0; i < n_dk; i++) {
      sc->run[i] += (double)q[o + i] * dq[o + i] - (double)k[o + i] * dk[o + i];
      dg[o + i] = (float)(dg[o + i] + sc->run[i]);
    }
  }
  /* complete dq, dk: diagonal terms, and dks for dk */
  for (int t = 0; t < L; t++) {
    size_t o = (size_t)t * d->ldk;
    float a = sc->da[(size_t)t * d->C + t];
    for (int i = 0; i < n_dk; i++) {
      dq[o + i] += a * k[o + i];
      dk[o + i] += a * q[o + i] + dks[(size_t)t * n_dk + i];
    }
  }
  /* dS0 = diag(gamma) dSe + scale * Qh^T dO */
  gla_state_update(d, L, gamma, d->scale, sc->qh, n_dk, dout, d->ldv, sc->ds);
}

weft_status_t weft_gla_backward_cpu(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                    const float *q, const float *k, const float *v, const float *g,
                                    const float *dout, const float *s_in, const float *ds_out,
                                    float *dq, float *dk, float *dv, float *dg) {
  gla_dims_t d = gla_dims(shape);
  if (d.n == 0) return WEFT_OK;
  gla_scratch_t sc;
  WEFT_CHECK(gla_scratch_get(ctx, &d, true, &sc));
  size_t state = (size_t)d.dk * (size_t)d.dv;
  int nchunks = gla_nchunks(&d);
  for (int64_t b = 0; b < shape->batch; b++) {
    for (int64_t h = 0; h < shape->heads; h++) {
      size_t ok = gla_tok_off(&d, b, h, d.dk), ov = gla_tok_off(&d, b, h, d.dv);
      /* states[c] = state before chunk c */
      memcpy(sc.states, s_in + gla_state_off(&d, b, h), state * sizeof(float));
      for (int c = 0; c + 1 < nchunks; c++) {
        int t0 = c * d.C, L = d.n - t0 < d.C ? d.n - t0 : d.C;
        float *next = sc.states + (size_t)(c + 1) * state;
        memcpy(next, sc.states + (size_t)c * state, state * sizeof(float));
        gla_chunk_decays(&d, L, g + ok + (size_t)t0 * d.ldk, &sc);
        gla_scale_rows(L, d.dk, k + ok + (size_t)t0 * d.ldk, d.ldk, sc.kd, sc.kh);
        gla_state_update(&d, L, sc.ec + (size_t)(L - 1) * d.dk, 1.0f, sc.kh, d.dk,
                         v + ov + (size_t)t0 * d.ldv, d.ldv, next);
      }
      memcpy(sc.ds, ds_out + gla_state_off(&d, b, h), state * sizeof(float));
      for (int c = nchunks - 1; c >= 0; c--) {
        int t0 = c * d.C, L = d.n - t0 < d.C ? d.n - t0 : d.C;
        size_t tk = ok + (size_t)t0 * d.ldk, tv = ov + (size_t)t0 * d.ldv;
        gla_chunk_decays(&d, L, g + tk, &sc);
        gla_chunk_backward(&d, L, q + tk, k + tk, v + tv, dout + tv, sc.states + (size_t)c * state,
                           &sc, dq + tk, dk + tk, dv + tv, dg + tk);
      }
    }
  }
  return WEFT_OK;
}
