/* `weft check linear-attention`: runs sequence-parallel gated linear attention
 * (parallel/linear_sp.h) on inputs from an HDF5 file and writes the results, so an outside
 * oracle (tests/ref/check_linear_attention.py, PyTorch) can compare at any rank count.
 *
 *   IN.h5 : q [B,N,H,dk], k [B,N,H,dk], v [B,N,H,dv], g [B,N,H,dk] (log decay, <= 0), f32;
 *           optional dout [B,N,H,dv]; optional root attribute scale (default 1/sqrt(dk))
 *   OUT.h5: out [B,N,H,dv], final_state [B,H,dk,dv]; with dout also dq, dk, dv, dg;
 *           root attributes algo, ranks, bytes_sent_fwd_max, bytes_sent_bwd_max,
 *           time_fwd_s, time_bwd_s (and scan_blocks, scale, device for the record)
 *
 * The sequence is split contiguously: rank p holds tokens [start_p, start_p + n_p), the first
 * N % P ranks one token more (a rank may hold none). Every rank reads and writes its own
 * hyperslab collectively; final_state is written by the last rank (the plan leaves it there).
 *
 * Errors in the input file (a missing dataset, a wrong dtype or rank, shapes that disagree,
 * a positive or NaN g) are found the same way on every rank and reported in one line by one
 * rank, naming the dataset and the value; all ranks then finalise MPI cleanly and exit 1, as
 * for usage errors (session.h): nothing is left blocked, so there is nothing to abort.
 * Failures inside the library (I/O, communication) follow the session's abort policy.
 *
 * Timing: a barrier, then the call, on every rank; the reported time is the slowest rank's.
 * Bytes: weft_comm's per-peer counters summed over peers around each call, the largest rank's
 * total. Both are measured on the first (cold) call: this is a correctness driver; `weft bench
 * linear` is where latency is measured properly. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_input.h"
#include "checks.h"
#include "cli.h"
#include "session.h"
#include "weft/check.h"
#include "weft/kernel_ctx.h"
#include "weft/linear_sp.h"
#include "weft/log.h"
#include "weft/tensor_file.h"
#include "weft/timer.h"

typedef struct check_opts {
  const char *algo_name, *device, *input, *output;
  long scan_blocks;
  weft_linear_sp_algo_t algo;
} check_opts_t;

/* Tensors of this rank: host copies for the file, device copies for the plan. */
enum { T_Q, T_K, T_V, T_G, T_DOUT, T_OUT, T_DQ, T_DK, T_DV, T_DG, T_S_IN, T_FINAL, T_COUNT };
static const char *const k_names[T_COUNT] = {"q",  "k",  "v",  "g",  "dout", "out",
                                             "dq", "dk", "dv", "dg", "s_in", "final_state"};

typedef struct check_run {
  weft_session_t *session;
  const check_opts_t *opt;
  weft_comm_t *comm;
  const weft_device_t *dev;
  int rank, size;
  int64_t B, N, H, DK, DV, n, start;
  bool has_dout;
  double scale;
  bool input_error; /* reported to the user; exit 1 after a clean finalise */
  float *host[T_COUNT], *dev_buf[T_COUNT];
  size_t count[T_COUNT];
} check_run_t;

/* Reports a problem with the input file: one line, by rank 0 (every rank found the same). */
#define INPUT_ERROR(r, ...)                                                  \
  do {                                                                       \
    if ((r)->rank == 0) {                                                    \
      fprintf(stderr, "weft check linear-attention: %s: ", (r)->opt->input); \
      fprintf(stderr, __VA_ARGS__);                                          \
      fprintf(stderr, "\n");                                                 \
    }                                                                        \
    (r)->input_error = true;                                                 \
  } while (0)

/* Dataset `name` must exist, be f32 and 4-D with no empty dimension; *info_p gets its shape. */
static weft_status_t query4(check_run_t *r, weft_tensor_file_t *file, const char *name,
                            weft_tensor_file_info_t *info_p) {
  weft_check_input_t in = {"weft check linear-attention", r->opt->input, r->rank, false};
  weft_status_t st = weft_check_query4(&in, file, name, "[B,N,H,d]", info_p);
  if (in.error) r->input_error = true;
  return st;
}

/* `name` must match q's B, N, H; its last dimension must be `last` (0: any, returned in
 * *last_p). */
