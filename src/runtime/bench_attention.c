/* `weft bench attention`: forward and backward time of sequence-parallel softmax attention
 * (parallel/include/weft/attention_sp.h) for each algorithm and sequence length, next to the
 * bytes the plan sent (its counters) and the formula's, and next to the cost model's
 * prediction with this job's measured link and kernel rates.
 *
 * For every sequence length N (--seq) and algorithm (--algo):
 *   local      the whole sequence on ONE rank: weft_attn_block_forward over N x N with
 *              positions 0..N-1, and backward = zeroing dq, dk, dv + weft_attn_backward_delta
 *              + weft_attn_block_backward. Every rank runs it at once, so each has the same
 *              share of the node as in the parallel runs; it is t_1 of the P = 2 target
 *              "fwd + bwd <= 1.25 t_1 / 2" (ratio column).
 *   ulysses, ring, tokenring, hybrid, auto   a plan on the world communicator; auto's row
 *              names the algorithm it chose.
 * Timing: after --warmup untimed forward + backward pairs, --iters iterations of: barrier,
 * forward (timed), barrier, backward (timed). Each iteration's time is the slowest rank's (an
 * all-reduce MAX per iteration); the table shows the median over iterations, JSON also the
 * minimum. A plan's forward and backward return with results complete (stream synchronised);
 * local calls are followed by weft_kernel_ctx_synchronize inside the timed span.
 *
 * Formulas:
 *   FLOPs    useful FLOPs of the call (weft_attn_sp_cost_predict): forward 4 B H d * pairs,
 *            pairs = N(N+1)/2 causal, N^2 not; backward 2.5x forward (flash-attention
 *            convention). TF/s = FLOPs / time: for the parallel rows the rate of the whole job,
 *            for local the rate of one rank (each does the whole call).
 *   bytes    sent = the busiest rank's bytes in one forward (backward) from the plan's counters
 *            (weft_attn_sp_plan_stats); formula = weft_attn_sp_cost_bytes, the arithmetic in
 *            the header of parallel/attention_sp_bytes.c. Every rank compares its own counters
 *            with its own formula; bad = ranks that differ (then the command fails, exit 1).
 *   pred     weft_attn_sp_cost_predict with the machine that weft_attn_sp_machine_measure
 *            measured once at start (printed in the header).
 *   ratio    (fwd + bwd) / ((local fwd + local bwd) / P), when local ran in the same command.
 *
 * Physical limit: compute (the kernel's FLOP rate; the header's GFLOP/s is one small block
 * pair): ideally every parallel row runs at P times local's rate. On one node the bytes move
 * through shared memory (memory bandwidth), across nodes through the NIC.
 *
 * Not verified here: results (`weft check attention` and tests/parallel check them); inputs
 * are hashed values in [-1, 1). */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_util.h"
#include "cli.h"
#include "session.h"
#include "weft/attention.h"
#include "weft/attention_sp.h"
#include "weft/check.h"
#include "weft/kernel_ctx.h"
#include "weft/log.h"
#include "weft/timer.h"

#define MAX_SEQS 32

enum { ALGO_LOCAL, ALGO_ULYSSES, ALGO_RING, ALGO_TOKENRING, ALGO_HYBRID, ALGO_AUTO, ALGO_COUNT };
static const char *const k_algo_names[ALGO_COUNT] = {"local",     "ulysses", "ring",
                                                     "tokenring", "hybrid",  "auto"};
static const weft_attn_sp_algo_t k_sp_algo[ALGO_COUNT] = {
    WEFT_ATTN_SP_RING, /* local: unused */
    WEFT_ATTN_SP_ULYSSES, WEFT_ATTN_SP_RING, WEFT_ATTN_SP_TOKENRING,
    WEFT_ATTN_SP_HYBRID,  WEFT_ATTN_SP_AUTO};
static const char *const k_dtype_names[] = {"f32", "bf16"};
static const char *const k_device_names[] = {"auto", "cpu", "cuda"};

