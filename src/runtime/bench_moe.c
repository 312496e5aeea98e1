/* `weft bench moe`: the expert-parallel MoE layer (parallel/include/weft/moe_ep.h) over sweeps of
 * tokens per rank T, hidden h, expert width f, experts E and top-k: forward and backward time,
 * the dispatch + combine exchange next to a raw all-to-all of the same size, the grouped expert
 * compute next to ONE GEMM of the same FLOPs, and the router.
 *
 * Routing is chosen by the bench, not left to random weights: the router is the identity on the
 * first E of the h input columns (W_r[i, e] = [i == e]) and column e of token t holds
 * (E - i) / 8, i = expert e's position in the token's preference order (exact in f32, bf16 and
 * TF32 up to E = 256, so logits = x W_r are exact and distinct on every device). Preferences:
 * skew 0 sorts the experts by weft_bench_hash(seed, rank, t E + e) (uniform random top-k; ties to
 * the lower id); skew s > 0 by the Efraimidis-Spirakis key log(u) (e+1)^s, i.e. sampling without
 * replacement with popularity (e+1)^-s (Zipf-like, rank 0's experts hottest). So every rank
 * knows every rank's routing, recomputes the capacity rule of moe_ep.h, and gets the per-peer
 * row counts, the byte formulas and the expert rows itself; it then checks them against the
 * plan's counters (a mismatch is a failure, exit 1).
 *
 * Formulas (per rank r; rows(q->p) = tokens of rank q with a kept slot on an expert of rank p,
 * slots(q->p) = kept slots; sums over remote peers only, self moves no bytes):
 *   payload_r  = 4h (sum_p rows(r->p) + sum_q rows(q->r)), forward and backward alike: each token
 *                once per distinct remote rank, one pre-summed row back: the de-duplicated minimum
 *                (weft_moe_stats' minimum); summed over ranks 8h remote_rows
 *   naive      = 8h remote_slots: what one row per (token, expert) would send
 *   meta_fwd_r = 8E(P-1) + 12 sum_p slots(r->p);  meta_bwd_r = 4 sum_q slots(q->r)
 *   exchange   replay: weft_comm_alltoallv with exactly the layer's per-peer counts (self
 *              included), dispatch then combine, timed like everything here (barrier before
 *              each pair, slowest rank, median) over max(iters, 20) pairs; bench comm times
 *              calls back to back instead, which one stalled rank skews on a shared machine.
 *              The replay's elements are verified once after timing.
 *   raw        weft_comm_alltoall with the average per-peer block b = h remote_rows / (P(P-1))
 *              elements, twice per pair, same method; busbw = 2 (P-1) 4b / t_raw: bench
 *              comm's alltoall busbw (bytes sent per rank / time) at the layer's sizes. The two
 *              calls use distinct buffers, as the layer's two exchanges do (same footprint as
 *              the replay); raw_reuse repeats one buffer pair like bench comm, which is
 *              cache-warm and up to ~40 % faster while the buffers fit in the L3.
 *   eff        (sum_r payload_r / P) / t_exchange; eff_ratio = eff / raw busbw (target >= 0.5).
 *              layer_eff uses the layer's own time in its two payload all-to-all-vs
 *              (weft_moe_stats fwd_time.payload_s) on the rank that waited least in each
 *              iteration (the slowest rank's, which adds waiting for expert imbalance, is in
 *              JSON): an upper bound of the layer's transfer time.
 *   experts    M = this rank's expert rows; FLOPs fwd 6Mhf (three GEMMs of 2Mhf per expert), bwd
 *              12Mhf (six). Reference: one weft_gemm [M, h] x [h, 3f] (fwd) and [M, h] x [h, 6f]
 *              (bwd), the same FLOPs in one call; experts_ratio = experts / gemm (target <= 1.3).
 * Timing: warm-up, then per iteration barrier + timed call; each iteration's time is the slowest
 * rank's (all-reduce MAX), the table shows the median (JSON: fwd/bwd minimum too). The layer's
 * calls return with results complete; kernels are followed by a synchronize inside the span.
 *
 * Rejected: dispatch + combine as forward - router - experts (it would mix in host routing,
 * packing and load imbalance); a balanced all-to-all as the only exchange number (the layer's
 * per-peer counts are unequal: the replay times the real pattern, the raw row the ceiling).
 * Physical limit: one node, host memory: memory bandwidth (see bench comm); NIC or NVLink across
 * devices; the experts are compute-bound: their limit is the GEMM rate. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_util.h"
#include "cli.h"
#include "session.h"
#include "weft/check.h"
#include "weft/gemm.h"
#include "weft/kernel_ctx.h"
#include "weft/log.h"
#include "weft/moe.h"
#include "weft/moe_ep.h"
#include "weft/timer.h"

#define MAX_LIST   16
#define SCORE_STEP 0.125f /* logit step between preference positions: a power of 2, exact */
#define AUX_WEIGHT 0.01   /* a typical LBL weight, so the backward's LBL term is timed too */
/* Exchange pairs take milliseconds, the layer seconds: at least 20 samples keep their median
 * stable on a shared machine at negligible cost. */
#define XCHG_MIN_ITERS 20

enum { L_TOKENS, L_TOPK, L_EXPERTS, L_FFN, L_HIDDEN, L_COUNT }; /* the sweep, innermost first */
static const char *const k_list_names[L_COUNT] = {"tokens", "topk", "experts", "ffn", "hidden"};
static const char *const k_device_names[] = {"auto", "cpu", "cuda"};

/* Per-iteration times, slowest rank (LEAST: the rank that waited least, stored negated): the
 * layer's, its stats' parts, then the kernels' (time_kernels writes them in this order). */
enum { TM_FWD, TM_BWD, TM_FWD_XCHG, TM_FWD_PAYLOAD, TM_FWD_EXPERTS, TM_BWD_XCHG, TM_BWD_PAYLOAD };
enum { TM_BWD_EXPERTS = TM_BWD_PAYLOAD + 1, TM_FWD_PAYLOAD_LEAST, TM_EXP_FWD, TM_EXP_BWD };
enum { TM_GEMM_FWD = TM_EXP_BWD + 1, TM_GEMM_BWD, TM_ROUTER, TM_COUNT };

typedef struct moe_opts {
  int64_t lists[L_COUNT][MAX_LIST];
  int counts[L_COUNT];
  double capacity_factor, skew;
  long iters, warmup, seed;
  bool json;
} moe_opts_t;

typedef struct moe_bench {
  const moe_opts_t *opt;
  weft_comm_t *comm;
  const weft_device_t *dev;
  weft_kernel_ctx_t *ctx;
  int rank, size;
  FILE *table; /* stdout, or stderr under --json */
} moe_bench_t;