static weft_status_t expect_like_q(check_run_t *r, weft_tensor_file_t *file, const char *name,
                                   int64_t last, int64_t *last_p) {
  weft_tensor_file_info_t info;
  WEFT_CHECK(query4(r, file, name, &info));
  if (r->input_error) return WEFT_OK;
  if (info.shape[0] != r->B || info.shape[1] != r->N || info.shape[2] != r->H ||
      (last != 0 && info.shape[3] != last)) {
    char shape[96], want[32] = "d";
    weft_check_format_shape(&info, shape, sizeof shape);
    if (last) snprintf(want, sizeof want, "%lld", (long long)last);
    INPUT_ERROR(r, "dataset '%s' has shape %s, expected [%lld,%lld,%lld,%s] to match q", name,
                shape, (long long)r->B, (long long)r->N, (long long)r->H, want);
    return WEFT_OK;
  }
  if (last_p) *last_p = info.shape[3];
  return WEFT_OK;
}

/* Shapes of q, k, v, g (and dout) and the scale; sets r->input_error on a bad file. */
static weft_status_t read_header(check_run_t *r, weft_tensor_file_t *file) {
  weft_tensor_file_info_t q;
  WEFT_CHECK(query4(r, file, "q", &q));
  if (r->input_error) return WEFT_OK;
  r->B = q.shape[0], r->N = q.shape[1], r->H = q.shape[2], r->DK = q.shape[3];
  WEFT_CHECK(expect_like_q(r, file, "k", r->DK, NULL));
  if (!r->input_error) WEFT_CHECK(expect_like_q(r, file, "g", r->DK, NULL));
  if (!r->input_error) WEFT_CHECK(expect_like_q(r, file, "v", 0, &r->DV));
  if (r->input_error) return WEFT_OK;
  bool exists = false;
  WEFT_CHECK(weft_tensor_file_exists(file, "dout", &exists));
  r->has_dout = exists;
  if (exists) WEFT_CHECK(expect_like_q(r, file, "dout", r->DV, NULL));
  if (r->input_error) return WEFT_OK;
  r->scale = 1.0 / sqrt((double)r->DK);
  WEFT_CHECK(weft_tensor_file_attr_exists(file, NULL, "scale", &exists));
  if (exists) {
    if (weft_tensor_file_attr_read_f64(file, NULL, "scale", &r->scale) != WEFT_OK ||
        !isfinite(r->scale)) {
      INPUT_ERROR(r, "root attribute 'scale' must be a finite number");
      return WEFT_OK;
    }
  }
  int64_t base = r->N / r->size, extra = r->N % r->size;
  r->n = base + (r->rank < extra ? 1 : 0);
  r->start = r->rank * base + (r->rank < extra ? r->rank : extra);
  return WEFT_OK;
}

static weft_status_t alloc_buffers(check_run_t *r) {
  size_t nk = (size_t)(r->B * r->n * r->H * r->DK), nv = (size_t)(r->B * r->n * r->H * r->DV);
  size_t ns = (size_t)(r->B * r->H * r->DK * r->DV);
  const size_t counts[T_COUNT] = {nk, nk, nv, nk, nv, nv, nk, nk, nv, nk, ns, ns};
  for (int t = 0; t < T_COUNT; t++) {
    r->count[t] = counts[t];
    size_t bytes = (counts[t] ? counts[t] : 1) * sizeof(float);
    r->host[t] = calloc(1, bytes);
    if (!r->host[t]) return WEFT_ERR_NO_MEMORY;
    WEFT_CHECK(weft_device_alloc(r->dev, bytes, (void **)&r->dev_buf[t]));
    WEFT_CHECK(weft_device_memset(r->dev, r->dev_buf[t], 0, bytes));
  }
  return WEFT_OK;
}

static void free_buffers(check_run_t *r) {
  for (int t = 0; t < T_COUNT; t++) {
    free(r->host[t]);
    weft_device_free(r->dev, r->dev_buf[t]);
  }
}

static void slab(const check_run_t *r, int t, int64_t *global, int64_t *start, int64_t *count) {
  int64_t d = t == T_V || t == T_DOUT || t == T_OUT || t == T_DV ? r->DV : r->DK;
  int64_t g[4] = {r->B, r->N, r->H, d}, s[4] = {0, r->start, 0, 0}, c[4] = {r->B, r->n, r->H, d};
  memcpy(global, g, sizeof g), memcpy(start, s, sizeof s), memcpy(count, c, sizeof c);
}

