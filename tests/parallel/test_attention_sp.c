/* Sequence-parallel softmax attention (parallel/attention_sp.h) against a single-rank run of
 * the same inputs, at any rank count.
 *
 * Every rank builds the same global inputs from a hash of (tensor, index) and computes the
 * single-rank reference with the block kernel over the whole sequence (positions 0..N-1):
 * forward out, lse and backward dq, dk, dv of L = sum <dout, out>. It then scatters its slots
 * of weft's layout (zigzag when causal; padding slots are filled with large finite garbage,
 * which must never reach a result), runs each algorithm and compares its slots.
 *
 * Tolerance, the same for every P: |got - ref| <= 2e-5 * max|ref over the tensor| + 1e-4 *
 * |ref|. Both sides compute in f32; they differ only in the order in which KV blocks are
 * merged (f32 merges with the log-sum-exp), a few roundings of the largest terms, which does
 * not grow with the number of blocks. Padding slots must give out = 0, lse = -inf and zero
 * gradients exactly.
 *
 * Bytes: each rank's bytes sent in one forward and one backward (the plan's stats, read from
 * weft_comm's counters) must equal weft_attn_sp_cost_bytes exactly, and, where P divides H and
 * Hkv and the dtype is f32, design.md's formulas written out here:
 *   Ulysses fwd (P-1)/P n (2H + 2Hkv) d 4 B + (P-1)/P n H 4 B (the lse going back)
 *   ring    fwd (P-1) 2 n Hkv d 4 B,  bwd (P-1) 2 n Hkv d (4 + 4) B (K,V plus dk,dv)
 * The plan is reused: a second forward and backward must be bitwise identical. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "weft/attention.h"
#include "weft/attention_sp.h"
#include "weft/bootstrap.h"
#include "weft/comm.h"
#include "weft/kernel_ctx.h"
#include "weft/status.h"

typedef struct test_case {
  int64_t B, N, H, Hkv, d;
  bool causal;
} test_case_t;

enum { T_Q, T_K, T_V, T_DOUT, T_IN };

static float value(uint32_t tensor, uint64_t index) { /* in [-1, 1) */
  uint64_t x = index * 0x9E3779B97F4A7C15ull + (uint64_t)tensor * 0xBF58476D1CE4E5B9ull + 1;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

typedef struct global {
  float *in[T_IN];
  float *out, *lse, *dq, *dk, *dv;
} global_t;

static size_t qcount(const test_case_t *c, int64_t n) { return (size_t)(c->B * n * c->H * c->d); }
static size_t kcount(const test_case_t *c, int64_t n) { return (size_t)(c->B * n * c->Hkv * c->d); }
static float *alloc_f(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* The single-rank reference: the block kernel over the whole sequence. */
static void reference(weft_kernel_ctx_t *ctx, const test_case_t *c, global_t *g) {
  int64_t N = c->N;
  for (int t = 0; t < T_IN; t++) {
    size_t count = t == T_K || t == T_V ? kcount(c, N) : qcount(c, N);
    g->in[t] = alloc_f(count);
    for (size_t i = 0; i < count; i++) g->in[t][i] = value((uint32_t)t, i);
  }
  g->out = alloc_f(qcount(c, N));
  g->dq = alloc_f(qcount(c, N));
  g->dk = alloc_f(kcount(c, N));
  g->dv = alloc_f(kcount(c, N));
  g->lse = alloc_f((size_t)(c->B * c->H * N));
  float *delta = alloc_f((size_t)(c->B * c->H * N));
  int64_t *pos = malloc((size_t)N * sizeof(int64_t));
  for (int64_t i = 0; i < N; i++) pos[i] = i;
  weft_attn_shape_t s = {c->B,      c->H,          c->Hkv, c->d, N, N, 1.0f / sqrtf((float)c->d),
                         c->causal, WEFT_DTYPE_F32};
  WT_CHECK_OK(weft_attn_block_forward(ctx, &s, g->in[T_Q], g->in[T_K], g->in[T_V], pos, pos, g->out,
                                      g->lse));
  WT_CHECK_OK(weft_attn_backward_delta(ctx, &s, g->out, g->in[T_DOUT], delta));
  WT_CHECK_OK(weft_attn_block_backward(ctx, &s, g->in[T_Q], g->in[T_K], g->in[T_V], pos, pos,
                                       g->in[T_DOUT], g->lse, delta, g->dq, g->dk, g->dv));
  free(delta);
  free(pos);
}

static void global_free(global_t *g) {
  for (int t = 0; t < T_IN; t++) free(g->in[t]);
  free(g->out);
  free(g->lse);
  free(g->dq);
  free(g->dk);
  free(g->dv);
}

/* This rank's slots of a [B,N,heads,d] tensor; padding slots get a large finite garbage
 * value (the contract: padding inputs must be finite, their value must not matter). */
static void scatter(const test_case_t *c, const int64_t *pos, int64_t n, int64_t heads,
                    const float *global, float *local) {
  size_t row = (size_t)(heads * c->d);
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t s = 0; s < n; s++) {
      float *dst = local + (size_t)(b * n + s) * row;
      if (pos[s] < 0) {
        for (size_t i = 0; i < row; i++) dst[i] = 1e3f * (float)(i % 7) - 3e3f;
      } else {
        memcpy(dst, global + (size_t)(b * c->N + pos[s]) * row, row * sizeof(float));
      }
    }
}