typedef struct moe_shape {
  int64_t T, h, f, E, El; /* tokens per rank, hidden, expert width, experts, local experts */
  int k;
} moe_shape_t;

/* Every rank's routing, as the layer must see it. */
typedef struct moe_model {
  int64_t *rows, *slots; /* [P, P]: rows(q->p) at q P + p, and kept slots */
  int64_t *expert_rows;  /* [E] kept slots per expert over all ranks */
  int64_t capacity, dropped;
  int64_t remote_rows, block; /* sum of rows(q->p) over q != p; the raw all-to-all's block */
} moe_model_t;

/* What the model predicts for one rank. */
typedef struct moe_expect {
  int64_t rows_out, rows_in, slots_out, slots_in; /* remote only */
  int64_t sent, received, M;                      /* rows, self included; expert rows */
  uint64_t payload, meta_fwd, meta_bwd;
} moe_expect_t;

/* Device buffers of one configuration (host memory on the CPU device). */
typedef struct moe_bufs {
  float *x, *y, *dy, *dx, *router, *w1, *w3, *w2, *g_router, *g_w1, *g_w3, *g_w2; /* layer */
  float *xe, *a, *bg, *act, *ye, *dye, *dxe, *work, *gemm_b, *gemm_c;             /* experts */
  float *logits, *probs, *lse, *weights;                                          /* router */
  int32_t *ids;
  float *send, *recv, *back, *home; /* exchange replay: dispatch send -> recv, back -> home */
  float *raw_send, *raw_recv;       /* raw all-to-all [2, P, block]: two calls, two halves */
} moe_bufs_t;

typedef struct pref {
  double key;
  int32_t e;
} pref_t;

static int pref_cmp(const void *x, const void *y) { /* larger key first, ties to the lower id */
  const pref_t *a = x, *c = y;
  if (a->key != c->key) return a->key < c->key ? 1 : -1;
  return (a->e > c->e) - (a->e < c->e);
}

/* Rank q's token t: the E experts in preference order, best first (see the file comment). */
static void token_prefs(const moe_opts_t *o, int64_t E, int q, int64_t t, pref_t *p) {
  for (int64_t e = 0; e < E; e++) {
    uint32_t u = weft_bench_hash((uint32_t)o->seed, (uint32_t)q, (uint64_t)(t * E + e));
    p[e].e = (int32_t)e;
    p[e].key =
        o->skew > 0 ? log(((double)u + 0.5) * 0x1p-32) * pow((double)(e + 1), o->skew) : (double)u;
  }
  qsort(p, (size_t)E, sizeof *p, pref_cmp);
}

static void model_free(moe_model_t *m) {
  free(m->rows), free(m->slots), free(m->expert_rows);
  memset(m, 0, sizeof *m);
}

/* Builds the routing of every rank and writes this rank's scores into x_host [T, h]. The
 * capacity rule is moe_ep.h's: C = ceil(cf k T_group / E), slots kept in (rank, token) order. */
static weft_status_t model_build(const moe_bench_t *b, const moe_shape_t *s, float *x_host,
                                 moe_model_t *m) {
  const int P = b->size, k = s->k;
  const int64_t T = s->T, E = s->E;
  memset(m, 0, sizeof *m);
  int32_t *ids = malloc((size_t)(P * T * k) * sizeof *ids + 1);
  int64_t *count = calloc((size_t)(P * E), sizeof *count), *before = calloc((size_t)E, 8);
  int64_t *allow = calloc((size_t)E, 8);
  int *dest = calloc((size_t)k, sizeof *dest);
  pref_t *p = malloc((size_t)E * sizeof *p);
  m->rows = calloc((size_t)(P * P), sizeof *m->rows);
  m->slots = calloc((size_t)(P * P), sizeof *m->slots);
  m->expert_rows = calloc((size_t)E, sizeof *m->expert_rows);
  weft_status_t st = WEFT_OK;
  if (!ids || !count || !before || !allow || !dest || !p || !m->rows || !m->slots ||
      !m->expert_rows) {
    WEFT_ERROR("bench", "moe: no host memory for the routing of %" PRId64 " tokens x %d ranks", T,
               P);
    st = WEFT_ERR_NO_MEMORY;
  }
  for (int q = 0; st == WEFT_OK && q < P; q++) {
    for (int64_t t = 0; t < T; t++) {
      token_prefs(b->opt, E, q, t, p);
      for (int j = 0; j < k; j++) ids[(q * T + t) * k + j] = p[j].e;
      for (int j = 0; j < k; j++) count[q * E + p[j].e]++;
      for (int64_t i = 0; q == b->rank && i < E; i++)
        x_host[t * s->h + p[i].e] = (float)(E - i) * SCORE_STEP;
    }
  }
  double cf = b->opt->capacity_factor;
  m->capacity = cf > 0 ? (int64_t)ceil(cf * (double)k * (double)(P * T) / (double)E) : 0;
  for (int q = 0; st == WEFT_OK && q < P; q++) {
    for (int64_t e = 0; e < E; e++) {
      int64_t c = count[q * E + e], left = m->capacity - before[e];
      allow[e] = cf <= 0 ? c : left <= 0 ? 0 : left < c ? left : c;
      before[e] += c;
    }
    for (int64_t t = 0; t < T; t++) {
      for (int j = 0; j < k; j++) {
        int32_t e = ids[(q * T + t) * k + j];
        dest[j] = -1;
        if (allow[e] <= 0) {
          m->dropped++;
          continue;
        }
        allow[e]--;
        dest[j] = (int)(e / s->El);
        m->slots[q * P + dest[j]]++;
        m->expert_rows[e]++;
        bool seen = false;
        for (int i = 0; i < j; i++) seen = seen || dest[i] == dest[j];
        if (!seen) m->rows[q * P + dest[j]]++;
      }
    }
  }
  for (int q = 0; q < P * P; q++) m->remote_rows += q / P == q % P ? 0 : m->rows[q];
  /* the average remote block in elements, rounded to nearest, at least one */
  const int64_t pairs = P > 1 ? (int64_t)P * (P - 1) : 1;
  m->block = (2 * m->remote_rows * s->h + pairs) / (2 * pairs);
  m->block = P == 1 ? 0 : m->block > 0 ? m->block : 1;
  free(ids), free(count), free(before), free(allow), free(dest), free(p);
  if (st != WEFT_OK) model_free(m);
  return st;
}