static weft_status_t read_inputs(check_run_t *r, weft_tensor_file_t *file) {
  for (int t = T_Q; t <= T_DOUT; t++) {
    if (t == T_DOUT && !r->has_dout) break;
    int64_t global[4], start[4], count[4];
    slab(r, t, global, start, count);
    WEFT_CHECK(weft_tensor_file_read_slab(file, k_names[t], WEFT_DTYPE_F32, 4, global, start, count,
                                          r->host[t]));
    WEFT_CHECK(weft_device_copy(r->dev, r->dev_buf[t], r->host[t], r->count[t] * sizeof(float),
                                WEFT_COPY_HOST_TO_DEVICE));
  }
  return WEFT_OK;
}

/* g must be <= 0 everywhere (NaN included as bad). Each rank checks its slab; the lowest
 * rank with a bad value names the first one. */
static weft_status_t check_g(check_run_t *r) {
  const float *g = r->host[T_G];
  size_t bad = SIZE_MAX;
  for (size_t i = 0; i < r->count[T_G]; i++) {
    if (!(g[i] <= 0.0f)) {
      bad = i;
      break;
    }
  }
  int32_t first = bad == SIZE_MAX ? r->size : r->rank;
  WEFT_CHECK(weft_comm_allreduce(r->comm, &first, &first, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MIN,
                                 WEFT_MEM_HOST));
  if (first == r->size) return WEFT_OK;
  r->input_error = true;
  if (first == r->rank) {
    size_t i = bad, d = (size_t)r->DK, h = (size_t)r->H, n = (size_t)r->n;
    fprintf(stderr,
            "weft check linear-attention: %s: dataset 'g' has value %g at [%zu,%lld,%zu,%zu]; the "
            "log decay must be <= 0\n",
            r->opt->input, (double)g[i], i / (d * h * n),
            (long long)r->start + (long long)(i / (d * h) % n), i / d % h, i % d);
    fflush(stderr);
  }
  return WEFT_OK;
}

/* Sum over peers of the bytes sent since `before` (P entries). */
static int64_t bytes_sent_since(weft_comm_t *comm, const weft_comm_peer_bytes_t *before) {
  const weft_comm_peer_bytes_t *now = weft_comm_total_bytes(comm);
  uint64_t sum = 0;
  for (int p = 0; p < weft_comm_size(comm); p++) sum += now[p].sent - before[p].sent;
  return (int64_t)sum;
}

static weft_status_t compute(check_run_t *r, double *seconds, int64_t *bytes) {
  weft_kernel_ctx_t *ctx = NULL;
  weft_linear_sp_plan_t *plan = NULL;
  weft_comm_peer_bytes_t *before = calloc((size_t)r->size, sizeof *before);
  weft_status_t st = before ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  float **d = r->dev_buf;
  weft_gla_shape_t shape = {.batch = r->B,
                            .tokens = r->n,
                            .heads = r->H,
                            .dk = r->DK,
                            .dv = r->DV,
                            .scale = (float)r->scale};
  if (st == WEFT_OK) st = weft_kernel_ctx_create(r->dev, NULL, &ctx);
  if (st == WEFT_OK)
    st = weft_linear_sp_plan_create(r->comm, ctx, &shape, r->opt->algo, (size_t)r->opt->scan_blocks,
                                    &plan);
  size_t peers = (size_t)r->size * sizeof *before;
  if (st == WEFT_OK) st = weft_comm_barrier(r->comm);
  if (st == WEFT_OK) {
    memcpy(before, weft_comm_total_bytes(r->comm), peers);
    double t0 = weft_time_now();
    st = weft_linear_sp_forward(plan, d[T_Q], d[T_K], d[T_V], d[T_G], d[T_OUT], d[T_S_IN],
                                d[T_FINAL]);
    seconds[0] = weft_time_now() - t0;
    bytes[0] = bytes_sent_since(r->comm, before);
  }
  if (st == WEFT_OK && r->has_dout) {
    st = weft_comm_barrier(r->comm);
    memcpy(before, weft_comm_total_bytes(r->comm), peers);
    double t0 = weft_time_now();
    if (st == WEFT_OK)
      st = weft_linear_sp_backward(plan, d[T_Q], d[T_K], d[T_V], d[T_G], d[T_DOUT], d[T_S_IN],
                                   d[T_DQ], d[T_DK], d[T_DV], d[T_DG]);
    seconds[1] = weft_time_now() - t0;
    bytes[1] = bytes_sent_since(r->comm, before);
  }
  weft_linear_sp_plan_destroy(plan);
  weft_kernel_ctx_destroy(ctx);
  free(before);
  return st;
}

