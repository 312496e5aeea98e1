/* `weft bench comm`: an nccl-tests-style sweep of allreduce, allgather, alltoall and sendrecv.
 *
 * For every operation and size: fill the inputs, warm up, barrier, time `iters` back-to-back
 * calls, and take the slowest rank's average time per call (an all-reduce MAX over ranks).
 * algbw = size / time; busbw = algbw * factor with the factors of nccl-tests
 * (doc/PERFORMANCE.md there), so numbers compare across rank counts and with nccl-tests.
 * Next to the formula's bytes sent per rank stands what weft_comm's own counters recorded
 * (weft_comm_op_stats over the timed loop), so the two check each other.
 *
 * "size" (the size column, JSON size_bytes) is one rank's buffer, as in nccl-tests:
 *   allreduce  the send buffer = the receive buffer (count elements)
 *   allgather  the receive buffer: P blocks of count/P elements, block r from rank r
 *   alltoall   the send buffer = the receive buffer: P blocks of count/P, block r for rank r
 *   sendrecv   the buffer each rank sends to rank+1 while receiving as much from rank-1
 * A requested size is rounded down to whole elements (to whole P-block multiples for
 * allgather and alltoall), at least one element per block; the actual size is reported.
 *
 * Verification (--check 1): after the timed loop the receive buffer is poisoned (all bits
 * set), the operation runs once more, and every element is compared with a value the rank
 * computes by itself. Data movement compares bit patterns that encode (source rank,
 * destination rank, index), so a block landing in the wrong place is caught; all-reduce uses
 * small integers whose sums are exact in f32 and bf16 (allreduce_term). Wrong elements are
 * summed over ranks; any wrong element makes the command fail (exit 1) after the table.
 *
 * Physical limit: on one node with host memory, MPI moves bytes through shared memory with
 * one or two memory copies, so memory bandwidth bounds busbw. The memcpy column is one rank's
 * copy rate for the same size while every rank copies at once (slowest rank), the ceiling
 * to read busbw against. Across nodes the NIC line rate bounds it; on GPUs, NVLink/PCIe.
 *
 * Rejected: timing each call separately (at small sizes it measures the clock); checking
 * inside the timed loop (the check would dominate small sizes); verifying the last timed
 * call's output (a call that wrote nothing would pass on the warm-up's result). */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "bench_util.h"
#include "cli.h"
#include "session.h"
#include "weft/check.h"
#include "weft/log.h"
#include "weft/timer.h"
#include "weft/transports.h"

enum { OP_ALLREDUCE, OP_ALLGATHER, OP_ALLTOALL, OP_SENDRECV, OP_COUNT };
static const char *const k_op_names[OP_COUNT] = {"allreduce", "allgather", "alltoall", "sendrecv"};
static const weft_comm_op_t k_comm_ops[OP_COUNT] = {WEFT_COMM_OP_ALLREDUCE, WEFT_COMM_OP_ALLGATHER,
                                                    WEFT_COMM_OP_ALLTOALL, WEFT_COMM_OP_SENDRECV};
static const char *const k_mem_names[] = {"host", "device"};
static const char *const k_dtype_names[] = {"f32", "bf16"};
static const char *const k_device_names[] = {"auto", "cpu", "cuda"};

typedef struct bench_opts {
  size_t min_bytes, max_bytes;
  long step, iters, warmup, check;
  bool json;
  uint32_t ops; /* bit i = k_op_names[i] */
  weft_mem_t mem;
  weft_dtype_t dtype;
} bench_opts_t;

typedef struct bench {
  const bench_opts_t *opt;
  weft_comm_t *comm;
  const weft_device_t *dev;
  int rank, size, nodes;
  size_t esize;
  FILE *table;               /* the human-readable output: stdout, or stderr under --json */
  weft_bench_buffers_t bufs; /* send, recv in opt->mem; host scratch for device memory */
} bench_t;

