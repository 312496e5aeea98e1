/* `weft bench linear`: the state hand-off of sequence-parallel linear attention, and the whole
 * layer, for the three algorithms of parallel/linear_sp.h.
 *
 * Part 1, scan latency: for each state size S (bytes of one rank's [B,H,dk,dv] f32 state),
 * the exclusive forward scan with the linear-attention combine y = diag(gamma) y_prev + x:
 *   allscan    weft_allscan, K blocks (--scan-blocks, 0 = automatic)
 *   allgather  weft_comm_allgather of every rank's state (+ its [dk] decay rows), then the
 *              prefix folded locally (LASP-2)
 *   ring       the whole state hop by hop, receive-combine-send, no pipelining (LASP-1)
 * time = the slowest rank's mean per scan over --iters after --warmup. Bytes sent per rank from
 * weft_comm's counters next to the formulas: allscan and ring S (the last rank 0: the maximum
 * is reported), allgather (P-1) * (S + S/dv) (its state and decays to every other rank).
 * Latency model (docs/linear-attention.md): allscan tau(S) (1 + (P-1)/K), ring (P-1) tau(S),
 * allgather about (P-1)/P of P states through the all-gather algorithm of the MPI library.
 *
 * Part 2, layer: forward + backward of gated linear attention with --batch, --heads, --dk,
 * --dv over --tokens N split over the P ranks, for each algorithm (zeco twice: with the
 * All-Scan behind the compute, and zeco-seq with it after the compute), next to the ideal
 * t_1 / P, where t_1 is the same layer on ONE rank with all N tokens (measured on every rank
 * at once over a communicator of size 1, so every rank has the same share of the node as in
 * the parallel run). ratio = t_P / (t_1 / P); the target for zeco at P = 2 is <= 1.15.
 * scan(ms) is the slowest rank's time in the state hand-off per forward+backward, exposed(ms)
 * the part of it the rank waited for (weft_linear_sp_plan_stats): equal without overlap,
 * smaller when zeco's progress thread hides the All-Scan behind the compute.
 *
 * Physical limit: on one node the hand-off moves states through shared memory (memory
 * bandwidth); across nodes, the NIC. The layer is compute-bound: its limit is t_1 / P.
 *
 * Not verified here: the results (tests/parallel and tests/ref check them); inputs are
 * constants. */
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
#include "weft/allscan.h"
#include "weft/check.h"
#include "weft/kernel_ctx.h"
#include "weft/linear_sp.h"
#include "weft/log.h"
#include "weft/timer.h"

#define BENCH_RING_TAG 4102 /* apart from linear_sp's ring tag */
#define BENCH_DV       64   /* row length of the state in part 1: gamma has one entry per row */

typedef struct lin_opts {
  size_t min_bytes, max_bytes;
  long iters, warmup, scan_blocks, batch, tokens, heads, dk, dv;
  bool json, no_layer, no_scan;
} lin_opts_t;

typedef struct lin_bench {
  const lin_opts_t *opt;
  weft_comm_t *comm;
  const weft_device_t *dev;
  int rank, size;
  FILE *table;
} lin_bench_t;

/* ---- part 1: scans -------------------------------------------------------------------- */

enum { SCAN_ALLSCAN, SCAN_ALLGATHER, SCAN_RING, SCAN_COUNT };
static const char *const k_scan_names[SCAN_COUNT] = {"allscan", "allgather", "ring"};

typedef struct scan_bufs {
  size_t count, rows; /* state elements, rows = count / BENCH_DV */
  float *local, *result, *gamma, *pack, *all, *tmp;
} scan_bufs_t;

static weft_status_t scan_combine(void *user, size_t offset, size_t len, const void *incoming,
                                  const void *local, void *result) {
  const float *gamma = user, *in = incoming, *x = local;
  float *y = result;
  for (size_t i = 0; i < len; i++) y[i] = gamma[(offset + i) / BENCH_DV] * in[i] + x[i];
  return WEFT_OK;
}