static weft_status_t write_outputs(check_run_t *r, const double *seconds, const int64_t *bytes) {
  weft_tensor_file_t *file = NULL;
  WEFT_CHECK(weft_tensor_file_create(r->opt->output, r->comm, &file));
  weft_status_t st = WEFT_OK;
  static const int outs[] = {T_OUT, T_DQ, T_DK, T_DV, T_DG};
  for (size_t i = 0; i < sizeof outs / sizeof outs[0] && st == WEFT_OK; i++) {
    int t = outs[i];
    if (t != T_OUT && !r->has_dout) break;
    int64_t global[4], start[4], count[4];
    slab(r, t, global, start, count);
    st = weft_device_copy(r->dev, r->host[t], r->dev_buf[t], r->count[t] * sizeof(float),
                          WEFT_COPY_DEVICE_TO_HOST);
    if (st == WEFT_OK)
      st = weft_tensor_file_write_slab(file, k_names[t], WEFT_DTYPE_F32, 4, global, start, count,
                                       r->host[t]);
  }
  /* The final state lives on the last rank only (linear_sp.h). */
  bool last = r->rank == r->size - 1;
  int64_t fs_global[4] = {r->B, r->H, r->DK, r->DV}, fs_start[4] = {0, 0, 0, 0};
  int64_t fs_count[4] = {last ? r->B : 0, r->H, r->DK, r->DV};
  if (st == WEFT_OK && last)
    st = weft_device_copy(r->dev, r->host[T_FINAL], r->dev_buf[T_FINAL],
                          r->count[T_FINAL] * sizeof(float), WEFT_COPY_DEVICE_TO_HOST);
  if (st == WEFT_OK)
    st = weft_tensor_file_write_slab(file, "final_state", WEFT_DTYPE_F32, 4, fs_global, fs_start,
                                     fs_count, r->host[T_FINAL]);
  const char *algo = weft_linear_sp_algo_name(r->opt->algo);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_str(file, NULL, "algo", algo);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_i64(file, NULL, "ranks", r->size);
  if (st == WEFT_OK)
    st = weft_tensor_file_attr_write_i64(file, NULL, "bytes_sent_fwd_max", bytes[0]);
  if (st == WEFT_OK)
    st = weft_tensor_file_attr_write_i64(file, NULL, "bytes_sent_bwd_max", bytes[1]);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_f64(file, NULL, "time_fwd_s", seconds[0]);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_f64(file, NULL, "time_bwd_s", seconds[1]);
  if (st == WEFT_OK)
    st = weft_tensor_file_attr_write_i64(file, NULL, "scan_blocks", r->opt->scan_blocks);
  if (st == WEFT_OK) st = weft_tensor_file_attr_write_f64(file, NULL, "scale", r->scale);
  if (st == WEFT_OK)
    st = weft_tensor_file_attr_write_str(file, NULL, "device", weft_device_kind_name(r->dev->kind));
  weft_status_t close_st = weft_tensor_file_close(file);
  return st != WEFT_OK ? st : close_st;
}