typedef struct bench_row {
  int op;
  size_t bytes, count; /* the op's size and its elements (bytes = count * esize) */
  double seconds;      /* per call, slowest rank */
  double copy_seconds; /* one memcpy of `bytes`, slowest rank */
  uint64_t sent_min, sent_max, expected; /* bytes sent per rank per call */
  int64_t wrong;                         /* summed over ranks; -1 = not checked */
} bench_row_t;

static int op_blocks(int op, int size) {
  return op == OP_ALLGATHER || op == OP_ALLTOALL ? size : 1;
}

/* Bus bandwidth factors of nccl-tests: busbw = algbw * factor, algbw = size / time.
 *   allreduce  2(P-1)/P  (ring: reduce-scatter then all-gather, each moves (P-1)/P of size)
 *   allgather  (P-1)/P   (size = gathered buffer; each rank receives the other P-1 blocks)
 *   alltoall   (P-1)/P   (P-1 of the P blocks leave the rank, P-1 arrive)
 *   sendrecv   1         (the whole buffer crosses one link)
 * So busbw = expected_sent / time: the per-rank link traffic the formula assumes. */
static double bus_factor(int op, int size) {
  double p = size;
  switch (op) {
  case OP_ALLREDUCE: return 2.0 * (p - 1) / p;
  case OP_ALLGATHER:
  case OP_ALLTOALL: return (p - 1) / p;
  default: return 1.0;
  }
}

/* Bytes each rank sends per call under the same model; what weft_comm's counters should
 * record (they count no bytes to self). All-reduce is floored like comm's ring counter. */
static uint64_t expected_sent(int op, int size, size_t bytes) {
  uint64_t p = (uint64_t)size, b = bytes;
  if (size == 1) return 0;
  switch (op) {
  case OP_ALLREDUCE: return 2 * (p - 1) * b / p;
  case OP_ALLGATHER:
  case OP_ALLTOALL: return (p - 1) * b / p; /* exact: size is P whole blocks */
  default: return b;
  }
}

/* Element `index` that rank `src` sends to rank `dst`, for data movement. The top two bits
 * are clear: finite numbers, never the all-ones poison. */
static uint32_t move_word(const bench_t *b, uint32_t src, uint32_t dst, uint64_t index) {
  return weft_bench_hash(src, dst, index) & (b->esize == 4 ? 0x3fffffffu : 0x3fffu);
}

/* All-reduce input of rank r at element i: (r mod 4) + h(i), h(i) in 0..3 from the hash, so
 * the sum is sum_r (r mod 4) + P * h(i): O(1) per element to check. The largest sum, about
 * 6P, is exact in f32 for any P, but bf16 holds integers exactly only up to 256: for bf16 with
 * 6P > 256 only rank i mod P contributes 1 + h(i) and the others add 0, which keeps every
 * partial sum exact in any reduction order (NCCL rounds each step in bf16). */
static bool allreduce_sparse(const bench_t *b) { return b->esize == 2 && 6 * b->size > 256; }

static float allreduce_term(const bench_t *b, int rank, size_t i) {
  uint32_t h = weft_bench_hash(UINT32_MAX, UINT32_MAX, i) & 3u;
  if (allreduce_sparse(b)) return (size_t)rank == i % (size_t)b->size ? 1.0f + (float)h : 0.0f;
  return (float)((rank & 3) + h);
}

static float allreduce_sum(const bench_t *b, size_t i) {
  uint32_t h = weft_bench_hash(UINT32_MAX, UINT32_MAX, i) & 3u;
  if (allreduce_sparse(b)) return 1.0f + (float)h;
  uint64_t base = (uint64_t)(b->size / 4) * 6; /* full cycles of 0+1+2+3 */
  for (int r = b->size / 4 * 4; r < b->size; r++) base += (uint64_t)(r & 3);
  return (float)(base + (uint64_t)b->size * h);
}