typedef struct attn_opts {
  long batch, heads, kv_heads, head_dim, causal, ulysses, iters, warmup;
  bool json;
  uint32_t algos; /* bit i = k_algo_names[i] */
  int64_t seqs[MAX_SEQS];
  int seq_count;
  weft_dtype_t dtype;
} attn_opts_t;

typedef struct attn_bench {
  const attn_opts_t *opt;
  weft_comm_t *comm;
  const weft_device_t *dev;
  weft_kernel_ctx_t *ctx;
  int rank, size;
  FILE *table; /* stdout, or stderr under --json */
  weft_attn_sp_machine_t machine;
} attn_bench_t;

/* One rank's operands, in the device's memory: q, k, v, dout of the dtype, the rest f32. */
typedef struct attn_bufs {
  void *q, *k, *v, *dout;                  /* [B,n,H,d]; [B,n,Hkv,d] x2; [B,n,H,d] */
  float *out, *lse, *delta, *dq, *dk, *dv; /* [B,n,H,d]; [B,H,n] x2; [B,n,H,d]; [B,n,Hkv,d] x2 */
  int64_t *pos;                            /* [n] 0..n-1 (local only) */
} attn_bufs_t;

/* One (algo, N) measurement, reduced over ranks. */
typedef struct attn_row {
  int algo;                     /* index into k_algo_names */
  int64_t seq;                  /* N */
  weft_attn_sp_algo_t resolved; /* what ran (auto resolved; RING for local) */
  int ulysses;                  /* its Ulysses degree */
  double fwd_s, bwd_s;          /* median over iterations of the slowest rank */
  double fwd_min_s, bwd_min_s;  /* minimum of the same */
  uint64_t sent_fwd, sent_bwd;  /* busiest rank, one call */
  int64_t bad;                  /* ranks whose counters differ from their formula */
  weft_attn_sp_cost_t cost;     /* bytes (max over ranks), FLOPs, predicted times */
} attn_row_t;

static weft_attn_sp_config_t make_config(const attn_opts_t *o, int64_t seq, int algo) {
  weft_attn_sp_config_t c = {.batch = o->batch,
                             .heads = o->heads,
                             .kv_heads = o->kv_heads,
                             .head_dim = o->head_dim,
                             .seq_len = seq,
                             .scale = 0,
                             .causal = o->causal != 0,
                             .dtype = o->dtype,
                             .algo = k_sp_algo[algo],
                             .ulysses_degree = (int)o->ulysses};
  return c;
}

/* Writes `count` hashed values in [-1, 1) of the dtype to device memory `dst`. */
static weft_status_t fill_input(const attn_bench_t *b, void *dst, size_t count, uint32_t seed) {
  size_t esize = weft_dtype_size(b->opt->dtype);
  void *host = malloc(count * esize + 1);
  if (!host) return WEFT_ERR_NO_MEMORY;
  for (size_t i = 0; i < count; i++) {
    float value = (float)(weft_bench_hash(seed, (uint32_t)b->rank, i) >> 8) / 8388608.0f - 1.0f;
    weft_bench_word_put(host, esize, i, weft_bench_number_word(esize, value));
  }
  weft_status_t st = weft_device_copy(b->dev, dst, host, count * esize, WEFT_COPY_HOST_TO_DEVICE);
  free(host);
  return st;
}

static void bufs_free(const attn_bench_t *b, attn_bufs_t *a) {
  void *p[] = {a->q, a->k, a->v, a->dout, a->out, a->lse, a->delta, a->dq, a->dk, a->dv, a->pos};
  for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) weft_device_free(b->dev, p[i]);
  memset(a, 0, sizeof *a);
}