static weft_status_t scan_once(const lin_bench_t *b, int algo, scan_bufs_t *s) {
  size_t n = s->count;
  switch (algo) {
  case SCAN_ALLSCAN: {
    weft_allscan_op_t op = {WEFT_DTYPE_F32, scan_combine, s->gamma};
    return weft_allscan(b->comm, s->local, s->result, n, &op, WEFT_ALLSCAN_FORWARD,
                        WEFT_ALLSCAN_EXCLUSIVE, (size_t)b->opt->scan_blocks, WEFT_MEM_HOST);
  }
  case SCAN_ALLGATHER: {
    size_t per = n + s->rows;
    memcpy(s->pack, s->local, n * sizeof(float));
    memcpy(s->pack + n, s->gamma, s->rows * sizeof(float));
    WEFT_CHECK(weft_comm_allgather(b->comm, s->pack, s->all, per, WEFT_DTYPE_F32, WEFT_MEM_HOST));
    memset(s->result, 0, n * sizeof(float));
    for (int q = 0; q < b->rank; q++) {
      const float *x = s->all + (size_t)q * per;
      scan_combine((void *)(x + n), 0, n, s->result, x, s->result);
    }
    return WEFT_OK;
  }
  default: {
    /* Rank 0 sends its own state as is (what enters rank 1 is x_0), like the All-Scan. */
    weft_comm_req_t req;
    const float *send = s->local;
    if (b->rank == 0) {
      memset(s->result, 0, n * sizeof(float));
    } else {
      WEFT_CHECK(weft_comm_irecv(b->comm, s->result, n, WEFT_DTYPE_F32, b->rank - 1, BENCH_RING_TAG,
                                 WEFT_MEM_HOST, &req));
      WEFT_CHECK(weft_comm_wait(&req));
    }
    if (b->rank == b->size - 1) return WEFT_OK;
    if (b->rank > 0) {
      scan_combine(s->gamma, 0, n, s->result, s->local, s->tmp);
      send = s->tmp;
    }
    WEFT_CHECK(weft_comm_isend(b->comm, send, n, WEFT_DTYPE_F32, b->rank + 1, BENCH_RING_TAG,
                               WEFT_MEM_HOST, &req));
    return weft_comm_wait(&req);
  }
  }
}