/* The element this rank sends at send-buffer index i; count = elements of size. */
static uint32_t send_word(const bench_t *b, int op, size_t count, size_t i) {
  uint32_t r = (uint32_t)b->rank, p = (uint32_t)b->size;
  size_t per = count / (size_t)op_blocks(op, b->size);
  switch (op) {
  case OP_ALLREDUCE: return weft_bench_number_word(b->esize, allreduce_term(b, b->rank, i));
  case OP_ALLGATHER: return move_word(b, r, p, i); /* the same block to everyone */
  case OP_ALLTOALL: return move_word(b, r, (uint32_t)(i / per), i % per);
  default: return move_word(b, r, (r + 1) % p, i);
  }
}

/* The element expected at receive-buffer index i. */
static uint32_t recv_word(const bench_t *b, int op, size_t count, size_t i) {
  uint32_t r = (uint32_t)b->rank, p = (uint32_t)b->size;
  size_t per = count / (size_t)op_blocks(op, b->size);
  switch (op) {
  case OP_ALLREDUCE: return weft_bench_number_word(b->esize, allreduce_sum(b, i));
  case OP_ALLGATHER: return move_word(b, (uint32_t)(i / per), p, i % per);
  case OP_ALLTOALL: return move_word(b, (uint32_t)(i / per), r, i % per);
  default: return move_word(b, (r + p - 1) % p, r, i);
  }
}

static weft_status_t run_op(bench_t *b, int op, size_t count) {
  const bench_opts_t *o = b->opt;
  size_t per = count / (size_t)op_blocks(op, b->size);
  int next = (b->rank + 1) % b->size, prev = (b->rank + b->size - 1) % b->size;
  switch (op) {
  case OP_ALLREDUCE:
    return weft_comm_allreduce(b->comm, b->bufs.send, b->bufs.recv, count, o->dtype,
                               WEFT_REDUCE_SUM, o->mem);
  case OP_ALLGATHER:
    return weft_comm_allgather(b->comm, b->bufs.send, b->bufs.recv, per, o->dtype, o->mem);
  case OP_ALLTOALL:
    return weft_comm_alltoall(b->comm, b->bufs.send, b->bufs.recv, per, o->dtype, o->mem);
  default:
    return weft_comm_sendrecv(b->comm, b->bufs.send, count, next, b->bufs.recv, count, prev,
                              o->dtype, o->mem);
  }
}

static weft_status_t fill_send(bench_t *b, int op, size_t count) {
  size_t n = op == OP_ALLGATHER ? count / (size_t)b->size : count; /* allgather sends 1 block */
  void *buf = weft_bench_buffers_input(&b->bufs);
  for (size_t i = 0; i < n; i++) weft_bench_word_put(buf, b->esize, i, send_word(b, op, count, i));
  return weft_bench_buffers_upload(&b->bufs, n * b->esize);
}

/* Poisons the receive buffer, runs the operation once and counts this rank's wrong elements;
 * logs the first one so a failure names an index and both values. */
static weft_status_t count_wrong(bench_t *b, int op, size_t count, int64_t *wrong_p) {
  size_t bytes = count * b->esize;
  const void *out = NULL;
  WEFT_CHECK(weft_bench_buffers_poison(&b->bufs, bytes));
  WEFT_CHECK(run_op(b, op, count));
  WEFT_CHECK(weft_bench_buffers_download(&b->bufs, bytes, &out));
  int64_t wrong = 0;
  for (size_t i = 0; i < count; i++) {
    uint32_t got = weft_bench_word_get(out, b->esize, i), want = recv_word(b, op, count, i);
    if (got != want && wrong++ == 0)
      WEFT_ERROR("bench", "%s of %zu bytes: element %zu is 0x%x, expected 0x%x", k_op_names[op],
                 bytes, i, got, want);
  }
  *wrong_p = wrong;
  return WEFT_OK;
}