static moe_expect_t model_expect(const moe_shape_t *s, const moe_model_t *m, int P, int r) {
  moe_expect_t x = {0};
  for (int p = 0; p < P; p++) {
    x.sent += m->rows[r * P + p];
    x.received += m->rows[p * P + r];
    if (p == r) continue;
    x.rows_out += m->rows[r * P + p], x.rows_in += m->rows[p * P + r];
    x.slots_out += m->slots[r * P + p], x.slots_in += m->slots[p * P + r];
  }
  for (int64_t e = r * s->El; e < (r + 1) * s->El; e++) x.M += m->expert_rows[e];
  uint64_t row = (uint64_t)s->h * sizeof(float);
  x.payload = row * (uint64_t)(x.rows_out + x.rows_in);
  x.meta_fwd = 8 * (uint64_t)s->E * (uint64_t)(P - 1) + 12 * (uint64_t)x.slots_out;
  x.meta_bwd = 4 * (uint64_t)x.slots_in;
  return x;
}

/* ---- buffers ------------------------------------------------------------------------------ */

static void bufs_free(const moe_bench_t *b, moe_bufs_t *B) {
  void **p = (void **)B;
  for (size_t i = 0; i < sizeof *B / sizeof(void *); i++) weft_device_free(b->dev, p[i]);
  memset(B, 0, sizeof *B);
}

/* A hashed value in [-1, 1): element i of tensor `tensor` on rank `rank`. */
static float unit(const moe_bench_t *b, uint32_t tensor, size_t i) {
  uint32_t u = weft_bench_hash((uint32_t)b->opt->seed + 1000u + tensor, (uint32_t)b->rank, i);
  return (float)(u >> 8) / 8388608.0f - 1.0f;
}

/* scale * unit values into device memory dst [count], through host [count]. */
static weft_status_t fill(const moe_bench_t *b, float *dst, size_t count, uint32_t tensor,
                          float scale, float *host) {
  for (size_t i = 0; i < count; i++) host[i] = scale * unit(b, tensor, i);
  return weft_device_copy(b->dev, dst, host, count * sizeof(float), WEFT_COPY_HOST_TO_DEVICE);
}

static weft_status_t bufs_alloc(const moe_bench_t *b, const moe_shape_t *s, const moe_model_t *m,
                                const moe_expect_t *x, moe_bufs_t *B, float *x_host) {
  const size_t T = (size_t)s->T, h = (size_t)s->h, f = (size_t)s->f, E = (size_t)s->E;
  const size_t M = (size_t)x->M, W = (size_t)s->El * h * f, k = (size_t)s->k;
  const size_t S = (size_t)x->sent * h, R = (size_t)x->received * h;
  const size_t A = (size_t)(2 * b->size * m->block);
  /* 4-byte elements of each field in order: layer (12), experts (10), router (5), a2av (6) */
  const size_t counts[] = {
      T * h, T * h, T * h, T * h, h * E, W,     W,     W,     h * E,     W,         W,
      W,     M * h, M * f, M * f, M * f, M * h, M * h, M * h, 2 * M * f, h * 6 * f, M * 6 * f,
      T * E, T * E, T,     T * k, T * k, S,     R,     R,     S,         A,         A};
  void **p = (void **)B;
  _Static_assert(sizeof counts / sizeof counts[0] == sizeof *B / sizeof(void *), "one per field");
  weft_status_t st = WEFT_OK;
  for (size_t i = 0; i < sizeof counts / sizeof counts[0] && st == WEFT_OK; i++) {
    st = weft_device_alloc(b->dev, (counts[i] ? counts[i] : 1) * 4, &p[i]);
    if (st == WEFT_OK) st = weft_device_memset(b->dev, p[i], 0, counts[i] * 4);
  }
  size_t largest = T * h > W ? T * h : W; /* the staging holds the largest filled tensor */
  largest = M * h > largest ? M * h : largest;
  largest = h * 6 * f > largest ? h * 6 * f : largest;
  largest = h * E > largest ? h * E : largest;
  float *host = st == WEFT_OK ? malloc(largest * sizeof(float) + 4) : NULL;
  if (st == WEFT_OK && !host) st = WEFT_ERR_NO_MEMORY;
  /* x: hashed values, then this rank's routing scores in its first E columns (model_build) */
  if (st == WEFT_OK)
    st = weft_device_copy(b->dev, B->x, x_host, T * h * 4, WEFT_COPY_HOST_TO_DEVICE);
  if (st == WEFT_OK) st = fill(b, B->dy, T * h, 1, 1.0f, host);
  if (st == WEFT_OK) st = fill(b, B->w1, W, 2, 1.0f / sqrtf((float)h), host);
  if (st == WEFT_OK) st = fill(b, B->w3, W, 3, 1.0f / sqrtf((float)h), host);
  if (st == WEFT_OK) st = fill(b, B->w2, W, 4, 1.0f / sqrtf((float)f), host);
  if (st == WEFT_OK) st = fill(b, B->xe, M * h, 5, 1.0f, host);
  if (st == WEFT_OK) st = fill(b, B->dye, M * h, 6, 1.0f, host);
  if (st == WEFT_OK) st = fill(b, B->gemm_b, h * 6 * f, 7, 1.0f / sqrtf((float)h), host);
  if (st == WEFT_OK) { /* the router: identity on the first E input columns */
    memset(host, 0, h * E * sizeof(float));
    for (size_t e = 0; e < E; e++) host[e * E + e] = 1.0f;
    st = weft_device_copy(b->dev, B->router, host, h * E * 4, WEFT_COPY_HOST_TO_DEVICE);
  }
  free(host);
  if (st != WEFT_OK) {
    WEFT_ERROR("bench",
               "moe: cannot set up T %" PRId64 " h %" PRId64 " f %" PRId64 " E %" PRId64
               " (%zu expert rows) on this rank",
               s->T, s->h, s->f, s->E, M);
    bufs_free(b, B);
  }
  return st;
}

/* ---- timing ------------------------------------------------------------------------------- */

#define PS(seconds) ((int64_t)((seconds)*1e12)) /* i64 picoseconds: comm has no f64 reduce */

static weft_status_t time_layer(const moe_bench_t *b, int64_t T, weft_moe_plan_t *plan,
                                moe_bufs_t *B, int64_t *ps) {
  const long n = b->opt->iters;
  const weft_moe_weights_t w = {B->router, B->w1, B->w3, B->w2};
  const weft_moe_grads_t g = {B->g_router, B->g_w1, B->g_w3, B->g_w2};
  for (long i = -b->opt->warmup; i < n; i++) {
    if (i >= 0) WEFT_CHECK(weft_comm_barrier(b->comm));
    double t0 = weft_time_now();
    WEFT_CHECK(weft_moe_forward(plan, T, B->x, &w, B->y));
    double t1 = weft_time_now();
    if (i >= 0) WEFT_CHECK(weft_comm_barrier(b->comm));
    double t2 = weft_time_now();
    WEFT_CHECK(weft_moe_backward(plan, B->x, &w, B->dy, B->dx, &g));
    double t3 = weft_time_now();
    if (i < 0) continue;
    const weft_moe_pass_time_t *f = &weft_moe_plan_stats(plan)->fwd_time;
    const weft_moe_pass_time_t *r = &weft_moe_plan_stats(plan)->bwd_time;
    const double v[] = {t1 - t0,       t3 - t2,      f->exchange_s, f->payload_s, f->experts_s,
                        r->exchange_s, r->payload_s, r->experts_s,  -f->payload_s};
    for (int q = 0; q <= TM_FWD_PAYLOAD_LEAST; q++) ps[q * n + i] = PS(v[q]);
  }
  return WEFT_OK;
}

