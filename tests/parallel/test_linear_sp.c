/* Sequence-parallel gated linear attention (parallel/linear_sp.h) against a float64 serial
 * recurrence, at any rank count.
 *
 * Every rank builds the same global inputs from a hash of (tensor, index), runs the serial
 * recurrence over the whole sequence in float64 (forward and the hand-written backward of
 * L = sum <dout, out>), takes its contiguous slice (the first N % P ranks hold one extra
 * token) and compares what each algorithm computed for its tokens: out, s_in, the final
 * state (last rank), dq, dk, dv, dg.
 *
 * Tolerance, the same for every P: |got - ref| <= ATOL_REL * max|ref over the whole tensor|
 * + RTOL * |ref|. The kernels compute in f32 with chunked sums, so the error is a few f32
 * roundings of the largest terms; the tensor-wide scale keeps it independent of how the
 * sequence is cut. For dg the scale is that of the terms dg is computed from (dg_scale).
 *
 * Bytes (weft_comm_total_bytes before and after each call): zeco and ring send exactly one
 * [B,H,dk,dv] f32 state to the successor (forward: p+1, backward: p-1) and nothing to anyone
 * else; lasp2 receives (P-1) states plus their [B,H,dk] decays, one from every other rank.
 * The plan is then reused: a second forward+backward must give bitwise the same results and
 * leave the kernel context's workspace the same size (no growth after the first call). For
 * zeco the first pass runs the All-Scan behind the compute (weft_linear_sp_plan_set_overlap,
 * the default) and the second one after it, so the two paths must agree bitwise; the cases
 * give 1 to 4 units (head groups for B < 4, batch ranges for B = 5, one unit for B = H = 1).
 *
 * Zigzag plans (weft_linear_sp_plan_create_zigzag): the global sequence is N = 2Pc tokens and
 * rank r holds chunks r and 2P-1-r, each batch row of its tensors being chunk r then chunk
 * 2P-1-r; every piece is compared with the same natural-order reference, s_in per piece, the
 * final state on rank 0. Bytes: zeco and ring one [B,H,dk,dv] state to each neighbour (r+1
 * and r-1, where they exist) per pass, lasp2 both pieces' states and decays to every peer. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "weft/bootstrap.h"
#include "weft/comm.h"
#include "weft/kernel_ctx.h"
#include "weft/linear_sp.h"

#define ATOL_REL 1e-4 /* f32 chunked sums of up to ~100 terms, relative to the tensor's max */
#define RTOL     1e-4

typedef enum { G_RANDOM, G_ZERO, G_VERY_NEGATIVE, G_MIXED } g_mode_t;
static const char *const k_g_names[] = {"random", "zero", "very-negative", "mixed"};

typedef struct test_case {
  int64_t batch, tokens, heads, dk, dv, chunk;
  g_mode_t g_mode;
} test_case_t;

/* Global inputs and the float64 reference, all [B,N,H,d] or [B,H,dk,dv]. */
typedef struct problem {
  test_case_t c;
  float scale;
  float *q, *k, *v, *g, *dout;
  double *out, *dq, *dk, *dv, *dg;
  double *states; /* [B,H,N+1,dk,dv]: S_0 .. S_N */
} problem_t;

static double uniform(uint32_t tensor, uint64_t index) { /* in [0, 1) */
  uint64_t x =
      index * 0x9e3779b97f4a7c15ull + tensor * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return (double)(x >> 11) / 9007199254740992.0;
}

static float g_value(g_mode_t mode, size_t index) {
  double u = uniform(4, index);
  switch (mode) {
  case G_ZERO: return 0.0f;
  case G_VERY_NEGATIVE: return (float)(-20.0 - 40.0 * u); /* exp(g) in 1e-26..2e-9 */
  case G_MIXED: return index % 3 == 0 ? (float)(-30.0 * u) : 0.0f;
  default: return (float)(-0.5 * u);
  }
}

static size_t idx4(const test_case_t *c, int64_t n, int64_t b, int64_t t, int64_t h, int64_t d,
                   int64_t i) {
  return (size_t)((((b * n + t) * c->heads + h) * d) + i);
}