/* Slowest rank's value of x (seconds) and the largest byte count: one all-reduce. */
static weft_status_t reduce_max(const lin_bench_t *b, double *seconds, uint64_t *bytes) {
  int64_t mx[2] = {(int64_t)(*seconds * 1e12), (int64_t)*bytes};
  WEFT_CHECK(
      weft_comm_allreduce(b->comm, mx, mx, 2, WEFT_DTYPE_I64, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  *seconds = (double)mx[0] * 1e-12;
  *bytes = (uint64_t)mx[1];
  return WEFT_OK;
}

static uint64_t sent_total(weft_comm_t *comm) {
  const weft_comm_peer_bytes_t *t = weft_comm_total_bytes(comm);
  uint64_t sum = 0;
  for (int p = 0; p < weft_comm_size(comm); p++) sum += t[p].sent;
  return sum;
}

static weft_status_t scan_measure(const lin_bench_t *b, int algo, scan_bufs_t *s) {
  const lin_opts_t *o = b->opt;
  for (long i = 0; i < o->warmup; i++) WEFT_CHECK(scan_once(b, algo, s));
  WEFT_CHECK(weft_comm_barrier(b->comm));
  uint64_t sent0 = sent_total(b->comm);
  /* Latency, not throughput: back to back, scans would overlap along the chain (rank 0 starts
   * the next one while the last still waits), which hides the ring's (P-1) hops. Each scan
   * starts from a barrier and counts until this rank is done; the slowest rank's mean is the
   * scan's latency. The barriers themselves are outside the timed spans. */
  double seconds = 0;
  for (long i = 0; i < o->iters; i++) {
    WEFT_CHECK(weft_comm_barrier(b->comm));
    double t0 = weft_time_now();
    WEFT_CHECK(scan_once(b, algo, s));
    seconds += weft_time_now() - t0;
  }
  seconds /= (double)o->iters;
  uint64_t sent = (sent_total(b->comm) - sent0) / (uint64_t)o->iters;
  WEFT_CHECK(reduce_max(b, &seconds, &sent));
  size_t bytes = s->count * sizeof(float);
  uint64_t p = (uint64_t)b->size;
  uint64_t expect = p == 1                   ? 0
                    : algo == SCAN_ALLGATHER ? (p - 1) * (bytes + s->rows * sizeof(float))
                                             : bytes;
  if (b->rank != 0) return WEFT_OK;
  fprintf(b->table, "  %10s %12zu %11.2f %14" PRIu64 "%c%13" PRIu64 "\n", k_scan_names[algo], bytes,
          seconds * 1e6, sent, sent == expect ? ' ' : '*', expect);
  if (o->json)
    printf(
        "{\"part\":\"scan\",\"algo\":\"%s\",\"state_bytes\":%zu,\"ranks\":%d,\"blocks\":%ld,"
        "\"iters\":%ld,\"time_us\":%.4f,\"sent_bytes_max\":%" PRIu64
        ",\"expected_sent_bytes\":%" PRIu64 "}\n",
        k_scan_names[algo], bytes, b->size, o->scan_blocks, o->iters, seconds * 1e6, sent, expect);
  return WEFT_OK;
}

static weft_status_t scan_sweep(const lin_bench_t *b) {
  const lin_opts_t *o = b->opt;
  size_t max_count = o->max_bytes / sizeof(float);
  max_count = (max_count + BENCH_DV - 1) / BENCH_DV * BENCH_DV;
  size_t max_rows = max_count / BENCH_DV, per = max_count + max_rows;
  scan_bufs_t s = {0};
  weft_status_t st = WEFT_OK;
  s.local = malloc(max_count * sizeof(float));
  s.result = malloc(max_count * sizeof(float));
  s.tmp = malloc(max_count * sizeof(float));
  s.gamma = malloc(max_rows * sizeof(float));
  s.pack = malloc(per * sizeof(float));
  s.all = malloc(per * (size_t)b->size * sizeof(float));
  if (!s.local || !s.result || !s.tmp || !s.gamma || !s.pack || !s.all) st = WEFT_ERR_NO_MEMORY;
  for (size_t i = 0; st == WEFT_OK && i < max_count; i++) s.local[i] = 1.0f;
  for (size_t i = 0; st == WEFT_OK && i < max_rows; i++) s.gamma[i] = 0.5f;
  if (st == WEFT_OK && b->rank == 0)
    fprintf(b->table,
            "# part 1: exclusive forward scan of one [rows, %d] f32 state per rank (K = %ld, 0 = "
            "auto)\n# %10s %12s %11s %15s %13s\n",
            BENCH_DV, o->scan_blocks, "algo", "state(B)", "time(us)", "sent(B) max", "formula");
  for (size_t bytes = o->min_bytes; st == WEFT_OK && bytes <= o->max_bytes; bytes *= 2) {
    s.count = (bytes / sizeof(float) + BENCH_DV - 1) / BENCH_DV * BENCH_DV;
    s.rows = s.count / BENCH_DV;
    for (int a = 0; a < SCAN_COUNT && st == WEFT_OK; a++) st = scan_measure(b, a, &s);
  }
  free(s.local), free(s.result), free(s.tmp), free(s.gamma), free(s.pack), free(s.all);
  return st;
}

/* ---- part 2: the layer ---------------------------------------------------------------- */

typedef struct layer_bufs {
  float *q, *k, *v, *g, *dout, *out, *s_in, *fs, *dq, *dk, *dv, *dg;
} layer_bufs_t;

static weft_status_t layer_alloc(const weft_device_t *dev, const weft_gla_shape_t *s,
                                 layer_bufs_t *L) {
  size_t nk = (size_t)(s->batch * s->tokens * s->heads * s->dk);
  size_t nv = (size_t)(s->batch * s->tokens * s->heads * s->dv);
  size_t ns = (size_t)(s->batch * s->heads * s->dk * s->dv);
  float **p = (float **)L;
  const size_t counts[] = {nk, nk, nv, nk, nv, nv, ns, ns, nk, nk, nv, nk};
  const float fill[] = {0.01f, 0.01f, 0.01f, -0.01f, 0.01f, 0, 0, 0, 0, 0, 0, 0};
  float *host = malloc((nk > nv ? nk : nv) * sizeof(float) + sizeof(float));
  if (!host) return WEFT_ERR_NO_MEMORY;
  weft_status_t st = WEFT_OK;
  for (size_t i = 0; i < sizeof counts / sizeof counts[0] && st == WEFT_OK; i++) {
    size_t bytes = (counts[i] ? counts[i] : 1) * sizeof(float);
    st = weft_device_alloc(dev, bytes, (void **)&p[i]);
    for (size_t e = 0; e < counts[i]; e++) host[e] = fill[i];
    if (st == WEFT_OK)
      st = weft_device_copy(dev, p[i], host, counts[i] * sizeof(float), WEFT_COPY_HOST_TO_DEVICE);
  }
  free(host);
  return st;
}

static void layer_free(const weft_device_t *dev, layer_bufs_t *L) {
  float **p = (float **)L;
  for (size_t i = 0; i < sizeof *L / sizeof(float *); i++) weft_device_free(dev, p[i]);
}

/* Mean seconds per forward + backward on `comm` (this rank's time), and bytes sent per
 * forward + backward. */
/* One row of part 2: an algorithm, and for zeco whether the scan runs behind the compute. */
typedef struct layer_algo {
  const char *name;
  weft_linear_sp_algo_t algo;
  bool overlap;
} layer_algo_t;

static weft_status_t layer_time(const lin_bench_t *b, weft_comm_t *comm, weft_kernel_ctx_t *ctx,
                                const weft_gla_shape_t *shape, const layer_algo_t *algo,
                                double *seconds_p, uint64_t *sent_p,
                                weft_linear_sp_stats_t *stats_p) {
  const lin_opts_t *o = b->opt;
  layer_bufs_t L = {0};
  weft_linear_sp_plan_t *plan = NULL;
  weft_status_t st = layer_alloc(b->dev, shape, &L);
  if (st == WEFT_OK)
    st = weft_linear_sp_plan_create(comm, ctx, shape, algo->algo, (size_t)o->scan_blocks, &plan);
  if (st == WEFT_OK) weft_linear_sp_plan_set_overlap(plan, algo->overlap);
  for (long i = 0; st == WEFT_OK && i < o->warmup + o->iters; i++) {
    if (i == o->warmup) {
      st = weft_comm_barrier(comm);
      *sent_p = sent_total(comm);
      *seconds_p = weft_time_now();
      weft_linear_sp_plan_stats_reset(plan);
    }
    if (st == WEFT_OK) st = weft_linear_sp_forward(plan, L.q, L.k, L.v, L.g, L.out, L.s_in, L.fs);
    if (st == WEFT_OK)
      st =
          weft_linear_sp_backward(plan, L.q, L.k, L.v, L.g, L.dout, L.s_in, L.dq, L.dk, L.dv, L.dg);
  }
  if (st == WEFT_OK) {
    *seconds_p = (weft_time_now() - *seconds_p) / (double)o->iters;
    *sent_p = (sent_total(comm) - *sent_p) / (uint64_t)o->iters;
    *stats_p = weft_linear_sp_plan_stats(plan);
    stats_p->scan_s /= (double)o->iters;
    stats_p->exposed_s /= (double)o->iters;
  }
  weft_linear_sp_plan_destroy(plan);
  layer_free(b->dev, &L);
  return st;
}

/* Most bytes any rank sends in one forward + backward (docs/linear-attention.md): zeco and
 * ring hand one state S on forward (not the last rank) and one on backward (not the first),
 * so a middle rank sends 2S and with P = 2 each rank S; lasp2 all-gathers (state, decay rows)
 * twice, (P-1) (S + S/dv) per all-gather. */
static uint64_t layer_expected_sent_max(const lin_bench_t *b, weft_linear_sp_algo_t algo) {
  const lin_opts_t *o = b->opt;
  uint64_t p = (uint64_t)b->size;
  uint64_t rows = (uint64_t)(o->batch * o->heads * o->dk), state = rows * (uint64_t)o->dv * 4;
  if (p == 1) return 0;
  if (algo == WEFT_LINEAR_SP_LASP2) return 2 * (p - 1) * (state + rows * 4);
  return p == 2 ? state : 2 * state;
}

static weft_status_t layer_sweep(const lin_bench_t *b) {
  const lin_opts_t *o = b->opt;
  weft_kernel_ctx_t *ctx = NULL;
  weft_comm_t *self = NULL;
  WEFT_CHECK(weft_kernel_ctx_create(b->dev, NULL, &ctx));
  weft_status_t st = weft_comm_split(b->comm, b->rank, 0, "self", &self);
  int64_t base = o->tokens / b->size, extra = o->tokens % b->size;
  weft_gla_shape_t shape = {.batch = o->batch,
                            .tokens = base + (b->rank < extra ? 1 : 0),
                            .heads = o->heads,
                            .dk = o->dk,
                            .dv = o->dv,
                            .scale = (float)(1.0 / sqrt((double)o->dk))};
  weft_gla_shape_t whole = shape;
  whole.tokens = o->tokens;
  double t1 = 0;
  uint64_t unused = 0;
  static const layer_algo_t algos[] = {{"zeco", WEFT_LINEAR_SP_ZECO, true},
                                       {"zeco-seq", WEFT_LINEAR_SP_ZECO, false},
                                       {"lasp2", WEFT_LINEAR_SP_LASP2, false},
                                       {"ring", WEFT_LINEAR_SP_RING, false}};
  weft_linear_sp_stats_t stats;
  if (st == WEFT_OK) st = layer_time(b, self, ctx, &whole, &algos[0], &t1, &unused, &stats);
  if (st == WEFT_OK) st = reduce_max(b, &t1, &unused);
  if (st == WEFT_OK && b->rank == 0) {
    fprintf(
        b->table,
        "#\n# part 2: layer forward+backward, B %ld N %ld H %ld dk %ld dv %ld; t_1 = one rank "
        "with all N tokens: %.3f ms, ideal t_1/P = %.3f ms\n# %10s %11s %9s %15s %13s %9s %12s\n",
        o->batch, o->tokens, o->heads, o->dk, o->dv, t1 * 1e3, t1 * 1e3 / b->size, "algo",
        "time(ms)", "ratio", "sent(B) max", "formula", "scan(ms)", "exposed(ms)");
  }
  for (size_t a = 0; a < sizeof algos / sizeof algos[0] && st == WEFT_OK; a++) {
    double t = 0;
    uint64_t sent = 0;
    st = layer_time(b, b->comm, ctx, &shape, &algos[a], &t, &sent, &stats);
    if (st == WEFT_OK) st = reduce_max(b, &t, &sent);
    /* The slowest rank's hand-off time and its exposed part (the byte slot is unused). */
    uint64_t none = 0;
    if (st == WEFT_OK) st = reduce_max(b, &stats.scan_s, &none);
    if (st == WEFT_OK) st = reduce_max(b, &stats.exposed_s, &none);
    if (st != WEFT_OK || b->rank != 0) continue;
    double ratio = t1 > 0 ? t / (t1 / b->size) : 0;
    const char *name = algos[a].name;
    uint64_t expect = layer_expected_sent_max(b, algos[a].algo);
    fprintf(b->table, "  %10s %11.3f %9.3f %15" PRIu64 "%c%13" PRIu64 " %9.3f %12.3f\n", name,
            t * 1e3, ratio, sent, sent == expect ? ' ' : '*', expect, stats.scan_s * 1e3,
            stats.exposed_s * 1e3);
    if (o->json)
      printf(
          "{\"part\":\"layer\",\"algo\":\"%s\",\"ranks\":%d,\"batch\":%ld,\"tokens\":%ld,"
          "\"heads\":%ld,\"dk\":%ld,\"dv\":%ld,\"blocks\":%ld,\"iters\":%ld,\"time_ms\":%.4f,"
          "\"single_rank_ms\":%.4f,\"ratio_to_ideal\":%.4f,\"sent_bytes_max\":%" PRIu64
          ",\"expected_sent_bytes_max\":%" PRIu64 ",\"scan_ms\":%.4f,\"exposed_scan_ms\":%.4f}\n",
          name, b->size, o->batch, o->tokens, o->heads, o->dk, o->dv, o->scan_blocks, o->iters,
          t * 1e3, t1 * 1e3, ratio, sent, expect, stats.scan_s * 1e3, stats.exposed_s * 1e3);
  }
  weft_comm_destroy(self);
  weft_kernel_ctx_destroy(ctx);
  return st;
}

static weft_status_t lin_run(weft_session_t *s, const lin_opts_t *o) {
  lin_bench_t b = {.opt = o,
                   .comm = s->world,
                   .dev = s->boot.device,
                   .rank = s->boot.world_rank,
                   .size = s->boot.world_size,
                   .table = o->json ? stderr : stdout};
  if (b.rank == 0)
    fprintf(b.table,
            "# weft bench linear: %d rank(s), device %s, %ld iteration(s) after %ld "
            "warm-up; time = slowest rank's mean\n",
            b.size, weft_device_kind_name(b.dev->kind), o->iters, o->warmup);
  if (!o->no_scan) WEFT_CHECK(scan_sweep(&b));
  if (!o->no_layer) WEFT_CHECK(layer_sweep(&b));
  fflush(stdout);
  fflush(b.table);
  return WEFT_OK;
}

static const weft_cli_command_t k_command = {
    "bench linear",
    "All-Scan vs all-gather vs ring state hand-off, and the linear-attention layer.",
    "[flags]   (under mpirun/srun; results on rank 0)", NULL};

int weft_bench_linear(int argc, char **argv) {
  lin_opts_t o = {64u << 10, 16u << 20, 20, 3, 0, 1, 16384, 4, 64, 64, false, false, false};
  const char *device = "auto";
  const weft_cli_flag_t flags[] = {
      {"minbytes", 'b', WEFT_CLI_SIZE, &o.min_bytes, "SIZE", "smallest state, part 1 (64K)"},
      {"maxbytes", 'e', WEFT_CLI_SIZE, &o.max_bytes, "SIZE", "largest state, part 1 (16M)"},
      {"iters", 'n', WEFT_CLI_INT, &o.iters, "N", "timed repetitions (20)"},
      {"warmup", 'w', WEFT_CLI_INT, &o.warmup, "N", "untimed repetitions first (3)"},
      {"scan-blocks", 0, WEFT_CLI_INT, &o.scan_blocks, "K", "All-Scan blocks (0 = automatic)"},
      {"batch", 0, WEFT_CLI_INT, &o.batch, "B", "layer batch (1)"},
      {"tokens", 0, WEFT_CLI_INT, &o.tokens, "N", "layer sequence length, all ranks (16384)"},
      {"heads", 0, WEFT_CLI_INT, &o.heads, "H", "layer heads (4)"},
      {"dk", 0, WEFT_CLI_INT, &o.dk, "D", "key width (64)"},
      {"dv", 0, WEFT_CLI_INT, &o.dv, "D", "value width (64)"},
      {"no-scan", 0, WEFT_CLI_BOOL, &o.no_scan, NULL, "skip part 1"},
      {"no-layer", 0, WEFT_CLI_BOOL, &o.no_layer, NULL, "skip part 2"},
      {"device", 0, WEFT_CLI_STRING, &device, "auto|cpu|cuda", "device each rank opens (auto)"},
      {"json", 0, WEFT_CLI_BOOL, &o.json, NULL, "JSON line per row on stdout; table: stderr"},
  };
  bool help = false;
  if (weft_cli_parse(&k_command, flags, sizeof flags / sizeof flags[0], argc, argv, &help) !=
      WEFT_OK)
    return WEFT_EXIT_USAGE;
  if (help) return WEFT_EXIT_OK;
  const char *problem = NULL;
  if (o.min_bytes < sizeof(float) || o.max_bytes < o.min_bytes)
    problem = "need 4 <= --minbytes <= --maxbytes";
  else if (o.iters < 1 || o.warmup < 0)
    problem = "--iters must be >= 1 and --warmup >= 0";
  else if (o.scan_blocks < 0)
    problem = "--scan-blocks must be >= 0";
  else if (o.batch < 1 || o.tokens < 1 || o.heads < 1 || o.dk < 1 || o.dv < 1)
    problem = "--batch, --tokens, --heads, --dk and --dv must be >= 1";
  if (problem) {
    fprintf(stderr, "weft bench linear: %s (see weft bench linear --help)\n", problem);
    return WEFT_EXIT_USAGE;
  }
  weft_session_t session;
  weft_session_start(&session, "bench linear", &argc, &argv, device);
  return weft_session_end(&session, lin_run(&session, &o));
}