static double tensor_max(const float *x, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++)
    if (isfinite(x[i]) && fabs(x[i]) > m) m = fabs(x[i]);
  return m;
}

/* Compares this rank's slots of a [B,N,heads,d] (rows = false) or [B,heads,N] (rows = true)
 * tensor with the reference; padding slots must hold `pad` exactly. */
static void compare(const char *label, const char *what, const test_case_t *c, const int64_t *pos,
                    int64_t n, int64_t heads, bool rows, const float *ref, const float *got,
                    float pad) {
  size_t total = rows ? (size_t)(c->B * heads * c->N) : (size_t)(c->B * c->N * heads * c->d);
  double scale = tensor_max(ref, total), worst = 0;
  int64_t inner = rows ? 1 : heads * c->d, bad = 0;
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t s = 0; s < n; s++)
      for (int64_t h = 0; h < (rows ? heads : 1); h++)
        for (int64_t i = 0; i < inner; i++) {
          size_t gi = rows ? (size_t)((b * heads + h) * n + s) : (size_t)((b * n + s) * inner + i);
          float v = got[gi];
          if (pos[s] < 0) {
            if (!(v == pad)) bad++;
            continue;
          }
          size_t ri = rows ? (size_t)((b * heads + h) * c->N + pos[s])
                           : (size_t)((b * c->N + pos[s]) * inner + i);
          double err = fabs((double)v - ref[ri]) / (2e-5 * scale + 1e-4 * fabs(ref[ri]) + 1e-30);
          if (!(err <= worst)) worst = isnan(err) ? INFINITY : err;
        }
  WT_CHECK(worst <= 1.0 && bad == 0, "%s %s: error %.3g x tolerance, %lld wrong padding values",
           label, what, worst, (long long)bad);
}

/* design.md's formulas, where they apply (P divides H and Hkv, f32). */
static void check_design_formula(const char *label, const test_case_t *c, weft_attn_sp_algo_t a,
                                 int P, int64_t n, weft_attn_sp_stats_t st) {
  if (c->H % P != 0 || c->Hkv % P != 0 || P == 1) return;
  uint64_t B = (uint64_t)c->B, d = (uint64_t)c->d, H = (uint64_t)c->H, Hkv = (uint64_t)c->Hkv;
  uint64_t un = (uint64_t)n;
  if (a == WEFT_ATTN_SP_ULYSSES) {
    uint64_t fwd = (uint64_t)(P - 1) * un * (2 * H + 2 * Hkv) * d * 4 * B / (uint64_t)P +
                   (uint64_t)(P - 1) * un * H * 4 * B / (uint64_t)P;
    WT_CHECK(st.bytes_fwd == fwd, "%s: ulysses forward bytes %llu, design formula %llu", label,
             (unsigned long long)st.bytes_fwd, (unsigned long long)fwd);
  } else if (a == WEFT_ATTN_SP_RING) {
    uint64_t fwd = (uint64_t)(P - 1) * 2 * un * Hkv * d * 4 * B;
    WT_CHECK(st.bytes_fwd == fwd, "%s: ring forward bytes %llu, design formula %llu", label,
             (unsigned long long)st.bytes_fwd, (unsigned long long)fwd);
    WT_CHECK(st.bytes_bwd == 2 * fwd, "%s: ring backward bytes %llu, expected %llu", label,
             (unsigned long long)st.bytes_bwd, (unsigned long long)(2 * fwd));
  }
}