/* Grouped experts vs one GEMM of the same FLOPs, and the router, on this rank's M rows. */
static weft_status_t time_kernels(const moe_bench_t *b, const moe_shape_t *s, moe_bufs_t *B,
                                  const int64_t *offsets, int64_t *ps) {
  const long n = b->opt->iters;
  const int64_t M = offsets[s->El], h = s->h, f = s->f;
  const weft_moe_experts_shape_t shape = {s->El, h, f};
  weft_kernel_ctx_t *ctx = b->ctx;
  for (long i = -b->opt->warmup; i < n; i++) {
    double t[5];
    for (int part = 0; part < 5; part++) {
      WEFT_CHECK(weft_comm_barrier(b->comm));
      double t0 = weft_time_now();
      switch (part) {
      case 0:
        WEFT_CHECK(weft_moe_experts_forward(ctx, &shape, offsets, B->xe, B->w1, B->w3, B->w2, B->a,
                                            B->bg, B->act, B->ye));
        break;
      case 1:
        WEFT_CHECK(weft_moe_experts_backward(ctx, &shape, offsets, B->xe, B->w1, B->w3, B->w2, B->a,
                                             B->bg, B->act, B->dye, B->dxe, B->g_w1, B->g_w3,
                                             B->g_w2, B->work));
        break;
      case 2:   /* C [M, 3f] = X [M, h] B [h, 3f]: 6 M h f FLOPs, the experts' forward */
      case 3: { /* C [M, 6f] = X [M, h] B [h, 6f]: 12 M h f FLOPs, the experts' backward */
        const int64_t nc = (part == 2 ? 3 : 6) * f;
        WEFT_CHECK(weft_gemm(ctx, false, false, M, nc, h, 1.0f, WEFT_DTYPE_F32, B->xe, h,
                             WEFT_DTYPE_F32, B->gemm_b, nc, 0.0f, WEFT_DTYPE_F32, B->gemm_c, nc));
        break;
      }
      default: /* router: logits [T, E] = x W_r, softmax and top-k */
        WEFT_CHECK(weft_gemm(ctx, false, false, s->T, s->E, h, 1.0f, WEFT_DTYPE_F32, B->x, h,
                             WEFT_DTYPE_F32, B->router, s->E, 0.0f, WEFT_DTYPE_F32, B->logits,
                             s->E));
        WEFT_CHECK(weft_moe_router_topk(ctx, s->T, s->E, s->k, true, B->logits, B->probs, B->lse,
                                        B->ids, B->weights));
      }
      WEFT_CHECK(weft_kernel_ctx_synchronize(ctx));
      t[part] = weft_time_now() - t0;
    }
    for (int part = 0; i >= 0 && part < 5; part++) ps[(TM_EXP_FWD + part) * n + i] = PS(t[part]);
  }
  return WEFT_OK;
}

/* The word rank src puts at index i of its block for dst in exchange `phase` (0 dispatch, 1
 * combine). Top two bits clear: a finite float, never the all-ones poison. */
static uint32_t xword(int src, int dst, int phase, size_t i) {
  return weft_bench_hash((uint32_t)src, (uint32_t)dst + 65536u * (uint32_t)phase, i) & 0x3fffffffu;
}

typedef struct xchg {
  size_t *cnt[2], *dsp[2]; /* [P] each: elements per peer sent to / received from each rank */
} xchg_t;

static weft_status_t replay_pair(const moe_bench_t *b, const xchg_t *x, moe_bufs_t *B) {
  WEFT_CHECK(weft_comm_alltoallv(b->comm, B->send, x->cnt[0], x->dsp[0], B->recv, x->cnt[1],
                                 x->dsp[1], WEFT_DTYPE_F32, WEFT_MEM_DEVICE));
  return weft_comm_alltoallv(b->comm, B->back, x->cnt[1], x->dsp[1], B->home, x->cnt[0], x->dsp[0],
                             WEFT_DTYPE_F32, WEFT_MEM_DEVICE);
}

/* Writes the send side of phase (0: send by cnt[0], 1: back by cnt[1]) or checks the receive
 * side (check: 0: recv by cnt[1], 1: home by cnt[0]); returns wrong elements when checking. */
static int64_t pattern(const moe_bench_t *b, const xchg_t *x, int phase, bool check,
                       uint32_t *buf) {
  int64_t wrong = 0;
  const size_t *cnt = x->cnt[phase ^ (int)check], *dsp = x->dsp[phase ^ (int)check];
  for (int p = 0; p < b->size; p++) {
    int src = check ? p : b->rank, dst = check ? b->rank : p;
    for (size_t i = 0; i < cnt[p]; i++) {
      uint32_t want = xword(src, dst, phase, i);
      if (!check) buf[dsp[p] + i] = want;
      if (check && buf[dsp[p] + i] != want && wrong++ == 0)
        WEFT_ERROR("bench", "moe exchange: element %zu from rank %d is 0x%x, expected 0x%x", i, p,
                   buf[dsp[p] + i], want);
    }
  }
  return wrong;
}

/* The replay of the layer's exchange and the raw all-to-all: this rank's picoseconds per pair,
 * each after a barrier (ps [3, nx]: replay, raw, raw reusing its buffers), and the replay's
 * wrong elements. */