static void reference(problem_t *p) {
  const test_case_t *c = &p->c;
  int64_t N = c->tokens, H = c->heads, DK = c->dk, DV = c->dv, SS = DK * DV;
  double *dS = calloc((size_t)SS, sizeof(double));
  for (int64_t b = 0; b < c->batch; b++) {
    for (int64_t h = 0; h < H; h++) {
      double *st = p->states + (size_t)((b * H + h) * (N + 1) * SS);
      memset(st, 0, (size_t)SS * sizeof(double));
      for (int64_t t = 0; t < N; t++) {
        const double *prev = st + t * SS;
        double *cur = st + (t + 1) * SS;
        for (int64_t i = 0; i < DK; i++) {
          double a = exp((double)p->g[idx4(c, N, b, t, h, DK, i)]);
          double ki = p->k[idx4(c, N, b, t, h, DK, i)];
          for (int64_t j = 0; j < DV; j++)
            cur[i * DV + j] = a * prev[i * DV + j] + ki * p->v[idx4(c, N, b, t, h, DV, j)];
        }
        for (int64_t j = 0; j < DV; j++) {
          double o = 0;
          for (int64_t i = 0; i < DK; i++) o += p->q[idx4(c, N, b, t, h, DK, i)] * cur[i * DV + j];
          p->out[idx4(c, N, b, t, h, DV, j)] = p->scale * o;
        }
      }
      /* Backward: dS holds dL/dS_t (all paths), walked from t = N-1 down. */
      memset(dS, 0, (size_t)SS * sizeof(double));
      for (int64_t t = N - 1; t >= 0; t--) {
        const double *cur = st + (t + 1) * SS, *prev = st + t * SS;
        for (int64_t i = 0; i < DK; i++) {
          double qi = p->q[idx4(c, N, b, t, h, DK, i)];
          double dqi = 0;
          for (int64_t j = 0; j < DV; j++) {
            double doj = p->dout[idx4(c, N, b, t, h, DV, j)];
            dS[i * DV + j] += p->scale * qi * doj;
            dqi += cur[i * DV + j] * doj;
          }
          p->dq[idx4(c, N, b, t, h, DK, i)] = p->scale * dqi;
        }
        for (int64_t i = 0; i < DK; i++) {
          double dki = 0, da = 0;
          for (int64_t j = 0; j < DV; j++) {
            dki += dS[i * DV + j] * p->v[idx4(c, N, b, t, h, DV, j)];
            da += dS[i * DV + j] * prev[i * DV + j];
          }
          double a = exp((double)p->g[idx4(c, N, b, t, h, DK, i)]);
          p->dk[idx4(c, N, b, t, h, DK, i)] = dki;
          p->dg[idx4(c, N, b, t, h, DK, i)] = da * a;
        }
        for (int64_t j = 0; j < DV; j++) {
          double dvj = 0;
          for (int64_t i = 0; i < DK; i++) dvj += p->k[idx4(c, N, b, t, h, DK, i)] * dS[i * DV + j];
          p->dv[idx4(c, N, b, t, h, DV, j)] = dvj;
        }
        for (int64_t i = 0; i < DK; i++) {
          double a = exp((double)p->g[idx4(c, N, b, t, h, DK, i)]);
          for (int64_t j = 0; j < DV; j++) dS[i * DV + j] *= a;
        }
      }
    }
  }
  free(dS);
}

static void problem_init(problem_t *p, const test_case_t *c) {
  memset(p, 0, sizeof *p);
  p->c = *c;
  p->scale = (float)(1.0 / sqrt((double)c->dk));
  size_t nk = (size_t)(c->batch * c->tokens * c->heads * c->dk);
  size_t nv = (size_t)(c->batch * c->tokens * c->heads * c->dv);
  p->q = malloc((nk ? nk : 1) * sizeof(float));
  p->k = malloc((nk ? nk : 1) * sizeof(float));
  p->g = malloc((nk ? nk : 1) * sizeof(float));
  p->v = malloc((nv ? nv : 1) * sizeof(float));
  p->dout = malloc((nv ? nv : 1) * sizeof(float));
  for (size_t i = 0; i < nk; i++) {
    p->q[i] = (float)(2 * uniform(1, i) - 1);
    p->k[i] = (float)(2 * uniform(2, i) - 1);
    p->g[i] = g_value(c->g_mode, i);
  }
  for (size_t i = 0; i < nv; i++) {
    p->v[i] = (float)(2 * uniform(3, i) - 1);
    p->dout[i] = (float)(2 * uniform(5, i) - 1);
  }
  p->out = calloc(nv + 1, sizeof(double));
  p->dv = calloc(nv + 1, sizeof(double));
  p->dq = calloc(nk + 1, sizeof(double));
  p->dk = calloc(nk + 1, sizeof(double));
  p->dg = calloc(nk + 1, sizeof(double));
  p->states =
      calloc((size_t)(c->batch * c->heads * (c->tokens + 1) * c->dk * c->dv), sizeof(double));
  reference(p);
}