static void run_algo(weft_comm_t *comm, weft_kernel_ctx_t *ctx, const test_case_t *c,
                     const global_t *g, weft_attn_sp_algo_t algo, int ulysses) {
  int P = weft_comm_size(comm), rank = weft_comm_rank(comm);
  char label[160];
  snprintf(label, sizeof label, "%s(u=%d) P=%d B=%lld N=%lld H=%lld Hkv=%lld d=%lld %s",
           weft_attn_sp_algo_name(algo), ulysses, P, (long long)c->B, (long long)c->N,
           (long long)c->H, (long long)c->Hkv, (long long)c->d,
           c->causal ? "causal" : "non-causal");
  weft_attn_sp_config_t cfg = {c->B, c->H,      c->Hkv,         c->d, c->N,
                               0.0f, c->causal, WEFT_DTYPE_F32, algo, ulysses};
  weft_attn_sp_plan_t *plan = NULL;
  weft_status_t st = weft_attn_sp_plan_create(comm, ctx, &cfg, &plan);
  WT_CHECK(st == WEFT_OK, "%s: plan_create returned %s", label, weft_status_str(st));
  if (st != WEFT_OK) return;
  const int64_t *pos = weft_attn_sp_plan_positions(plan);
  int64_t n = weft_attn_sp_plan_layout(plan)->local;
  float *loc[T_IN];
  for (int t = 0; t < T_IN; t++) {
    bool kv = t == T_K || t == T_V;
    loc[t] = alloc_f(kv ? kcount(c, n) : qcount(c, n));
    scatter(c, pos, n, kv ? c->Hkv : c->H, g->in[t], loc[t]);
  }
  float *out[2], *lse[2], *dq[2], *dk[2], *dv[2];
  for (int r = 0; r < 2; r++) {
    out[r] = alloc_f(qcount(c, n));
    dq[r] = alloc_f(qcount(c, n));
    dk[r] = alloc_f(kcount(c, n));
    dv[r] = alloc_f(kcount(c, n));
    lse[r] = alloc_f((size_t)(c->B * c->H * n));
    WT_CHECK_OK(weft_attn_sp_forward(plan, loc[T_Q], loc[T_K], loc[T_V], out[r], lse[r]));
    WT_CHECK_OK(weft_attn_sp_backward(plan, loc[T_Q], loc[T_K], loc[T_V], out[r], lse[r],
                                      loc[T_DOUT], dq[r], dk[r], dv[r]));
  }
  weft_attn_sp_algo_t ran = weft_attn_sp_plan_algo(plan);
  compare(label, "out", c, pos, n, c->H, false, g->out, out[0], 0.0f);
  compare(label, "lse", c, pos, n, c->H, true, g->lse, lse[0], -INFINITY);
  compare(label, "dq", c, pos, n, c->H, false, g->dq, dq[0], 0.0f);
  compare(label, "dk", c, pos, n, c->Hkv, false, g->dk, dk[0], 0.0f);
  compare(label, "dv", c, pos, n, c->Hkv, false, g->dv, dv[0], 0.0f);
  WT_CHECK(memcmp(out[0], out[1], qcount(c, n) * sizeof(float)) == 0 &&
               memcmp(lse[0], lse[1], (size_t)(c->B * c->H * n) * sizeof(float)) == 0 &&
               memcmp(dq[0], dq[1], qcount(c, n) * sizeof(float)) == 0 &&
               memcmp(dk[0], dk[1], kcount(c, n) * sizeof(float)) == 0 &&
               memcmp(dv[0], dv[1], kcount(c, n) * sizeof(float)) == 0,
           "%s: reusing the plan changed the results", label);

  weft_attn_sp_stats_t stats = weft_attn_sp_plan_stats(plan);
  uint64_t fwd = 0, bwd = 0;
  WT_CHECK_OK(weft_attn_sp_cost_bytes(&cfg, ran, P, weft_attn_sp_plan_ulysses_degree(plan), rank,
                                      &fwd, &bwd));
  WT_CHECK(stats.bytes_fwd == fwd && stats.bytes_bwd == bwd,
           "%s: bytes sent fwd %llu bwd %llu, formula fwd %llu bwd %llu", label,
           (unsigned long long)stats.bytes_fwd, (unsigned long long)stats.bytes_bwd,
           (unsigned long long)fwd, (unsigned long long)bwd);
  check_design_formula(label, c, ran, P, n, stats);

  for (int r = 0; r < 2; r++) {
    free(out[r]);
    free(lse[r]);
    free(dq[r]);
    free(dk[r]);
    free(dv[r]);
  }
  for (int t = 0; t < T_IN; t++) free(loc[t]);
  weft_attn_sp_plan_destroy(plan);
}