static weft_status_t time_exchange(const moe_bench_t *b, const moe_shape_t *s, const moe_model_t *m,
                                   const moe_expect_t *e, moe_bufs_t *B, long nx, int64_t *ps,
                                   int64_t *wrong_p) {
  const int P = b->size, r = b->rank;
  const size_t sent = (size_t)(e->sent * s->h), got = (size_t)(e->received * s->h);
  size_t *arrays = calloc(4 * (size_t)P, sizeof(size_t));
  uint32_t *host = malloc((sent > got ? sent : got) * 4 + 4);
  weft_status_t st = arrays && host ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  xchg_t x = {{arrays, arrays + P}, {arrays + 2 * P, arrays + 3 * P}};
  for (int p = 0; st == WEFT_OK && p < P; p++) {
    x.cnt[0][p] = (size_t)(m->rows[r * P + p] * s->h);
    x.cnt[1][p] = (size_t)(m->rows[p * P + r] * s->h);
    if (p > 0) x.dsp[0][p] = x.dsp[0][p - 1] + x.cnt[0][p - 1];
    if (p > 0) x.dsp[1][p] = x.dsp[1][p - 1] + x.cnt[1][p - 1];
  }
  if (st != WEFT_OK) goto out;
  pattern(b, &x, 0, false, host);
  WEFT_CHECK_GOTO(weft_device_copy(b->dev, B->send, host, sent * 4, WEFT_COPY_HOST_TO_DEVICE), st,
                  out);
  pattern(b, &x, 1, false, host);
  WEFT_CHECK_GOTO(weft_device_copy(b->dev, B->back, host, got * 4, WEFT_COPY_HOST_TO_DEVICE), st,
                  out);
  /* 0: replay; raw, two calls like the pair: 1 on distinct halves of the buffers (the
   * replay's memory footprint), 2 on the same buffers twice (bench comm's way: cache-warm) */
  for (int which = 0; which < 3; which++) {
    for (long i = -b->opt->warmup; i < nx; i++) {
      WEFT_CHECK_GOTO(weft_comm_barrier(b->comm), st, out);
      double t0 = weft_time_now();
      for (int call = 0; which > 0 && call < 2; call++) {
        size_t half = which == 1 ? (size_t)call * (size_t)(P * m->block) : 0;
        WEFT_CHECK_GOTO(weft_comm_alltoall(b->comm, B->raw_send + half, B->raw_recv + half,
                                           (size_t)m->block, WEFT_DTYPE_F32, WEFT_MEM_DEVICE),
                        st, out);
      }
      if (which == 0) WEFT_CHECK_GOTO(replay_pair(b, &x, B), st, out);
      WEFT_CHECK_GOTO(weft_device_synchronize(b->dev), st, out);
      if (i >= 0) ps[which * nx + i] = PS(weft_time_now() - t0);
    }
  }
  /* Verify: poison, one more pair, compare every element of both directions. */
  WEFT_CHECK_GOTO(weft_device_memset(b->dev, B->recv, 0xff, got * 4), st, out);
  WEFT_CHECK_GOTO(weft_device_memset(b->dev, B->home, 0xff, sent * 4), st, out);
  WEFT_CHECK_GOTO(replay_pair(b, &x, B), st, out);
  WEFT_CHECK_GOTO(weft_device_copy(b->dev, host, B->recv, got * 4, WEFT_COPY_DEVICE_TO_HOST), st,
                  out);
  *wrong_p = pattern(b, &x, 0, true, host);
  WEFT_CHECK_GOTO(weft_device_copy(b->dev, host, B->home, sent * 4, WEFT_COPY_DEVICE_TO_HOST), st,
                  out);
  *wrong_p += pattern(b, &x, 1, true, host);
out:
  free(arrays), free(host);
  return st;
}

/* Non-finite elements of device buffer src [count]. */
static weft_status_t count_nonfinite(const moe_bench_t *b, const float *src, size_t count,
                                     float *host, int64_t *bad_p) {
  WEFT_CHECK(weft_device_copy(b->dev, host, src, count * 4, WEFT_COPY_DEVICE_TO_HOST));
  for (size_t i = 0; i < count; i++) *bad_p += !isfinite(host[i]);
  return WEFT_OK;
}

/* This rank's counters against the model; returns the number of disagreeing quantities and
 * logs the first. */
static int64_t check_stats(const moe_bench_t *b, const moe_shape_t *s, const moe_model_t *m,
                           const moe_expect_t *x, const weft_moe_stats_t *st) {
  int64_t bad = 0;
  const struct {
    const char *what;
    uint64_t got, want;
  } c[] = {{"forward payload", st->fwd.payload, x->payload},
           {"backward payload", st->bwd.payload, x->payload},
           {"stats minimum", st->fwd.minimum, x->payload},
           {"forward metadata", st->fwd.meta, x->meta_fwd},
           {"backward metadata", st->bwd.meta, x->meta_bwd},
           {"rows sent", (uint64_t)st->rows_sent, (uint64_t)x->sent},
           {"rows received", (uint64_t)st->rows_received, (uint64_t)x->received},
           {"capacity", (uint64_t)st->capacity, (uint64_t)m->capacity}};
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    if (c[i].got != c[i].want && bad++ == 0)
      WEFT_ERROR("bench",
                 "moe T %" PRId64 " h %" PRId64 " E %" PRId64 " k %d: rank %d %s %" PRIu64
                 ", the bench's routing says %" PRIu64,
                 s->T, s->h, s->E, s->k, b->rank, c[i].what, c[i].got, c[i].want);
  }
  for (int64_t e = 0; e < s->El; e++) {
    if (st->expert_rows[e] != m->expert_rows[b->rank * s->El + e] && bad++ == 0)
      WEFT_ERROR("bench",
                 "moe: rank %d local expert %" PRId64 " got %" PRId64 " rows, expected %" PRId64,
                 b->rank, e, st->expert_rows[e], m->expert_rows[b->rank * s->El + e]);
  }
  return bad;
}

static int compare_i64(const void *x, const void *y) {
  int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
  return (a > c) - (a < c);
}

/* ---- one configuration -------------------------------------------------------------------- */

enum { S_PAY_FWD, S_PAY_BWD, S_MINIMUM, S_META_FWD, S_META_BWD, S_BAD, S_WRONG, S_NONFINITE, S_N };

/* One configuration reduced over the ranks. */
typedef struct moe_row {
  double med[TM_COUNT], fwd_min, bwd_min, xchg[3]; /* seconds: medians of the slowest rank */
  int64_t sum[S_N], pay_max, M_max;                /* sums over ranks; maxima */
} moe_row_t;

static double ms(double seconds) { return seconds * 1e3; }

/* ,"key":value for each comma-separated key, the values following as int64_t (ints) or double
 * (a non-finite one prints null), one per key. */
static void print_json(bool ints, const char *keys, ...) {
  va_list ap;
  va_start(ap, keys);
  for (const char *k = keys; *k;) {
    size_t len = strcspn(k, ",");
    printf(",\"%.*s\":", (int)len, k);
    double v = ints ? 0 : va_arg(ap, double);
    if (ints) printf("%" PRId64, va_arg(ap, int64_t));
    if (!ints && isfinite(v)) printf("%.6g", v);
    if (!ints && !isfinite(v)) printf("null");
    k += len + (k[len] == ',');
  }
  va_end(ap);
}