static void problem_cleanup(problem_t *p) {
  free(p->q), free(p->k), free(p->v), free(p->g), free(p->dout);
  free(p->out), free(p->dq), free(p->dk), free(p->dv), free(p->dg), free(p->states);
}

/* Copies tokens [start, start + n) of a global [B,N,H,d] float tensor. */
static void slice_f(const test_case_t *c, int64_t d, const float *global, int64_t start, int64_t n,
                    float *local) {
  size_t row = (size_t)(c->heads * d);
  for (int64_t b = 0; b < c->batch; b++)
    memcpy(local + (size_t)(b * n) * row, global + (size_t)(b * c->tokens + start) * row,
           (size_t)n * row * sizeof(float));
}

/* The scale dg's error is measured against. Kernels obtain dg through the GLA identity
 * dg_t = sum_{s >= t} (q_s * dq_s - k_s * dk_s) (plus a final-state term), a sum of terms that
 * cancel: with very negative g the true dg is ~1e-10 while the terms are O(1), so its f32
 * error is relative to the terms, not to dg. Largest per-(b, h, i) sum of |q dq| + |k dk|. */
static double dg_scale(const problem_t *p) {
  const test_case_t *c = &p->c;
  double worst = 0;
  for (int64_t b = 0; b < c->batch; b++)
    for (int64_t h = 0; h < c->heads; h++)
      for (int64_t i = 0; i < c->dk; i++) {
        double sum = 0;
        for (int64_t t = 0; t < c->tokens; t++) {
          size_t e = idx4(c, c->tokens, b, t, h, c->dk, i);
          sum += fabs(p->q[e] * p->dq[e]) + fabs(p->k[e] * p->dk[e]);
        }
        worst = fmax(worst, sum);
      }
  return worst;
}

/* Compares a local [B,n,H,d] result with the reference's tokens [start, start + n).
 * floor_scale: a lower bound of the tensor's scale (0: max |ref|). */
static void compare(const char *what, const char *label, const test_case_t *c, int64_t d,
                    const float *got, const double *ref, int64_t start, int64_t n,
                    double floor_scale) {
  size_t row = (size_t)(c->heads * d), total = (size_t)(c->batch * c->tokens) * row;
  double scale = floor_scale;
  for (size_t i = 0; i < total; i++) scale = fmax(scale, fabs(ref[i]));
  double worst = 0;
  size_t worst_i = 0;
  for (int64_t b = 0; b < c->batch; b++) {
    for (size_t i = 0; i < (size_t)n * row; i++) {
      double r = ref[(size_t)(b * c->tokens + start) * row + i];
      double x = got[(size_t)(b * n) * row + i];
      double err = fabs(x - r) / (ATOL_REL * scale + RTOL * fabs(r) + 1e-30);
      if (!(err <= worst)) {
        worst = isnan(err) ? INFINITY : err;
        worst_i = (size_t)(b * n) * row + i;
      }
    }
  }
  WT_CHECK(worst <= 1.0, "%s %s: error %.3g x tolerance at local element %zu (got %.9g)", label,
           what, worst, worst_i, n ? (double)got[worst_i] : 0.0);
}

static void compare_state(const char *what, const char *label, const problem_t *p, int64_t t,
                          const float *got) {
  const test_case_t *c = &p->c;
  size_t ss = (size_t)(c->dk * c->dv), all = (size_t)(c->batch * c->heads);
  double scale = 0, worst = 0;
  for (size_t s = 0; s < all; s++)
    for (int64_t u = 0; u <= c->tokens; u++)
      for (size_t e = 0; e < ss; e++)
        scale = fmax(scale, fabs(p->states[(s * (size_t)(c->tokens + 1) + (size_t)u) * ss + e]));
  for (size_t s = 0; s < all; s++) {
    const double *ref = p->states + (s * (size_t)(c->tokens + 1) + (size_t)t) * ss;
    for (size_t e = 0; e < ss; e++) {
      double err =
          fabs(got[s * ss + e] - ref[e]) / (ATOL_REL * scale + RTOL * fabs(ref[e]) + 1e-30);
      if (!(err <= worst)) worst = isnan(err) ? INFINITY : err;
    }
  }
  WT_CHECK(worst <= 1.0, "%s %s: error %.3g x tolerance", label, what, worst);
}