static void run_case(weft_comm_t *comm, weft_kernel_ctx_t *ctx, const test_case_t *c) {
  global_t g = {0};
  reference(ctx, c, &g);
  int P = weft_comm_size(comm);
  run_algo(comm, ctx, c, &g, WEFT_ATTN_SP_ULYSSES, 0);
  run_algo(comm, ctx, c, &g, WEFT_ATTN_SP_RING, 0);
  run_algo(comm, ctx, c, &g, WEFT_ATTN_SP_TOKENRING, 0);
  for (int u = 1; u <= P; u++)
    if (P % u == 0) run_algo(comm, ctx, c, &g, WEFT_ATTN_SP_HYBRID, u);
  run_algo(comm, ctx, c, &g, WEFT_ATTN_SP_HYBRID, 0);
  run_algo(comm, ctx, c, &g, WEFT_ATTN_SP_AUTO, 0);
  global_free(&g);
}

/* Configurations every rank must refuse the same way, before any communication. */
static void check_invalid(weft_comm_t *comm, weft_kernel_ctx_t *ctx) {
  weft_attn_sp_plan_t *plan = NULL;
  weft_attn_sp_config_t ok = {1, 4, 2, 8, 16, 0.0f, true, WEFT_DTYPE_F32, WEFT_ATTN_SP_RING, 0};
  weft_attn_sp_config_t c = ok;
  c.heads = 6;
  c.kv_heads = 4;
  WT_CHECK_STATUS(weft_attn_sp_plan_create(comm, ctx, &c, &plan), WEFT_ERR_INVALID_ARG);
  c = ok;
  c.dtype = WEFT_DTYPE_BF16; /* CPU device: f32 only */
  WT_CHECK_STATUS(weft_attn_sp_plan_create(comm, ctx, &c, &plan), WEFT_ERR_INVALID_ARG);
  c = ok;
  c.algo = WEFT_ATTN_SP_HYBRID;
  c.ulysses_degree = weft_comm_size(comm) + 1;
  WT_CHECK_STATUS(weft_attn_sp_plan_create(comm, ctx, &c, &plan), WEFT_ERR_INVALID_ARG);
  c = ok;
  c.seq_len = 0;
  WT_CHECK_STATUS(weft_attn_sp_plan_create(comm, ctx, &c, &plan), WEFT_ERR_INVALID_ARG);
  WT_CHECK(plan == NULL, "a refused plan_create left a plan behind");
  weft_attn_sp_algo_t algo;
  WT_CHECK_STATUS(weft_attn_sp_algo_parse("zigzag", &algo), WEFT_ERR_INVALID_ARG);
  WT_CHECK_OK(weft_attn_sp_algo_parse("tokenring", &algo));
  WT_CHECK(algo == WEFT_ATTN_SP_TOKENRING, "parse tokenring");
}

/* The layout: every position 0..N-1 appears exactly once over all ranks' slots. */
static void check_layout(void) {
  for (int P = 1; P <= 5; P++)
    for (int z = 0; z < 2; z++)
      for (int64_t N = 1; N <= 40; N += 3) {
        weft_attn_sp_layout_t l;
        WT_CHECK_OK(weft_attn_sp_layout_init(&l, N, P, z));
        int64_t seen = 0, sum = 0;
        for (int r = 0; r < P; r++)
          for (int64_t s = 0; s < l.local; s++) {
            int64_t p = weft_attn_sp_layout_position(&l, r, s);
            if (p >= 0) {
              seen++;
              sum += p;
            }
          }
        WT_CHECK(seen == N && sum == N * (N - 1) / 2, "layout P=%d zigzag=%d N=%lld", P, z,
                 (long long)N);
      }
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

  check_layout();
  /* MHA and GQA (8/2), causal and not; N a multiple of 2P at P = 1, 2, 4 (64) and not (37,
   * 50, 45, 5); H not divisible by P (6 at P = 4, 3 at P = 2, 4); P > Hkv (MQA, 3/1); N = 5
   * leaves ranks with only padding at P = 3, 4; d = 80 spans several kernel tiles. */
  const test_case_t cases[] = {
      {2, 64, 4, 4, 16, true},  {1, 37, 8, 2, 16, true}, {2, 50, 6, 3, 8, false},
      {1, 45, 8, 2, 32, false}, {1, 5, 3, 1, 8, true},   {1, 33, 4, 1, 16, true},
      {1, 150, 2, 2, 80, true}, {2, 29, 6, 2, 8, true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(world, ctx, &cases[i]);
  check_invalid(world, ctx);

  weft_kernel_ctx_destroy(ctx);
  weft_comm_destroy(world);
  int rc = weft_test_exit_code("test_attention_sp");
  weft_comm_finalize(&boot);
  return rc;
}