static void print_row(const moe_bench_t *b, const moe_shape_t *s, const moe_model_t *m,
                      const moe_row_t *w) {
  const int P = b->size;
  const moe_opts_t *o = b->opt;
  moe_expect_t tot = {0};
  int64_t min_max = 0, kept = 0;
  for (int r = 0; r < P; r++) {
    moe_expect_t x = model_expect(s, m, P, r);
    tot.rows_out += x.rows_out, tot.slots_out += x.slots_out, tot.payload += x.payload;
    tot.meta_fwd += x.meta_fwd, tot.meta_bwd += x.meta_bwd;
    min_max = (int64_t)x.payload > min_max ? (int64_t)x.payload : min_max;
  }
  for (int64_t e = 0; e < s->E; e++) kept += m->expert_rows[e];
  const double *t = w->med, avg = (double)w->sum[S_PAY_FWD] / P, none = P > 1 ? 0 : NAN;
  const double raw_bw = weft_bench_gbps(8.0 * (P - 1) * (double)m->block, w->xchg[1]) + none;
  const double reuse_bw = weft_bench_gbps(8.0 * (P - 1) * (double)m->block, w->xchg[2]) + none;
  const double eff = weft_bench_gbps(avg, w->xchg[0]) + none;
  const double layer_eff = weft_bench_gbps(avg, t[TM_FWD_PAYLOAD_LEAST]) + none;
  const double ratio = (t[TM_EXP_FWD] + t[TM_EXP_BWD]) / (t[TM_GEMM_FWD] + t[TM_GEMM_BWD]);
  char cell[4][24] = {"-", "-", "-", "-"};
  if (P > 1) {
    snprintf(cell[0], 24, "%.3f", ms(w->xchg[0]));
    snprintf(cell[1], 24, "%.2f/%.2f", eff, raw_bw);
    snprintf(cell[2], 24, "%.3f", eff / raw_bw);
    snprintf(cell[3], 24, "%.3f", layer_eff / raw_bw);
  }
  fprintf(b->table,
          "  %6" PRId64 " %5" PRId64 " %5" PRId64 " %4" PRId64
          " %2d %9.3f %9.3f %12.0f%c%12.0f "
          "%9s %13s %6s %6s %9.3f %9.3f %6.3f %8.3f\n",
          s->T, s->h, s->f, s->E, s->k, ms(t[TM_FWD]), ms(t[TM_BWD]), avg,
          w->sum[S_BAD] ? '*' : ' ', (double)tot.payload / P, cell[0], cell[1], cell[2], cell[3],
          ms(t[TM_EXP_FWD] + t[TM_EXP_BWD]), ms(t[TM_GEMM_FWD] + t[TM_GEMM_BWD]), ratio,
          ms(t[TM_ROUTER]));
  if (!o->json) return;
  /* Exact counts; FLOPs fwd 6 M h f and bwd 12 M h f of the busiest rank (M = expert rows). */
  const int64_t threads = weft_kernels_cpu_threads(), M = w->M_max, hf = s->h * s->f;
  printf("{\"device\":\"%s\"", weft_device_kind_name(b->dev->kind));
  /* exact counts; FLOPs fwd 6 M h f and bwd 12 M h f of the busiest rank (M = expert rows) */
  print_json(true,
             "ranks,cpu_threads,tokens,hidden,ffn,experts,topk,seed,iters,warmup,capacity,dropped,"
             "remote_rows,remote_slots,expert_rows_total,expert_rows_max,payload_fwd_bytes_total,"
             "payload_bwd_bytes_total,minimum_bytes_total,layer_minimum_bytes_total,"
             "naive_bytes_total,payload_fwd_bytes_max,minimum_bytes_max,meta_fwd_bytes_total,"
             "meta_bwd_bytes_total,formula_meta_fwd_bytes_total,formula_meta_bwd_bytes_total,"
             "bytes_mismatch,exchange_wrong,raw_block_bytes,gemm_m,gemm_k,gemm_n_fwd,gemm_n_bwd,"
             "flops_fwd,flops_bwd,nonfinite",
             (int64_t)P, threads, s->T, s->h, s->f, s->E, (int64_t)s->k, (int64_t)o->seed,
             (int64_t)o->iters, (int64_t)o->warmup, m->capacity, m->dropped, tot.rows_out,
             tot.slots_out, kept, M, w->sum[S_PAY_FWD], w->sum[S_PAY_BWD], (int64_t)tot.payload,
             w->sum[S_MINIMUM], 8 * s->h * tot.slots_out, w->pay_max, min_max, w->sum[S_META_FWD],
             w->sum[S_META_BWD], (int64_t)tot.meta_fwd, (int64_t)tot.meta_bwd, w->sum[S_BAD],
             w->sum[S_WRONG], 4 * m->block, M, s->h, 3 * s->f, 6 * s->f, 6 * M * hf, 12 * M * hf,
             w->sum[S_NONFINITE]);
  print_json(
      false,
      "capacity_factor,skew,fwd_ms,bwd_ms,fwd_min_ms,bwd_min_ms,layer_fwd_exchange_ms,"
      "layer_fwd_payload_ms,layer_fwd_payload_least_ms,layer_fwd_experts_ms,"
      "layer_bwd_exchange_ms,layer_bwd_payload_ms,layer_bwd_experts_ms,router_ms,"
      "exchange_ms,raw_alltoall_ms,raw_busbw_gbps,raw_reuse_alltoall_ms,raw_reuse_busbw_gbps,"
      "eff_gbps,eff_ratio,eff_ratio_reuse,layer_eff_gbps,"
      "layer_eff_ratio,experts_fwd_ms,experts_bwd_ms,gemm_fwd_ms,gemm_bwd_ms,experts_ratio",
      o->capacity_factor, o->skew, ms(t[TM_FWD]), ms(t[TM_BWD]), ms(w->fwd_min), ms(w->bwd_min),
      ms(t[TM_FWD_XCHG]), ms(t[TM_FWD_PAYLOAD]), ms(t[TM_FWD_PAYLOAD_LEAST]), ms(t[TM_FWD_EXPERTS]),
      ms(t[TM_BWD_XCHG]), ms(t[TM_BWD_PAYLOAD]), ms(t[TM_BWD_EXPERTS]), ms(t[TM_ROUTER]),
      ms(w->xchg[0]) + none, ms(w->xchg[1]) + none, raw_bw, ms(w->xchg[2]) + none, reuse_bw, eff,
      eff / raw_bw, eff / reuse_bw, layer_eff, layer_eff / raw_bw, ms(t[TM_EXP_FWD]),
      ms(t[TM_EXP_BWD]), ms(t[TM_GEMM_FWD]), ms(t[TM_GEMM_BWD]), ratio);
  printf("}\n");
}