static void snapshot(weft_comm_t *comm, weft_comm_peer_bytes_t *dst) {
  memcpy(dst, weft_comm_total_bytes(comm), (size_t)weft_comm_size(comm) * sizeof *dst);
}

/* Checks the bytes exchanged with every peer between two snapshots. */
static void check_bytes(const char *label, const char *pass, weft_comm_t *comm,
                        weft_linear_sp_algo_t algo, bool forward, bool zigzag, size_t state_bytes,
                        size_t gamma_bytes, const weft_comm_peer_bytes_t *before) {
  int rank = weft_comm_rank(comm), size = weft_comm_size(comm);
  if (zigzag) { /* lasp2 gathers both pieces */
    state_bytes *= algo == WEFT_LINEAR_SP_LASP2 ? 2 : 1;
    gamma_bytes *= 2;
  }
  const weft_comm_peer_bytes_t *after = weft_comm_total_bytes(comm);
  int next = forward ? rank + 1 : rank - 1, prev = forward ? rank - 1 : rank + 1;
  uint64_t recv_total = 0;
  for (int r = 0; r < size; r++) {
    uint64_t sent = after[r].sent - before[r].sent, recv = after[r].recv - before[r].recv;
    recv_total += recv;
    uint64_t want_sent, want_recv;
    if (algo == WEFT_LINEAR_SP_LASP2) {
      want_sent = want_recv = r == rank ? 0 : state_bytes + gamma_bytes;
    } else if (zigzag) { /* a scan each way, whichever the pass */
      want_sent = want_recv = r == rank - 1 || r == rank + 1 ? state_bytes : 0;
    } else {
      want_sent = r == next ? state_bytes : 0;
      want_recv = r == prev ? state_bytes : 0;
    }
    WT_CHECK(sent == want_sent && recv == want_recv,
             "%s %s: peer %d: sent %llu recv %llu bytes, expected %llu / %llu", label, pass, r,
             (unsigned long long)sent, (unsigned long long)recv, (unsigned long long)want_sent,
             (unsigned long long)want_recv);
  }
  if (algo == WEFT_LINEAR_SP_LASP2)
    WT_CHECK(recv_total == (uint64_t)(size - 1) * (state_bytes + gamma_bytes),
             "%s %s: lasp2 received %llu bytes, expected (P-1) states", label, pass,
             (unsigned long long)recv_total);
}

typedef struct local_bufs {
  float *q, *k, *v, *g, *dout, *out, *s_in, *fs, *dq, *dk, *dv, *dg;
} local_bufs_t;