static weft_status_t check_run(check_run_t *r) {
  weft_tensor_file_t *in = NULL;
  WEFT_CHECK(weft_tensor_file_open(r->opt->input, WEFT_TENSOR_FILE_READ, r->comm, &in));
  weft_status_t st = read_header(r, in);
  if (st == WEFT_OK && !r->input_error) st = alloc_buffers(r);
  if (st == WEFT_OK && !r->input_error) st = read_inputs(r, in);
  weft_status_t close_st = weft_tensor_file_close(in);
  if (st == WEFT_OK) st = close_st;
  if (st == WEFT_OK && !r->input_error) st = check_g(r);
  if (st != WEFT_OK || r->input_error) return st;

  double seconds[2] = {0, 0};
  int64_t bytes[2] = {0, 0};
  WEFT_CHECK(compute(r, seconds, bytes));
  /* Slowest rank's times (i64 picoseconds: comm reduces no f64) and the largest byte counts. */
  int64_t mx[4] = {(int64_t)(seconds[0] * 1e12), (int64_t)(seconds[1] * 1e12), bytes[0], bytes[1]};
  WEFT_CHECK(
      weft_comm_allreduce(r->comm, mx, mx, 4, WEFT_DTYPE_I64, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  seconds[0] = (double)mx[0] * 1e-12, seconds[1] = (double)mx[1] * 1e-12;
  bytes[0] = mx[2], bytes[1] = mx[3];
  WEFT_CHECK(write_outputs(r, seconds, bytes));
  if (r->rank == 0) {
    printf(
        "weft check linear-attention: %s, %d rank(s), B %lld N %lld H %lld dk %lld dv %lld: "
        "forward %.6f s, %lld B sent (max rank)",
        weft_linear_sp_algo_name(r->opt->algo), r->size, (long long)r->B, (long long)r->N,
        (long long)r->H, (long long)r->DK, (long long)r->DV, seconds[0], (long long)bytes[0]);
    if (r->has_dout) printf("; backward %.6f s, %lld B sent", seconds[1], (long long)bytes[1]);
    printf(" -> %s\n", r->opt->output);
    fflush(stdout);
  }
  return WEFT_OK;
}

static const weft_cli_command_t k_command = {
    "check linear-attention",
    "Run sequence-parallel gated linear attention on IN.h5 and write the results to OUT.h5.",
    "--algo zeco|lasp2|ring [--scan-blocks K] [--device cpu|cuda] --input IN.h5 --output OUT.h5",
    NULL};

static void print_format_help(void) {
  printf(
      "\nIN.h5 : q [B,N,H,dk], k [B,N,H,dk], v [B,N,H,dv], g [B,N,H,dk] (log decay, <= 0), "
      "float32;\n"
      "        optional dout [B,N,H,dv]; optional root attribute scale (default 1/sqrt(dk))\n"
      "        S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t,  S_0 = 0,  out_t = scale * q_t S_t\n"
      "OUT.h5: out [B,N,H,dv], final_state [B,H,dk,dv]; with dout also dq, dk, dv, dg (gradients\n"
      "        of sum(dout * out)); root attributes algo, ranks, bytes_sent_fwd_max,\n"
      "        bytes_sent_bwd_max, time_fwd_s, time_bwd_s, scan_blocks, scale, device\n"
      "The sequence is split contiguously over the ranks (the first N %% P get one more token).\n");
}

int weft_check_linear(int argc, char **argv) {
  check_opts_t o = {"zeco", "auto", NULL, NULL, 0, WEFT_LINEAR_SP_ZECO};
  const weft_cli_flag_t flags[] = {
      {"algo", 0, WEFT_CLI_STRING, &o.algo_name, "zeco|lasp2|ring", "state hand-off (zeco)"},
      {"scan-blocks", 0, WEFT_CLI_INT, &o.scan_blocks, "K",
       "All-Scan blocks for zeco (0 = automatic)"},
      {"device", 0, WEFT_CLI_STRING, &o.device, "auto|cpu|cuda", "device each rank opens (auto)"},
      {"input", 'i', WEFT_CLI_STRING, &o.input, "IN.h5", "input file (required)"},
      {"output", 'o', WEFT_CLI_STRING, &o.output, "OUT.h5", "output file (required)"},
  };
  bool help = false;
  if (weft_cli_parse(&k_command, flags, sizeof flags / sizeof flags[0], argc, argv, &help) !=
      WEFT_OK)
    return WEFT_EXIT_USAGE;
  if (help) {
    print_format_help();
    return WEFT_EXIT_OK;
  }
  const char *problem = NULL;
  if (weft_linear_sp_algo_parse(o.algo_name, &o.algo) != WEFT_OK)
    problem = "--algo must be zeco, lasp2 or ring";
  else if (o.scan_blocks < 0)
    problem = "--scan-blocks must be >= 0";
  else if (!o.input || !*o.input)
    problem = "--input IN.h5 is required";
  else if (!o.output || !*o.output)
    problem = "--output OUT.h5 is required";
  if (problem) {
    fprintf(stderr, "weft check linear-attention: %s (see weft check linear-attention --help)\n",
            problem);
    return WEFT_EXIT_USAGE;
  }
  weft_session_t session;
  weft_session_start(&session, "check linear-attention", &argc, &argv, o.device);
  check_run_t r = {.session = &session,
                   .opt = &o,
                   .comm = session.world,
                   .dev = session.boot.device,
                   .rank = session.boot.world_rank,
                   .size = session.boot.world_size};
  weft_status_t st = check_run(&r);
  free_buffers(&r);
  int rc = weft_session_end(&session, st);
  return r.input_error ? WEFT_EXIT_FAILURE : rc;
}