/* Measures one configuration; *failed_p counts the row if a check failed. */
static weft_status_t measure(const moe_bench_t *b, const moe_shape_t *s, int64_t *failed_p) {
  const int P = b->size;
  const long n = b->opt->iters;
  const size_t Th = (size_t)(s->T * s->h);
  moe_model_t m = {0};
  moe_bufs_t B = {0};
  moe_row_t w = {0};
  weft_moe_plan_t *plan = NULL;
  const weft_moe_config_t cfg = {s->h,       s->f, s->E, s->k, true, b->opt->capacity_factor,
                                 AUX_WEIGHT, 0.0};
  const long nx = n > XCHG_MIN_ITERS ? n : XCHG_MIN_ITERS, len = TM_COUNT * n + 3 * nx + 2;
  int64_t *ps = calloc((size_t)len, sizeof *ps), *off = NULL, *xps = ps + TM_COUNT * n;
  float *host = malloc(Th * sizeof(float) + 4), *big = NULL;
  weft_status_t st = ps && host ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  for (size_t i = 0; st == WEFT_OK && i < Th; i++) host[i] = unit(b, 0, i);
  if (st == WEFT_OK) st = model_build(b, s, host, &m);
  if (st != WEFT_OK) goto out;
  const moe_expect_t x = model_expect(s, &m, P, b->rank);
  WEFT_CHECK_GOTO(bufs_alloc(b, s, &m, &x, &B, host), st, out);
  WEFT_CHECK_GOTO(weft_moe_plan_create(b->comm, NULL, b->ctx, &cfg, &plan), st, out);
  WEFT_CHECK_GOTO(time_layer(b, s->T, plan, &B, ps), st, out);
  const weft_moe_stats_t *stats = weft_moe_plan_stats(plan);
  w.sum[S_PAY_FWD] = (int64_t)stats->fwd.payload, w.sum[S_PAY_BWD] = (int64_t)stats->bwd.payload;
  w.sum[S_MINIMUM] = (int64_t)stats->fwd.minimum, w.sum[S_META_FWD] = (int64_t)stats->fwd.meta;
  w.sum[S_META_BWD] = (int64_t)stats->bwd.meta, w.sum[S_BAD] = check_stats(b, s, &m, &x, stats);
  w.pay_max = (int64_t)stats->fwd.payload, w.M_max = x.M;
  WEFT_CHECK_GOTO(count_nonfinite(b, B.y, Th, host, &w.sum[S_NONFINITE]), st, out);
  WEFT_CHECK_GOTO(count_nonfinite(b, B.dx, Th, host, &w.sum[S_NONFINITE]), st, out);
  weft_moe_plan_destroy(plan), plan = NULL; /* its buffers go before the micro-benchmarks */
  if (P > 1) WEFT_CHECK_GOTO(time_exchange(b, s, &m, &x, &B, nx, xps, &w.sum[S_WRONG]), st, out);
  off = calloc((size_t)s->El + 1, sizeof *off);
  big = malloc((size_t)(x.M * s->h) * sizeof(float) + 4);
  if (!off || !big) WEFT_CHECK_GOTO(WEFT_ERR_NO_MEMORY, st, out);
  for (int64_t e = 0; e < s->El; e++) off[e + 1] = off[e] + m.expert_rows[b->rank * s->El + e];
  WEFT_CHECK_GOTO(time_kernels(b, s, &B, off, ps), st, out);
  WEFT_CHECK_GOTO(count_nonfinite(b, B.ye, (size_t)(x.M * s->h), big, &w.sum[S_NONFINITE]), st,
                  out);
  WEFT_CHECK_GOTO(count_nonfinite(b, B.dxe, (size_t)(x.M * s->h), big, &w.sum[S_NONFINITE]), st,
                  out);
  ps[len - 2] = w.pay_max, ps[len - 1] = w.M_max; /* maxima over ranks, after the times */
  WEFT_CHECK_GOTO(weft_comm_allreduce(b->comm, ps, ps, (size_t)len, WEFT_DTYPE_I64, WEFT_REDUCE_MAX,
                                      WEFT_MEM_HOST),
                  st, out);
  WEFT_CHECK_GOTO(weft_comm_allreduce(b->comm, w.sum, w.sum, S_N, WEFT_DTYPE_I64, WEFT_REDUCE_SUM,
                                      WEFT_MEM_HOST),
                  st, out);
  for (int q = 0; q < TM_COUNT; q++) { /* upper median; the least-waiting slot is negated */
    qsort(ps + q * n, (size_t)n, sizeof *ps, compare_i64);
    w.med[q] = (double)ps[q * n + n / 2] * (q == TM_FWD_PAYLOAD_LEAST ? -1e-12 : 1e-12);
  }
  w.fwd_min = (double)ps[TM_FWD * n] * 1e-12, w.bwd_min = (double)ps[TM_BWD * n] * 1e-12;
  for (int q = 0; q < 3; q++) {
    qsort(xps + q * nx, (size_t)nx, sizeof *xps, compare_i64);
    w.xchg[q] = (double)xps[q * nx + nx / 2] * 1e-12;
  }
  w.pay_max = ps[len - 2], w.M_max = ps[len - 1];
  if (w.sum[S_MINIMUM] != w.sum[S_PAY_FWD]) w.sum[S_BAD]++; /* the layer's own claim */
  if (b->rank == 0) print_row(b, s, &m, &w);
  *failed_p += w.sum[S_BAD] > 0 || w.sum[S_WRONG] > 0 || w.sum[S_NONFINITE] > 0;
out:
  weft_moe_plan_destroy(plan);
  bufs_free(b, &B);
  model_free(&m);
  free(ps), free(host), free(off), free(big);
  return st;
}

static void print_header(const moe_bench_t *b) {
  const moe_opts_t *o = b->opt;
  fprintf(b->table,
          "# weft bench moe: %d rank(s), device %s (%s), %d CPU thread(s) per rank; %ld "
          "iteration(s) after %ld warm-up; normalize on, aux weight %g, capacity factor %g "
          "(0 = dropless), skew %g, seed %ld\n"
          "# time = median over iterations of the slowest rank; payload/min = bytes one rank "
          "sends per pass, mean over ranks (* = a counter differs from the routing's formula)\n"
          "# a2av = replay of the layer's dispatch+combine counts; eff/raw = payload / a2av vs "
          "raw alltoall busbw of the same size (GB/s); ratio = eff/raw; layer = in-layer "
          "payload time's ratio\n"
          "# experts = grouped SwiGLU fwd+bwd (18 M h f FLOPs) vs gemm = one GEMM of the same "
          "FLOPs; router = x W_r + softmax/top-k\n",
          b->size, weft_device_kind_name(b->dev->kind), b->dev->name, weft_kernels_cpu_threads(),
          o->iters, o->warmup, AUX_WEIGHT, o->capacity_factor, o->skew, o->seed);
  fprintf(b->table, "# %6s %5s %5s %4s %2s %9s %9s %13s %12s %9s %13s %6s %6s %9s %9s %6s %8s\n",
          "T", "h", "f", "E", "k", "fwd(ms)", "bwd(ms)", "payload(B)", "min(B)", "a2av(ms)",
          "eff/raw", "ratio", "layer", "experts", "gemm", "ratio", "router");
}