static float *alloc_f(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void run_case(weft_comm_t *comm, weft_kernel_ctx_t *ctx, const test_case_t *c) {
  int rank = weft_comm_rank(comm), size = weft_comm_size(comm);
  problem_t p;
  problem_init(&p, c);
  int64_t base = c->tokens / size, extra = c->tokens % size;
  int64_t n = base + (rank < extra ? 1 : 0);
  int64_t start = rank * base + (rank < extra ? rank : extra);
  size_t nk = (size_t)(c->batch * n * c->heads * c->dk),
         nv = (size_t)(c->batch * n * c->heads * c->dv);
  size_t ns = (size_t)(c->batch * c->heads * c->dk * c->dv);
  local_bufs_t L = {alloc_f(nk), alloc_f(nk), alloc_f(nv), alloc_f(nk), alloc_f(nv), alloc_f(nv),
                    alloc_f(ns), alloc_f(ns), alloc_f(nk), alloc_f(nk), alloc_f(nv), alloc_f(nk)};
  slice_f(c, c->dk, p.q, start, n, L.q);
  slice_f(c, c->dk, p.k, start, n, L.k);
  slice_f(c, c->dk, p.g, start, n, L.g);
  slice_f(c, c->dv, p.v, start, n, L.v);
  slice_f(c, c->dv, p.dout, start, n, L.dout);
  weft_gla_shape_t shape = {.batch = c->batch,
                            .tokens = n,
                            .heads = c->heads,
                            .dk = c->dk,
                            .dv = c->dv,
                            .chunk = c->chunk,
                            .scale = p.scale};
  weft_comm_peer_bytes_t *before = calloc((size_t)size, sizeof *before);
  size_t state_bytes = ns * sizeof(float), gamma_bytes = (size_t)(c->batch * c->heads * c->dk) * 4;

  static const weft_linear_sp_algo_t algos[] = {WEFT_LINEAR_SP_ZECO, WEFT_LINEAR_SP_LASP2,
                                                WEFT_LINEAR_SP_RING};
  for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++) {
    char label[160];
    snprintf(label, sizeof label, "P=%d %s B=%lld N=%lld H=%lld dk=%lld dv=%lld C=%lld g=%s", size,
             weft_linear_sp_algo_name(algos[a]), (long long)c->batch, (long long)c->tokens,
             (long long)c->heads, (long long)c->dk, (long long)c->dv, (long long)c->chunk,
             k_g_names[c->g_mode]);
    for (size_t blocks_i = 0; blocks_i < (algos[a] == WEFT_LINEAR_SP_ZECO ? 3u : 1u); blocks_i++) {
      size_t blocks = blocks_i == 0 ? 0 : blocks_i == 1 ? 1 : 5; /* auto, 1, uneven 5 */
      weft_linear_sp_plan_t *plan = NULL;
      WT_CHECK_OK(weft_linear_sp_plan_create(comm, ctx, &shape, algos[a], blocks, &plan));
      if (!plan) continue;
      float *first = NULL;
      size_t ws = 0;
      for (int iter = 0; iter < 2; iter++) {
        weft_linear_sp_plan_set_overlap(plan, iter == 0);
        snapshot(comm, before);
        WT_CHECK_OK(weft_linear_sp_forward(plan, L.q, L.k, L.v, L.g, L.out, L.s_in, L.fs));
        check_bytes(label, "forward", comm, algos[a], true, false, state_bytes, gamma_bytes,
                    before);
        snapshot(comm, before);
        WT_CHECK_OK(weft_linear_sp_backward(plan, L.q, L.k, L.v, L.g, L.dout, L.s_in, L.dq, L.dk,
                                            L.dv, L.dg));
        check_bytes(label, "backward", comm, algos[a], false, false, state_bytes, gamma_bytes,
                    before);
        if (iter == 0) {
          compare("out", label, c, c->dv, L.out, p.out, start, n, 0);
          compare_state("s_in", label, &p, start, L.s_in);
          if (rank == size - 1) compare_state("final_state", label, &p, c->tokens, L.fs);
          compare("dq", label, c, c->dk, L.dq, p.dq, start, n, 0);
          compare("dk", label, c, c->dk, L.dk, p.dk, start, n, 0);
          compare("dv", label, c, c->dv, L.dv, p.dv, start, n, 0);
          compare("dg", label, c, c->dk, L.dg, p.dg, start, n, dg_scale(&p));
          /* Keep the first results to check the reused plan reproduces them bitwise. */
          first = malloc((nv + nk * 3 + ns + 1) * sizeof(float));
          memcpy(first, L.out, nv * sizeof(float));
          memcpy(first + nv, L.dq, nk * sizeof(float));
          memcpy(first + nv + nk, L.dk, nk * sizeof(float));
          memcpy(first + nv + 2 * nk, L.dg, nk * sizeof(float));
          memcpy(first + nv + 3 * nk, L.s_in, ns * sizeof(float));
          ws = weft_kernel_ctx_workspace_bytes(ctx);
        } else {
          bool same = memcmp(first, L.out, nv * 4) == 0 && memcmp(first + nv, L.dq, nk * 4) == 0 &&
                      memcmp(first + nv + nk, L.dk, nk * 4) == 0 &&
                      memcmp(first + nv + 2 * nk, L.dg, nk * 4) == 0 &&
                      memcmp(first + nv + 3 * nk, L.s_in, ns * 4) == 0;
          WT_CHECK(same, "%s: a reused plan (zeco: without overlap) gave different results", label);
          WT_CHECK(weft_kernel_ctx_workspace_bytes(ctx) == ws,
                   "%s: kernel workspace grew on reuse (%zu -> %zu bytes)", label, ws,
                   weft_kernel_ctx_workspace_bytes(ctx));
        }
      }
      free(first);
      weft_linear_sp_plan_destroy(plan);
    }
  }
  free(before);
  float **all = (float **)&L;
  for (size_t i = 0; i < sizeof L / sizeof(float *); i++) free(all[i]);
  problem_cleanup(&p);
}