/* Operands for `tokens` slots per rank (n of a plan, or N for local). */
static weft_status_t bufs_alloc(const attn_bench_t *b, int64_t tokens, attn_bufs_t *a) {
  const attn_opts_t *o = b->opt;
  size_t nq = (size_t)(o->batch * tokens * o->heads * o->head_dim);
  size_t nk = (size_t)(o->batch * tokens * o->kv_heads * o->head_dim);
  size_t rows = (size_t)(o->batch * o->heads * tokens), es = weft_dtype_size(o->dtype);
  memset(a, 0, sizeof *a);
  struct {
    void **p;
    size_t bytes;
  } plan[] = {{&a->q, nq * es},
              {&a->k, nk * es},
              {&a->v, nk * es},
              {&a->dout, nq * es},
              {(void **)&a->out, nq * 4},
              {(void **)&a->lse, rows * 4},
              {(void **)&a->delta, rows * 4},
              {(void **)&a->dq, nq * 4},
              {(void **)&a->dk, nk * 4},
              {(void **)&a->dv, nk * 4},
              {(void **)&a->pos, (size_t)tokens * sizeof(int64_t)}};
  weft_status_t st = WEFT_OK;
  for (size_t i = 0; i < sizeof plan / sizeof plan[0] && st == WEFT_OK; i++)
    st = weft_device_alloc(b->dev, plan[i].bytes ? plan[i].bytes : 1, plan[i].p);
  if (st == WEFT_OK) st = fill_input(b, a->q, nq, 1);
  if (st == WEFT_OK) st = fill_input(b, a->k, nk, 2);
  if (st == WEFT_OK) st = fill_input(b, a->v, nk, 3);
  if (st == WEFT_OK) st = fill_input(b, a->dout, nq, 4);
  int64_t *pos = st == WEFT_OK ? malloc((size_t)tokens * sizeof *pos) : NULL;
  if (st == WEFT_OK && !pos) st = WEFT_ERR_NO_MEMORY;
  for (int64_t i = 0; st == WEFT_OK && i < tokens; i++) pos[i] = i;
  if (st == WEFT_OK)
    st = weft_device_copy(b->dev, a->pos, pos, (size_t)tokens * sizeof *pos,
                          WEFT_COPY_HOST_TO_DEVICE);
  free(pos);
  if (st != WEFT_OK) {
    WEFT_ERROR("bench", "attention: cannot set up the operands of %" PRId64 " tokens per rank",
               tokens);
    bufs_free(b, a);
  }
  return st;
}

/* One forward (bwd false) or backward of `plan`, or of the single-rank reference when plan is
 * NULL (shape = the whole sequence). */
static weft_status_t run_call(const attn_bench_t *b, weft_attn_sp_plan_t *plan,
                              const weft_attn_shape_t *shape, attn_bufs_t *a, bool bwd) {
  if (plan && !bwd) return weft_attn_sp_forward(plan, a->q, a->k, a->v, a->out, a->lse);
  if (plan)
    return weft_attn_sp_backward(plan, a->q, a->k, a->v, a->out, a->lse, a->dout, a->dq, a->dk,
                                 a->dv);
  if (!bwd) {
    WEFT_CHECK(
        weft_attn_block_forward(b->ctx, shape, a->q, a->k, a->v, a->pos, a->pos, a->out, a->lse));
    return weft_kernel_ctx_synchronize(b->ctx);
  }
  /* Like the plan's backward, the gradients are overwritten: zero, then accumulate. */
  size_t nq = (size_t)(shape->batch * shape->q_len * shape->heads * shape->head_dim);
  size_t nk = (size_t)(shape->batch * shape->kv_len * shape->kv_heads * shape->head_dim);
  WEFT_CHECK(weft_device_memset(b->dev, a->dq, 0, nq * 4));
  WEFT_CHECK(weft_device_memset(b->dev, a->dk, 0, nk * 4));
  WEFT_CHECK(weft_device_memset(b->dev, a->dv, 0, nk * 4));
  WEFT_CHECK(weft_attn_backward_delta(b->ctx, shape, a->out, a->dout, a->delta));
  WEFT_CHECK(weft_attn_block_backward(b->ctx, shape, a->q, a->k, a->v, a->pos, a->pos, a->dout,
                                      a->lse, a->delta, a->dq, a->dk, a->dv));
  return weft_kernel_ctx_synchronize(b->ctx);
}

static int compare_double(const void *x, const void *y) {
  double a = *(const double *)x, c = *(const double *)y;
  return (a > c) - (a < c);
}