static weft_status_t moe_run(weft_session_t *sess, const moe_opts_t *o) {
  moe_bench_t b = {.opt = o,
                   .comm = sess->world,
                   .dev = sess->boot.device,
                   .rank = sess->boot.world_rank,
                   .size = sess->boot.world_size,
                   .table = o->json ? stderr : stdout};
  WEFT_CHECK(weft_kernel_ctx_create(b.dev, NULL, &b.ctx));
  if (b.rank == 0) print_header(&b);
  weft_status_t st = WEFT_OK;
  int64_t failed = 0;
  int total = 1;
  for (int l = 0; l < L_COUNT; l++) total *= o->counts[l];
  for (int i = 0; i < total && st == WEFT_OK; i++) {
    int64_t v[L_COUNT];
    for (int l = 0, rest = i; l < L_COUNT; rest /= o->counts[l], l++)
      v[l] = o->lists[l][rest % o->counts[l]];
    moe_shape_t s = {v[L_TOKENS], v[L_HIDDEN], v[L_FFN], v[L_EXPERTS], 0, (int)v[L_TOPK]};
    const char *why = s.E % b.size ? "E not divisible by the number of ranks"
                      : s.k > s.E  ? "topk > E"
                      : s.h < s.E  ? "h < E (the bench routes through h's first E columns)"
                                   : NULL;
    if (why && b.rank == 0)
      fprintf(b.table, "# skip T %" PRId64 " h %" PRId64 " f %" PRId64 " E %" PRId64 " k %d: %s\n",
              s.T, s.h, s.f, s.E, s.k, why);
    if (why) continue;
    s.El = s.E / b.size;
    st = measure(&b, &s, &failed);
    fflush(stdout);
    fflush(b.table);
  }
  weft_kernel_ctx_destroy(b.ctx);
  if (b.rank == 0 && st == WEFT_OK)
    fprintf(b.table, "# failed rows (byte mismatch, wrong or non-finite elements): %" PRId64 "\n",
            failed);
  if (st == WEFT_OK && failed > 0) {
    if (b.rank == 0) WEFT_ERROR("bench", "moe: %" PRId64 " row(s) failed their checks", failed);
    st = WEFT_ERR_CORRUPT;
  }
  return st;
}

static const weft_cli_command_t k_command = {
    "bench moe",
    "Expert-parallel MoE: layer time, dispatch+combine bandwidth, expert compute vs one GEMM.",
    "[flags]   (under mpirun/srun; results on rank 0)", NULL};

/* "512,2K" -> values (>= 1); false with a message on a bad or empty item. */
static bool parse_values(const char *flag, const char *text, int64_t *values, int *count_p) {
  char item[32];
  *count_p = 0;
  for (const char *p = text;; p++) {
    size_t len = strcspn(p, ","), v = 0;
    if (len == 0 || len >= sizeof item || *count_p == MAX_LIST) {
      fprintf(stderr, "weft bench moe: --%s: expected up to %d values such as 512,2K\n", flag,
              MAX_LIST);
      return false;
    }
    memcpy(item, p, len);
    item[len] = '\0';
    if (weft_cli_parse_size(item, &v) != WEFT_OK || v < 1 || v > INT32_MAX) {
      fprintf(stderr, "weft bench moe: --%s: bad value '%s'\n", flag, item);
      return false;
    }
    values[(*count_p)++] = (int64_t)v;
    p += len;
    if (*p == '\0') return true;
  }
}

int weft_bench_moe(int argc, char **argv) {
  moe_opts_t o = {.capacity_factor = 0, .skew = 0, .iters = 10, .warmup = 2, .seed = 1};
  const char *lists[L_COUNT] = {"1024", "2", "8", "512", "256"}, *device = "auto";
  const weft_cli_flag_t flags[] = {
      {"tokens", 0, WEFT_CLI_STRING, &lists[L_TOKENS], "LIST",
       "tokens per rank, e.g. 512,2K (1024)"},
      {"hidden", 0, WEFT_CLI_STRING, &lists[L_HIDDEN], "LIST", "hidden sizes h (256)"},
      {"ffn", 0, WEFT_CLI_STRING, &lists[L_FFN], "LIST", "expert widths f (512)"},
      {"experts", 0, WEFT_CLI_STRING, &lists[L_EXPERTS], "LIST", "experts E, divisible by P (8)"},
      {"topk", 0, WEFT_CLI_STRING, &lists[L_TOPK], "LIST", "experts per token k (2)"},
      {"capacity-factor", 0, WEFT_CLI_DOUBLE, &o.capacity_factor, "X", "0 = dropless (0)"},
      {"skew", 0, WEFT_CLI_DOUBLE, &o.skew, "S",
       "routing popularity (e+1)^-S toward low experts; 0 = uniform (0)"},
      {"iters", 'n', WEFT_CLI_INT, &o.iters, "N", "timed iterations (10)"},
      {"warmup", 'w', WEFT_CLI_INT, &o.warmup, "N", "untimed iterations first (2)"},
      {"seed", 0, WEFT_CLI_INT, &o.seed, "N", "routing and data seed (1)"},
      {"device", 0, WEFT_CLI_STRING, &device, "auto|cpu|cuda", "device each rank opens (auto)"},
      {"json", 0, WEFT_CLI_BOOL, &o.json, NULL,
       "JSON line per configuration on stdout; table: stderr"},
  };
  bool help = false;
  if (weft_cli_parse(&k_command, flags, sizeof flags / sizeof flags[0], argc, argv, &help) !=
      WEFT_OK)
    return WEFT_EXIT_USAGE;
  if (help) return WEFT_EXIT_OK;
  for (int l = 0; l < L_COUNT; l++)
    if (!parse_values(k_list_names[l], lists[l], o.lists[l], &o.counts[l])) return WEFT_EXIT_USAGE;
  int device_index = 0;
  const char *problem = NULL;
  if (weft_bench_parse_choice(device, k_device_names, 3, &device_index) != WEFT_OK)
    problem = "--device must be auto, cpu or cuda";
  else if (o.iters < 1 || o.warmup < 0)
    problem = "--iters must be >= 1 and --warmup >= 0";
  else if (!(o.capacity_factor >= 0 && isfinite(o.capacity_factor)))
    problem = "--capacity-factor must be finite and >= 0";
  else if (!(o.skew >= 0 && o.skew <= 16))
    problem = "--skew must be in 0..16";
  else if (o.seed < 0 || o.seed > UINT32_MAX)
    problem = "--seed must be in 0..4294967295";
  if (problem) {
    fprintf(stderr, "weft bench moe: %s (see weft bench moe --help)\n", problem);
    return WEFT_EXIT_USAGE;
  }
  weft_session_t session;
  weft_session_start(&session, "bench moe", &argc, &argv, device);
  return weft_session_end(&session, moe_run(&session, &o));
}