/* ---- zigzag layout ---------------------------------------------------------------------- */

typedef struct zigzag_case {
  int64_t batch, piece, heads, dk, dv, chunk; /* piece: c tokens per chunk */
  g_mode_t g_mode;
} zigzag_case_t;

/* Per batch row, n tokens from token src_t of a [B, src_n, row] tensor to token dst_t of a
 * [B, dst_n, row] tensor. */
static void copy_tokens(int64_t batch, size_t row, const float *src, int64_t src_n, int64_t src_t,
                        float *dst, int64_t dst_n, int64_t dst_t, int64_t n) {
  for (int64_t b = 0; b < batch; b++)
    memcpy(dst + (size_t)(b * dst_n + dst_t) * row, src + (size_t)(b * src_n + src_t) * row,
           (size_t)n * row * sizeof(float));
}

/* Compares piece p (tokens [p*c, p*c + c) of each row of a local [B, 2c, H, d] tensor) with
 * the reference's tokens [start, start + c). */
static void compare_piece(const char *what, int piece, const char *label, const test_case_t *tc,
                          int64_t d, const float *got, const double *ref, int64_t start, int64_t c,
                          double floor_scale, float *tmp) {
  size_t row = (size_t)(tc->heads * d);
  copy_tokens(tc->batch, row, got, 2 * c, piece * c, tmp, c, 0, c);
  char name[64];
  snprintf(name, sizeof name, "%s (piece %d)", what, piece);
  compare(name, label, tc, d, tmp, ref, start, c, floor_scale);
}