static weft_status_t measure(bench_t *b, int op, size_t count, bench_row_t *row) {
  const bench_opts_t *o = b->opt;
  size_t bytes = count * b->esize;
  WEFT_CHECK(fill_send(b, op, count));
  for (long i = 0; i < o->warmup; i++) WEFT_CHECK(run_op(b, op, count));
  WEFT_CHECK(weft_comm_barrier(b->comm));
  weft_comm_op_stats_t before = weft_comm_op_stats(b->comm, k_comm_ops[op]);
  double t0 = weft_time_now();
  for (long i = 0; i < o->iters; i++) WEFT_CHECK(run_op(b, op, count));
  WEFT_CHECK(weft_device_synchronize(b->dev));
  double seconds = (weft_time_now() - t0) / (double)o->iters;
  weft_comm_op_stats_t after = weft_comm_op_stats(b->comm, k_comm_ops[op]);
  uint64_t sent = (after.bytes_sent - before.bytes_sent) / (after.calls - before.calls);

  /* The copy ceiling, measured like the operation: every rank at once. */
  const weft_device_t *copy_dev =
      o->mem == WEFT_MEM_DEVICE && b->dev->kind == WEFT_DEVICE_CUDA ? b->dev : NULL;
  double copy = 0;
  WEFT_CHECK(weft_comm_barrier(b->comm));
  WEFT_CHECK(
      weft_bench_copy_seconds(copy_dev, b->bufs.recv, b->bufs.send, bytes, (int)o->iters, &copy));
  int64_t wrong = 0;
  if (o->check) WEFT_CHECK(count_wrong(b, op, count, &wrong));

  /* Slowest rank's times, the counters' extremes, wrong elements summed. i64 picoseconds:
   * comm has no f64 reduction and f32 would round the times. */
  int64_t mx[4] = {(int64_t)(seconds * 1e12), (int64_t)(copy * 1e12), (int64_t)sent,
                   -(int64_t)sent};
  WEFT_CHECK(
      weft_comm_allreduce(b->comm, mx, mx, 4, WEFT_DTYPE_I64, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  WEFT_CHECK(weft_comm_allreduce(b->comm, &wrong, &wrong, 1, WEFT_DTYPE_I64, WEFT_REDUCE_SUM,
                                 WEFT_MEM_HOST));
  *row = (bench_row_t){.op = op,
                       .bytes = bytes,
                       .count = count,
                       .seconds = (double)mx[0] * 1e-12,
                       .copy_seconds = (double)mx[1] * 1e-12,
                       .sent_min = (uint64_t)-mx[3],
                       .sent_max = (uint64_t)mx[2],
                       .expected = expected_sent(op, b->size, bytes),
                       .wrong = o->check ? wrong : -1};
  return WEFT_OK;
}

static void print_header(const bench_t *b) {
  const bench_opts_t *o = b->opt;
  weft_transports_t tr;
  weft_transports_query(b->comm, &tr);
  char lo[32], hi[32];
  FILE *t = b->table;
  fprintf(t, "# weft bench comm: %d rank(s) on %d node(s), device %s (%s), memory %s, dtype %s\n",
          b->size, b->nodes, weft_device_kind_name(b->dev->kind), b->dev->name, k_mem_names[o->mem],
          weft_dtype_name(o->dtype));
  fprintf(t, "# MPI %s | UCX %s | NCCL %s\n", tr.mpi, tr.ucx, tr.nccl);
  fprintf(t, "# sizes %s .. %s x%ld, %ld iteration(s) after %ld warm-up, check %s\n",
          weft_bench_format_bytes(o->min_bytes, lo, sizeof lo),
          weft_bench_format_bytes(o->max_bytes, hi, sizeof hi), o->step, o->iters, o->warmup,
          o->check ? "on" : "off");
  fprintf(t,
          "# size = one rank's buffer: allreduce send = recv; allgather recv (P blocks); "
          "alltoall send = recv (P blocks); sendrecv send to rank+1\n"
          "# algbw = size / time; busbw = algbw * 2(P-1)/P allreduce, (P-1)/P allgather and "
          "alltoall, 1 sendrecv; GB = 1e9 B; time = slowest rank's mean per call\n");
  const char *limit =
      b->nodes > 1 ? "the network link of each node (NIC line rate); memcpy = intra-node ceiling"
      : b->dev->kind == WEFT_DEVICE_CUDA && o->mem == WEFT_MEM_DEVICE
          ? "one node, GPU memory: NVLink/PCIe between GPUs; memcpy = device-to-device copy "
            "(HBM), an upper bound only"
          : "one node, host memory: memory bandwidth; memcpy = one rank's copy rate of the same "
            "size while all ranks copy at once";
  fprintf(t, "# physical limit: %s\n", limit);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int local = b->size / b->nodes;
  if (cores > 0 && local > cores)
    fprintf(t,
            "# note: about %d ranks per node on %ld cores (oversubscribed): times include "
            "waiting for a core\n",
            local, cores);
  fprintf(t, "#\n# %10s %12s %12s %5s %11s %9s %9s %12s %12s %7s %9s\n", "op", "size(B)", "count",
          "type", "time(us)", "algbw", "busbw", "sent(B)", "expect(B)", "wrong", "memcpy");
  fprintf(t, "# %10s %12s %12s %5s %11s %9s %9s %12s %12s %7s %9s\n", "", "", "(elements)", "", "",
          "(GB/s)", "(GB/s)", "per rank", "formula", "", "(GB/s)");
}

static void print_row(const bench_t *b, const bench_row_t *r) {
  const bench_opts_t *o = b->opt;
  double algbw = weft_bench_gbps((double)r->bytes, r->seconds);
  double busbw = algbw * bus_factor(r->op, b->size);
  double copy = weft_bench_gbps((double)r->bytes, r->copy_seconds);
  bool counted = r->sent_min == r->expected && r->sent_max == r->expected;
  char wrong[24] = "N/A";
  if (r->wrong >= 0) snprintf(wrong, sizeof wrong, "%" PRId64, r->wrong);
  fprintf(b->table,
          "  %10s %12zu %12zu %5s %11.2f %9.3f %9.3f %12" PRIu64 "%c%12" PRIu64 " %7s %9.3f\n",
          k_op_names[r->op], r->bytes, r->count, weft_dtype_name(o->dtype), r->seconds * 1e6, algbw,
          busbw, r->sent_max, counted ? ' ' : '*', r->expected, wrong, copy);
  if (!o->json) return;
  printf(
      "{\"op\":\"%s\",\"size_bytes\":%zu,\"count\":%zu,\"dtype\":\"%s\",\"mem\":\"%s\","
      "\"device\":\"%s\",\"ranks\":%d,\"nodes\":%d,\"iters\":%ld,\"warmup\":%ld,"
      "\"time_us\":%.4f,\"algbw_gbps\":%.6f,\"busbw_gbps\":%.6f,\"sent_bytes\":%" PRIu64
      ",\"sent_bytes_min\":%" PRIu64 ",\"expected_sent_bytes\":%" PRIu64
      ",\"wrong\":%s,"
      "\"memcpy_gbps\":%.6f}\n",
      k_op_names[r->op], r->bytes, r->count, weft_dtype_name(o->dtype), k_mem_names[o->mem],
      weft_device_kind_name(b->dev->kind), b->size, b->nodes, o->iters, o->warmup, r->seconds * 1e6,
      algbw, busbw, r->sent_max, r->sent_min, r->expected, r->wrong < 0 ? "null" : wrong, copy);
}

static weft_status_t sweep(bench_t *b) {
  const bench_opts_t *o = b->opt;
  int64_t wrong = 0;
  bool miscounted = false;
  if (b->rank == 0) print_header(b);
  for (int op = 0; op < OP_COUNT; op++) {
    if (!(o->ops & (1u << op))) continue;
    size_t last = 0;
    for (size_t want = o->min_bytes;; want *= (size_t)o->step) {
      size_t blocks = (size_t)op_blocks(op, b->size);
      size_t per = want / (b->esize * blocks);
      size_t count = (per ? per : 1) * blocks;
      if (count * b->esize != last) { /* rounding can repeat a size: measure it once */
        bench_row_t row;
        WEFT_CHECK(measure(b, op, count, &row));
        last = row.bytes;
        if (b->rank == 0) print_row(b, &row);
        wrong += row.wrong > 0 ? row.wrong : 0;
        miscounted |= row.sent_min != row.expected || row.sent_max != row.expected;
      }
      if (want > o->max_bytes / (size_t)o->step) break;
    }
  }
  if (b->rank == 0) {
    if (miscounted)
      fprintf(b->table,
              "# * weft_comm's byte counters differ from the formula on some rank "
              "(sent = the largest count)\n");
    fprintf(b->table, "# wrong elements in total: %" PRId64 "%s\n", wrong,
            o->check ? "" : " (check off)");
    fflush(stdout);
    fflush(b->table);
  }
  if (wrong > 0) {
    if (b->rank == 0)
      WEFT_ERROR("bench", "comm: %" PRId64 " wrong element(s) (see the wrong column)", wrong);
    return WEFT_ERR_CORRUPT;
  }
  return WEFT_OK;
}

static weft_status_t bench_run(weft_session_t *s, const bench_opts_t *o) {
  bench_t b = {.opt = o,
               .comm = s->world,
               .dev = s->boot.device,
               .rank = s->boot.world_rank,
               .size = s->boot.world_size,
               .nodes = s->boot.node_count,
               .esize = weft_dtype_size(o->dtype),
               .table = o->json ? stderr : stdout};
  /* max_bytes, or one element per block for the smallest allgather/alltoall if larger. */
  size_t min_blocks = b.esize * (size_t)b.size;
  size_t cap = o->max_bytes > min_blocks ? o->max_bytes : min_blocks;
  WEFT_CHECK(weft_bench_buffers_init(&b.bufs, o->mem == WEFT_MEM_DEVICE ? b.dev : NULL, cap));
  weft_status_t st = sweep(&b);
  weft_bench_buffers_cleanup(&b.bufs);
  return st;
}

static const weft_cli_command_t k_command = {
    "bench comm", "Sweep allreduce, allgather, alltoall and sendrecv over message sizes.",
    "[flags]   (under mpirun/srun; results on rank 0)", NULL};

static void print_size_help(void) {
  printf(
      "\nsize (the size column) is one rank's buffer, as in nccl-tests:\n"
      "  allreduce  send buffer = receive buffer          busbw = algbw * 2(P-1)/P\n"
      "  allgather  receive buffer (P blocks of size/P)   busbw = algbw * (P-1)/P\n"
      "  alltoall   send = receive buffer (P blocks)      busbw = algbw * (P-1)/P\n"
      "  sendrecv   sent to rank+1, received from rank-1  busbw = algbw\n"
      "sizes run from --minbytes to --maxbytes, multiplied by --stepfactor, rounded down to\n"
      "whole elements (whole blocks). time = the slowest rank's mean per call over --iters;\n"
      "algbw = size / time (GB = 1e9 bytes). sent = bytes per rank per call from weft_comm's\n"
      "counters, expect = the formula's. wrong = elements that differ from the expected value\n"
      "(exit 1 if any). memcpy = local copy rate of the same size, all ranks copying at once.\n");
}

static bool choose(const char *flag, const char *value, const char *const *names, int count,
                   int *index_p) {
  if (weft_bench_parse_choice(value, names, count, index_p) == WEFT_OK) return true;
  fprintf(stderr, "weft bench comm: --%s: unknown value '%s' (expected %s%s%s%s%s)\n", flag, value,
          names[0], count > 2 ? ", " : " or ", names[1], count > 2 ? " or " : "",
          count > 2 ? names[2] : "");
  return false;
}

/* Checks the values the flag table cannot; prints the first problem and returns false. */
static bool validate(const bench_opts_t *o) {
  const struct {
    bool bad;
    const char *problem;
  } rules[] = {
      {o->min_bytes < 1, "--minbytes must be at least 1"},
      {o->max_bytes < o->min_bytes, "--maxbytes must be >= --minbytes"},
      {o->max_bytes / weft_dtype_size(o->dtype) > INT32_MAX, "--maxbytes exceeds MPI's int count"},
      {o->step < 2, "--stepfactor must be an integer >= 2"},
      {o->iters < 1 || o->iters > 1000000, "--iters must be in 1..1000000"},
      {o->warmup < 0 || o->warmup > 1000000, "--warmup must be in 0..1000000"},
      {o->check != 0 && o->check != 1, "--check must be 0 or 1"},
  };
  for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
    if (rules[i].bad) {
      fprintf(stderr, "weft bench comm: %s (see weft bench comm --help)\n", rules[i].problem);
      return false;
    }
  }
  return true;
}

int weft_bench_comm(int argc, char **argv) {
  bench_opts_t o = {
      8, 64u << 20, 2, 20, 5, 1, false, (1u << OP_COUNT) - 1, WEFT_MEM_HOST, WEFT_DTYPE_F32};
  const char *ops = "allreduce,allgather,alltoall,sendrecv", *mem = "host", *dtype = "f32";
  const char *device = "auto";
  const weft_cli_flag_t flags[] = {
      {"minbytes", 'b', WEFT_CLI_SIZE, &o.min_bytes, "SIZE", "smallest size (8)"},
      {"maxbytes", 'e', WEFT_CLI_SIZE, &o.max_bytes, "SIZE", "largest size (64M)"},
      {"stepfactor", 'f', WEFT_CLI_INT, &o.step, "N", "size multiplier between steps (2)"},
      {"iters", 'n', WEFT_CLI_INT, &o.iters, "N", "timed calls per size (20)"},
      {"warmup", 'w', WEFT_CLI_INT, &o.warmup, "N", "untimed calls before timing (5)"},
      {"ops", 0, WEFT_CLI_STRING, &ops, "LIST", "allreduce,allgather,alltoall,sendrecv (all)"},
      {"mem", 0, WEFT_CLI_STRING, &mem, "host|device", "buffers in host or device memory (host)"},
      {"device", 0, WEFT_CLI_STRING, &device, "auto|cpu|cuda", "device each rank opens (auto)"},
      {"dtype", 0, WEFT_CLI_STRING, &dtype, "f32|bf16", "element type (f32)"},
      {"check", 0, WEFT_CLI_INT, &o.check, "0|1", "verify every element after timing (1)"},
      {"json", 0, WEFT_CLI_BOOL, &o.json, NULL,
       "JSON line per (op, size) on stdout; table: stderr"},
  };
  bool help = false;
  if (weft_cli_parse(&k_command, flags, sizeof flags / sizeof flags[0], argc, argv, &help) !=
      WEFT_OK)
    return WEFT_EXIT_USAGE;
  if (help) {
    print_size_help();
    return WEFT_EXIT_OK;
  }
  int mem_index = 0, dtype_index = 0, device_index = 0, bad_len = 0;
  const char *bad = NULL;
  if (weft_bench_parse_list(ops, k_op_names, OP_COUNT, &o.ops, &bad, &bad_len) != WEFT_OK) {
    fprintf(stderr, "weft bench comm: --ops: unknown operation '%.*s' (expected %s)\n", bad_len,
            bad, "a comma list of allreduce, allgather, alltoall, sendrecv");
    return WEFT_EXIT_USAGE;
  }
  if (!choose("mem", mem, k_mem_names, 2, &mem_index) ||
      !choose("dtype", dtype, k_dtype_names, 2, &dtype_index) ||
      !choose("device", device, k_device_names, 3, &device_index))
    return WEFT_EXIT_USAGE;
  o.mem = mem_index ? WEFT_MEM_DEVICE : WEFT_MEM_HOST;
  o.dtype = dtype_index ? WEFT_DTYPE_BF16 : WEFT_DTYPE_F32;
  if (!validate(&o)) return WEFT_EXIT_USAGE;
  weft_session_t session;
  weft_session_start(&session, "bench comm", &argc, &argv, device);
  return weft_session_end(&session, bench_run(&session, &o));
}