/* Median (upper median for an even count) and minimum of t[count]; sorts t. */
static void median_min(double *t, long count, double *median_p, double *min_p) {
  qsort(t, (size_t)count, sizeof *t, compare_double);
  *median_p = t[count / 2];
  *min_p = t[0];
}

/* Warm-up, then the timed iterations; fills the times of `row` (slowest rank per iteration). */
static weft_status_t time_calls(const attn_bench_t *b, weft_attn_sp_plan_t *plan,
                                const weft_attn_shape_t *shape, attn_bufs_t *a, attn_row_t *row) {
  const attn_opts_t *o = b->opt;
  long n = o->iters;
  for (long i = 0; i < o->warmup; i++) {
    WEFT_CHECK(run_call(b, plan, shape, a, false));
    WEFT_CHECK(run_call(b, plan, shape, a, true));
  }
  /* ps[i] forward, ps[n + i] backward, in picoseconds (weft_comm has no f64 reduction). */
  int64_t *ps = malloc(2 * (size_t)n * sizeof *ps);
  double *t = malloc((size_t)n * sizeof *t);
  weft_status_t st = ps && t ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  for (long i = 0; st == WEFT_OK && i < 2 * n; i++) {
    bool bwd = i % 2 == 1;
    st = weft_comm_barrier(b->comm);
    double t0 = weft_time_now();
    if (st == WEFT_OK) st = run_call(b, plan, shape, a, bwd);
    ps[(bwd ? n : 0) + i / 2] = (int64_t)((weft_time_now() - t0) * 1e12);
  }
  if (st == WEFT_OK)
    st = weft_comm_allreduce(b->comm, ps, ps, 2 * (size_t)n, WEFT_DTYPE_I64, WEFT_REDUCE_MAX,
                             WEFT_MEM_HOST);
  for (int half = 0; st == WEFT_OK && half < 2; half++) {
    for (long i = 0; i < n; i++) t[i] = (double)ps[half * n + i] * 1e-12;
    if (half == 0) median_min(t, n, &row->fwd_s, &row->fwd_min_s);
    if (half == 1) median_min(t, n, &row->bwd_s, &row->bwd_min_s);
  }
  free(t);
  free(ps);
  return st;
}

/* Bytes of the last timed forward and backward: the busiest rank's, and how many ranks'
 * counters differ from their own formula. */