static void run_zigzag_case(weft_comm_t *comm, weft_kernel_ctx_t *ctx, const zigzag_case_t *z) {
  int rank = weft_comm_rank(comm), size = weft_comm_size(comm);
  const int64_t c = z->piece, n = 2 * c;
  const test_case_t tc = {z->batch, 2 * size * c, z->heads, z->dk, z->dv, z->chunk, z->g_mode};
  problem_t p;
  problem_init(&p, &tc);
  const int64_t start[2] = {rank * c, (2 * size - 1 - rank) * c}; /* chunks r and 2P-1-r */
  size_t nk = (size_t)(tc.batch * n * tc.heads * tc.dk),
         nv = (size_t)(tc.batch * n * tc.heads * tc.dv);
  size_t ns = (size_t)(tc.batch * tc.heads * tc.dk * tc.dv); /* one piece's states */
  local_bufs_t L = {alloc_f(nk), alloc_f(nk), alloc_f(nv),     alloc_f(nk),
                    alloc_f(nv), alloc_f(nv), alloc_f(2 * ns), alloc_f(ns),
                    alloc_f(nk), alloc_f(nk), alloc_f(nv),     alloc_f(nk)};
  size_t ntmp = nk > nv ? nk : nv; /* one piece of a tensor, or one piece's states */
  float *tmp = alloc_f(ntmp > ns ? ntmp : ns), *first = alloc_f(nv + 3 * nk + 2 * ns);
  size_t rk = (size_t)(tc.heads * tc.dk), rv = (size_t)(tc.heads * tc.dv);
  for (int piece = 0; piece < 2; piece++) {
    int64_t N = tc.tokens, at = piece * c;
    copy_tokens(tc.batch, rk, p.q, N, start[piece], L.q, n, at, c);
    copy_tokens(tc.batch, rk, p.k, N, start[piece], L.k, n, at, c);
    copy_tokens(tc.batch, rk, p.g, N, start[piece], L.g, n, at, c);
    copy_tokens(tc.batch, rv, p.v, N, start[piece], L.v, n, at, c);
    copy_tokens(tc.batch, rv, p.dout, N, start[piece], L.dout, n, at, c);
  }
  weft_gla_shape_t shape = {.batch = tc.batch,
                            .tokens = n,
                            .heads = tc.heads,
                            .dk = tc.dk,
                            .dv = tc.dv,
                            .chunk = tc.chunk,
                            .scale = p.scale};
  weft_comm_peer_bytes_t *before = calloc((size_t)size, sizeof *before);
  size_t state_bytes = ns * sizeof(float), gamma_bytes = (size_t)(tc.batch * tc.heads * tc.dk) * 4;
  double dg_floor = dg_scale(&p);

  static const weft_linear_sp_algo_t algos[] = {WEFT_LINEAR_SP_ZECO, WEFT_LINEAR_SP_LASP2,
                                                WEFT_LINEAR_SP_RING};
  for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++) {
    char label[160];
    snprintf(label, sizeof label, "P=%d zigzag %s B=%lld c=%lld H=%lld dk=%lld dv=%lld C=%lld g=%s",
             size, weft_linear_sp_algo_name(algos[a]), (long long)tc.batch, (long long)c,
             (long long)tc.heads, (long long)tc.dk, (long long)tc.dv, (long long)tc.chunk,
             k_g_names[tc.g_mode]);
    weft_linear_sp_plan_t *plan = NULL;
    WT_CHECK_OK(weft_linear_sp_plan_create_zigzag(comm, ctx, &shape, algos[a], 3, &plan));
    if (!plan) continue;
    WT_CHECK(weft_linear_sp_plan_shape(plan)->tokens == n, "%s: plan shape tokens", label);
    size_t ws = 0;
    for (int iter = 0; iter < 2; iter++) {
      weft_linear_sp_plan_set_overlap(plan, iter == 0); /* no effect on zigzag plans */
      snapshot(comm, before);
      WT_CHECK_OK(weft_linear_sp_forward(plan, L.q, L.k, L.v, L.g, L.out, L.s_in, L.fs));
      check_bytes(label, "forward", comm, algos[a], true, true, state_bytes, gamma_bytes, before);
      snapshot(comm, before);
      WT_CHECK_OK(weft_linear_sp_backward(plan, L.q, L.k, L.v, L.g, L.dout, L.s_in, L.dq, L.dk,
                                          L.dv, L.dg));
      check_bytes(label, "backward", comm, algos[a], false, true, state_bytes, gamma_bytes, before);
      float *keep[] = {L.out, L.dq, L.dk, L.dg, L.s_in};
      size_t count[] = {nv, nk, nk, nk, 2 * ns};
      if (iter == 0) {
        for (int piece = 0; piece < 2; piece++) {
          compare_piece("out", piece, label, &tc, tc.dv, L.out, p.out, start[piece], c, 0, tmp);
          compare_piece("dq", piece, label, &tc, tc.dk, L.dq, p.dq, start[piece], c, 0, tmp);
          compare_piece("dk", piece, label, &tc, tc.dk, L.dk, p.dk, start[piece], c, 0, tmp);
          compare_piece("dv", piece, label, &tc, tc.dv, L.dv, p.dv, start[piece], c, 0, tmp);
          compare_piece("dg", piece, label, &tc, tc.dk, L.dg, p.dg, start[piece], c, dg_floor, tmp);
          /* s_in [B,2,H,dk,dv]: this piece's [H,dk,dv] of each batch row. */
          size_t per = ns / (size_t)tc.batch;
          for (int64_t b = 0; b < tc.batch; b++)
            memcpy(tmp + (size_t)b * per, L.s_in + (size_t)(2 * b + piece) * per,
                   per * sizeof(float));
          compare_state(piece ? "s_in (piece 1)" : "s_in (piece 0)", label, &p, start[piece], tmp);
        }
        if (rank == 0) compare_state("final_state", label, &p, tc.tokens, L.fs);
        float *f = first;
        for (size_t i = 0; i < 5; f += count[i], i++) memcpy(f, keep[i], count[i] * sizeof(float));
        ws = weft_kernel_ctx_workspace_bytes(ctx);
      } else {
        bool same = true;
        const float *f = first;
        for (size_t i = 0; i < 5; f += count[i], i++)
          same = same && memcmp(f, keep[i], count[i] * sizeof(float)) == 0;
        WT_CHECK(same, "%s: a reused plan gave different results", label);
        WT_CHECK(weft_kernel_ctx_workspace_bytes(ctx) == ws,
                 "%s: kernel workspace grew on reuse (%zu -> %zu bytes)", label, ws,
                 weft_kernel_ctx_workspace_bytes(ctx));
      }
    }
    weft_linear_sp_plan_destroy(plan);
  }
  free(before);
  free(tmp);
  free(first);
  float **all = (float **)&L;
  for (size_t i = 0; i < sizeof L / sizeof(float *); i++) free(all[i]);
  problem_cleanup(&p);
}

static void check_invalid(weft_comm_t *comm, weft_kernel_ctx_t *ctx) {
  weft_linear_sp_plan_t *plan = NULL;
  weft_gla_shape_t bad = {.batch = 1, .tokens = -1, .heads = 1, .dk = 4, .dv = 4, .scale = 0.5f};
  WT_CHECK_STATUS(weft_linear_sp_plan_create(comm, ctx, &bad, WEFT_LINEAR_SP_ZECO, 0, &plan),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK(plan == NULL, "no plan from a bad shape");
  weft_gla_shape_t ok = {.batch = 1, .tokens = 2, .heads = 1, .dk = 4, .dv = 4, .scale = 0.5f};
  WT_CHECK_STATUS(weft_linear_sp_plan_create(comm, ctx, &ok, (weft_linear_sp_algo_t)7, 0, &plan),
                  WEFT_ERR_INVALID_ARG);
  weft_gla_shape_t odd = ok;
  odd.tokens = 5; /* zigzag: two chunks of c tokens */
  WT_CHECK_STATUS(weft_linear_sp_plan_create_zigzag(comm, ctx, &odd, WEFT_LINEAR_SP_ZECO, 0, &plan),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK(plan == NULL, "no zigzag plan from odd tokens");
  weft_linear_sp_algo_t algo;
  WT_CHECK_STATUS(weft_linear_sp_algo_parse("lasp3", &algo), WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_linear_sp_algo_parse("lasp2", &algo));
  WT_CHECK(algo == WEFT_LINEAR_SP_LASP2, "parse lasp2");
  weft_linear_sp_plan_destroy(NULL);
}

int main(int argc, char **argv) {
  weft_bootstrap_t boot;
  if (weft_comm_bootstrap(&argc, &argv, WEFT_DEVICE_REQUEST_CPU, &boot) != WEFT_OK)
    weft_comm_abort(1);
  weft_test_set_rank(boot.world_rank);
  weft_comm_t *world = NULL;
  if (weft_comm_create_world(&boot, &world) != WEFT_OK) weft_comm_abort(1);
  weft_comm_set_timeout(world, 60.0);
  weft_kernel_ctx_t *ctx = NULL;
  if (weft_kernel_ctx_create(boot.device, NULL, &ctx) != WEFT_OK) weft_comm_abort(1);

  /* N = 24 divides among 1..4 ranks; 23 and 37 do not; 3 leaves a rank without tokens at
   * P = 4. Chunk 4 puts several chunks (and a partial one) on every rank. */
  const test_case_t cases[] = {
      {2, 24, 2, 8, 6, 4, G_RANDOM},        {2, 23, 2, 8, 6, 4, G_RANDOM},
      {1, 37, 3, 5, 7, 4, G_RANDOM},        {2, 24, 2, 8, 6, 4, G_ZERO},
      {1, 23, 2, 8, 6, 4, G_ZERO},          {2, 24, 2, 8, 6, 4, G_VERY_NEGATIVE},
      {1, 23, 2, 6, 8, 4, G_VERY_NEGATIVE}, {2, 23, 2, 8, 6, 4, G_MIXED},
      {1, 3, 2, 4, 4, 0, G_RANDOM},         {1, 64, 1, 16, 16, 0, G_RANDOM},
      {5, 23, 2, 4, 6, 4, G_RANDOM},        {1, 29, 5, 4, 4, 4, G_MIXED},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(world, ctx, &cases[i]);
  /* Zigzag: c = 5, 6, 7 against kernel chunk 4 (partial chunks in both pieces), c = 1, c
   * smaller than the default chunk, c = 0 (no tokens anywhere), B and H above 1. */
  const zigzag_case_t zigzag_cases[] = {
      {2, 5, 2, 8, 6, 4, G_RANDOM},    {1, 7, 3, 5, 7, 4, G_RANDOM},
      {2, 5, 2, 8, 6, 4, G_ZERO},      {2, 6, 2, 6, 8, 4, G_VERY_NEGATIVE},
      {3, 5, 2, 4, 6, 4, G_MIXED},     {1, 1, 1, 4, 4, 0, G_RANDOM},
      {1, 16, 1, 16, 16, 0, G_RANDOM}, {1, 0, 2, 4, 4, 4, G_RANDOM},
  };
  for (size_t i = 0; i < sizeof zigzag_cases / sizeof zigzag_cases[0]; i++)
    run_zigzag_case(world, ctx, &zigzag_cases[i]);
  check_invalid(world, ctx);

  weft_kernel_ctx_destroy(ctx);
  weft_comm_destroy(world);
  int rc = weft_test_exit_code("test_linear_sp");
  weft_comm_finalize(&boot);
  return rc;
}