static weft_status_t check_bytes(const attn_bench_t *b, const weft_attn_sp_config_t *cfg,
                                 weft_attn_sp_plan_t *plan, attn_row_t *row) {
  uint64_t fwd = 0, bwd = 0;
  int64_t mine[2] = {0, 0}, bad = 0;
  if (plan) {
    weft_attn_sp_stats_t s = weft_attn_sp_plan_stats(plan);
    WEFT_CHECK(
        weft_attn_sp_cost_bytes(cfg, row->resolved, b->size, row->ulysses, b->rank, &fwd, &bwd));
    mine[0] = (int64_t)s.bytes_fwd;
    mine[1] = (int64_t)s.bytes_bwd;
    bad = s.bytes_fwd != fwd || s.bytes_bwd != bwd;
    if (bad)
      WEFT_ERROR("bench",
                 "attention %s N %" PRId64 ": rank %d sent %" PRIu64 " B forward and %" PRIu64
                 " B backward, the formula says %" PRIu64 " and %" PRIu64,
                 k_algo_names[row->algo], row->seq, b->rank, s.bytes_fwd, s.bytes_bwd, fwd, bwd);
  }
  WEFT_CHECK(
      weft_comm_allreduce(b->comm, mine, mine, 2, WEFT_DTYPE_I64, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  WEFT_CHECK(
      weft_comm_allreduce(b->comm, &bad, &bad, 1, WEFT_DTYPE_I64, WEFT_REDUCE_SUM, WEFT_MEM_HOST));
  row->sent_fwd = (uint64_t)mine[0];
  row->sent_bwd = (uint64_t)mine[1];
  row->bad = bad;
  return WEFT_OK;
}

static weft_status_t measure(const attn_bench_t *b, int algo, int64_t seq, attn_row_t *row) {
  const attn_opts_t *o = b->opt;
  weft_attn_sp_config_t cfg = make_config(o, seq, algo);
  weft_attn_sp_plan_t *plan = NULL;
  attn_bufs_t a = {0};
  memset(row, 0, sizeof *row);
  row->algo = algo;
  row->seq = seq;
  row->resolved = WEFT_ATTN_SP_RING;
  row->ulysses = 1;
  int ranks = 1;
  int64_t tokens = seq;
  weft_attn_shape_t shape = {.batch = o->batch,
                             .heads = o->heads,
                             .kv_heads = o->kv_heads,
                             .head_dim = o->head_dim,
                             .q_len = seq,
                             .kv_len = seq,
                             .scale = 1.0f / sqrtf((float)o->head_dim),
                             .causal = o->causal != 0,
                             .dtype = o->dtype};
  if (algo != ALGO_LOCAL) {
    WEFT_CHECK(weft_attn_sp_plan_create(b->comm, b->ctx, &cfg, &plan));
    row->resolved = weft_attn_sp_plan_algo(plan);
    row->ulysses = weft_attn_sp_plan_ulysses_degree(plan);
    tokens = weft_attn_sp_plan_layout(plan)->local;
    ranks = b->size;
  }
  weft_status_t st = bufs_alloc(b, tokens, &a);
  if (st == WEFT_OK) st = time_calls(b, plan, &shape, &a, row);
  if (st == WEFT_OK) st = check_bytes(b, &cfg, plan, row);
  if (st == WEFT_OK)
    st = weft_attn_sp_cost_predict(&cfg, row->resolved, ranks, row->ulysses, &b->machine,
                                   &row->cost);
  bufs_free(b, &a);
  weft_attn_sp_plan_destroy(plan);
  return st;
}

static double tflops(double flops, double seconds) {
  return seconds > 0 ? flops / seconds * 1e-12 : 0;
}

static void print_header(const attn_bench_t *b) {
  const attn_opts_t *o = b->opt;
  const weft_attn_sp_machine_t *m = &b->machine;
  FILE *t = b->table;
  fprintf(t,
          "# weft bench attention: %d rank(s), device %s (%s), dtype %s, %d CPU thread(s) per "
          "rank\n",
          b->size, weft_device_kind_name(b->dev->kind), b->dev->name, weft_dtype_name(o->dtype),
          weft_kernels_cpu_threads());
  fprintf(t, "# B %ld H %ld Hkv %ld d %ld causal %ld; %ld iteration(s) after %ld warm-up\n",
          o->batch, o->heads, o->kv_heads, o->head_dim, o->causal, o->iters, o->warmup);
  fprintf(t,
          "# machine (weft_attn_sp_machine_measure): link %.3f GB/s, latency %.2f us, kernel %.1f "
          "GFLOP/s per rank\n",
          m->bandwidth_Bps * 1e-9, m->latency_s * 1e6, m->flops_per_s * 1e-9);
  fprintf(t,
          "# time = median over iterations of the slowest rank (barrier before each call); "
          "TF/s = useful FLOPs / time (fwd 4BHd*pairs, bwd 2.5x)\n"
          "# sent = busiest rank's bytes per call (counters), formula = weft_attn_sp_cost_bytes "
          "(* = a rank differs); pred = cost model; ratio = (fwd+bwd) / (local/P)\n");
  fprintf(t, "# %9s %7s %9s %9s %7s %7s %13s %13s %13s %13s %9s %9s %6s\n", "algo", "N", "fwd(ms)",
          "bwd(ms)", "fwdTF/s", "bwdTF/s", "sent fwd(B)", "formula", "sent bwd(B)", "formula",
          "pred fwd", "pred bwd", "ratio");
}

static void print_row(const attn_bench_t *b, const attn_row_t *r, double local_s) {
  const attn_opts_t *o = b->opt;
  const weft_attn_sp_machine_t *m = &b->machine;
  double total = r->fwd_s + r->bwd_s;
  bool have_ratio = r->algo != ALGO_LOCAL && local_s > 0;
  double ratio = have_ratio ? total / (local_s / b->size) : 0;
  char name[32], resolved[24];
  if (r->resolved == WEFT_ATTN_SP_HYBRID)
    snprintf(resolved, sizeof resolved, "hybrid:%d", r->ulysses);
  else
    snprintf(resolved, sizeof resolved, "%s", weft_attn_sp_algo_name(r->resolved));
  snprintf(name, sizeof name, "%s%s", r->algo == ALGO_AUTO ? "auto=" : "",
           r->algo == ALGO_LOCAL ? "local" : resolved);
  char ratio_text[16] = "-";
  if (have_ratio) snprintf(ratio_text, sizeof ratio_text, "%.3f", ratio);
  fprintf(b->table,
          "  %9s %7" PRId64 " %9.3f %9.3f %7.3f %7.3f %13" PRIu64 "%c%13" PRIu64 " %13" PRIu64
          "%c%13" PRIu64 " %9.3f %9.3f %6s\n",
          name, r->seq, r->fwd_s * 1e3, r->bwd_s * 1e3, tflops(r->cost.flops_fwd, r->fwd_s),
          tflops(r->cost.flops_bwd, r->bwd_s), r->sent_fwd, r->bad ? '*' : ' ',
          r->cost.bytes_fwd_max, r->sent_bwd, r->bad ? '*' : ' ', r->cost.bytes_bwd_max,
          r->cost.time_fwd_s * 1e3, r->cost.time_bwd_s * 1e3, ratio_text);
  if (!o->json) return;
  char ratio_json[32] = "null", local_json[32] = "null";
  if (have_ratio) snprintf(ratio_json, sizeof ratio_json, "%.6g", ratio);
  if (local_s > 0) snprintf(local_json, sizeof local_json, "%.6g", local_s * 1e3);
  printf(
      "{\"algo\":\"%s\",\"resolved\":\"%s\",\"ulysses_degree\":%d,\"ranks\":%d,"
      "\"device\":\"%s\",\"dtype\":\"%s\",\"batch\":%ld,\"seq\":%" PRId64
      ",\"heads\":%ld,\"kv_heads\":%ld,\"head_dim\":%ld,\"causal\":%ld,\"iters\":%ld,"
      "\"warmup\":%ld,\"fwd_ms\":%.6g,\"bwd_ms\":%.6g,\"fwd_min_ms\":%.6g,\"bwd_min_ms\":%.6g,"
      "\"flops_fwd\":%.17g,\"flops_bwd\":%.17g,\"fwd_tflops\":%.6g,\"bwd_tflops\":%.6g,"
      "\"sent_fwd_bytes_max\":%" PRIu64 ",\"sent_bwd_bytes_max\":%" PRIu64
      ",\"formula_fwd_bytes_max\":%" PRIu64 ",\"formula_bwd_bytes_max\":%" PRIu64
      ",\"bytes_mismatch_ranks\":%" PRId64
      ",\"pred_fwd_ms\":%.6g,\"pred_bwd_ms\":%.6g,\"local_ms\":%s,\"ratio_to_ideal\":%s,"
      "\"link_gbps\":%.6g,\"latency_us\":%.6g,\"kernel_gflops\":%.6g}\n",
      k_algo_names[r->algo], r->algo == ALGO_LOCAL ? "local" : weft_attn_sp_algo_name(r->resolved),
      r->ulysses, b->size, weft_device_kind_name(b->dev->kind), weft_dtype_name(o->dtype), o->batch,
      r->seq, o->heads, o->kv_heads, o->head_dim, o->causal, o->iters, o->warmup, r->fwd_s * 1e3,
      r->bwd_s * 1e3, r->fwd_min_s * 1e3, r->bwd_min_s * 1e3, r->cost.flops_fwd, r->cost.flops_bwd,
      tflops(r->cost.flops_fwd, r->fwd_s), tflops(r->cost.flops_bwd, r->bwd_s), r->sent_fwd,
      r->sent_bwd, r->cost.bytes_fwd_max, r->cost.bytes_bwd_max, r->bad, r->cost.time_fwd_s * 1e3,
      r->cost.time_bwd_s * 1e3, local_json, ratio_json, m->bandwidth_Bps * 1e-9, m->latency_s * 1e6,
      m->flops_per_s * 1e-9);
}

static weft_status_t attn_run(weft_session_t *s, const attn_opts_t *o) {
  attn_bench_t b = {.opt = o,
                    .comm = s->world,
                    .dev = s->boot.device,
                    .rank = s->boot.world_rank,
                    .size = s->boot.world_size,
                    .table = o->json ? stderr : stdout};
  WEFT_CHECK(weft_kernel_ctx_create(b.dev, NULL, &b.ctx));
  weft_attn_sp_config_t first = make_config(o, o->seqs[0], ALGO_RING);
  weft_status_t st = weft_attn_sp_machine_measure(b.comm, b.ctx, &first, &b.machine);
  if (st == WEFT_OK && b.rank == 0) print_header(&b);
  int64_t bad = 0;
  for (int q = 0; q < o->seq_count && st == WEFT_OK; q++) {
    double local_s = 0; /* fwd + bwd of local, once measured for this N */
    for (int algo = 0; algo < ALGO_COUNT && st == WEFT_OK; algo++) {
      if (!(o->algos & (1u << algo))) continue;
      attn_row_t row;
      st = measure(&b, algo, o->seqs[q], &row);
      if (st != WEFT_OK) break;
      if (algo == ALGO_LOCAL) local_s = row.fwd_s + row.bwd_s;
      bad += row.bad;
      if (b.rank == 0) print_row(&b, &row, local_s);
      fflush(stdout);
      fflush(b.table);
    }
  }
  weft_kernel_ctx_destroy(b.ctx);
  if (st == WEFT_OK && bad > 0) {
    if (b.rank == 0)
      WEFT_ERROR("bench", "attention: byte counters differ from the formula (rows marked *)");
    st = WEFT_ERR_CORRUPT;
  }
  return st;
}

static const weft_cli_command_t k_command = {
    "bench attention",
    "Sequence-parallel softmax attention: time, bytes and cost model per algorithm.",
    "[flags]   (under mpirun/srun; results on rank 0)", NULL};

static bool choose(const char *flag, const char *value, const char *const *names, int count,
                   int *index_p) {
  if (weft_bench_parse_choice(value, names, count, index_p) == WEFT_OK) return true;
  fprintf(stderr, "weft bench attention: --%s: unknown value '%s'\n", flag, value);
  return false;
}

/* "4K,8192" -> seqs; false (with a message) on an empty or malformed item. */
static bool parse_seqs(const char *text, attn_opts_t *o) {
  char item[64];
  o->seq_count = 0;
  for (const char *p = text;; p++) {
    size_t len = strcspn(p, ",");
    size_t bytes = 0;
    if (len == 0 || len >= sizeof item || o->seq_count == MAX_SEQS) {
      fprintf(stderr, "weft bench attention: --seq: expected up to %d lengths such as 4K,8K\n",
              MAX_SEQS);
      return false;
    }
    memcpy(item, p, len);
    item[len] = '\0';
    if (weft_cli_parse_size(item, &bytes) != WEFT_OK || bytes < 1 || bytes > INT32_MAX) {
      fprintf(stderr, "weft bench attention: --seq: bad length '%s'\n", item);
      return false;
    }
    o->seqs[o->seq_count++] = (int64_t)bytes;
    p += len;
    if (*p == '\0') return true;
  }
}

int weft_bench_attention(int argc, char **argv) {
  attn_opts_t o = {.batch = 1,
                   .heads = 8,
                   .kv_heads = 0,
                   .head_dim = 64,
                   .causal = 1,
                   .ulysses = 0,
                   .iters = 5,
                   .warmup = 1};
  const char *algos = "ulysses,ring,tokenring,hybrid", *seqs = "4K", *dtype = "f32";
  const char *device = "auto";
  const weft_cli_flag_t flags[] = {
      {"algo", 0, WEFT_CLI_STRING, &algos, "LIST",
       "local,ulysses,ring,tokenring,hybrid,auto (ulysses,ring,tokenring,hybrid)"},
      {"seq", 0, WEFT_CLI_STRING, &seqs, "LIST", "global sequence lengths, e.g. 4K,8K (4K)"},
      {"batch", 0, WEFT_CLI_INT, &o.batch, "B", "batch (1)"},
      {"heads", 0, WEFT_CLI_INT, &o.heads, "H", "query heads (8)"},
      {"kv-heads", 0, WEFT_CLI_INT, &o.kv_heads, "H", "key/value heads (0 = --heads)"},
      {"head-dim", 0, WEFT_CLI_INT, &o.head_dim, "D", "head dimension (64)"},
      {"causal", 0, WEFT_CLI_INT, &o.causal, "0|1", "causal mask and zigzag layout (1)"},
      {"ulysses-degree", 0, WEFT_CLI_INT, &o.ulysses, "U", "hybrid's Ulysses group (0 = auto)"},
      {"iters", 'n', WEFT_CLI_INT, &o.iters, "N", "timed forward+backward pairs (5)"},
      {"warmup", 'w', WEFT_CLI_INT, &o.warmup, "N", "untimed pairs first (1)"},
      {"device", 0, WEFT_CLI_STRING, &device, "auto|cpu|cuda", "device each rank opens (auto)"},
      {"dtype", 0, WEFT_CLI_STRING, &dtype, "f32|bf16", "q, k, v, dout type (f32; bf16 on CUDA)"},
      {"json", 0, WEFT_CLI_BOOL, &o.json, NULL, "JSON line per row on stdout; table: stderr"},
  };
  bool help = false;
  if (weft_cli_parse(&k_command, flags, sizeof flags / sizeof flags[0], argc, argv, &help) !=
      WEFT_OK)
    return WEFT_EXIT_USAGE;
  if (help) return WEFT_EXIT_OK;
  const char *bad = NULL;
  int bad_len = 0, dtype_index = 0, device_index = 0;
  if (weft_bench_parse_list(algos, k_algo_names, ALGO_COUNT, &o.algos, &bad, &bad_len) != WEFT_OK) {
    fprintf(stderr,
            "weft bench attention: --algo: unknown algorithm '%.*s' (expected a comma "
            "list of local, ulysses, ring, tokenring, hybrid, auto)\n",
            bad_len, bad);
    return WEFT_EXIT_USAGE;
  }
  if (!parse_seqs(seqs, &o) || !choose("dtype", dtype, k_dtype_names, 2, &dtype_index) ||
      !choose("device", device, k_device_names, 3, &device_index))
    return WEFT_EXIT_USAGE;
  o.dtype = dtype_index ? WEFT_DTYPE_BF16 : WEFT_DTYPE_F32;
  if (o.kv_heads == 0) o.kv_heads = o.heads;
  const char *problem = NULL;
  if (o.batch < 1 || o.heads < 1 || o.kv_heads < 1 || o.head_dim < 1)
    problem = "--batch, --heads, --kv-heads and --head-dim must be >= 1";
  else if (o.heads % o.kv_heads != 0)
    problem = "--heads must be a multiple of --kv-heads";
  else if (o.causal != 0 && o.causal != 1)
    problem = "--causal must be 0 or 1";
  else if (o.iters < 1 || o.warmup < 0)
    problem = "--iters must be >= 1 and --warmup >= 0";
  else if (o.ulysses < 0)
    problem = "--ulysses-degree must be >= 0";
  else if (o.dtype == WEFT_DTYPE_BF16 && device_index == 1)
    problem = "--dtype bf16 needs the CUDA device";
  if (problem) {
    fprintf(stderr, "weft bench attention: %s (see weft bench attention --help)\n", problem);
    return WEFT_EXIT_USAGE;
  }
  weft_session_t session;
  weft_session_start(&session, "bench attention", &argc, &argv, device);
  return weft_session_end(&session, attn_run(&session, &o));
}
